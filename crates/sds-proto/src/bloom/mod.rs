//! Bloom filters of the nim-sds profile.
//!
//! * Sizing: without `k`, bits per element = ⌈−ln p / ln² 2⌉ and k = round(ln 2 × bits); with
//!   `k`, the bits per element come from a published table ([`bits_per_element_for_k`]) unless
//!   forced.
//! * Positions (double hashing, Kirsch–Mitzenmacher): with H the Nim string hash,
//!   `hA = |H(id)| mod m`, `hB = |H(id ‖ " b")| mod m`, position i = `|hA + i·hB| mod m` for
//!   i < k, in wrapping two's-complement arithmetic. [`IdHashes`] holds the two base hashes, so a
//!   caller can compute them once per id and test any filter with them.
//! * Bits: bit p is bit `p mod 64` of word `p div 64`; there are `1 + m div 64` words, written
//!   as little-endian u64s — so bit p is simply bit `p mod 8` of byte `p div 8`, which is how
//!   the bits are kept in memory, ready to be copied onto the wire.
//! * Serialization: a nested protobuf message {1: words as little-endian u64 bytes, 2: capacity,
//!   3: trunc(error rate × 10⁶), 4: k, 5: m} ([`BloomFilter::serialize`]).
//!
//! Filters received from the wire are read in place with [`FilterView`], which validates every
//! header field and answers lookups straight from the received bytes.

mod rolling;
pub mod spec;
mod table;

use std::fmt;

pub use rolling::{
    NimKind, Rolling, RollingBloomFilter, RollingKind, SpecKind, SpecRollingBloomFilter,
};

use crate::nim_hash::{nim_hash, nim_hash_concat};
use crate::wire::pb::{self, Fields, Value};
use crate::wire::ProtoError;

/// Largest number of hash functions a filter may use (created or received). Bounds the work of
/// one lookup whatever a peer puts in its header.
pub const MAX_K: u32 = 64;

/// Largest filter this crate creates, in bits (2^32 bits = 512 MiB).
pub const MAX_CREATED_BITS: u64 = 1 << 32;

/// Why a filter could not be created or read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BloomError {
    /// The capacity must be at least 1.
    #[error("capacity must be at least 1, got {0}")]
    InvalidCapacity(i64),
    /// The error rate must be a number strictly between 0 and 1.
    #[error("error rate must be strictly between 0 and 1, got {0}")]
    InvalidErrorRate(f64),
    /// Without forced bits per element, `k` must be at most 12 (the table's rows).
    #[error("K must be <= 12 if forceNBitsPerElem is not also specified.")]
    KOutsideTable(u32),
    /// The table has no entry below the error rate for this `k` within 32 bits per element.
    #[error(
        "Specified value of k and error rate not achievable using less than 4 bytes / element."
    )]
    NotAchievable {
        /// The requested number of hash functions.
        k: u32,
        /// The requested error rate.
        error_rate: f64,
    },
    /// `k` is 0 or above [`MAX_K`].
    #[error("number of hash functions must be between 1 and {MAX_K}, got {0}")]
    InvalidK(u64),
    /// The filter would be larger than [`MAX_CREATED_BITS`].
    #[error("filter of capacity {capacity} with {bits_per_element} bits per element is too large")]
    TooLarge {
        /// Requested capacity.
        capacity: u64,
        /// Bits per element.
        bits_per_element: u64,
    },
    /// The serialized filter is not valid protobuf.
    #[error("malformed serialized filter: {0}")]
    Malformed(ProtoError),
    /// A serialized filter lacks one of its five fields.
    #[error("serialized filter lacks field {0}")]
    MissingField(u8),
    /// A header value does not fit in a signed 64-bit integer.
    #[error("serialized filter field {field} holds {value}, out of range")]
    ValueOutOfRange {
        /// Field number.
        field: u8,
        /// The value read.
        value: u64,
    },
    /// The header's bit count is zero.
    #[error("serialized filter has zero bits")]
    ZeroBits,
    /// The bit array's length is not a whole number of 64-bit words.
    #[error("serialized bit array of {0} bytes is not a whole number of 64-bit words")]
    NotWordAligned(usize),
    /// The number of words does not equal `1 + mBits div 64`.
    #[error("serialized filter has {words} words, but {m_bits} bits need {expected}")]
    WordCountMismatch {
        /// Words present.
        words: usize,
        /// Bits in the header.
        m_bits: u64,
        /// Words the header implies.
        expected: u64,
    },
    /// The header's capacity is zero.
    #[error("serialized filter has zero capacity")]
    ZeroCapacity,
    /// The header's error-rate field is 0 or at least 10⁶ (a rate of 0 or ≥ 1).
    #[error("serialized filter has error-rate field {0}, outside 1..1000000")]
    InvalidErrorRateField(u64),
}

