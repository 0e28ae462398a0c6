//! `ManagedCluster`: a real local Redis Cluster comes up, fails over,
//! migrates slots, survives a restarted primary and goes away when dropped.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use feature_store::managed_cluster::{ClusterOptions, Role, SLOTS};
use feature_store::ManagedCluster;

use crate::common;

fn cluster(primaries: usize, replicas: usize) -> ManagedCluster {
    cluster_with(primaries, replicas, ClusterOptions::default())
}

fn cluster_with(primaries: usize, replicas: usize, options: ClusterOptions) -> ManagedCluster {
    let started = Instant::now();
    let cluster = ManagedCluster::start_with(primaries, replicas, options)
        .unwrap_or_else(|e| panic!("starting the test cluster: {e}"));
    eprintln!(
        "cluster of {} nodes ({primaries} primaries) converged in {} ms",
        cluster.len(),
        started.elapsed().as_millis()
    );
    cluster
}

fn conn(cluster: &ManagedCluster, node: usize) -> redis::Connection {
    common::raw(cluster.node(node))
}

fn info(cluster: &ManagedCluster, node: usize, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query(&mut conn(cluster, node))
        .expect("INFO")
}

fn cluster_info(cluster: &ManagedCluster, node: usize) -> String {
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut conn(cluster, node))
        .expect("CLUSTER INFO")
}

fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// `(first, last, owner port)` for every range in the node's CLUSTER SLOTS.
fn cluster_slots(cluster: &ManagedCluster, node: usize) -> Vec<(i64, i64, i64)> {
    let reply: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(&mut conn(cluster, node))
        .expect("CLUSTER SLOTS");
    let mut ranges: Vec<(i64, i64, i64)> = reply
        .iter()
        .map(|range| {
            let redis::Value::Array(items) = range else {
                panic!("CLUSTER SLOTS range {range:?}");
            };
            let (redis::Value::Int(first), redis::Value::Int(last), redis::Value::Array(owner)) =
                (&items[0], &items[1], &items[2])
            else {
                panic!("CLUSTER SLOTS range {items:?}");
            };
            let redis::Value::Int(port) = owner[1] else {
                panic!("CLUSTER SLOTS owner {owner:?}");
            };
            (*first, *last, port)
        })
        .collect();
    ranges.sort();
    ranges
}

/// A key whose slot `node` owns now.
fn key_owned_by(cluster: &mut ManagedCluster, node: usize) -> String {
    (0..10_000)
        .map(|i| format!("user:{i}"))
        .find(|key| cluster.primary_of_key(key.as_bytes()).expect("owner") == node)
        .expect("some key lands on every primary")
}

/// The error a node gives for `GET key`; panics if it answers instead.
fn get_error(cluster: &ManagedCluster, node: usize, key: &str) -> redis::RedisError {
    match redis::cmd("GET")
        .arg(key)
        .query::<Option<String>>(&mut conn(cluster, node))
    {
        Ok(v) => panic!("node {node} answered GET {key} with {v:?}, expected a redirect"),
        Err(e) => e,
    }
}

fn assert_redirect(err: &redis::RedisError, code: &str, to_port: u16, slot: u16) {
    assert_eq!(err.code(), Some(code), "{err}");
    let want = format!("127.0.0.1:{to_port}");
    assert_eq!(err.redirect_node(), Some((want.as_str(), slot)), "{err}");
}

fn get(cluster: &ManagedCluster, node: usize, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut conn(cluster, node))
        .unwrap_or_else(|e| panic!("GET {key} on node {node}: {e}"))
}

fn set(cluster: &ManagedCluster, node: usize, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(&mut conn(cluster, node))
        .unwrap_or_else(|e| panic!("SET {key} on node {node}: {e}"));
}

