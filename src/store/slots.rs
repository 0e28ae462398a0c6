//! Redis Cluster's hash slots: which of the 16384 slots a key lives in
//! (CRC16/XMODEM of the key, or of its hash tag), and which key a command
//! is routed by.
//!
//! A hash tag is the part between the first `{` and the next `}` when it
//! is not empty: `fs:user:{tenant7}:u1` and `fs:user:{tenant7}:u2` share a
//! slot, so they can go in one script call on a cluster.

use redis::Cmd;

pub(crate) const SLOTS: usize = 16384;

/// The slot `key` lives in, as `CLUSTER KEYSLOT` says.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS as u16
}

/// The part of `key` that is hashed: its hash tag, or all of it.
fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// CRC16/XMODEM (polynomial 0x1021, no reflection, initial 0), bit by bit:
/// keys are short, and this is on the cluster path only.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The key a command is routed by: the first declared key of a script
/// call, the first argument of a key command, `None` for a command about
/// the server (TIME, PING, INFO, SCAN ...), which any node can answer.
pub(crate) fn routing_key(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().map(|a| match a {
        redis::Arg::Simple(bytes) => bytes,
        _ => &[][..],
    });
    let name = args.next()?;
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if [
        "EVALSHA",
        "EVAL",
        "EVALSHA_RO",
        "EVAL_RO",
        "FCALL",
        "FCALL_RO",
    ]
    .iter()
    .any(|n| is(n))
    {
        let _body = args.next()?;
        let numkeys = std::str::from_utf8(args.next()?).ok()?;
        return match numkeys.parse::<u64>() {
            Ok(n) if n > 0 => args.next(),
            _ => None,
        };
    }
    let keyless = [
        "TIME",
        "PING",
        "INFO",
        "DBSIZE",
        "RANDOMKEY",
        "SCAN",
        "SCRIPT",
        "CONFIG",
        "CLIENT",
        "CLUSTER",
        "ASKING",
        "COMMAND",
        "FLUSHALL",
        "FLUSHDB",
    ];
    if keyless.iter().any(|n| is(n)) {
        return None;
    }
    args.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_ones_redis_cluster_computes() {
        // The CRC16/XMODEM check value, and slots as `CLUSTER KEYSLOT` gives
        // them (the same keys the cluster specification works through).
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn a_hash_tag_puts_keys_in_one_slot() {
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"fs:user:{t7}:a"), key_slot(b"t7"));
        // The first `{` with a `}` after it counts; an empty tag does not.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{bar"), crc16(b"foo{bar") % 16384);
    }

    #[test]
    fn a_command_is_routed_by_its_first_key() {
        let mut c = redis::cmd("EVALSHA");
        c.arg("abc").arg(2).arg("k1").arg("k2").arg("x");
        assert_eq!(routing_key(&c), Some(&b"k1"[..]));
        let mut c = redis::cmd("evalsha");
        c.arg("abc").arg(0).arg("x");
        assert_eq!(routing_key(&c), None);
        let mut c = redis::cmd("HMGET");
        c.arg("fs:user:1").arg("f");
        assert_eq!(routing_key(&c), Some(&b"fs:user:1"[..]));
        assert_eq!(routing_key(&redis::cmd("TIME")), None);
        let mut c = redis::cmd("SCAN");
        c.arg(0);
        assert_eq!(routing_key(&c), None);
    }
}
