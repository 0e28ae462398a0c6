//! The one integration-test crate: every test here talks to a real
//! `redis-server` it starts itself (see `common`), never to 6379.

mod common;

mod auth;
mod bench;
mod census;
mod cluster;
mod cluster_harness;
mod ensure_redis;
mod entities;
mod event_time;
mod feast;
mod freshness;
mod http_hostile;
mod invariants;
mod loader;
mod loader_event_time;
mod loader_registry;
mod observe;
mod operating_guide;
mod pacing;
mod push;
mod registry;
mod scripts;
mod server;
mod store;
mod tls_acl;
mod vectors;
mod vectors_max_age;
mod walkthrough;
