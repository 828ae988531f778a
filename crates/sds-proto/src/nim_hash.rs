//! The string hash of Nim 2.2 (`std/hashes.hash(string)`), which nim-sds uses for bloom-filter
//! positions and SDS-R timing.
//!
//! Since Nim 2.2 a string hashes to Google FarmHash **Fingerprint64** of its bytes (the
//! `farmhashna` 64-bit function), reinterpreted as a signed 64-bit integer. It is implemented
//! here from the published algorithm; the golden vectors (`nim_hash.json`) cover every length
//! branch. (The `farmhash` crate was tried and rejected: its loop for inputs over 64 bytes runs
//! once too often when the length is a multiple of 64, so a 128-byte id hashed differently.)

const K0: u64 = 0xc3a5_c85c_97cb_3127;
const K1: u64 = 0xb492_b66f_be98_f273;
const K2: u64 = 0x9ae1_6a3b_2f90_404f;

#[inline]
fn fetch64(s: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(b)
}

#[inline]
fn fetch32(s: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&s[at..at + 4]);
    u64::from(u32::from_le_bytes(b))
}

#[inline]
fn shift_mix(v: u64) -> u64 {
    v ^ (v >> 47)
}

#[inline]
fn hash_len_16(u: u64, v: u64, mul: u64) -> u64 {
    let mut a = (u ^ v).wrapping_mul(mul);
    a ^= a >> 47;
    let mut b = (v ^ a).wrapping_mul(mul);
    b ^= b >> 47;
    b.wrapping_mul(mul)
}

fn hash_len_0_to_16(s: &[u8]) -> u64 {
    let len = s.len();
    if len >= 8 {
        let mul = K2.wrapping_add(len as u64 * 2);
        let a = fetch64(s, 0).wrapping_add(K2);
        let b = fetch64(s, len - 8);
        let c = b.rotate_right(37).wrapping_mul(mul).wrapping_add(a);
        let d = a.rotate_right(25).wrapping_add(b).wrapping_mul(mul);
        return hash_len_16(c, d, mul);
    }
    if len >= 4 {
        let mul = K2.wrapping_add(len as u64 * 2);
        let a = fetch32(s, 0);
        return hash_len_16((len as u64).wrapping_add(a << 3), fetch32(s, len - 4), mul);
    }
    if len > 0 {
        let a = u32::from(s[0]);
        let b = u32::from(s[len >> 1]);
        let c = u32::from(s[len - 1]);
        let y = a.wrapping_add(b << 8);
        let z = (len as u32).wrapping_add(c << 2);
        return shift_mix(u64::from(y).wrapping_mul(K2) ^ u64::from(z).wrapping_mul(K0))
            .wrapping_mul(K2);
    }
    K2
}

fn hash_len_17_to_32(s: &[u8]) -> u64 {
    let len = s.len();
    let mul = K2.wrapping_add(len as u64 * 2);
    let a = fetch64(s, 0).wrapping_mul(K1);
    let b = fetch64(s, 8);
    let c = fetch64(s, len - 8).wrapping_mul(mul);
    let d = fetch64(s, len - 16).wrapping_mul(K2);
    hash_len_16(
        a.wrapping_add(b)
            .rotate_right(43)
            .wrapping_add(c.rotate_right(30))
            .wrapping_add(d),
        a.wrapping_add(b.wrapping_add(K2).rotate_right(18))
            .wrapping_add(c),
        mul,
    )
}

fn hash_len_33_to_64(s: &[u8]) -> u64 {
    let len = s.len();
    let mul = K2.wrapping_add(len as u64 * 2);
    let a = fetch64(s, 0).wrapping_mul(K2);
    let b = fetch64(s, 8);
    let c = fetch64(s, len - 8).wrapping_mul(mul);
    let d = fetch64(s, len - 16).wrapping_mul(K2);
    let y = a
        .wrapping_add(b)
        .rotate_right(43)
        .wrapping_add(c.rotate_right(30))
        .wrapping_add(d);
    let z = hash_len_16(
        y,
        a.wrapping_add(b.wrapping_add(K2).rotate_right(18))
            .wrapping_add(c),
        mul,
    );
    let e = fetch64(s, 16).wrapping_mul(mul);
    let f = fetch64(s, 24);
    let g = y.wrapping_add(fetch64(s, len - 32)).wrapping_mul(mul);
    let h = z.wrapping_add(fetch64(s, len - 24)).wrapping_mul(mul);
    hash_len_16(
        e.wrapping_add(f)
            .rotate_right(43)
            .wrapping_add(g.rotate_right(30))
            .wrapping_add(h),
        e.wrapping_add(f.wrapping_add(a).rotate_right(18))
            .wrapping_add(g),
        mul,
    )
}

/// Mixes 32 bytes at `s[at..]` into the seeds `a`, `b`.
#[inline]
fn weak_hash_32(s: &[u8], at: usize, mut a: u64, mut b: u64) -> (u64, u64) {
    let w = fetch64(s, at);
    let x = fetch64(s, at + 8);
    let y = fetch64(s, at + 16);
    let z = fetch64(s, at + 24);
    a = a.wrapping_add(w);
    b = b.wrapping_add(a).wrapping_add(z).rotate_right(21);
    let c = a;
    a = a.wrapping_add(x).wrapping_add(y);
    b = b.wrapping_add(a.rotate_right(44));
    (a.wrapping_add(z), b.wrapping_add(c))
}

