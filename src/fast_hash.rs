//! A fast, non-cryptographic hasher for the in-process maps on the write
//! path (feature name -> view, id -> rows seen in one call), whose keys are
//! short names and ids looked up per row: std's SipHash costs more there
//! than the rest of the look-up.
//!
//! The FxHash construction (rustc's): each 8-byte word is folded in with a
//! rotate, a xor and a multiply, and `finish` rotates the well-mixed high
//! bits down, where the table takes its bucket index from. Not resistant to
//! chosen collisions: use it only for maps whose keys an outsider does not
//! choose, or whose size is bounded so that a worst case stays cheap (each
//! user says which).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x517c_c1b7_2722_0a95;

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            self.add(u64::from_le_bytes(word));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length too: "a" and "a\0" differ.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash.rotate_left(26)
    }
}

pub(crate) type FxBuildHasher = BuildHasherDefault<FxHasher>;
pub(crate) type FxHashMap<K, V> = HashMap<K, V, FxBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    fn hash(s: &str) -> u64 {
        FxBuildHasher::default().hash_one(s)
    }

    #[test]
    fn distinct_short_keys_hash_apart_and_spread_over_buckets() {
        // Ids and names like the loader's: a shared prefix, a counter.
        let keys: Vec<String> = (0..100_000)
            .map(|n| format!("u{n:04}"))
            .chain((0..1000).map(|n| format!("feature_{n}")))
            .chain(["", "a", "a\0", "a\0\0", "ab", "ba"].map(String::from))
            .collect();
        let hashes: HashSet<u64> = keys.iter().map(|k| hash(k)).collect();
        assert_eq!(hashes.len(), keys.len(), "a collision");
        // The low bits pick the bucket: 1024 buckets, none far over its share.
        let mut buckets = vec![0u32; 1024];
        for h in &hashes {
            buckets[(h & 1023) as usize] += 1;
        }
        let mean = hashes.len() as f64 / 1024.0;
        let max = *buckets.iter().max().expect("buckets") as f64;
        assert!(max < 2.0 * mean, "max {max}, mean {mean}");
    }

    #[test]
    fn a_map_finds_what_it_holds() {
        let mut m: FxHashMap<&str, usize> = FxHashMap::default();
        for (i, k) in ["x", "y", "tx_count_7d", "tx_count_7d:"].iter().enumerate() {
            m.insert(k, i);
        }
        assert_eq!(m.get("tx_count_7d"), Some(&2));
        assert_eq!(m.get("tx_count_7d:"), Some(&3));
        assert_eq!(m.get("tx_count_7"), None);
    }
}