#[test]
fn three_primaries_come_up_ok_cover_every_slot_once_and_redirect_to_the_owner() {
    let mut cluster = cluster(3, 0);
    assert_eq!(cluster.len(), 3);
    let ports: Vec<u16> = (0..3).map(|i| cluster.port(i)).collect();
    assert_eq!(
        cluster.url(),
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}/",
            ports[0], ports[1], ports[2]
        )
    );

    let first_view = cluster_slots(&cluster, 0);
    for node in 0..3 {
        let info = cluster_info(&cluster, node);
        assert_eq!(info_field(&info, "cluster_state").as_deref(), Some("ok"));
        assert_eq!(
            info_field(&info, "cluster_known_nodes").as_deref(),
            Some("3")
        );
        assert_eq!(cluster.role(node).expect("role"), Role::Primary);
        // Every slot exactly once: the ranges tile 0..16384 with no gap
        // or overlap, each owned by one of the primaries, the same on
        // every node.
        let view = cluster_slots(&cluster, node);
        assert_eq!(view, first_view, "node {node} disagrees with node 0");
        let mut next = 0;
        for &(first, last, port) in &view {
            assert_eq!(first, next, "node {node}: gap or overlap at {first}");
            assert!(ports.contains(&(port as u16)), "unknown owner port {port}");
            next = last + 1;
        }
        assert_eq!(next, i64::from(SLOTS));
        assert_eq!(view.len(), 3, "one range per primary: {view:?}");
    }

    let key = "user:42";
    let slot = cluster.keyslot(key.as_bytes()).expect("keyslot");
    let owner = cluster.primary_of_slot(slot).expect("owner");
    set(&cluster, owner, key, "v42");
    assert_eq!(get(&cluster, owner, key).as_deref(), Some("v42"));
    for other in (0..3).filter(|&n| n != owner) {
        let err = get_error(&cluster, other, key);
        assert_redirect(&err, "MOVED", cluster.port(owner), slot);
    }
}

#[test]
fn each_replica_follows_its_primary_and_failover_hands_it_the_slots() {
    let mut cluster = cluster(3, 1);
    assert_eq!(cluster.len(), 6);
    for replica in 3..6 {
        let primary = replica - 3;
        assert_eq!(cluster.role(replica).expect("role"), Role::Replica);
        let info = info(&cluster, replica, "replication");
        assert_eq!(
            info_field(&info, "master_port"),
            Some(cluster.port(primary).to_string()),
            "replica {replica} follows the wrong primary"
        );
        assert_eq!(
            info_field(&info, "master_link_status").as_deref(),
            Some("up")
        );
    }

    let primary = 1;
    let replica = 4;
    let key = key_owned_by(&mut cluster, primary);
    let slot = cluster.keyslot(key.as_bytes()).expect("keyslot");
    set(&cluster, primary, &key, "before-failover");
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut conn(&cluster, primary))
        .expect("WAIT");
    assert_eq!(acked, 1, "the replica did not acknowledge the write");

    let asked = Instant::now();
    cluster.failover(replica).expect("failover");
    eprintln!("failover converged in {} ms", asked.elapsed().as_millis());
    assert_eq!(cluster.role(replica).expect("role"), Role::Primary);
    assert_eq!(cluster.role(primary).expect("role"), Role::Replica);
    assert_eq!(cluster.primary_of_slot(slot).expect("owner"), replica);
    assert_eq!(
        get(&cluster, replica, &key).as_deref(),
        Some("before-failover")
    );
    let err = get_error(&cluster, primary, &key);
    assert_redirect(&err, "MOVED", cluster.port(replica), slot);
}

