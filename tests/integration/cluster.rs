//! What only a cluster has: slots, one round trip per node, hash tags,
//! NOSCRIPT on one node, a primary stopped and restarted, a slot migrated
//! during a load, a failover during traffic. Every test runs a real local
//! cluster (`ManagedCluster`) of its own.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use feature_store::managed_cluster::{ClusterOptions, ManagedCluster};
use feature_store::store::slots::key_slot;
use feature_store::{FeatureMap, FeatureStore, FeatureValue};
use proptest::prelude::*;

use crate::common::{self, wait_until};
use crate::loader::{count, show, summary};

const PREFIX: &str = "fs:user:";
const LOADER: &str = env!("CARGO_BIN_EXE_fs-loader");

fn cluster(primaries: usize, replicas: usize) -> ManagedCluster {
    ManagedCluster::start(primaries, replicas)
        .unwrap_or_else(|e| panic!("starting the test cluster: {e}"))
}

fn open(cluster: &ManagedCluster) -> FeatureStore {
    FeatureStore::open(&cluster.url(), common::store_config()).expect("opening the store")
}

/// A plain connection to one node, for checking what it holds.
fn node_conn(cluster: &ManagedCluster, node: usize) -> redis::Connection {
    redis::Client::open(cluster.node(node).url())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .unwrap_or_else(|e| panic!("connecting to node {node}: {e}"))
}

fn row(n: u64) -> FeatureMap {
    FeatureMap::from([
        ("tx_count_7d".to_owned(), FeatureValue::Int(n as i64)),
        ("country_iso".to_owned(), FeatureValue::Str(format!("c{n}"))),
    ])
}

fn rows(ids: &[String]) -> Vec<(String, FeatureMap)> {
    ids.iter()
        .enumerate()
        .map(|(n, id)| (id.clone(), row(n as u64)))
        .collect()
}

/// The node that owns each id's key.
fn owners(cluster: &mut ManagedCluster, ids: &[String]) -> Vec<usize> {
    ids.iter()
        .map(|id| {
            let slot = key_slot(format!("{PREFIX}{id}").as_bytes());
            cluster.primary_of_slot(slot).expect("the slot's owner")
        })
        .collect()
}

/// `INFO commandstats` of one node, as `name -> (calls, failed + rejected)`.
fn commandstats(conn: &mut redis::Connection) -> HashMap<String, (u64, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(conn)
        .expect("INFO");
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let field = |k: &str| -> u64 {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let bad = field("failed_calls") + field("rejected_calls");
            Some((name.to_owned(), (field("calls"), bad)))
        })
        .collect()
}

