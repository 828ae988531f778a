//! The local log: delivered messages ordered by (lamport, id), with an id index.

use std::collections::BTreeSet;

use super::HashMap;

use super::types::LogEntry;
use crate::id::MessageId;

/// The newest `max` delivered messages in (lamport, id) order. Entries live in the id index, so
/// a lookup by id (the common case: every received copy) is one hash probe.
#[derive(Debug, Clone)]
pub(crate) struct Log {
    ordered: BTreeSet<(i64, MessageId)>,
    entries: HashMap<MessageId, LogEntry>,
    max: usize,
}

impl Log {
    pub(crate) fn new(max: usize) -> Self {
        Log {
            ordered: BTreeSet::new(),
            entries: HashMap::default(),
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

    /// Inserts an entry (which must not be present) and returns what fell out of the bounded log:
    /// the oldest entries beyond `max`, possibly the new one itself.
    pub(crate) fn insert(&mut self, entry: LogEntry) -> Vec<LogEntry> {
        self.ordered
            .insert((entry.lamport_timestamp, entry.message_id.clone()));
        self.entries.insert(entry.message_id.clone(), entry);
        let mut evicted = Vec::new();
        while self.ordered.len() > self.max {
            if let Some((_, id)) = self.ordered.pop_first() {
                evicted.extend(self.entries.remove(&id));
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