impl From<ProtoError> for BloomError {
    fn from(e: ProtoError) -> Self {
        BloomError::Malformed(e)
    }
}

/// The two Nim string hashes of an id from which all its bit positions derive: `H(id)` and
/// `H(id ‖ " b")`. They do not depend on the filter's size, so they can be computed once per id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdHashes {
    a: i64,
    b: i64,
}

impl IdHashes {
    /// Hashes `id`.
    #[inline]
    pub fn of(id: &[u8]) -> Self {
        IdHashes {
            a: nim_hash(id),
            b: nim_hash_concat(id, b" b"),
        }
    }

    /// The `k` bit positions of the id in a filter of `m_bits` bits, with duplicates kept.
    /// `m_bits` is taken as at least 1 and at most `i64::MAX`.
    #[inline]
    pub fn positions(self, k: u32, m_bits: u64) -> impl Iterator<Item = u64> {
        let m = m_bits.clamp(1, i64::MAX as u64) as i64;
        let m_unsigned = m as u64;
        // nim-sds computes with overflow checks off: `abs` of i64::MIN stays negative and `mod`
        // keeps the dividend's sign. Wrapping operations reproduce that exactly.
        let ha = self.a.wrapping_abs() % m;
        let hb = self.b.wrapping_abs() % m;
        (0..i64::from(k)).map(move |i| {
            // Only i64::MIN has no positive absolute value; nim-sds would index out of bounds
            // there, `unsigned_abs` keeps the position in range.
            ha.wrapping_add(i.wrapping_mul(hb)).unsigned_abs() % m_unsigned
        })
    }
}

/// nim-sds's `hashN(item, n, maxValue)`: the n-th bit position of `item` among `max_value` bits.
///
/// Returns `None` when `max_value` is 0 (nim-sds divides by zero there).
pub fn hash_n(item: &[u8], n: u32, max_value: u64) -> Option<u64> {
    if max_value == 0 || max_value > i64::MAX as u64 {
        return None;
    }
    IdHashes::of(item)
        .positions(n.checked_add(1)?, max_value)
        .last()
}

/// The bits per element nim-sds uses for a given `k` and target error rate: the first entry of
/// at least 2 in the table row for `k` whose false-positive rate is below `error_rate`.
pub fn bits_per_element_for_k(k: u32, error_rate: f64) -> Result<u32, BloomError> {
    let row = table::K_ERRORS
        .get(k as usize)
        .ok_or(BloomError::KOutsideTable(k))?;
    row.iter()
        .enumerate()
        .skip(2)
        .find(|(_, &rate)| rate < error_rate)
        .map(|(m_over_n, _)| m_over_n as u32)
        .ok_or(BloomError::NotAchievable { k, error_rate })
}

/// The sizing of a filter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BloomParams {
    /// Number of elements the filter is sized for.
    pub capacity: u64,
    /// Target false-positive rate.
    pub error_rate: f64,
    /// Number of hash functions.
    pub k_hashes: u32,
    /// Number of bits.
    pub m_bits: u64,
}

impl BloomParams {
    /// The sizing nim-sds's `initializeBloomFilter(capacity, errorRate)` picks: optimal `k`.
    pub fn optimal(capacity: i64, error_rate: f64) -> Result<Self, BloomError> {
        Self::with_k(capacity, error_rate, 0, 0)
    }

