//! The store's invariants under a seeded random mix of everything that can
//! happen to it: no immortal keys, streaming fields always expire, batch
//! fields never carry a field TTL.

use feature_store::demo::synth;
use feature_store::{FeatureMap, StoreConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common;

fn check_invariants(conn: &mut impl redis::ConnectionLike, step: &str) {
    let keys = common::all_keys(conn);
    for key in keys {
        assert!(
            key.starts_with("fs:user:"),
            "{step}: key outside the prefix: {key}"
        );
        common::check_entity_ttls(conn, &key, step, true);
    }
}

#[test]
fn a_random_mix_of_writes_deletes_and_flushes_keeps_every_invariant() {
    let redis = common::redis();
    let store = common::store_with(
        &redis,
        StoreConfig {
            chunk_size: 16,
            ..common::store_config()
        },
    );
    let mut conn = common::raw(&redis);
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut seen_short_expiry = false;
    for step in 0..300 {
        let label = format!("step {step}");
        match rng.gen_range(0..100) {
            // Bulk loads, a third of them with a 1-2 s TTL so keys expire
            // while the mix goes on.
            0..=14 => {
                let n = rng.gen_range(1..60);
                let ttl = if rng.gen_bool(0.33) {
                    rng.gen_range(1..=2)
                } else {
                    600
                };
                seen_short_expiry |= ttl < 3;
                let rows: Vec<_> = synth::users(n, rng.gen()).collect();
                let report = store.bulk_load(&rows, ttl).expect("bulk load");
                assert_eq!(report.written, n, "{label}");
            }
            // Streaming writes to existing and brand-new entities.
            15..=74 => {
                let events: Vec<(String, FeatureMap)> = (0..rng.gen_range(1..20))
                    .map(|_| {
                        let id = synth::user_id(rng.gen_range(1..90));
                        (id, synth::streaming_features(&mut rng, 1_700_000_000_000))
                    })
                    .collect();
                if rng.gen_bool(0.5) {
                    let report = store
                        .update_streaming_many(&events, rng.gen_range(1..=300))
                        .expect("stream");
                    assert_eq!(report.written, events.len(), "{label}");
                } else {
                    for (id, f) in &events {
                        store
                            .update_streaming(id, f, rng.gen_range(1..=300))
                            .expect("stream");
                    }
                }
            }
            // Single deletes (a retracted entity) and full resets.
            75..=84 => {
                let key = format!("fs:user:{}", synth::user_id(rng.gen_range(1..90)));
                redis::cmd("DEL")
                    .arg(key)
                    .query::<()>(&mut conn)
                    .expect("DEL");
            }
            85..=89 => {
                store.delete_all().expect("reset");
            }
            // The scripts vanish (SCRIPT FLUSH, as after a restart or failover).
            _ => {
                redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query::<()>(&mut conn)
                    .expect("SCRIPT FLUSH");
            }
        }
        check_invariants(&mut conn, &label);
    }
    assert!(seen_short_expiry, "the mix should include short TTLs");
}

#[test]
fn streaming_writes_racing_resets_never_leave_an_immortal_key() {
    let redis = common::redis();
    let store = common::store(&redis);
    let mut conn = common::raw(&redis);
    store
        .bulk_load(&synth::users(40, 1).collect::<Vec<_>>(), 600)
        .expect("load");
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut rng = StdRng::seed_from_u64(1);
            for _ in 0..200 {
                let id = synth::user_id(rng.gen_range(1..=40));
                store
                    .update_streaming(&id, &synth::streaming_features(&mut rng, 1), 60)
                    .expect("stream");
            }
        });
        let mut resets = 0;
        while !writer.is_finished() {
            store.delete_all().expect("reset");
            resets += 1;
        }
        assert!(resets > 0);
    });
    check_invariants(&mut conn, "after the race");
}
