//! Rolling bloom filters: filters of recent ids that forget old ones, for either profile.

use std::collections::VecDeque;
use std::fmt::Debug;

use super::spec::{SpecBloomFilter, SpecIdHashes};
use super::{BloomError, BloomFilter, BloomParams, IdHashes};
use crate::id::MessageId;

/// The filter family a [`Rolling`] filter is made of.
pub trait RollingKind: Debug + Clone {
    /// An id's precomputed hashes.
    type Hashes: Copy + Debug;
    /// The filter.
    type Filter: Clone + Debug;
    /// Hashes an id.
    fn hashes(id: &[u8]) -> Self::Hashes;
    /// An empty filter.
    fn empty(params: BloomParams) -> Self::Filter;
    /// Adds hashed id.
    fn insert(filter: &mut Self::Filter, hashes: Self::Hashes);
    /// Whether a hashed id may be in the filter.
    fn contains(filter: &Self::Filter, hashes: Self::Hashes) -> bool;
    /// The parameters of a rebuilt filter, given the initial ones and those sized for the
    /// upper bound.
    fn rebuild_params(initial: BloomParams, at_max: BloomParams) -> BloomParams;
}

/// The nim-sds filter: a rebuild grows the filter to the upper bound's size (its header says so).
#[derive(Debug, Clone, Copy)]
pub struct NimKind;

impl RollingKind for NimKind {
    type Hashes = IdHashes;
    type Filter = BloomFilter;
    fn hashes(id: &[u8]) -> IdHashes {
        IdHashes::of(id)
    }
    fn empty(params: BloomParams) -> BloomFilter {
        BloomFilter::with_params(params)
    }
    fn insert(filter: &mut BloomFilter, hashes: IdHashes) {
        filter.insert_hashes(hashes);
    }
    fn contains(filter: &BloomFilter, hashes: IdHashes) -> bool {
        filter.contains_hashes(hashes)
    }
    fn rebuild_params(_initial: BloomParams, at_max: BloomParams) -> BloomParams {
        at_max
    }
}

/// The spec-profile filter: it carries no header, so receivers read it with their own fixed
/// parameters, and a rebuild keeps the initial size (a grown filter would be misread).
#[derive(Debug, Clone, Copy)]
pub struct SpecKind;

impl RollingKind for SpecKind {
    type Hashes = SpecIdHashes;
    type Filter = SpecBloomFilter;
    fn hashes(id: &[u8]) -> SpecIdHashes {
        SpecIdHashes::of(id)
    }
    fn empty(params: BloomParams) -> SpecBloomFilter {
        SpecBloomFilter::with_params(params)
    }
    fn insert(filter: &mut SpecBloomFilter, hashes: SpecIdHashes) {
        filter.insert_hashes(hashes);
    }
    fn contains(filter: &SpecBloomFilter, hashes: SpecIdHashes) -> bool {
        filter.contains_hashes(hashes)
    }
    fn rebuild_params(initial: BloomParams, _at_max: BloomParams) -> BloomParams {
        initial
    }
}

/// The rolling filter of the nim-sds profile.
pub type RollingBloomFilter = Rolling<NimKind>;
/// The rolling filter of the spec profile (@waku/sds itself never forgets; the spec says a
/// filter SHOULD roll over).
pub type SpecRollingBloomFilter = Rolling<SpecKind>;

/// Capacity used when the requested one is not positive (nim-sds `DefaultBloomFilterCapacity`).
pub const DEFAULT_CAPACITY: i64 = 10_000;
/// Error rate used when the requested one is not in (0, 1) (nim-sds
/// `DefaultBloomFilterErrorRate`).
pub const DEFAULT_ERROR_RATE: f64 = 0.001;

/// A bloom filter over the most recent ids, with the policy of nim-sds:
///
/// * bounds `min = trunc(0.8 × capacity)` and `max = trunc(1.2 × capacity)`;
/// * every [`add`](Self::add) inserts the id and appends it to the id list; when the list grows
///   above `max`, the filter is rebuilt from the newest `min` ids, and older ids are forgotten.
///   The nim-sds filter is rebuilt with capacity **`max`** (so the serialized header's capacity
///   changes); the spec filter keeps its size ([`RollingKind::rebuild_params`]).
///
/// Each id's two base hashes are kept next to it, so a rebuild hashes nothing again.
#[derive(Debug, Clone)]
pub struct Rolling<K: RollingKind> {
    filter: K::Filter,
    initial: BloomParams,
    capacity: u64,
    min_capacity: usize,
    max_capacity: usize,
    rebuild: BloomParams,
    ids: VecDeque<(MessageId, K::Hashes)>,
}

impl<K: RollingKind> Rolling<K> {
    /// A filter for `capacity` ids at `error_rate`; a capacity ≤ 0 is replaced by the default
    /// capacity (10,000) and an error rate outside (0, 1) by the default rate (0.001), as nim-sds
    /// does. Fails only when the filter would be too large.
    pub fn new(capacity: i64, error_rate: f64) -> Result<Self, BloomError> {
        let capacity = if capacity <= 0 {
            DEFAULT_CAPACITY
        } else {
            capacity
        };
        let error_rate = if error_rate > 0.0 && error_rate < 1.0 {
            error_rate
        } else {
            DEFAULT_ERROR_RATE
        };
        let params = BloomParams::optimal(capacity, error_rate)?;
        let min_capacity = (capacity as f64 * 0.8) as usize;
        let max_capacity = (capacity as f64 * 1.2) as usize;
        let at_max = BloomParams::optimal(max_capacity.max(1) as i64, error_rate)?;
        Ok(Rolling {
            filter: K::empty(params),
            initial: params,
            capacity: params.capacity,
            min_capacity,
            max_capacity,
            rebuild: K::rebuild_params(params, at_max),
            ids: VecDeque::with_capacity(max_capacity.min(1 << 16) + 1),
        })
    }

