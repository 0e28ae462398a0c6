//! The one integration-test crate: every test here talks to a real
//! `redis-server` it starts itself (see `common`), never to 6379.

mod common;

mod scripts;
mod store;
mod invariants;
mod server;
mod loader;
mod bench;
