"""fs-bench's Feast rows, the Python side: Feast's own SDK, run with the
virtualenv's python by src/bin/fs-bench/feast.rs, which made the
repositories and started both servers.

    feast_driver.py load  FEAST_REPO OURS_CLIENT N
        Writes N users through both paths (untimed): Feast's
        `write_to_online_store` into its Redis online store (FEAST_REPO:
        `online_store: redis`), and the same DataFrame through the SDK's
        remote store to our server's /write-to-online-store (OURS_CLIENT:
        `online_store: remote` at fs-server).

    feast_driver.py bench OURS_CLIENT FEAST_CLIENT N ONE_ITERS HUNDRED_ITERS ROUNDS
        Two FeatureStores, both `online_store: remote`: one at fs-server, one
        at `feast serve`. First checks that both answer exactly the values
        written (typed) for one user and for 100, and fails loudly if not.
        Then times `get_online_features(...).to_dict()` of the view's five
        features for 1 random user and for 100 random users, the two stores
        interleaved in rounds (ours first in even rounds, Feast's first in odd
        ones) on the same sequence of users, and prints the latencies (ns) as
        JSON on stdout. In the same rounds it times the HTTP request alone
        (the body the SDK sends, posted with `requests`, the answer parsed
        as JSON), so the rows can say how much of a call is the SDK's own.

The values are a function of the user's index, so both checks know what to
expect without reading anything back first."""

import json
import random
import sys
import time

import feast
import pandas as pd
import requests
from feast import FeatureStore

VIEW = "user_profile"
FEATURES = [
    f"{VIEW}:{name}"
    for name in ("country", "age_days", "avg_amount", "verified", "embedding")
]
COUNTRIES = ["US", "GB", "DE", "FR", "JP"]
WARMUP = 20
SEED = 14


def user_id(i):
    return f"u{i:06d}"


def row(i):
    """User i's values: quarters, so every float is exact in any encoding."""
    return {
        "country": COUNTRIES[i % len(COUNTRIES)],
        "age_days": i * 7 % 3650,
        "avg_amount": (i % 400) * 0.25,
        "verified": i % 3 == 0,
        "embedding": [((i + k) % 16) * 0.25 - 2.0 for k in range(8)],
    }


def load(feast_repo, ours_client, n):
    now = pd.Timestamp.now(tz="UTC").floor("s")
    rows = [row(i) for i in range(n)]
    df = pd.DataFrame(
        {
            "user_id": [user_id(i) for i in range(n)],
            **{name: [r[name] for r in rows] for name in rows[0]},
            "event_timestamp": [now] * n,
            "created": [now] * n,
        }
    )
    FeatureStore(repo_path=feast_repo).write_to_online_store(VIEW, df)
    FeatureStore(repo_path=ours_client).write_to_online_store(VIEW, df)
    print(json.dumps({"written": n}))


def read(store, indices):
    return store.get_online_features(
        features=FEATURES, entity_rows=[{"user_id": user_id(i)} for i in indices]
    ).to_dict()


def post(session, url, indices):
    """The request `get_online_features` sends, without the SDK around it."""
    answer = session.post(
        f"{url}/get-online-features",
        json={
            "features": FEATURES,
            "entities": {"user_id": [user_id(i) for i in indices]},
            "full_feature_names": False,
        },
    )
    answer.raise_for_status()
    return answer.json()


def want(indices):
    rows = [row(i) for i in indices]
    return {
        "user_id": [user_id(i) for i in indices],
        **{name: [r[name] for r in rows] for name in rows[0]},
    }


def check(stores, n):
    """Both stores answer exactly what was written, typed: JSON text tells
    412 from 412.0 and True from 1, where == would not. The bare request
    finds every value PRESENT on both servers."""
    rng = random.Random(SEED + 1)
    for indices in ([n - 1], rng.sample(range(n), 100)):
        expected = json.dumps(want(indices), sort_keys=True)
        for name, store, session, url in stores:
            got = json.dumps(read(store, indices), sort_keys=True)
            if got != expected:
                sys.exit(
                    f"feast_driver: {name} answered other values than were written "
                    f"for {len(indices)} users:\n got  {got[:2000]}\n want {expected[:2000]}"
                )
            statuses = {s for r in post(session, url, indices)["results"] for s in r["statuses"]}
            if statuses != {"PRESENT"}:
                sys.exit(f"feast_driver: {name}'s /get-online-features answered {statuses}")


def bench(ours_client, feast_client, n, one_iters, hundred_iters, rounds):
    stores = []
    for name, client in (("fs-server", ours_client), ("feast serve", feast_client)):
        store = FeatureStore(repo_path=client)
        url = store.config.online_store.path
        stores.append((name, store, requests.Session(), url))
    check(stores, n)
    rng = random.Random(SEED)
    sizes = {
        "one": [[rng.randrange(n)] for _ in range(one_iters)],
        "hundred": [rng.sample(range(n), 100) for _ in range(hundred_iters)],
    }
    # What is timed: the SDK call, and the bare HTTP request.
    ways = {
        "sdk": lambda side, indices: read(side[1], indices),
        "http": lambda side, indices: post(side[2], side[3], indices),
    }
    samples = {
        way: {size: {"ours": [], "feast": []} for size in sizes} for way in ways
    }
    sides = [("ours", stores[0]), ("feast", stores[1])]
    for call in ways.values():
        for calls in sizes.values():
            for indices in calls[:WARMUP]:
                for _, side in sides:
                    call(side, indices)
    rounds = max(1, rounds)
    for r in range(rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        for way, call in ways.items():
            for size, calls in sizes.items():
                per_round = -(-len(calls) // rounds)
                block = calls[r * per_round : (r + 1) * per_round]
                for name, side in order:
                    out = samples[way][size][name]
                    for indices in block:
                        start = time.perf_counter_ns()
                        call(side, indices)
                        out.append(time.perf_counter_ns() - start)
    print(
        json.dumps(
            {
                "feast_version": feast.__version__,
                "python": sys.version.split()[0],
                "features": len(FEATURES),
                "samples_ns": samples,
            }
        )
    )


def main(argv):
    if len(argv) == 5 and argv[1] == "load":
        load(argv[2], argv[3], int(argv[4]))
    elif len(argv) == 8 and argv[1] == "bench":
        bench(argv[2], argv[3], *map(int, argv[4:8]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