fn read_back(store: &FeatureStore, ids: &[String]) -> Vec<Option<String>> {
    store
        .batch_get_features(ids, &["tx_count_7d"])
        .expect("a batch read")
        .into_iter()
        .map(|r| {
            let values = r.expect("a row");
            values[0]
                .as_ref()
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn slots_are_the_ones_the_cluster_computes_for_any_key() {
    let cluster = cluster(1, 0);
    let conn = std::cell::RefCell::new(node_conn(&cluster, 0));
    let keys = proptest::collection::vec(
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            "[a-z{}:]{0,12}".prop_map(String::into_bytes),
            ("[a-z]{0,4}", "[a-z{}]{0,6}", "[a-z}]{0,4}")
                .prop_map(|(a, b, c)| format!("{a}{{{b}}}{c}").into_bytes()),
        ],
        64,
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(16));
    runner
        .run(&keys, |keys| {
            for key in keys {
                let theirs: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(&key)
                    .query(&mut *conn.borrow_mut())
                    .expect("CLUSTER KEYSLOT");
                prop_assert_eq!(key_slot(&key), theirs, "key {:?}", key);
            }
            Ok(())
        })
        .expect("every slot as CLUSTER KEYSLOT computes it");
}

#[test]
fn a_batch_read_and_a_write_chunk_cost_one_round_trip_per_node() {
    let mut cluster = cluster(3, 0);
    let store = open(&cluster);
    let ids: Vec<String> = (0..100).map(|n| format!("u{n:04}")).collect();
    let nodes: std::collections::BTreeSet<usize> = owners(&mut cluster, &ids).into_iter().collect();
    assert_eq!(nodes.len(), 3, "100 ids land on every primary");
    // Warm up: the slot map fetched (on a connection of its own, not
    // counted) and the scripts on every node, so no NOSCRIPT round counts.
    store.load_scripts().expect("scripts on every node");

    let before = store.stats().redis_round_trips_total;
    let report = store.bulk_load(&rows(&ids), 3600).expect("a bulk load");
    let after_write = store.stats().redis_round_trips_total;
    assert_eq!((report.written, report.failed.len()), (100, 0));
    assert_eq!(
        after_write - before,
        3,
        "one pipeline per node for a chunk of 100"
    );

    let values = read_back(&store, &ids);
    let after_read = store.stats().redis_round_trips_total;
    assert_eq!(
        after_read - after_write,
        3,
        "one pipeline per node for 100 ids"
    );
    let expected: Vec<Option<String>> = (0..100).map(|n| Some(n.to_string())).collect();
    assert_eq!(values, expected);
}

#[test]
fn hash_tagged_ids_share_a_slot_and_script_calls() {
    let mut cluster = cluster(3, 0);
    let store = open(&cluster);
    let ids: Vec<String> = (0..40).map(|n| format!("{{tenant7}}:u{n:04}")).collect();
    let owner = owners(&mut cluster, &ids);
    assert!(owner.iter().all(|&o| o == owner[0]), "one slot, one node");
    let slot = key_slot(b"tenant7");
    assert!(ids
        .iter()
        .all(|id| key_slot(format!("{PREFIX}{id}").as_bytes()) == slot));
    store.load_scripts().expect("scripts on every node");
    let mut conns: Vec<_> = (0..3).map(|i| node_conn(&cluster, i)).collect();
    for c in &mut conns {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .exec(c)
            .expect("RESETSTAT");
    }

    let report = store.bulk_load(&rows(&ids), 3600).expect("a bulk load");
    assert_eq!((report.written, report.failed.len()), (40, 0));
    let per_call = common::store_config().entities_per_call;
    for (i, c) in conns.iter_mut().enumerate() {
        let calls = commandstats(c).get("evalsha").map_or(0, |s| s.0);
        let expected = if i == owner[0] {
            40u64.div_ceil(per_call as u64)
        } else {
            0
        };
        assert_eq!(calls, expected, "EVALSHA calls on node {i}");
    }
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(100)
        .query(&mut conns[owner[0]])
        .expect("GETKEYSINSLOT");
    assert_eq!(keys.len(), 40);
    assert_eq!(
        read_back(&store, &ids[..3]),
        [Some("0".into()), Some("1".into()), Some("2".into())]
    );
}

#[test]
fn noscript_on_one_node_reloads_there_and_resends_only_its_calls() {
    let mut cluster = cluster(3, 0);
    let store = open(&cluster);
    store
        .bulk_load(&rows(&["warm".into()]), 3600)
        .expect("warm-up");
    store.load_scripts().expect("scripts on every node");
    let ids: Vec<String> = (0..300).map(|n| format!("u{n:04}")).collect();
    let owner = owners(&mut cluster, &ids);
    let mut conns: Vec<_> = (0..3).map(|i| node_conn(&cluster, i)).collect();
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .exec(&mut conns[1])
        .expect("SCRIPT FLUSH");
    for c in &mut conns {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .exec(c)
            .expect("RESETSTAT");
    }

    let report = store.bulk_load(&rows(&ids), 3600).expect("a bulk load");
    assert_eq!(
        (report.written, report.failed.len()),
        (300, 0),
        "{:?}",
        report.failed.first()
    );

    for (i, c) in conns.iter_mut().enumerate() {
        let stats = commandstats(c);
        let (calls, refused) = stats.get("evalsha").copied().unwrap_or_default();
        let loads = stats.get("script|load").map_or(0, |s| s.0);
        let rows_here = owner.iter().filter(|&&o| o == i).count() as u64;
        if i == 1 {
            assert_eq!(loads, 1, "one SCRIPT LOAD on the flushed node");
            // Each call ran once, after failing once with NOSCRIPT.
            assert_eq!(calls, 2 * refused, "node 1: {stats:?}");
            assert!(refused > 0);
        } else {
            assert_eq!(
                (loads, refused),
                (0, 0),
                "node {i} was not touched: {stats:?}"
            );
            assert!(
                calls > 0 && calls <= rows_here,
                "node {i}: {calls} calls for {rows_here} rows"
            );
        }
    }
    let values = read_back(&store, &ids);
    assert!(values
        .iter()
        .enumerate()
        .all(|(n, v)| v.as_deref() == Some(&n.to_string()[..])));
}

#[test]
fn a_stopped_primary_fails_only_its_rows_and_the_store_recovers_when_it_returns() {
    // Without full coverage, the other primaries keep serving their slots.
    let mut cluster = ManagedCluster::start_with(
        3,
        0,
        ClusterOptions {
            require_full_coverage: false,
            ..ClusterOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("starting the test cluster: {e}"));
    let store = open(&cluster);
    let ids: Vec<String> = (0..200).map(|n| format!("u{n:04}")).collect();
    let owner = owners(&mut cluster, &ids);
    store
        .bulk_load(&rows(&["warm".into()]), 3600)
        .expect("warm-up");

    cluster.node_mut(1).stop();
    let report = store.bulk_load(&rows(&ids), 3600).expect("a bulk load");
    let failed: Vec<usize> = report.failed.iter().map(|f| f.index).collect();
    let on_node_1: Vec<usize> = (0..ids.len()).filter(|&i| owner[i] == 1).collect();
    assert_eq!(failed, on_node_1, "exactly the stopped node's rows fail");
    assert_eq!(report.written, ids.len() - on_node_1.len());
    for f in &report.failed {
        assert!(f.error.is_unavailable(), "{}: {:?}", f.id, f.error);
    }
    // What was counted written is there, on the nodes that answered.
    let elsewhere: Vec<String> = (0..ids.len())
        .filter(|&i| owner[i] != 1)
        .map(|i| ids[i].clone())
        .collect();
    assert!(read_back(&store, &elsewhere).iter().all(Option::is_some));
    // A read that needs the stopped node is an outage, not a partial answer.
    match store.batch_get_features(&ids, &["tx_count_7d"]) {
        Err(e) => assert!(e.is_unavailable(), "{e:?}"),
        Ok(_) => panic!("a read across a stopped primary answered"),
    }

    cluster.node_mut(1).restart().expect("restarting node 1");
    cluster.wait_converged().expect("the cluster ok again");
    let retry: Vec<(String, FeatureMap)> = report
        .failed
        .iter()
        .map(|f| (f.id.clone(), row(f.index as u64)))
        .collect();
    let again = store.bulk_load(&retry, 3600).expect("the retry");
    assert_eq!((again.written, again.failed.len()), (retry.len(), 0));
    let expected: Vec<Option<String>> = (0..ids.len()).map(|n| Some(n.to_string())).collect();
    assert_eq!(read_back(&store, &ids), expected);
}

/// The loader reading JSON lines from its stdin, on the cluster.
fn loader(cluster: &ManagedCluster) -> Child {
    Command::new(LOADER)
        .env_remove("FS_REDIS_URL")
        .env_remove("FS_REGISTRY")
        .env_remove("FS_EVENT_TIME_COLUMN")
        .args(["--redis-url", &cluster.url(), "--quiet", "--from", "-"])
        // The tests interleave their steps (a migration, a failover) with
        // the load: on a test machine kept busy by the other tests, a
        // loader that gives way on the CPU would fall behind those steps.
        .args(["--cpu-priority", "normal"])
        .args([
            "--chunk-size",
            "50",
            "--retries",
            "100",
            "--retry-backoff-ms",
            "20",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning fs-loader")
}

fn feed(child: &mut Child, ids: &[String], from: usize) {
    let stdin = child.stdin.as_mut().expect("stdin");
    for (n, id) in ids.iter().enumerate() {
        writeln!(
            stdin,
            "{{\"id\": \"{id}\", \"features\": {{\"tx_count_7d\": {}}}}}",
            from + n
        )
        .expect("feeding");
    }
    stdin.flush().expect("flush");
}

#[test]
fn a_slot_migrated_during_a_load_loses_no_row_and_writes_none_twice() {
    let mut cluster = cluster(3, 0);
    let store = open(&cluster);
    // Half the rows in one slot (a hash tag), so the migration moves many
    // keys while rows for that slot keep arriving; half spread out.
    let hot: Vec<String> = (0..600).map(|n| format!("{{hot}}:u{n:04}")).collect();
    let spread: Vec<String> = (0..600).map(|n| format!("s{n:04}")).collect();
    let slot = key_slot(b"hot");
    let from = cluster.primary_of_slot(slot).expect("owner");
    let to = (from + 1) % 3;
    let mut child = loader(&cluster);
    let all: Vec<String> = hot
        .iter()
        .zip(&spread)
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();

    feed(&mut child, &all[..400], 0);
    let mut source = node_conn(&cluster, from);
    wait_until(
        "the first rows of the hot slot",
        Duration::from_secs(20),
        || {
            redis::cmd("CLUSTER")
                .arg("COUNTKEYSINSLOT")
                .arg(slot)
                .query::<u64>(&mut source)
                .unwrap_or(0)
                >= 100
        },
    );
    cluster.begin_migration(slot, from, to).expect("begin");
    feed(&mut child, &all[400..800], 400);
    // Keys move in small steps while the loader writes.
    for _ in 0..4 {
        cluster
            .migrate_some_keys(slot, from, to, 40)
            .expect("migrate");
    }
    feed(&mut child, &all[800..], 800);
    cluster.finish_migration(slot, from, to).expect("finish");
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("waiting for fs-loader");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let s = summary(&out);
    assert_eq!(
        (count(&s, "read"), count(&s, "written"), count(&s, "failed")),
        (1200, 1200, 0),
        "{s:?}"
    );
    // A re-sent call that had run would find its own event time and skip.
    assert_eq!(count(&s, "skipped_stale"), 0, "{s:?}");

    assert_eq!(cluster.primary_of_slot(slot).expect("owner"), to);
    let mut target = node_conn(&cluster, to);
    let in_slot: u64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut target)
        .expect("COUNTKEYSINSLOT");
    assert_eq!(in_slot, 600, "every hot row on the new owner");
    // Rows for keys already moved went to the new owner after ASKING.
    let asked = commandstats(&mut target).get("asking").map_or(0, |s| s.0);
    assert!(asked > 0, "no call was redirected by ASK");
    let values = read_back(&store, &all);
    for (n, (id, v)) in all.iter().zip(values).enumerate() {
        assert_eq!(v, Some(n.to_string()), "{id}");
    }
    assert_every_key_has_a_ttl(&store, &all);
}

/// A batch the traffic wrote: its ids, and how many were written (or why
/// the call failed).
type Batch = (Vec<String>, Result<usize, String>);

#[test]
fn a_failover_during_traffic_is_survived() {
    let mut cluster = cluster(3, 1);
    let store = Arc::new(open(&cluster));
    let stop = Arc::new(AtomicBool::new(false));
    // Every batch written: its ids, and how it went.
    let log: Arc<Mutex<Vec<Batch>>> = Arc::default();
    let traffic = {
        let (store, stop, log) = (store.clone(), stop.clone(), log.clone());
        std::thread::spawn(move || {
            let mut batch = 0;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<String> = (0..50).map(|n| format!("b{batch:03}:{n:02}")).collect();
                let outcome = match store.bulk_load(&rows(&ids), 3600) {
                    Ok(r) => {
                        for f in &r.failed {
                            assert!(f.error.is_unavailable(), "a refusal: {:?}", f.error);
                        }
                        Ok(r.written)
                    }
                    Err(e) => Err(e.to_string()),
                };
                // Reads go on too; an outage is allowed, a wrong value not.
                if let Ok(rows) = store.batch_get_features(&ids, &["tx_count_7d"]) {
                    for (n, r) in rows.into_iter().enumerate() {
                        if let Ok(values) = r {
                            if let Some(v) = &values[0] {
                                assert_eq!(v.as_str(), Some(&n.to_string()[..]));
                            }
                        }
                    }
                }
                log.lock().expect("log").push((ids, outcome));
                batch += 1;
            }
        })
    };
    let batches = |log: &Mutex<Vec<_>>| log.lock().expect("log").len();
    wait_until(
        "traffic before the failover",
        Duration::from_secs(20),
        || batches(&log) >= 5,
    );
    // Node 3 is the replica of primary 0.
    cluster.failover(3).expect("failover");
    let after = batches(&log);
    wait_until(
        "traffic after the failover",
        Duration::from_secs(30),
        || batches(&log) >= after + 10,
    );
    stop.store(true, Ordering::Relaxed);
    traffic.join().expect("the traffic thread did not panic");

    let log = log.lock().expect("log");
    // The last batches, after the failover settled, were written whole.
    for (ids, outcome) in log.iter().rev().take(5) {
        assert_eq!(outcome.as_ref().ok(), Some(&ids.len()), "{ids:?}");
    }
    // Every row counted written is there with its value.
    let mut check = Vec::new();
    for (ids, outcome) in log.iter() {
        if outcome.as_ref().ok() == Some(&ids.len()) {
            check.extend(ids.iter().cloned());
        }
    }
    let values = read_back(&store, &check);
    assert!(values.iter().all(Option::is_some));
    assert_eq!(store.backend().nodes, Some(3));
    let mut promoted = node_conn(&cluster, 3);
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut promoted).expect("ROLE");
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec()))
    );
}