    /// The sizing of `initializeBloomFilter(capacity, errorRate, k, forceNBitsPerElem)`: `k` = 0
    /// means optimal; otherwise bits per element are `force_bits_per_element` when ≥ 1, else
    /// looked up with [`bits_per_element_for_k`].
    pub fn with_k(
        capacity: i64,
        error_rate: f64,
        k: u32,
        force_bits_per_element: u32,
    ) -> Result<Self, BloomError> {
        if capacity < 1 {
            return Err(BloomError::InvalidCapacity(capacity));
        }
        if !(error_rate > 0.0 && error_rate < 1.0) {
            return Err(BloomError::InvalidErrorRate(error_rate));
        }
        let (k_hashes, bits_per_element) = if k == 0 {
            let ln2 = 2f64.ln();
            let bits = (-(error_rate.ln() / ln2.powi(2))).ceil();
            ((ln2 * bits).round() as u64, bits as u64)
        } else if force_bits_per_element >= 1 {
            (u64::from(k), u64::from(force_bits_per_element))
        } else {
            (
                u64::from(k),
                u64::from(bits_per_element_for_k(k, error_rate)?),
            )
        };
        if k_hashes == 0 || k_hashes > u64::from(MAX_K) {
            return Err(BloomError::InvalidK(k_hashes));
        }
        let capacity = capacity as u64;
        let m_bits = capacity
            .checked_mul(bits_per_element)
            .filter(|&m| m <= MAX_CREATED_BITS)
            .ok_or(BloomError::TooLarge {
                capacity,
                bits_per_element,
            })?;
        Ok(BloomParams {
            capacity,
            error_rate,
            k_hashes: k_hashes as u32,
            m_bits,
        })
    }

    /// Number of 64-bit words: `1 + m div 64` (there is always a spare word, as in nim-sds).
    pub fn words(&self) -> usize {
        (1 + self.m_bits / 64) as usize
    }

    /// The error-rate field of the serialization: trunc(error rate × 10⁶).
    pub fn error_rate_field(&self) -> u64 {
        (self.error_rate * 1_000_000.0) as u64
    }
}

/// A bloom filter of the nim-sds profile.
#[derive(Debug, Clone, PartialEq)]
pub struct BloomFilter {
    params: BloomParams,
    /// The bit array in its serialized form: 64-bit words as little-endian bytes.
    bits: Vec<u8>,
}

impl BloomFilter {
    /// An empty filter with optimal `k` (nim-sds `initializeBloomFilter(capacity, errorRate)`).
    pub fn new(capacity: i64, error_rate: f64) -> Result<Self, BloomError> {
        Ok(Self::with_params(BloomParams::optimal(
            capacity, error_rate,
        )?))
    }

    /// An empty filter with the given sizing.
    pub fn with_params(params: BloomParams) -> Self {
        BloomFilter {
            bits: vec![0; params.words() * 8],
            params,
        }
    }

    /// The filter's sizing.
    pub fn params(&self) -> &BloomParams {
        &self.params
    }

    /// Capacity the filter was sized for.
    pub fn capacity(&self) -> u64 {
        self.params.capacity
    }

    /// Target false-positive rate.
    pub fn error_rate(&self) -> f64 {
        self.params.error_rate
    }

    /// Number of hash functions.
    pub fn k_hashes(&self) -> u32 {
        self.params.k_hashes
    }

    /// Number of bits.
    pub fn m_bits(&self) -> u64 {
        self.params.m_bits
    }

    /// Number of 64-bit words in the bit array.
    pub fn word_count(&self) -> usize {
        self.bits.len() / 8
    }

