//! The local log: delivered messages ordered by (lamport, id), with an id index.

use std::collections::{BTreeMap, HashMap};

use super::types::LogEntry;
use crate::id::MessageId;

/// The newest `max` delivered messages in (lamport, id) order.
#[derive(Debug, Clone)]
pub(crate) struct Log {
    ordered: BTreeMap<(i64, MessageId), LogEntry>,
    lamport_of: HashMap<MessageId, i64>,
    max: usize,
}

impl Log {
    pub(crate) fn new(max: usize) -> Self {
        Log {
            ordered: BTreeMap::new(),
            lamport_of: HashMap::new(),
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
        self.lamport_of.contains_key(id)
    }

    pub(crate) fn get(&self, id: &MessageId) -> Option<&LogEntry> {
        let lamport = *self.lamport_of.get(id)?;
        self.ordered.get(&(lamport, id.clone()))
    }

    pub(crate) fn get_mut(&mut self, id: &MessageId) -> Option<&mut LogEntry> {
        let lamport = *self.lamport_of.get(id)?;
        self.ordered.get_mut(&(lamport, id.clone()))
    }

    /// Inserts an entry (which must not be present) and returns what fell out of the bounded log:
    /// the oldest entries beyond `max`, possibly the new one itself.
    pub(crate) fn insert(&mut self, entry: LogEntry) -> Vec<LogEntry> {
        self.lamport_of
            .insert(entry.message_id.clone(), entry.lamport_timestamp);
        self.ordered
            .insert((entry.lamport_timestamp, entry.message_id.clone()), entry);
        let mut evicted = Vec::new();
        while self.ordered.len() > self.max {
            if let Some((_, old)) = self.ordered.pop_first() {
                self.lamport_of.remove(&old.message_id);
                evicted.push(old);
            }
        }
        evicted
    }

    /// The newest `n` entries, newest first (walks only those `n`).
    pub(crate) fn newest(&self, n: usize) -> impl Iterator<Item = &LogEntry> {
        self.ordered.values().rev().take(n)
    }

    /// All entries, oldest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &LogEntry> {
        self.ordered.values()
    }
}