/// Every id's key has a key TTL: a migration moves keys with theirs.
fn assert_every_key_has_a_ttl(store: &FeatureStore, ids: &[String]) {
    for id in ids {
        let ttl = store.key_ttl(id).expect("TTL");
        assert!(ttl > 0, "{id} has TTL {ttl}");
    }
}

#[test]
fn the_server_on_a_cluster_says_so_and_answers_503_while_a_primary_is_down() {
    let mut cluster = ManagedCluster::start_with(
        3,
        0,
        ClusterOptions {
            require_full_coverage: false,
            ..ClusterOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("starting the test cluster: {e}"));
    let server = crate::server::Server::start(&cluster.url(), &[]);
    let (status, state) = server.get("/state");
    assert_eq!(status, 200, "{state}");
    assert_eq!(
        state["backend"],
        serde_json::json!({"kind": "cluster", "nodes": 3})
    );
    let (status, load) = server.post_form("/bulk-load", "count=60");
    assert_eq!(status, 200, "{load}");
    let ids: Vec<String> = (1..=60).map(|n| format!("u{n:04}")).collect();
    let owner = owners(&mut cluster, &ids);
    let on_node_0 = ids[owner.iter().position(|&o| o == 0).expect("an id on node 0")].clone();
    let batch = serde_json::json!({ "ids": ids });

    cluster.node_mut(1).stop();
    let (status, v) = server.post_json("/batch-read", &batch);
    assert_eq!(status, 503, "a read across the stopped primary: {v}");
    assert_eq!(server.get("/healthz").0, 503);
    // The other primaries still serve their entities.
    let (status, v) = server.post_form("/read", &format!("user={on_node_0}"));
    assert_eq!(status, 200, "{v}");

    cluster.node_mut(1).restart().expect("restarting node 1");
    cluster.wait_converged().expect("the cluster ok again");
    wait_until("healthz back to 200", Duration::from_secs(10), || {
        server.get("/healthz").0 == 200
    });
    // The restarted primary came back empty: load again, read everything.
    let (status, load) = server.post_form("/bulk-load", "count=60");
    assert_eq!(status, 200, "{load}");
    let (status, v) = server.post_json("/batch-read", &batch);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["found_count"], 60, "{v}");
}
