//! A bounded memory of ids beyond the log: what was delivered (for duplicate detection after
//! eviction) and what counts as met for dependency purposes without being in the log.

use std::collections::VecDeque;

use super::HashMap;

use crate::id::{MessageId, ParticipantId};

/// What is known about an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    /// Delivered (it may have left the log since).
    Delivered,
    /// Marked met by the application (retrieved out of band).
    Met,
    /// Declared irretrievably lost.
    Lost,
    /// One of our own sync messages: never logged, but a peer may cite it. (Received sync
    /// ids are kept apart, in [`SyncIds`]: they must not push delivered ids out.)
    Sync,
}

/// Up to `cap` ids with their status (and, for delivered ids, their lamport timestamps); the
/// oldest insertion is forgotten first.
#[derive(Debug, Clone)]
pub(crate) struct KnownIds {
    status: HashMap<MessageId, (Known, i64)>,
    order: VecDeque<MessageId>,
    cap: usize,
}

impl KnownIds {
    pub(crate) fn new(cap: usize) -> Self {
        KnownIds {
            status: HashMap::default(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub(crate) fn get(&self, id: &MessageId) -> Option<Known> {
        self.status.get(id).map(|&(k, _)| k)
    }

    /// The ids with status `known`, oldest first.
    pub(crate) fn with_status(&self, known: Known) -> impl Iterator<Item = &MessageId> {
        self.order
            .iter()
            .filter(move |id| self.status.get(*id).is_some_and(|&(k, _)| k == known))
    }

    /// Records or updates the status of `id` (with the message's lamport timestamp, or 0 when
    /// there is none); returns the id, status and lamport forgotten to make room, if any.
    pub(crate) fn set(
        &mut self,
        id: MessageId,
        known: Known,
        lamport: i64,
    ) -> Option<(MessageId, Known, i64)> {
        if let Some(s) = self.status.get_mut(&id) {
            *s = (known, lamport);
            return None;
        }
        let mut forgotten = None;
        if self.order.len() == self.cap {
            if let Some(old) = self.order.pop_front() {
                let status = self.status.remove(&old);
                forgotten = status.map(|(s, l)| (old, s, l));
            }
        }
        // Kept far longer than the message it came from: do not pin that message's buffer.
        let id = id.detached();
        self.order.push_back(id.clone());
        self.status.insert(id, (known, lamport));
        forgotten
    }
}

/// Ids of received sync messages with their senders, up to `cap`, the oldest forgotten first.
/// A sync is not content: its id satisfies a citation only when the cited entry names the
/// sync's own (non-empty) sender, so that nobody's sync can stand in for someone else's
/// message. Syncs cost their sender nothing to make, so they are kept apart from
/// [`KnownIds`]: a flood of them cannot push delivered ids out.
#[derive(Debug, Clone)]
pub(crate) struct SyncIds {
    senders: HashMap<MessageId, ParticipantId>,
    order: VecDeque<MessageId>,
    cap: usize,
}

impl SyncIds {
    pub(crate) fn new(cap: usize) -> Self {
        SyncIds {
            senders: HashMap::default(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Whether a received sync with this id and the cited sender is remembered.
    pub(crate) fn satisfies(&self, id: &MessageId, sender: &ParticipantId) -> bool {
        !self.senders.is_empty() && !sender.is_empty() && self.senders.get(id) == Some(sender)
    }

    /// Records a received sync (the first sender seen for an id stays).
    pub(crate) fn insert(&mut self, id: &MessageId, sender: &ParticipantId) {
        if sender.is_empty() || self.senders.contains_key(id) {
            return;
        }
        if self.order.len() == self.cap {
            if let Some(old) = self.order.pop_front() {
                self.senders.remove(&old);
            }
        }
        self.order.push_back(id.detached());
        self.senders.insert(id.detached(), sender.detached());
    }
}