#[test]
fn migrate_slot_moves_a_slot_with_its_keys() {
    let mut cluster = cluster(3, 0);
    let keys: Vec<String> = (0..25).map(|i| format!("{{moving}}:{i}")).collect();
    let slot = cluster.keyslot(keys[0].as_bytes()).expect("keyslot");
    let from = cluster.primary_of_slot(slot).expect("owner");
    let to = (from + 1) % 3;
    for key in &keys {
        set(&cluster, from, key, key);
    }

    cluster.migrate_slot(slot, from, to).expect("migrate_slot");

    assert_eq!(cluster.primary_of_slot(slot).expect("owner"), to);
    for key in &keys {
        assert_eq!(get(&cluster, to, key).as_deref(), Some(key.as_str()));
        let err = get_error(&cluster, from, key);
        assert_redirect(&err, "MOVED", cluster.port(to), slot);
    }
    let third = 3 - from - to;
    let err = get_error(&cluster, third, &keys[0]);
    assert_redirect(&err, "MOVED", cluster.port(to), slot);
    let left: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(100)
        .query(&mut conn(&cluster, from))
        .expect("GETKEYSINSLOT");
    assert!(left.is_empty(), "keys left on the source: {left:?}");
}

#[test]
fn mid_migration_the_source_answers_ask_for_a_moved_key() {
    let mut cluster = cluster(3, 0);
    let keys: Vec<String> = (0..10).map(|i| format!("{{halfway}}:{i}")).collect();
    let slot = cluster.keyslot(keys[0].as_bytes()).expect("keyslot");
    let from = cluster.primary_of_slot(slot).expect("owner");
    let to = (from + 2) % 3;
    for key in &keys {
        set(&cluster, from, key, key);
    }

    cluster.begin_migration(slot, from, to).expect("begin");
    let moved = cluster
        .migrate_some_keys(slot, from, to, 4)
        .expect("some keys");
    assert_eq!(moved, 4);

    let mut asked = 0;
    for key in &keys {
        let mut source = conn(&cluster, from);
        match redis::cmd("GET")
            .arg(key)
            .query::<Option<String>>(&mut source)
        {
            // Not moved yet: the source still serves it.
            Ok(value) => assert_eq!(value.as_deref(), Some(key.as_str())),
            Err(err) => {
                assert_redirect(&err, "ASK", cluster.port(to), slot);
                // The target serves it after ASKING, as a client would.
                let mut target = conn(&cluster, to);
                let value: Option<String> = redis::pipe()
                    .cmd("ASKING")
                    .ignore()
                    .cmd("GET")
                    .arg(key)
                    .query::<(Option<String>,)>(&mut target)
                    .expect("ASKING GET")
                    .0;
                assert_eq!(value.as_deref(), Some(key.as_str()));
                asked += 1;
            }
        }
    }
    assert_eq!(asked, 4, "every moved key, and only those, is redirected");
    // Until the migration ends, the source still owns the slot.
    assert_eq!(cluster.primary_of_slot(slot).expect("owner"), from);

    cluster.finish_migration(slot, from, to).expect("finish");
    assert_eq!(cluster.primary_of_slot(slot).expect("owner"), to);
    for key in &keys {
        assert_eq!(get(&cluster, to, key).as_deref(), Some(key.as_str()));
    }
}

#[test]
fn a_stopped_primary_restarted_rejoins_with_its_id_and_the_cluster_is_ok_again() {
    // A shorter node timeout: the survivors must notice the stop.
    let mut cluster = cluster_with(
        3,
        0,
        ClusterOptions {
            node_timeout: Duration::from_millis(1000),
            ..ClusterOptions::default()
        },
    );
    let node = 1;
    let id = cluster.node_id(node).to_string();
    let key = key_owned_by(&mut cluster, node);
    let slot = cluster.keyslot(key.as_bytes()).expect("keyslot");

    cluster.node_mut(node).stop();
    common::wait_until(
        "the survivors to declare the cluster down",
        Duration::from_secs(20),
        || info_field(&cluster_info(&cluster, 0), "cluster_state").as_deref() == Some("fail"),
    );

    let started = Instant::now();
    cluster.node_mut(node).restart().expect("restart");
    cluster.wait_converged().expect("converged again");
    eprintln!(
        "restarted primary rejoined in {} ms",
        started.elapsed().as_millis()
    );

    let myid: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut conn(&cluster, node))
        .expect("MYID");
    assert_eq!(myid, id, "the restarted node came back as another node");
    for n in 0..3 {
        let info = cluster_info(&cluster, n);
        assert_eq!(info_field(&info, "cluster_state").as_deref(), Some("ok"));
    }
    assert_eq!(cluster.primary_of_slot(slot).expect("owner"), node);
    // Nothing persisted, so it is empty, but it serves its slots again.
    assert_eq!(get(&cluster, node, &key), None);
    set(&cluster, node, &key, "after-restart");
    assert_eq!(get(&cluster, node, &key).as_deref(), Some("after-restart"));
}

