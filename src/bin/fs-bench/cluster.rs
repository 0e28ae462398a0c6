//! The cluster rows: the same store calls on a local cluster of three
//! primaries and on one standalone Redis, both started here, interleaved.
//! Both sides are the store: the ratio is what the cluster costs (or
//! gives) on this machine, not a comparison with a hand-written client.

use feature_store::demo::synth;
use feature_store::registry::Registry;
use feature_store::{FeatureMap, FeatureStore, ManagedCluster, ManagedRedis, StoreConfig};

use crate::library::{complete, read_ids, BATCH_TTL, READ_FIELDS, SEED};
use crate::measure::{paired, Recorder};
use crate::report::{Figures, RatioOn, Row};
use crate::{BResult, Sizes};

const PRIMARIES: usize = 3;

pub fn rows(sizes: &Sizes, rows: &mut Vec<Row>) -> BResult<()> {
    eprintln!("fs-bench: starting a {PRIMARIES}-primary cluster and a standalone redis-server ...");
    let cluster = ManagedCluster::start(PRIMARIES, 0)?;
    let single = ManagedRedis::start()?;
    let registry = Registry::demo();
    let on_cluster =
        FeatureStore::open(&cluster.url(), StoreConfig::default())?.with_registry(&registry);
    let alone = FeatureStore::open(&single.url(), StoreConfig::default())?.with_registry(&registry);
    on_cluster.load_scripts()?;
    alone.load_scripts()?;

    crate::step(
        "cluster_bulk_load",
        rows,
        bulk_load(sizes, &on_cluster, &alone),
    )?;
    crate::step(
        "cluster_batch_read",
        rows,
        batch_read(sizes, &on_cluster, &alone),
    )
}

fn bulk_load(sizes: &Sizes, on_cluster: &FeatureStore, alone: &FeatureStore) -> BResult<Row> {
    let chunk = alone.chunk_size();
    let mut ours = Recorder::default();
    let mut base = Recorder::default();
    let mut users = synth::users(sizes.bulk_users, SEED);
    let (trips_cluster, trips_alone) = (
        on_cluster.stats().redis_round_trips_total,
        alone.stats().redis_round_trips_total,
    );
    let mut k = 0usize;
    loop {
        let batch: Vec<(String, FeatureMap)> = users.by_ref().take(chunk).collect();
        if batch.is_empty() {
            break;
        }
        let n = batch.len() as u64;
        let run_cluster = || {
            complete(
                "cluster bulk_load",
                on_cluster.bulk_load(&batch, BATCH_TTL)?,
            )
        };
        let run_alone = || complete("standalone bulk_load", alone.bulk_load(&batch, BATCH_TTL)?);
        if k.is_multiple_of(2) {
            ours.time(n, run_cluster)?;
            base.time(n, run_alone)?;
        } else {
            base.time(n, run_alone)?;
            ours.time(n, run_cluster)?;
        }
        k += 1;
    }
    let per_chunk = |now: u64, before: u64| (now - before) as f64 / k.max(1) as f64;
    Ok(Row {
        id: "cluster_bulk_load",
        operation: format!(
            "`bulk_load`, {} synthetic users, on {PRIMARIES} primaries",
            crate::report::count(sizes.bulk_users as f64)
        ),
        unit: "users",
        ours: Figures::Timed(ours.summary()),
        baseline_name: "the same calls on one standalone Redis".into(),
        baseline: Figures::Timed(base.summary()),
        ratio_on: RatioOn::PerSec,
        goal: Vec::new(),
        note: format!(
            "chunks of {chunk} users alternate between the two stores; {:.1} round trips per chunk on \
             the cluster (one pipeline per node), {:.1} standalone. Random ids spread over 16384 \
             slots, so a cluster call holds the rows of one slot: about one row per script call \
             instead of up to {} standalone, and all {PRIMARIES} nodes share this machine's cores \
             with the client.",
            per_chunk(on_cluster.stats().redis_round_trips_total, trips_cluster),
            per_chunk(alone.stats().redis_round_trips_total, trips_alone),
            StoreConfig::default().entities_per_call,
        ),
    })
}

fn batch_read(sizes: &Sizes, on_cluster: &FeatureStore, alone: &FeatureStore) -> BResult<Row> {
    let n = sizes.batch_iters;
    let ids = read_ids(sizes.bulk_users, n * 100, 11);
    let read = |store: &FeatureStore, i: usize| -> BResult<()> {
        let rows = store.batch_get_features(&ids[i * 100..(i + 1) * 100], &READ_FIELDS)?;
        if rows.iter().any(|r| r.is_err()) || rows.len() != 100 {
            return Err("a batch read of 100 ids failed".into());
        }
        Ok(())
    };
    let (ours, base) = paired(
        (n / 10).max(5),
        n,
        sizes.rounds,
        |i| read(on_cluster, i),
        |i| read(alone, i),
    )?;
    Ok(Row {
        id: "cluster_batch_read",
        operation: format!(
            "`batch_get_features`, 100 entities x 5 fields, on {PRIMARIES} primaries"
        ),
        unit: "batches",
        ours: Figures::Timed(ours),
        baseline_name: "the same calls on one standalone Redis".into(),
        baseline: Figures::Timed(base),
        ratio_on: RatioOn::P50,
        goal: Vec::new(),
        note: format!(
            "{n} batches of 100 random loaded users each side, interleaved; the cluster sends one \
             pipeline per node ({PRIMARIES} round trips, all written before any reply is read) \
             where standalone sends one."
        ),
    })
}