    /// Adds an id; returns whether the add triggered a rebuild.
    pub fn add(&mut self, id: MessageId) -> bool {
        let hashes = K::hashes(id.as_bytes());
        self.add_hashed(id, hashes)
    }

    /// [`add`](Self::add) with the id's hashes already computed.
    pub fn add_hashed(&mut self, id: MessageId, hashes: K::Hashes) -> bool {
        K::insert(&mut self.filter, hashes);
        self.ids.push_back((id, hashes));
        if self.ids.len() > self.max_capacity {
            self.clean();
            true
        } else {
            false
        }
    }

    /// Rebuilds the filter from the newest `min` ids if the id list is above `max`; does nothing
    /// otherwise.
    pub fn clean(&mut self) {
        if self.ids.len() <= self.max_capacity {
            return;
        }
        let drop = self.ids.len() - self.min_capacity;
        self.ids.drain(..drop);
        let mut filter = K::empty(self.rebuild);
        for &(_, hashes) in &self.ids {
            K::insert(&mut filter, hashes);
        }
        self.filter = filter;
    }

    /// Whether the id may be among the recent ids.
    pub fn contains(&self, id: &[u8]) -> bool {
        K::contains(&self.filter, K::hashes(id))
    }

    /// [`contains`](Self::contains) with precomputed hashes.
    pub fn contains_hashes(&self, hashes: K::Hashes) -> bool {
        K::contains(&self.filter, hashes)
    }

    /// The current filter (what goes on the wire).
    pub fn filter(&self) -> &K::Filter {
        &self.filter
    }

    /// The parameters the filter was created with (after the fallbacks of [`new`](Self::new)).
    pub fn initial_params(&self) -> BloomParams {
        self.initial
    }

    /// The configured capacity (the header capacity is `max` after the first rebuild).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Lower bound: ids kept by a rebuild.
    pub fn min_capacity(&self) -> usize {
        self.min_capacity
    }

    /// Upper bound: the id count that triggers a rebuild when exceeded.
    pub fn max_capacity(&self) -> usize {
        self.max_capacity
    }

    /// The ids currently in the filter, oldest first.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = &MessageId> {
        self.ids.iter().map(|(id, _)| id)
    }

    /// Number of ids in the list.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id has been added since creation.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // BLOOM-06
    #[test]
    fn bounds_and_fallbacks() {
        let cases = [
            (10_000, 0.001, 8000, 12000, 0.001),
            (10, 0.01, 8, 12, 0.01),
            (7, 0.05, 5, 8, 0.05),
            (1, 0.001, 0, 1, 0.001),
            (0, 0.5, 8000, 12000, 0.5),
            (5, 1.5, 4, 6, 0.001),
            (-3, 0.0, 8000, 12000, 0.001),
        ];
        for (cap, err, min, max, rate) in cases {
            let r = RollingBloomFilter::new(cap, err).unwrap();
            assert_eq!((r.min_capacity(), r.max_capacity()), (min, max), "{cap}");
            assert_eq!(r.filter().error_rate(), rate, "{cap}");
        }
    }

    #[test]
    fn capacity_one_forgets_everything_on_rebuild() {
        let mut r = RollingBloomFilter::new(1, 0.001).unwrap();
        assert!(!r.add(MessageId::from("a")));
        assert!(r.add(MessageId::from("b")));
        assert_eq!(r.len(), 0);
        assert_eq!(r.filter().capacity(), 1);
    }

    #[test]
    fn nim_rebuild_grows_spec_rebuild_keeps_its_size() {
        let mut nim = RollingBloomFilter::new(100, 0.01).unwrap();
        let mut spec = SpecRollingBloomFilter::new(100, 0.01).unwrap();
        let (nim_bits, spec_bits) = (nim.filter().m_bits(), spec.filter().m_bits());
        assert_eq!(nim_bits, spec_bits);
        let ids: Vec<MessageId> = (0..121)
            .map(|i| MessageId::from(format!("m-{i}")))
            .collect();
        for id in &ids[..120] {
            assert!(!nim.add(id.clone()));
            assert!(!spec.add(id.clone()));
        }
        // The 121st id goes above max = 120: both rebuild from the newest 80 ids.
        assert!(nim.add(ids[120].clone()));
        assert!(spec.add(ids[120].clone()));
        assert_eq!((nim.len(), spec.len()), (80, 80));
        assert!(nim.filter().m_bits() > nim_bits);
        assert_eq!(spec.filter().m_bits(), spec_bits);
        assert_eq!(
            spec.filter().to_bytes().len() as u64,
            spec_bits.div_ceil(64) * 8
        );
        for id in &ids[41..] {
            assert!(
                nim.contains(id.as_bytes()) && spec.contains(id.as_bytes()),
                "{id:?}"
            );
        }
        // Forgotten ids are (almost surely) gone from the spec filter: rebuilt, not kept.
        let forgotten = ids[..41]
            .iter()
            .filter(|id| spec.contains(id.as_bytes()))
            .count();
        assert!(forgotten < 5, "{forgotten}");
    }
}
