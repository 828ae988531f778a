//! The rolling bloom filter of nim-sds: a filter of recent ids that forgets old ones.

use std::collections::VecDeque;

use super::{BloomError, BloomFilter, BloomParams, IdHashes};
use crate::id::Id;

/// Capacity used when the requested one is not positive (nim-sds `DefaultBloomFilterCapacity`).
pub const DEFAULT_CAPACITY: i64 = 10_000;
/// Error rate used when the requested one is not in (0, 1) (nim-sds
/// `DefaultBloomFilterErrorRate`).
pub const DEFAULT_ERROR_RATE: f64 = 0.001;

/// A bloom filter over the most recent ids, with the policy of nim-sds:
///
/// * bounds `min = trunc(0.8 × capacity)` and `max = trunc(1.2 × capacity)`;
/// * every [`add`](Self::add) inserts the id and appends it to the id list; when the list grows
///   above `max`, the filter is rebuilt with capacity **`max`** (so the serialized header's
///   capacity changes) from the newest `min` ids, and older ids are forgotten.
///
/// Each id's two base hashes are kept next to it, so a rebuild hashes nothing again.
#[derive(Debug, Clone)]
pub struct RollingBloomFilter {
    filter: BloomFilter,
    capacity: u64,
    min_capacity: usize,
    max_capacity: usize,
    rebuild: BloomParams,
    ids: VecDeque<(Id, IdHashes)>,
}

impl RollingBloomFilter {
    /// A filter for `capacity` ids at `error_rate`; a capacity ≤ 0 is replaced by
    /// [`DEFAULT_CAPACITY`] and an error rate outside (0, 1) by [`DEFAULT_ERROR_RATE`], as nim-sds
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
        let rebuild = BloomParams::optimal(max_capacity.max(1) as i64, error_rate)?;
        Ok(RollingBloomFilter {
            filter: BloomFilter::with_params(params),
            capacity: params.capacity,
            min_capacity,
            max_capacity,
            rebuild,
            ids: VecDeque::with_capacity(max_capacity.min(1 << 16) + 1),
        })
    }

    /// Adds an id; returns whether the add triggered a rebuild.
    pub fn add(&mut self, id: Id) -> bool {
        let hashes = IdHashes::of(id.as_bytes());
        self.add_hashed(id, hashes)
    }

    /// [`add`](Self::add) with the id's hashes already computed.
    pub fn add_hashed(&mut self, id: Id, hashes: IdHashes) -> bool {
        self.filter.insert_hashes(hashes);
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
        let mut filter = BloomFilter::with_params(self.rebuild);
        for &(_, hashes) in &self.ids {
            filter.insert_hashes(hashes);
        }
        self.filter = filter;
    }

    /// Whether the id may be among the recent ids.
    pub fn contains(&self, id: &[u8]) -> bool {
        self.filter.contains(id)
    }

    /// [`contains`](Self::contains) with precomputed hashes.
    pub fn contains_hashes(&self, hashes: IdHashes) -> bool {
        self.filter.contains_hashes(hashes)
    }

    /// The current filter (what goes on the wire).
    pub fn filter(&self) -> &BloomFilter {
        &self.filter
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
    pub fn ids(&self) -> impl ExactSizeIterator<Item = &Id> {
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
        assert!(!r.add(Id::from("a")));
        assert!(r.add(Id::from("b")));
        assert_eq!(r.len(), 0);
        assert_eq!(r.filter().capacity(), 1);
    }
}
