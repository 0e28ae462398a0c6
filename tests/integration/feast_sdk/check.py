"""Feast's own SDK against fs-server: run by tests/integration/feast.rs
with the virtualenv's python, in a Feast repository the test made
(feature_store.yaml: online_store remote at the server), after `feast
apply`. Writes a small DataFrame to a batch view (`write_to_online_store`)
and a stream view (`push` to its push source), reads it back by feature
list and by feature service. Prints the reads as JSON and
exits non-zero on any difference."""

import json
import sys

import pandas as pd
from feast import FeatureStore

store = FeatureStore(repo_path=sys.argv[1])
ts = pd.Timestamp("2026-12-01T18:00:00Z")
store.write_to_online_store(
    "user_stats",
    pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "country": ["GB", "US"],
            "age_days": [412, 3],
            "avg_amount": [92.5, 1.0],
            "verified": [True, False],
            "embedding": [[0.5, -2.0], [1.0, 2.0]],
            "event_timestamp": [ts, ts],
            "created": [ts, ts],
        }
    ),
)
# The stream view through its push source, as a Feast team's stream job
# does: the SDK writes it through /write-to-online-store.
store.push(
    "activity_push",
    pd.DataFrame(
        {"user_id": ["u1"], "tx_count_5m": [4], "event_timestamp": [ts], "created": [ts]}
    ),
)

by_features = store.get_online_features(
    features=[
        "user_stats:country",
        "user_stats:age_days",
        "user_stats:avg_amount",
        "user_stats:verified",
        "user_stats:embedding",
    ],
    entity_rows=[{"user_id": "u1"}, {"user_id": "u2"}, {"user_id": "u9"}],
).to_dict()
by_service = store.get_online_features(
    features=store.get_feature_service("fraud_v1"),
    entity_rows=[{"user_id": "u1"}, {"user_id": "u2"}],
    full_feature_names=True,
).to_dict()
print(json.dumps({"by_features": by_features, "by_service": by_service}))

want_features = {
    "user_id": ["u1", "u2", "u9"],
    "country": ["GB", "US", None],
    "age_days": [412, 3, None],
    "avg_amount": [92.5, 1.0, None],
    "verified": [True, False, None],
    "embedding": [[0.5, -2.0], [1.0, 2.0], None],
}
want_service = {
    "user_id": ["u1", "u2"],
    "user_activity__tx_count_5m": [4, None],
    "user_stats__country": ["GB", "US"],
}
ok = True
for name, got, want in [
    ("by_features", by_features, want_features),
    ("by_service", by_service, want_service),
]:
    if got != want:
        print(f"{name}: got {got!r}, want {want!r}", file=sys.stderr)
        ok = False
# Typed, not just equal: an int is not a float, a bool not an int.
if [type(v) for v in by_features["age_days"][:2]] != [int, int]:
    print(f"age_days not ints: {by_features['age_days']!r}", file=sys.stderr)
    ok = False
if [type(v) for v in by_features["verified"][:2]] != [bool, bool]:
    print(f"verified not bools: {by_features['verified']!r}", file=sys.stderr)
    ok = False
sys.exit(0 if ok else 1)