#[test]
fn dropping_the_cluster_frees_its_ports() {
    let cluster = cluster(2, 1);
    let ports: Vec<u16> = (0..cluster.len())
        .flat_map(|i| [cluster.port(i), cluster.bus_port(i)])
        .collect();
    for &port in &ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok(),
            "port {port} is not listening while the cluster runs"
        );
    }

    drop(cluster);

    for port in ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let err = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .expect_err("a dropped cluster's port still accepts connections");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{port}");
    }
}

#[test]
fn a_start_that_times_out_reports_every_nodes_log() {
    // No primary can say cluster_state:ok within 1 ms of starting.
    let err = ManagedCluster::start_with(
        3,
        0,
        ClusterOptions {
            converge_timeout: Duration::from_millis(1),
            ..ClusterOptions::default()
        },
    )
    .err()
    .expect("a 1 ms start cannot converge");
    let text = err.to_string();
    assert!(text.contains("not converged"), "{text}");
    for node in 0..3 {
        assert!(text.contains(&format!("--- node {node} ")), "{text}");
    }
    assert_eq!(
        text.matches("Ready to accept connections").count(),
        3,
        "every node's log, once: {text}"
    );
}

#[test]
fn a_stopped_primary_is_replaced_by_its_replica_and_rejoins_as_its_replica() {
    // Three primaries: electing a replacement takes a majority of them.
    let mut cluster = cluster_with(
        3,
        1,
        ClusterOptions {
            node_timeout: Duration::from_millis(1000),
            ..ClusterOptions::default()
        },
    );
    let (primary, replica) = (0, 3);
    let key = key_owned_by(&mut cluster, primary);
    let slot = cluster.keyslot(key.as_bytes()).expect("keyslot");
    set(&cluster, primary, &key, "kept");
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut conn(&cluster, primary))
        .expect("WAIT");
    assert_eq!(acked, 1, "the replica did not acknowledge the write");

    // The running nodes converge without it: its replica took its slots.
    cluster.node_mut(primary).stop();
    let stopped = Instant::now();
    cluster
        .wait_converged()
        .expect("converged without the primary");
    eprintln!("replica took over in {} ms", stopped.elapsed().as_millis());
    assert_eq!(cluster.role(replica).expect("role"), Role::Primary);
    assert_eq!(cluster.primary_of_slot(slot).expect("owner"), replica);
    assert_eq!(cluster.primaries().expect("primaries"), vec![1, 2, replica]);
    assert_eq!(get(&cluster, replica, &key).as_deref(), Some("kept"));

    // Back, with its old id, it follows the node that replaced it.
    let restarted = Instant::now();
    cluster.node_mut(primary).restart().expect("restart");
    cluster.wait_converged().expect("converged with it back");
    eprintln!(
        "old primary rejoined as a replica in {} ms",
        restarted.elapsed().as_millis()
    );
    assert_eq!(cluster.role(primary).expect("role"), Role::Replica);
    let info = info(&cluster, primary, "replication");
    assert_eq!(
        info_field(&info, "master_port"),
        Some(cluster.port(replica).to_string())
    );
    let err = get_error(&cluster, primary, &key);
    assert_redirect(&err, "MOVED", cluster.port(replica), slot);
}