    /// The bit array as serialized: 64-bit little-endian words (bit p is bit `p mod 8` of byte
    /// `p div 8`).
    pub fn bit_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> u64 {
        self.bits.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    /// Adds an id.
    pub fn insert(&mut self, id: &[u8]) {
        self.insert_hashes(IdHashes::of(id));
    }

    /// Adds an id given its precomputed hashes.
    pub fn insert_hashes(&mut self, hashes: IdHashes) {
        for p in hashes.positions(self.params.k_hashes, self.params.m_bits) {
            // p < m_bits < 64 × words, so the index is in range.
            if let Some(byte) = self.bits.get_mut((p / 8) as usize) {
                *byte |= 1 << (p % 8);
            }
        }
    }

    /// Whether the id may have been added (never false for an added id).
    pub fn contains(&self, id: &[u8]) -> bool {
        self.contains_hashes(IdHashes::of(id))
    }

    /// [`contains`](Self::contains) with precomputed hashes.
    pub fn contains_hashes(&self, hashes: IdHashes) -> bool {
        hashes
            .positions(self.params.k_hashes, self.params.m_bits)
            .all(|p| {
                self.bits
                    .get((p / 8) as usize)
                    .is_some_and(|byte| byte & (1 << (p % 8)) != 0)
            })
    }

    /// Clears every bit.
    pub fn clear(&mut self) {
        self.bits.fill(0);
    }

    /// Size of [`serialize`](Self::serialize)'s output.
    pub fn serialized_len(&self) -> usize {
        let p = &self.params;
        pb::bytes_field_len(1, self.bits.len())
            + pb::varint_field_len(2, p.capacity)
            + pb::varint_field_len(3, p.error_rate_field())
            + pb::varint_field_len(4, u64::from(p.k_hashes))
            + pb::varint_field_len(5, p.m_bits)
    }

    /// The serialization nim-sds's `serializeBloomFilter` produces.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.serialized_len());
        self.serialize_into(&mut out);
        out
    }

    /// Appends the serialization to `out`.
    pub fn serialize_into(&self, out: &mut Vec<u8>) {
        let p = &self.params;
        out.reserve(self.serialized_len());
        pb::put_bytes_field(out, 1, &self.bits);
        pb::put_varint_field(out, 2, p.capacity);
        pb::put_varint_field(out, 3, p.error_rate_field());
        pb::put_varint_field(out, 4, u64::from(p.k_hashes));
        pb::put_varint_field(out, 5, p.m_bits);
    }

    /// Reads a serialized filter into an owned one, after the checks of [`FilterView::parse`].
    pub fn deserialize(bytes: &[u8]) -> Result<Self, BloomError> {
        FilterView::parse(bytes).map(|v| v.to_filter())
    }
}

/// `$bf` of nim-sds: "Bloom filter with 10000 capacity, 1.0e-03 error rate, 10 hash functions,
/// and requiring 15 bits of memory."
impl fmt::Display for BloomFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.params;
        write!(
            f,
            "Bloom filter with {} capacity, {} error rate, {} hash functions, and requiring {} bits of memory.",
            p.capacity,
            c_scientific(p.error_rate),
            p.k_hashes,
            p.m_bits / p.capacity.max(1)
        )
    }
}

