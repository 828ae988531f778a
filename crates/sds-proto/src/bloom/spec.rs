//! The bloom filter of the spec wire profile (js-waku `@waku/sds`): the same sizing and double
//! hashing as the nim-sds profile, with murmur3_32 (seed 0, read as a signed 32-bit value) as
//! the base hash, and a headerless serialization — the 64-bit words, each big-endian. A receiver
//! reads a filter with its own parameters, so a received filter must be at least as long as
//! ours.

use super::{BloomError, BloomParams};

/// murmur3_32 (x86) of `data` with `seed`.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h = (h ^ k)
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, &b) in tail.iter().enumerate() {
            k |= u32::from(b) << (8 * i);
        }
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The bytes @waku/sds hashes for an id: one byte per UTF-16 code unit (its low byte), which
/// equals the UTF-8 bytes for ASCII ids. Ids that are not UTF-8 are hashed as they are.
fn js_bytes(id: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(id) {
        Ok(s) if !s.is_ascii() => s.encode_utf16().map(|u| u as u8).collect(),
        _ => id.to_vec(),
    }
}

/// The two base hashes of an id in this profile: `|int32(murmur3(id))|` and
/// `|int32(murmur3(id ‖ " b"))|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecIdHashes {
    a: u64,
    b: u64,
}

impl SpecIdHashes {
    /// Hashes `id`.
    pub fn of(id: &[u8]) -> Self {
        let mut bytes = js_bytes(id);
        let a = u64::from((murmur3_32(&bytes, 0) as i32).unsigned_abs());
        bytes.extend_from_slice(b" b");
        let b = u64::from((murmur3_32(&bytes, 0) as i32).unsigned_abs());
        SpecIdHashes { a, b }
    }

    /// The `k` positions among `m_bits` (≥ 1): `(hA + i·hB) mod m` with `hA = a mod m`,
    /// `hB = b mod m`.
    pub fn positions(self, k: u32, m_bits: u64) -> impl Iterator<Item = u64> {
        let m = m_bits.max(1);
        let (ha, hb) = (self.a % m, self.b % m);
        (0..u64::from(k)).map(move |i| ha.wrapping_add(i.wrapping_mul(hb)) % m)
    }
}

/// A bloom filter of the spec profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecBloomFilter {
    k_hashes: u32,
    m_bits: u64,
    words: Vec<u64>,
}

impl SpecBloomFilter {
    /// An empty filter sized like @waku/sds's (`BloomParams` sizing).
    pub fn with_params(params: BloomParams) -> Self {
        SpecBloomFilter {
            k_hashes: params.k_hashes,
            m_bits: params.m_bits,
            words: vec![0; params.words()],
        }
    }

    /// Number of hash functions.
    pub fn k_hashes(&self) -> u32 {
        self.k_hashes
    }

    /// Number of bits.
    pub fn m_bits(&self) -> u64 {
        self.m_bits
    }

    /// The 64-bit words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Adds an id.
    pub fn insert(&mut self, id: &[u8]) {
        self.insert_hashes(SpecIdHashes::of(id));
    }

    /// [`insert`](Self::insert) with the id's hashes already computed.
    pub fn insert_hashes(&mut self, hashes: SpecIdHashes) {
        for p in hashes.positions(self.k_hashes, self.m_bits) {
            if let Some(w) = self.words.get_mut((p / 64) as usize) {
                *w |= 1 << (p % 64);
            }
        }
    }

    /// Whether the id may have been added.
    pub fn contains(&self, id: &[u8]) -> bool {
        self.contains_hashes(SpecIdHashes::of(id))
    }

    /// [`contains`](Self::contains) with the id's hashes already computed.
    pub fn contains_hashes(&self, hashes: SpecIdHashes) -> bool {
        hashes.positions(self.k_hashes, self.m_bits).all(|p| {
            self.words
                .get((p / 64) as usize)
                .is_some_and(|w| w & (1 << (p % 64)) != 0)
        })
    }