/// FarmHash Fingerprint64 (`farmhashna::Hash64`).
pub fn fingerprint64(s: &[u8]) -> u64 {
    let len = s.len();
    if len <= 16 {
        return hash_len_0_to_16(s);
    }
    if len <= 32 {
        return hash_len_17_to_32(s);
    }
    if len <= 64 {
        return hash_len_33_to_64(s);
    }
    const SEED: u64 = 81;
    let mut st = LongState {
        x: SEED,
        y: SEED.wrapping_mul(K1).wrapping_add(113),
        z: 0,
        v: (0, 0),
        w: (0, 0),
    };
    st.z = shift_mix(st.y.wrapping_mul(K2).wrapping_add(113)).wrapping_mul(K2);
    st.x = st.x.wrapping_mul(K2).wrapping_add(fetch64(s, 0));
    // Whole 64-byte blocks, leaving 1..=64 bytes for the final round over the last 64 bytes.
    for block in 0..(len - 1) / 64 {
        st.round(s, block * 64, K1, 1);
    }
    let mul = K1.wrapping_add((st.z & 0xff) << 1);
    st.w.0 = st.w.0.wrapping_add(((len - 1) & 63) as u64);
    st.v.0 = st.v.0.wrapping_add(st.w.0);
    st.w.0 = st.w.0.wrapping_add(st.v.0);
    st.round(s, len - 64, mul, 9);
    let LongState { x, y, z, v, w } = st;
    hash_len_16(
        hash_len_16(v.0, w.0, mul)
            .wrapping_add(shift_mix(y).wrapping_mul(K0))
            .wrapping_add(z),
        hash_len_16(v.1, w.1, mul).wrapping_add(x),
        mul,
    )
}

/// The 56 bytes of state of the long-input path.
struct LongState {
    x: u64,
    y: u64,
    z: u64,
    v: (u64, u64),
    w: (u64, u64),
}

impl LongState {
    /// One round over the 64 bytes at `s[at..]`. The block rounds use `mul = K1` and
    /// `factor = 1`; the final round its own multiplier and `factor = 9`.
    #[inline]
    fn round(&mut self, s: &[u8], at: usize, mul: u64, factor: u64) {
        self.x = self
            .x
            .wrapping_add(self.y)
            .wrapping_add(self.v.0)
            .wrapping_add(fetch64(s, at + 8))
            .rotate_right(37)
            .wrapping_mul(mul);
        self.y = self
            .y
            .wrapping_add(self.v.1)
            .wrapping_add(fetch64(s, at + 48))
            .rotate_right(42)
            .wrapping_mul(mul);
        self.x ^= self.w.1.wrapping_mul(factor);
        self.y = self
            .y
            .wrapping_add(self.v.0.wrapping_mul(factor))
            .wrapping_add(fetch64(s, at + 40));
        self.z = self
            .z
            .wrapping_add(self.w.0)
            .rotate_right(33)
            .wrapping_mul(mul);
        self.v = weak_hash_32(
            s,
            at,
            self.v.1.wrapping_mul(mul),
            self.x.wrapping_add(self.w.0),
        );
        self.w = weak_hash_32(
            s,
            at + 32,
            self.z.wrapping_add(self.w.1),
            self.y.wrapping_add(fetch64(s, at + 16)),
        );
        std::mem::swap(&mut self.z, &mut self.x);
    }
}

/// `hash(s)` as Nim 2.2 computes it on 64-bit targets.
#[inline]
pub fn nim_hash(bytes: &[u8]) -> i64 {
    fingerprint64(bytes) as i64
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

    /// Fingerprint64 of `(i * 7 + n) mod 251` for i < n, computed with PyPI `pyfarmhash`
    /// (Google's C++ FarmHash), at the lengths where the algorithm changes branch or block count.
    #[test]
    fn fingerprint64_matches_reference_at_every_block_boundary() {
        let expected: [(usize, u64); 27] = [
            (0, 11160318154034397263),
            (1, 5161771770385946686),
            (3, 4662423180930907492),
            (4, 13909349088106176104),
            (7, 17233423938440663304),
            (8, 12627020141284786728),
            (15, 3575310498258597009),
            (16, 9887023220782602712),
            (17, 16960068419638019727),
            (31, 12025085129596068594),
            (32, 3992320350721670009),
            (33, 5910987537513190125),
            (63, 6786460685822444671),
            (64, 9719393743865045798),
            (65, 3209512396189334845),
            (127, 3068020987706356438),
            (128, 9860653571417009732),
            (129, 11846919615297853605),
            (191, 5321145992251084674),
            (192, 5907484970344950490),
            (193, 3083099829521374350),
            (255, 688453027026919362),
            (256, 17859890848358529013),
            (257, 17262467076912598333),
            (511, 8019982304595597650),
            (512, 17436084322475218771),
            (640, 13659599081650969674),
        ];
        for (n, want) in expected {
            let input: Vec<u8> = (0..n).map(|i| ((i * 7 + n) % 251) as u8).collect();
            assert_eq!(fingerprint64(&input), want, "length {n}");
        }
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
