//! The string hash of Nim 2.2 (`std/hashes.hash(string)`), which nim-sds uses for bloom-filter
//! positions and SDS-R timing.
//!
//! Since Nim 2.2 a string hashes to Google FarmHash **Fingerprint64** of its bytes, reinterpreted
//! as a signed 64-bit integer. The `farmhash` crate provides Fingerprint64; the golden vectors
//! (`nim_hash.json`, all length branches of FarmHash) check the match.

/// `hash(s)` as Nim 2.2 computes it on 64-bit targets.
#[inline]
pub fn nim_hash(bytes: &[u8]) -> i64 {
    farmhash::fingerprint64(bytes) as i64
}

/// `hash(a & b)`: the hash of the concatenation, without allocating when it is short.
#[inline]
pub fn nim_hash_concat(a: &[u8], b: &[u8]) -> i64 {
    const STACK: usize = 256;
    let len = a.len() + b.len();
    if len <= STACK {
        let mut buf = [0u8; STACK];
        buf[..a.len()].copy_from_slice(a);
        buf[a.len()..len].copy_from_slice(b);
        nim_hash(&buf[..len])
    } else {
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(a);
        buf.extend_from_slice(b);
        nim_hash(&buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nim_pins() {
        // Values pinned by Nim's own test suite.
        assert_eq!(nim_hash(b"abracadabra"), -1119910118870047694);
        assert_eq!(nim_hash(b""), -7286425919675154353);
    }

    #[test]
    fn concat_equals_hash_of_concatenation() {
        let long = vec![b'x'; 300];
        for a in [&b""[..], b"msg-1", &long] {
            let mut joined = a.to_vec();
            joined.extend_from_slice(b" b");
            assert_eq!(nim_hash_concat(a, b" b"), nim_hash(&joined));
        }
    }
}
