//! The incoming buffer: received messages waiting for dependencies, indexed by what they wait
//! for, by sender (to choose what gives way when the buffer is full) and by expiry.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::types::IncomingEntry;
use super::HashMap;
use crate::id::{MessageId, ParticipantId};
use crate::message::{HistoryEntry, SdsMessage};

/// Bytes charged for each cited dependency of a waiting message, on top of the message's own
/// bytes: what its entry in the missing-id index, its lost-dependency timer and its repair
/// entry make us hold (about 800 bytes measured in resident memory). A sender pays for every
/// dependency it makes us track.
pub(crate) const INDEX_BYTES_PER_DEPENDENCY: usize = 1_024;

/// A received message waiting for dependencies: what its delivery needs, not the whole decoded
/// message (its causal history is not needed again).
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    pub(crate) message_id: MessageId,
    pub(crate) lamport: i64,
    pub(crate) sender_id: ParticipantId,
    pub(crate) content: Bytes,
    pub(crate) bytes: Bytes,
    pub(crate) missing: Vec<HistoryEntry>,
    pub(crate) received_at: u64,
    /// When it has waited the lost-dependency timeout (`None`: never).
    pub(crate) expires: Option<u64>,
    /// Times its expiry was put off because a message it waits for expires later.
    pub(crate) postponed: u32,
    /// It waits for a message dropped because it could not complete: it is dropped too.
    pub(crate) doomed: bool,
    /// Bytes charged against the buffer's byte bound (fixed when it enters).
    charge: usize,
    /// Arrival number in the buffer.
    seq: u64,
}

impl Waiting {
    pub(crate) fn new(
        msg: SdsMessage,
        bytes: Bytes,
        missing: Vec<HistoryEntry>,
        received_at: u64,
        expires: Option<u64>,
    ) -> Self {
        Waiting {
            charge: charge(bytes.len(), missing.len()),
            message_id: msg.message_id,
            lamport: msg.lamport_timestamp,
            sender_id: msg.sender_id,
            content: msg.content,
            bytes,
            missing,
            received_at,
            expires,
            postponed: 0,
            doomed: false,
            seq: 0,
        }
    }

    pub(crate) fn to_entry(&self) -> IncomingEntry {
        IncomingEntry {
            message_id: self.message_id.clone(),
            bytes: self.bytes.clone(),
            missing: self.missing.clone(),
            received_at: self.received_at,
        }
    }
}

/// What a message of `len` bytes waiting for `deps` dependencies is charged.
pub(crate) fn charge(len: usize, deps: usize) -> usize {
    len.saturating_add(deps.saturating_mul(INDEX_BYTES_PER_DEPENDENCY))
}

/// One sender's share of the buffer.
#[derive(Debug, Clone, Default)]
struct Share {
    charged: usize,
    /// Its waiting messages by arrival number, oldest first.
    queue: BTreeMap<u64, MessageId>,
}

/// Messages waiting for dependencies.
#[derive(Debug, Clone, Default)]
pub(crate) struct Incoming {
    pub(crate) entries: HashMap<MessageId, Waiting>,
    /// Missing id → the messages waiting for it, in arrival order.
    pub(crate) waiters: HashMap<MessageId, Vec<MessageId>>,
    /// Bytes charged for everything waiting.
    pub(crate) bytes: usize,
    senders: HashMap<ParticipantId, Share>,
    /// (charged bytes, sender): the heaviest sender last.
    heaviest: BTreeSet<(usize, ParticipantId)>,
    /// (expiry, arrival number) → id of waiting messages (integer keys keep the ordered set
    /// cheap when many messages arrive at the same time).
    pub(crate) expiry: BTreeMap<(u64, u64), MessageId>,
    next_seq: u64,
}

impl Incoming {
    pub(crate) fn insert(&mut self, mut w: Waiting) {
        // One entry per id: a replaced one leaves every index.
        if let Some(old) = self.remove(&w.message_id) {
            self.unlink(&old);
        }
        w.seq = self.next_seq;
        self.next_seq += 1;
        for dep in &w.missing {
            self.waiters
                .entry(dep.message_id.clone())
                .or_default()
                .push(w.message_id.clone());
        }
        self.bytes = self.bytes.saturating_add(w.charge);
        let share = self.senders.entry(w.sender_id.clone()).or_default();
        self.heaviest.remove(&(share.charged, w.sender_id.clone()));
        share.charged = share.charged.saturating_add(w.charge);
        share.queue.insert(w.seq, w.message_id.clone());
        self.heaviest.insert((share.charged, w.sender_id.clone()));
        if let Some(t) = w.expires {
            self.expiry.insert((t, w.seq), w.message_id.clone());
        }
        self.entries.insert(w.message_id.clone(), w);
    }

    /// Removes a message. Its entries in the missing-id index stay unless it no longer waits
    /// for them (see [`unlink`](Self::unlink)).
    pub(crate) fn remove(&mut self, id: &MessageId) -> Option<Waiting> {
        let w = self.entries.remove(id)?;
        self.bytes = self.bytes.saturating_sub(w.charge);
        if let Some(share) = self.senders.get_mut(&w.sender_id) {
            self.heaviest.remove(&(share.charged, w.sender_id.clone()));
            share.charged = share.charged.saturating_sub(w.charge);
            share.queue.remove(&w.seq);
            if share.queue.is_empty() {
                self.senders.remove(&w.sender_id);
            } else {
                self.heaviest.insert((share.charged, w.sender_id.clone()));
            }
        }
        if let Some(t) = w.expires {
            self.expiry.remove(&(t, w.seq));
        }
        Some(w)
    }

    /// Removes a removed message from the missing-id index of what it still waited for.
    pub(crate) fn unlink(&mut self, w: &Waiting) {
        for dep in &w.missing {
            if let Some(list) = self.waiters.get_mut(&dep.message_id) {
                list.retain(|x| x != &w.message_id);
                if list.is_empty() {
                    self.waiters.remove(&dep.message_id);
                }
            }
        }
    }

    /// The oldest waiting message of the sender holding the most bytes: what gives way when the
    /// buffer is full.
    pub(crate) fn eviction_candidate(&self) -> Option<MessageId> {
        let (_, sender) = self.heaviest.last()?;
        self.senders.get(sender)?.queue.values().next().cloned()
    }

    /// Moves a message's expiry.
    pub(crate) fn set_expiry(&mut self, id: &MessageId, t: u64) {
        if let Some(w) = self.entries.get_mut(id) {
            if let Some(old) = w.expires {
                self.expiry.remove(&(old, w.seq));
            }
            w.expires = Some(t);
            self.expiry.insert((t, w.seq), id.clone());
        }
    }
}
