//! A buffer of entries keyed by message id and ordered by the time each is due: the shape of
//! both SDS-R buffers (requests by T_req, responses by T_resp).

use std::collections::BTreeSet;

use super::HashMap;

use super::types::{IncomingRepairEntry, OutgoingRepairEntry, StoreOp};
use crate::id::MessageId;
use crate::message::HistoryEntry;

/// Bytes charged for each SDS-R entry on top of its ids and hint: the entry itself and its
/// places in the id map and the due-time index.
pub(crate) const ENTRY_OVERHEAD_BYTES: usize = 256;

/// What an entry citing `e` is charged: its ids, its hint and [`ENTRY_OVERHEAD_BYTES`] (the
/// ids appear in the map, the index and the entry).
fn entry_charge(e: &HistoryEntry) -> usize {
    ENTRY_OVERHEAD_BYTES
        .saturating_add(e.message_id.len().saturating_mul(3))
        .saturating_add(e.retrieval_hint.len())
        .saturating_add(e.sender_id.len())
}

/// An entry with an id and a due time, stored through its own pair of store operations.
pub(crate) trait Timed: Clone {
    fn id(&self) -> &MessageId;
    /// Bytes it makes us hold, with its indexes: what a remote member's citation or request
    /// costs us. The bytes of a message to rebroadcast are not counted: they are those of our
    /// log.
    fn held(&self) -> usize;
    fn due(&self) -> u64;
    fn set_due(&mut self, due: u64);
    fn save_op(self) -> StoreOp;
    fn remove_op(id: MessageId) -> StoreOp;
}

impl Timed for OutgoingRepairEntry {
    fn id(&self) -> &MessageId {
        &self.entry.message_id
    }
    fn held(&self) -> usize {
        entry_charge(&self.entry)
    }
    fn due(&self) -> u64 {
        self.t_req
    }
    fn set_due(&mut self, due: u64) {
        self.t_req = due;
    }
    fn save_op(self) -> StoreOp {
        StoreOp::SaveOutgoingRepair(self)
    }
    fn remove_op(id: MessageId) -> StoreOp {
        StoreOp::RemoveOutgoingRepair(id)
    }
}

impl Timed for IncomingRepairEntry {
    fn id(&self) -> &MessageId {
        &self.entry.message_id
    }
    fn held(&self) -> usize {
        entry_charge(&self.entry)
    }
    fn due(&self) -> u64 {
        self.t_resp
    }
    fn set_due(&mut self, due: u64) {
        self.t_resp = due;
    }
    fn save_op(self) -> StoreOp {
        StoreOp::SaveIncomingRepair(self)
    }
    fn remove_op(id: MessageId) -> StoreOp {
        StoreOp::RemoveIncomingRepair(id)
    }
}

/// Entries by id, with an index by (due, id).
#[derive(Debug, Clone)]
pub(crate) struct TimedBuffer<E> {
    entries: HashMap<MessageId, E>,
    order: BTreeSet<(u64, MessageId)>,
    /// What the entries are charged ([`Timed::held`]).
    held: usize,
}

impl<E> Default for TimedBuffer<E> {
    fn default() -> Self {
        TimedBuffer {
            entries: HashMap::default(),
            order: BTreeSet::new(),
            held: 0,
        }
    }
}

impl<E: Timed> TimedBuffer<E> {
    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.entries.contains_key(id)
    }

    pub(crate) fn get(&self, id: &MessageId) -> Option<&E> {
        self.entries.get(id)
    }

    /// The earliest due time and its id.
    pub(crate) fn first(&self) -> Option<(u64, MessageId)> {
        self.order.first().cloned()
    }

    /// The latest due time and its id.
    pub(crate) fn last(&self) -> Option<(u64, MessageId)> {
        self.order.last().cloned()
    }

    /// Bytes charged for the entries held ([`Timed::held`]).
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Whether an entry due at `due` would be refused by [`insert_bounded`](Self::insert_bounded)
    /// with this `cap` (the buffer is full and nothing in it is due later).
    pub(crate) fn would_refuse(&self, due: u64, cap: usize) -> bool {
        self.entries.len() >= cap && self.order.last().is_none_or(|(last, _)| *last <= due)
    }

    /// Ids due at or before `now`, earliest first, at most `max`.
    pub(crate) fn due_ids(&self, now: u64, max: usize) -> Vec<MessageId> {
        self.order
            .iter()
            .take_while(|(t, _)| *t <= now)
            .take(max)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Entries, earliest due first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &E> {
        self.order.iter().filter_map(|(_, id)| self.entries.get(id))
    }

    /// Adds an entry (replacing one with the same id), without a bound.
    pub(crate) fn insert(&mut self, e: E) {
        self.remove(e.id());
        self.order.insert((e.due(), e.id().clone()));
        self.held = self.held.saturating_add(e.held());
        self.entries.insert(e.id().clone(), e);
    }

    /// Adds an entry within `cap` entries. When full, the entry due last gives way (and is
    /// returned) if it is due after the new one; otherwise the new one is refused (`Err`).
    pub(crate) fn insert_bounded(&mut self, e: E, cap: usize) -> Result<Option<E>, E> {
        let mut evicted = None;
        if self.entries.len() >= cap {
            match self.order.last().cloned() {
                Some((last, last_id)) if last > e.due() => evicted = self.remove(&last_id),
                _ => return Err(e),
            }
        }
        self.insert(e);
        Ok(evicted)
    }

    /// [`insert_bounded`](Self::insert_bounded), recording the store operations of what changed.
    pub(crate) fn insert_stored(&mut self, e: E, cap: usize, ops: &mut Vec<StoreOp>) {
        if let Ok(evicted) = self.insert_bounded(e.clone(), cap) {
            if let Some(old) = evicted {
                ops.push(E::remove_op(old.id().clone()));
            }
            ops.push(e.save_op());
        }
    }

    /// Removes an entry, recording its store operation if there was one.
    pub(crate) fn remove_stored(&mut self, id: &MessageId, ops: &mut Vec<StoreOp>) {
        if self.remove(id).is_some() {
            ops.push(E::remove_op(id.clone()));
        }
    }

    pub(crate) fn remove(&mut self, id: &MessageId) -> Option<E> {
        let e = self.entries.remove(id)?;
        self.order.remove(&(e.due(), id.clone()));
        self.held = self.held.saturating_sub(e.held());
        Some(e)
    }

    /// Moves an entry to a new due time, with `update` applied to it; returns it as changed.
    pub(crate) fn reschedule(
        &mut self,
        id: &MessageId,
        due: u64,
        update: impl FnOnce(&mut E),
    ) -> Option<&E> {
        let e = self.entries.get_mut(id)?;
        self.order.remove(&(e.due(), id.clone()));
        update(e);
        e.set_due(due);
        self.order.insert((due, id.clone()));
        Some(e)
    }
}
