//! SDS-R timing and response groups, nim-sds profile.
//!
//! H is the Nim string hash ([`crate::nim_hash`]); concatenation has no separator; `abs` is
//! two's-complement (it leaves `i64::MIN` negative) and `mod` truncates, as nim-sds computes
//! them. Every function is total: no input panics.

use crate::nim_hash::{nim_hash, nim_hash_concat};

/// Offset after which a missing message may be requested:
/// `T_min + |H(participant ‖ message)| mod (T_max − T_min)`, or `T_min` when the range is not
/// positive. Milliseconds.
pub fn t_req_offset(participant: &[u8], message_id: &[u8], t_min: i64, t_max: i64) -> i64 {
    let range = t_max.saturating_sub(t_min);
    if range <= 0 {
        return t_min;
    }
    let h = nim_hash_concat(participant, message_id).wrapping_abs();
    t_min.saturating_add(h.wrapping_rem(range))
}

/// Offset after which a requested message is rebroadcast:
/// `(|H(p) xor H(s)| mod T) · (|H(m)| mod T) mod T` with `T = T_max`, in unsigned 64-bit
/// arithmetic; 0 for the original sender (`p == s`, distance 0) or when `T ≤ 0`. Milliseconds.
pub fn t_resp_offset(participant: &[u8], sender: &[u8], message_id: &[u8], t_max: i64) -> i64 {
    if t_max <= 0 {
        return 0;
    }
    let distance = (nim_hash(participant) ^ nim_hash(sender)).unsigned_abs();
    if distance == 0 {
        return 0;
    }
    let t = t_max as u64;
    let mh = nim_hash(message_id).unsigned_abs();
    // Both factors are below T; for T below 2^32 ms (49 days) the product cannot wrap.
    let product = (distance % t).wrapping_mul(mh % t) % t;
    product as i64
}

/// Whether `participant` is in the response group of `sender`'s message `message_id`:
/// always with at most one group, else `|H(p ‖ m)| mod n == |H(s ‖ m)| mod n`. A sender is
/// always in its own group.
pub fn in_response_group(
    participant: &[u8],
    sender: &[u8],
    message_id: &[u8],
    groups: i64,
) -> bool {
    if groups <= 1 {
        return true;
    }
    let group = |who: &[u8]| nim_hash_concat(who, message_id).unsigned_abs() % groups as u64;
    group(participant) == group(sender)
}

/// SDS-R arithmetic of the spec wire profile (js-waku `@waku/sds`): H is the first 8 bytes of
/// SHA-256 of the UTF-8 string, read big-endian, over plain concatenations.
pub mod spec {
    use sha2::{Digest, Sha256};

    /// `H(s)`.
    pub fn hash(bytes: &[u8]) -> u64 {
        let digest = Sha256::digest(bytes);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }

    fn hash_concat(a: &[u8], b: &[u8]) -> u64 {
        let mut h = Sha256::new();
        h.update(a);
        h.update(b);
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }

    /// `H(p ‖ m) mod (T_max − T_min) + T_min`, or `T_min` when the range is not positive.
    pub fn t_req_offset(participant: &[u8], message_id: &[u8], t_min: u64, t_max: u64) -> u64 {
        let range = t_max.saturating_sub(t_min);
        if range == 0 {
            return t_min;
        }
        hash_concat(participant, message_id) % range + t_min
    }

    /// `((H(p) xor H(s)) · H(m)) mod T_max` with the full 128-bit product; 0 for the original
    /// sender or when `T_max` is 0.
    pub fn t_resp_offset(participant: &[u8], sender: &[u8], message_id: &[u8], t_max: u64) -> u64 {
        if t_max == 0 {
            return 0;
        }
        let distance = u128::from(hash(participant) ^ hash(sender));
        ((distance * u128::from(hash(message_id))) % u128::from(t_max)) as u64
    }

    /// Always with at most one group; else `H(p ‖ m) mod n == H(s ‖ m) mod n`.
    pub fn in_response_group(
        participant: &[u8],
        sender: &[u8],
        message_id: &[u8],
        groups: u64,
    ) -> bool {
        if groups <= 1 {
            return true;
        }
        hash_concat(participant, message_id) % groups == hash_concat(sender, message_id) % groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // REPAIR-01, REPAIR-02, REPAIR-03
    #[test]
    fn pinned_values() {
        assert_eq!(t_req_offset(b"alice", b"msg-1", 30_000, 300_000), 172_988);
        assert_eq!(t_req_offset(b"bob", b"msg-1", 30_000, 300_000), 150_784);
        assert_eq!(t_req_offset(b"carol", b"msg-1", 30_000, 300_000), 194_526);
        assert_eq!(t_req_offset(b"alice", b"msg-1", 5_000, 5_000), 5_000);
        assert_eq!(t_req_offset(b"alice", b"msg-1", 6_000, 5_000), 6_000);
        assert_eq!(t_resp_offset(b"alice", b"bob", b"msg-1", 300_000), 27_600);
        assert_eq!(t_resp_offset(b"bob", b"alice", b"msg-1", 300_000), 27_600);
        assert_eq!(t_resp_offset(b"carol", b"alice", b"msg-1", 300_000), 68_400);
        assert_eq!(t_resp_offset(b"alice", b"alice", b"msg-1", 300_000), 0);
        assert!(!in_response_group(b"carol", b"alice", b"msg-1", 3));
        assert!(!in_response_group(b"dave", b"bob", b"msg-2", 8));
        for n in -1..=10 {
            assert!(in_response_group(b"bob", b"bob", b"m", n));
        }
    }

    #[test]
    fn extreme_settings_do_not_panic() {
        for (lo, hi) in [(i64::MIN, i64::MAX), (i64::MAX, i64::MIN), (0, 1), (-5, 5)] {
            let _ = t_req_offset(b"p", b"m", lo, hi);
            let _ = t_resp_offset(b"p", b"s", b"m", hi);
        }
        let _ = in_response_group(b"p", b"s", b"m", i64::MAX);
    }
}