    /// The serialization: every word as 8 big-endian bytes, no header.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    /// Reads a received filter with our own `params` into an owned filter (see
    /// [`SpecFilterView::parse`] for the rules).
    pub fn from_bytes(bytes: &[u8], params: BloomParams) -> Result<Self, BloomError> {
        let view = SpecFilterView::parse(bytes, params)?;
        let mut filter = Self::with_params(params);
        for (i, w) in filter.words.iter_mut().enumerate() {
            *w = view.word(i);
        }
        Ok(filter)
    }
}

/// A received spec-profile filter read in place, with no copy. Such a filter has no header, so
/// it is read with our own parameters.
#[derive(Debug, Clone, Copy)]
pub struct SpecFilterView<'a> {
    bytes: &'a [u8],
    k_hashes: u32,
    m_bits: u64,
}

impl<'a> SpecFilterView<'a> {
    /// Validates `bytes` against `params`. Bytes beyond our word count are ignored; fewer bytes,
    /// or a length that is not whole words, is an error (@waku/sds throws there).
    pub fn parse(bytes: &'a [u8], params: BloomParams) -> Result<Self, BloomError> {
        if !bytes.len().is_multiple_of(8) {
            return Err(BloomError::NotWordAligned(bytes.len()));
        }
        let needed = params.words();
        if bytes.len() / 8 < needed {
            return Err(BloomError::WordCountMismatch {
                words: bytes.len() / 8,
                m_bits: params.m_bits,
                expected: needed as u64,
            });
        }
        Ok(SpecFilterView {
            bytes: &bytes[..needed * 8],
            k_hashes: params.k_hashes,
            m_bits: params.m_bits,
        })
    }

    /// Word `i` (big-endian); 0 past the end.
    fn word(&self, i: usize) -> u64 {
        let mut b = [0u8; 8];
        match self.bytes.get(i * 8..i * 8 + 8) {
            Some(chunk) => {
                b.copy_from_slice(chunk);
                u64::from_be_bytes(b)
            }
            None => 0,
        }
    }

    /// Whether the id may be in the filter.
    pub fn contains(&self, id: &[u8]) -> bool {
        self.contains_hashes(SpecIdHashes::of(id))
    }

    /// [`contains`](Self::contains) with the id's hashes already computed.
    pub fn contains_hashes(&self, hashes: SpecIdHashes) -> bool {
        hashes
            .positions(self.k_hashes, self.m_bits)
            .all(|p| self.word((p / 64) as usize) & (1 << (p % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_reference_values() {
        // Published murmur3_32 test values.
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"Hello, world!", 1234), 0xfaf6_cdb3);
    }

    #[test]
    fn short_or_ragged_received_filters_are_errors() {
        let params = BloomParams::optimal(100, 0.01).unwrap();
        assert!(SpecBloomFilter::from_bytes(&[0; 127], params).is_err());
        assert!(SpecBloomFilter::from_bytes(&[0; 120], params).is_err());
        let longer = SpecBloomFilter::from_bytes(&[0; 136], params).unwrap();
        assert_eq!(longer.words().len(), 16);
        assert!(SpecFilterView::parse(&[0; 127], params).is_err());
        assert!(SpecFilterView::parse(&[0; 120], params).is_err());
    }

    #[test]
    fn the_view_reads_what_the_owned_filter_holds() {
        let params = BloomParams::optimal(100, 0.01).unwrap();
        let mut f = SpecBloomFilter::with_params(params);
        for i in 0..40 {
            f.insert(format!("in-{i}").as_bytes());
        }
        let mut bytes = f.to_bytes();
        bytes.extend_from_slice(&[0xff; 16]); // extra words are ignored
        let view = SpecFilterView::parse(&bytes, params).unwrap();
        let owned = SpecBloomFilter::from_bytes(&bytes, params).unwrap();
        assert_eq!(owned, f);
        for i in 0..200 {
            let id = format!("in-{i}");
            assert_eq!(
                view.contains(id.as_bytes()),
                f.contains(id.as_bytes()),
                "{id}"
            );
        }
        assert!((0..40).all(|i| view.contains(format!("in-{i}").as_bytes())));
    }
}
