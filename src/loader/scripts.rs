//! `fs-loader scripts [--load]`: the scripts' names, SHA1s and contracts,
//! and loading them so `redis-cli EVALSHA <sha> ...` works by hand.

use std::io::Write;

use super::args::CommonArgs;
use super::error::LoaderError;
use super::IO_TIMEOUT;
use crate::pool::PoolConfig;
use crate::scripts;
use crate::{FeatureStore, StoreConfig};

pub fn run(common: &CommonArgs, load: bool) -> Result<(), LoaderError> {
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) is not an error worth a status.
    for script in scripts::all() {
        let _ = writeln!(out, "{}  sha1 {}", script.name, script.sha());
        for line in script.contract().lines() {
            let _ = writeln!(out, "    {line}");
        }
        let _ = writeln!(out);
    }
    if !load {
        return Ok(());
    }
    let store = FeatureStore::open(
        &common.redis_url,
        StoreConfig {
            pool: PoolConfig {
                max_size: 1,
                connect_timeout: common.connect_timeout(),
                io_timeout: IO_TIMEOUT,
                checkout_timeout: common.connect_timeout(),
                tls: common.tls.load()?,
            },
            ..StoreConfig::default()
        },
    )?;
    for (name, sha) in store.load_scripts()? {
        let _ = writeln!(out, "loaded {name}  {sha}");
    }
    Ok(())
}
