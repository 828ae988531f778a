//! The local log: delivered messages ordered by (lamport, id), with an id index, evicted by
//! arrival.

use std::collections::{BTreeSet, VecDeque};

use super::HashMap;

use super::types::LogEntry;
use crate::id::MessageId;

/// The delivered messages in (lamport, id) order — the order of causal histories — bounded to
/// `max` entries. Entries live in the id index, so a lookup by id (the common case: every
/// received copy) is one hash probe.
///
/// Eviction follows arrival, not lamport: the entry that arrived earliest goes first. A member
/// whose clock lags the group's (a nim-sds member counting seconds among members counting
/// milliseconds, or one whose wall clock is behind) sends messages with low lamports; evicting
/// by lamport would drop such a message in the very operation that delivered it, and a repair
/// request for it could then never be answered.
#[derive(Debug, Clone)]
pub(crate) struct Log {
    ordered: BTreeSet<(i64, MessageId)>,
    entries: HashMap<MessageId, LogEntry>,
    /// Ids in arrival order, earliest first (entries only ever leave from the front).
    arrivals: VecDeque<MessageId>,
    next_arrival: u64,
    max: usize,
}

impl Log {
    pub(crate) fn new(max: usize) -> Self {
        Log {
            ordered: BTreeSet::new(),
            entries: HashMap::default(),
            arrivals: VecDeque::new(),
            // 0 stands for "unknown" in stored state: such entries count as arrived first.
            next_arrival: 1,
            max,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ordered.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.entries.contains_key(id)
    }

    pub(crate) fn get(&self, id: &MessageId) -> Option<&LogEntry> {
        self.entries.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &MessageId) -> Option<&mut LogEntry> {
        self.entries.get_mut(id)
    }

    /// The arrival number the next new entry gets.
    pub(crate) fn next_arrival(&self) -> u64 {
        self.next_arrival
    }

    /// Inserts an entry (which must not be present) as the latest arrival and returns what fell
    /// out of the bounded log: the earliest arrivals beyond `max` (never the new one while `max`
    /// is at least 1). Entries must come in the order of their `arrival` numbers (a restore
    /// sorts them first); a new one takes [`next_arrival`](Self::next_arrival).
    pub(crate) fn insert(&mut self, entry: LogEntry) -> Vec<LogEntry> {
        self.next_arrival = self.next_arrival.max(entry.arrival.saturating_add(1));
        self.ordered
            .insert((entry.lamport_timestamp, entry.message_id.clone()));
        self.arrivals.push_back(entry.message_id.clone());
        self.entries.insert(entry.message_id.clone(), entry);
        let mut evicted = Vec::new();
        while self.entries.len() > self.max {
            let Some(id) = self.arrivals.pop_front() else {
                break;
            };
            if let Some(old) = self.entries.remove(&id) {
                self.ordered.remove(&(old.lamport_timestamp, id));
                evicted.push(old);
            }
        }
        evicted
    }

    /// The newest `n` entries, newest first (walks only those `n`).
    pub(crate) fn newest(&self, n: usize) -> impl Iterator<Item = &LogEntry> {
        self.ordered
            .iter()
            .rev()
            .take(n)
            .filter_map(|(_, id)| self.entries.get(id))
    }

    /// All entries, oldest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &LogEntry> {
        self.ordered
            .iter()
            .filter_map(|(_, id)| self.entries.get(id))
    }
}