/// `printf("%.1e")`: one decimal, exponent with a sign and at least two digits.
fn c_scientific(x: f64) -> String {
    let s = format!("{x:.1e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// A serialized filter read in place: header validated, lookups answered from the bytes it was
/// parsed from, with no allocation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterView<'a> {
    bits: &'a [u8],
    capacity: u64,
    error_rate_field: u64,
    k_hashes: u32,
    m_bits: u64,
}

impl<'a> FilterView<'a> {
    /// Parses and validates a serialized filter.
    ///
    /// Field lookup follows nim-sds (last occurrence wins, wrong wire types are skipped, all five
    /// fields required). On top of that every header value is checked, so that no lookup can
    /// index outside the bit array or do unbounded work: m ≥ 1, the bit array a whole number of
    /// words equal to `1 + m div 64`, 1 ≤ k ≤ [`MAX_K`], capacity ≥ 1, error-rate field in
    /// 1..10⁶, every value below 2^63.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BloomError> {
        let mut bits = None;
        let mut ints: [Option<u64>; 4] = [None; 4];
        for field in Fields::new(bytes) {
            match field? {
                (1, Value::Len(b)) => bits = Some(b),
                (n @ 2..=5, Value::Varint(v)) => ints[(n - 2) as usize] = Some(v),
                _ => {}
            }
        }
        let bits = bits.ok_or(BloomError::MissingField(1))?;
        let mut vals = [0u64; 4];
        for (i, v) in ints.iter().enumerate() {
            let field = i as u8 + 2;
            let v = v.ok_or(BloomError::MissingField(field))?;
            if v > i64::MAX as u64 {
                return Err(BloomError::ValueOutOfRange { field, value: v });
            }
            vals[i] = v;
        }
        let [capacity, error_rate_field, k, m_bits] = vals;
        if m_bits == 0 {
            return Err(BloomError::ZeroBits);
        }
        if bits.len() % 8 != 0 {
            return Err(BloomError::NotWordAligned(bits.len()));
        }
        let expected = 1 + m_bits / 64;
        if (bits.len() / 8) as u64 != expected {
            return Err(BloomError::WordCountMismatch {
                words: bits.len() / 8,
                m_bits,
                expected,
            });
        }
        if k == 0 || k > u64::from(MAX_K) {
            return Err(BloomError::InvalidK(k));
        }
        if capacity == 0 {
            return Err(BloomError::ZeroCapacity);
        }
        if error_rate_field == 0 || error_rate_field >= 1_000_000 {
            return Err(BloomError::InvalidErrorRateField(error_rate_field));
        }
        Ok(FilterView {
            bits,
            capacity,
            error_rate_field,
            k_hashes: k as u32,
            m_bits,
        })
    }

    /// Whether the id may be in the filter.
    pub fn contains(&self, id: &[u8]) -> bool {
        self.contains_hashes(IdHashes::of(id))
    }

    /// [`contains`](Self::contains) with precomputed hashes.
    pub fn contains_hashes(&self, hashes: IdHashes) -> bool {
        hashes.positions(self.k_hashes, self.m_bits).all(|p| {
            self.bits
                .get((p / 8) as usize)
                .is_some_and(|byte| byte & (1 << (p % 8)) != 0)
        })
    }

    /// Capacity from the header.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Error rate from the header (field 3 / 10⁶).
    pub fn error_rate(&self) -> f64 {
        self.error_rate_field as f64 / 1_000_000.0
    }

    /// Number of hash functions from the header.
    pub fn k_hashes(&self) -> u32 {
        self.k_hashes
    }

    /// Number of bits from the header.
    pub fn m_bits(&self) -> u64 {
        self.m_bits
    }

    /// The bit array: 64-bit little-endian words.
    pub fn bit_bytes(&self) -> &'a [u8] {
        self.bits
    }

    /// An owned copy.
    pub fn to_filter(&self) -> BloomFilter {
        BloomFilter {
            params: BloomParams {
                capacity: self.capacity,
                error_rate: self.error_rate(),
                k_hashes: self.k_hashes,
                m_bits: self.m_bits,
            },
            bits: self.bits.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // BLOOM-01, BLOOM-02
    #[test]
    fn sizing() {
        let p = BloomParams::optimal(10_000, 0.001).unwrap();
        assert_eq!((p.k_hashes, p.m_bits, p.words()), (10, 150_000, 2344));
        let p = BloomParams::optimal(1, 0.0001).unwrap();
        assert_eq!((p.k_hashes, p.m_bits), (14, 20));
        let p = BloomParams::with_k(10_000, 0.001, 4, 20).unwrap();
        assert_eq!(p.m_bits, 200_000);
        assert_eq!(bits_per_element_for_k(2, 0.1), Ok(6));
        assert_eq!(bits_per_element_for_k(7, 0.01), Ok(10));
        assert_eq!(bits_per_element_for_k(7, 0.001), Ok(16));
        assert_eq!(
            bits_per_element_for_k(13, 0.01),
            Err(BloomError::KOutsideTable(13))
        );
        assert!(matches!(
            bits_per_element_for_k(2, 0.00001),
            Err(BloomError::NotAchievable { .. })
        ));
        assert!(BloomParams::optimal(0, 0.01).is_err());
        assert!(BloomParams::optimal(10, 0.0).is_err());
        assert!(BloomParams::optimal(10, 1.0).is_err());
        assert!(BloomParams::optimal(10, f64::NAN).is_err());
        assert!(BloomParams::optimal(i64::MAX, 0.01).is_err());
    }

    #[test]
    fn display_matches_nim() {
        let bf = BloomFilter::new(10_000, 0.001).unwrap();
        assert_eq!(
            bf.to_string(),
            "Bloom filter with 10000 capacity, 1.0e-03 error rate, 10 hash functions, and requiring 15 bits of memory."
        );
    }

    fn header(bits: usize, cap: u64, err: u64, k: u64, m: u64) -> Vec<u8> {
        let mut out = Vec::new();
        pb::put_bytes_field(&mut out, 1, &vec![0u8; bits]);
        pb::put_varint_field(&mut out, 2, cap);
        pb::put_varint_field(&mut out, 3, err);
        pb::put_varint_field(&mut out, 4, k);
        pb::put_varint_field(&mut out, 5, m);
        out
    }

    // HOSTILE-01, HOSTILE-02, HOSTILE-03
    #[test]
    fn hostile_headers_are_typed_errors() {
        assert!(FilterView::parse(&header(16, 10, 10_000, 7, 100)).is_ok());
        let cases = [
            (header(8, 10, 10_000, 7, 0), BloomError::ZeroBits),
            (
                header(16, 10, 10_000, 7, 1000),
                BloomError::WordCountMismatch {
                    words: 2,
                    m_bits: 1000,
                    expected: 16,
                },
            ),
            (
                header(15, 10, 10_000, 7, 100),
                BloomError::NotWordAligned(15),
            ),
            (header(16, 10, 10_000, 0, 100), BloomError::InvalidK(0)),
            (
                header(16, 10, 10_000, 1 << 40, 100),
                BloomError::InvalidK(1 << 40),
            ),
            (header(16, 0, 10_000, 7, 100), BloomError::ZeroCapacity),
            (
                header(16, 10, 0, 7, 100),
                BloomError::InvalidErrorRateField(0),
            ),
            (
                header(16, 10, 1_000_000, 7, 100),
                BloomError::InvalidErrorRateField(1_000_000),
            ),
            (
                header(16, 10, 10_000, 7, u64::MAX),
                BloomError::ValueOutOfRange {
                    field: 5,
                    value: u64::MAX,
                },
            ),
            (Vec::new(), BloomError::MissingField(1)),
            (vec![0x0a], BloomError::Malformed(ProtoError::VarintDecode)),
        ];
        for (bytes, err) in cases {
            assert_eq!(FilterView::parse(&bytes), Err(err));
        }
    }

    #[test]
    fn view_and_owned_filter_agree() {
        let mut bf = BloomFilter::new(100, 0.01).unwrap();
        for i in 0..50 {
            bf.insert(format!("in-{i}").as_bytes());
        }
        let bytes = bf.serialize();
        assert_eq!(bytes.len(), bf.serialized_len());
        let view = FilterView::parse(&bytes).unwrap();
        for i in 0..200 {
            let id = format!("probe-{i}");
            assert_eq!(view.contains(id.as_bytes()), bf.contains(id.as_bytes()));
        }
        assert_eq!(BloomFilter::deserialize(&bytes).unwrap(), bf);
    }

    #[test]
    fn positions_never_leave_the_filter_even_at_extreme_hashes() {
        for (a, b) in [(i64::MIN, i64::MIN), (i64::MIN, 1), (i64::MAX, i64::MIN)] {
            let h = IdHashes { a, b };
            for m in [1u64, 7, 64, 150_000, i64::MAX as u64] {
                assert!(h.positions(MAX_K, m).all(|p| p < m));
            }
        }
    }
}
