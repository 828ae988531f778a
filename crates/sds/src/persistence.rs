//! The `Persistence` interface: where a channel's state lives between operations and restarts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use sds_proto::engine::{
    ChannelSnapshot, IncomingEntry, IncomingRepairEntry, LogEntry, OutgoingEntry,
    OutgoingRepairEntry, StoreOp,
};
use sds_proto::{Bytes, ChannelId, MessageId};

/// A storage failure: what went wrong, and the backend's own error (the `rusqlite` or I/O
/// error, …) as its [`source`](std::error::Error::source) when there is one.
#[derive(Debug, Clone)]
pub struct PersistenceError {
    /// What went wrong.
    pub message: String,
    /// The underlying error.
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl std::fmt::Display for PersistenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "persistence error: {}", self.message)
    }
}

impl std::error::Error for PersistenceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The backend's error itself, so that callers can downcast it.
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl PersistenceError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        PersistenceError {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a message and the error that caused it.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        PersistenceError {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }
}

/// Result of a persistence call.
pub type PersistenceResult<T> = Result<T, PersistenceError>;

/// Storage for channel state: the twelve mutations the engine emits, `drop_channel`,
/// `load_channel`, and a batch method.
///
/// The manager calls [`apply_batch`](Persistence::apply_batch) once per protocol operation with
/// all of that operation's changes, and publishes nothing of the operation before it returns.
/// Its default applies the operations one by one, in order; a backend that can should override it
/// to make the batch atomic (one transaction).
#[async_trait]
pub trait Persistence: Send + Sync {
    /// Stores the channel's lamport clock.
    async fn save_lamport(&self, channel: &ChannelId, lamport: i64) -> PersistenceResult<()>;
    /// Appends a message to the channel's log.
    async fn append_log_entry(
        &self,
        channel: &ChannelId,
        entry: &LogEntry,
    ) -> PersistenceResult<()>;
    /// Removes a message from the log.
    async fn remove_log_entry(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()>;
    /// Sets the retrieval hint of a logged message.
    async fn set_retrieval_hint(
        &self,
        channel: &ChannelId,
        id: &MessageId,
        hint: &Bytes,
    ) -> PersistenceResult<()>;
    /// Adds or replaces an outgoing (unacknowledged) entry.
    async fn save_outgoing(
        &self,
        channel: &ChannelId,
        entry: &OutgoingEntry,
    ) -> PersistenceResult<()>;
    /// Removes an outgoing entry.
    async fn remove_outgoing(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()>;
    /// Adds or replaces an incoming (waiting) entry.
    async fn save_incoming(
        &self,
        channel: &ChannelId,
        entry: &IncomingEntry,
    ) -> PersistenceResult<()>;
    /// Removes an incoming entry.
    async fn remove_incoming(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()>;
    /// Adds or replaces an outgoing repair entry.
    async fn save_outgoing_repair(
        &self,
        channel: &ChannelId,
        entry: &OutgoingRepairEntry,
    ) -> PersistenceResult<()>;
    /// Removes an outgoing repair entry.
    async fn remove_outgoing_repair(
        &self,
        channel: &ChannelId,
        id: &MessageId,
    ) -> PersistenceResult<()>;
    /// Adds or replaces an incoming repair entry.
    async fn save_incoming_repair(
        &self,
        channel: &ChannelId,
        entry: &IncomingRepairEntry,
    ) -> PersistenceResult<()>;
    /// Removes an incoming repair entry.
    async fn remove_incoming_repair(
        &self,
        channel: &ChannelId,
        id: &MessageId,
    ) -> PersistenceResult<()>;
    /// Deletes everything stored for the channel (meant to be one transaction).
    async fn drop_channel(&self, channel: &ChannelId) -> PersistenceResult<()>;
    /// Everything stored for the channel; an empty snapshot for an unknown one. The log comes
    /// in log order: by (lamport, id), oldest first.
    async fn load_channel(&self, channel: &ChannelId) -> PersistenceResult<ChannelSnapshot>;

    /// Applies all store operations of one protocol operation, in order.
    async fn apply_batch(&self, channel: &ChannelId, ops: &[StoreOp]) -> PersistenceResult<()> {
        for op in ops {
            apply_one(self, channel, op).await?;
        }
        Ok(())
    }
}

/// A shared store is a store: `Arc<SqliteStore>`, `Arc<dyn Persistence>` and the like can be
/// handed where a `Persistence` is expected, and kept by the caller as well.
#[async_trait]
impl<P: Persistence + ?Sized> Persistence for Arc<P> {
    async fn save_lamport(&self, channel: &ChannelId, lamport: i64) -> PersistenceResult<()> {
        (**self).save_lamport(channel, lamport).await
    }
    async fn append_log_entry(
        &self,
        channel: &ChannelId,
        entry: &LogEntry,
    ) -> PersistenceResult<()> {
        (**self).append_log_entry(channel, entry).await
    }
    async fn remove_log_entry(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()> {
        (**self).remove_log_entry(channel, id).await
    }
    async fn set_retrieval_hint(
        &self,
        channel: &ChannelId,
        id: &MessageId,
        hint: &Bytes,
    ) -> PersistenceResult<()> {
        (**self).set_retrieval_hint(channel, id, hint).await
    }
    async fn save_outgoing(
        &self,
        channel: &ChannelId,
        entry: &OutgoingEntry,
    ) -> PersistenceResult<()> {
        (**self).save_outgoing(channel, entry).await
    }
    async fn remove_outgoing(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()> {
        (**self).remove_outgoing(channel, id).await
    }
    async fn save_incoming(
        &self,
        channel: &ChannelId,
        entry: &IncomingEntry,
    ) -> PersistenceResult<()> {
        (**self).save_incoming(channel, entry).await
    }
    async fn remove_incoming(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()> {
        (**self).remove_incoming(channel, id).await
    }
    async fn save_outgoing_repair(
        &self,
        channel: &ChannelId,
        entry: &OutgoingRepairEntry,
    ) -> PersistenceResult<()> {
        (**self).save_outgoing_repair(channel, entry).await
    }
    async fn remove_outgoing_repair(
        &self,
        channel: &ChannelId,
        id: &MessageId,
    ) -> PersistenceResult<()> {
        (**self).remove_outgoing_repair(channel, id).await
    }
    async fn save_incoming_repair(
        &self,
        channel: &ChannelId,
        entry: &IncomingRepairEntry,
    ) -> PersistenceResult<()> {
        (**self).save_incoming_repair(channel, entry).await
    }
    async fn remove_incoming_repair(
        &self,
        channel: &ChannelId,
        id: &MessageId,
    ) -> PersistenceResult<()> {
        (**self).remove_incoming_repair(channel, id).await
    }
    async fn drop_channel(&self, channel: &ChannelId) -> PersistenceResult<()> {
        (**self).drop_channel(channel).await
    }
    async fn load_channel(&self, channel: &ChannelId) -> PersistenceResult<ChannelSnapshot> {
        (**self).load_channel(channel).await
    }
    async fn apply_batch(&self, channel: &ChannelId, ops: &[StoreOp]) -> PersistenceResult<()> {
        (**self).apply_batch(channel, ops).await
    }
}

/// Applies one operation through the individual methods.
pub async fn apply_one<P: Persistence + ?Sized>(
    p: &P,
    channel: &ChannelId,
    op: &StoreOp,
) -> PersistenceResult<()> {
    match op {
        StoreOp::SaveLamport(l) => p.save_lamport(channel, *l).await,
        StoreOp::AppendLogEntry(e) => p.append_log_entry(channel, e).await,
        StoreOp::RemoveLogEntry(id) => p.remove_log_entry(channel, id).await,
        StoreOp::SetRetrievalHint { message_id, hint } => {
            p.set_retrieval_hint(channel, message_id, hint).await
        }
        StoreOp::SaveOutgoing(e) => p.save_outgoing(channel, e).await,
        StoreOp::RemoveOutgoing(id) => p.remove_outgoing(channel, id).await,
        StoreOp::SaveIncoming(e) => p.save_incoming(channel, e).await,
        StoreOp::RemoveIncoming(id) => p.remove_incoming(channel, id).await,
        StoreOp::SaveOutgoingRepair(e) => p.save_outgoing_repair(channel, e).await,
        StoreOp::RemoveOutgoingRepair(id) => p.remove_outgoing_repair(channel, id).await,
        StoreOp::SaveIncomingRepair(e) => p.save_incoming_repair(channel, e).await,
        StoreOp::RemoveIncomingRepair(id) => p.remove_incoming_repair(channel, id).await,
    }
}

/// Stores nothing and loads empty channels: state lives only as long as the manager.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopPersistence;

#[async_trait]
impl Persistence for NoopPersistence {
    async fn save_lamport(&self, _: &ChannelId, _: i64) -> PersistenceResult<()> {
        Ok(())
    }
    async fn append_log_entry(&self, _: &ChannelId, _: &LogEntry) -> PersistenceResult<()> {
        Ok(())
    }
    async fn remove_log_entry(&self, _: &ChannelId, _: &MessageId) -> PersistenceResult<()> {
        Ok(())
    }
    async fn set_retrieval_hint(
        &self,
        _: &ChannelId,
        _: &MessageId,
        _: &Bytes,
    ) -> PersistenceResult<()> {
        Ok(())
    }
    async fn save_outgoing(&self, _: &ChannelId, _: &OutgoingEntry) -> PersistenceResult<()> {
        Ok(())
    }
    async fn remove_outgoing(&self, _: &ChannelId, _: &MessageId) -> PersistenceResult<()> {
        Ok(())
    }
    async fn save_incoming(&self, _: &ChannelId, _: &IncomingEntry) -> PersistenceResult<()> {
        Ok(())
    }
    async fn remove_incoming(&self, _: &ChannelId, _: &MessageId) -> PersistenceResult<()> {
        Ok(())
    }
    async fn save_outgoing_repair(
        &self,
        _: &ChannelId,
        _: &OutgoingRepairEntry,
    ) -> PersistenceResult<()> {
        Ok(())
    }
    async fn remove_outgoing_repair(&self, _: &ChannelId, _: &MessageId) -> PersistenceResult<()> {
        Ok(())
    }
    async fn save_incoming_repair(
        &self,
        _: &ChannelId,
        _: &IncomingRepairEntry,
    ) -> PersistenceResult<()> {
        Ok(())
    }
    async fn remove_incoming_repair(&self, _: &ChannelId, _: &MessageId) -> PersistenceResult<()> {
        Ok(())
    }
    async fn drop_channel(&self, _: &ChannelId) -> PersistenceResult<()> {
        Ok(())
    }
    async fn load_channel(&self, _: &ChannelId) -> PersistenceResult<ChannelSnapshot> {
        Ok(ChannelSnapshot::default())
    }
    async fn apply_batch(&self, _: &ChannelId, _: &[StoreOp]) -> PersistenceResult<()> {
        Ok(())
    }
}

/// The names of the persistence calls, for counting and failure injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Call {
    /// `save_lamport`.
    SaveLamport,
    /// `append_log_entry`.
    AppendLogEntry,
    /// `remove_log_entry`.
    RemoveLogEntry,
    /// `set_retrieval_hint`.
    SetRetrievalHint,
    /// `save_outgoing`.
    SaveOutgoing,
    /// `remove_outgoing`.
    RemoveOutgoing,
    /// `save_incoming`.
    SaveIncoming,
    /// `remove_incoming`.
    RemoveIncoming,
    /// `save_outgoing_repair`.
    SaveOutgoingRepair,
    /// `remove_outgoing_repair`.
    RemoveOutgoingRepair,
    /// `save_incoming_repair`.
    SaveIncomingRepair,
    /// `remove_incoming_repair`.
    RemoveIncomingRepair,
    /// `drop_channel`.
    DropChannel,
    /// `load_channel`.
    LoadChannel,
    /// `apply_batch`.
    ApplyBatch,
}

impl Call {
    fn of(op: &StoreOp) -> Call {
        match op {
            StoreOp::SaveLamport(_) => Call::SaveLamport,
            StoreOp::AppendLogEntry(_) => Call::AppendLogEntry,
            StoreOp::RemoveLogEntry(_) => Call::RemoveLogEntry,
            StoreOp::SetRetrievalHint { .. } => Call::SetRetrievalHint,
            StoreOp::SaveOutgoing(_) => Call::SaveOutgoing,
            StoreOp::RemoveOutgoing(_) => Call::RemoveOutgoing,
            StoreOp::SaveIncoming(_) => Call::SaveIncoming,
            StoreOp::RemoveIncoming(_) => Call::RemoveIncoming,
            StoreOp::SaveOutgoingRepair(_) => Call::SaveOutgoingRepair,
            StoreOp::RemoveOutgoingRepair(_) => Call::RemoveOutgoingRepair,
            StoreOp::SaveIncomingRepair(_) => Call::SaveIncomingRepair,
            StoreOp::RemoveIncomingRepair(_) => Call::RemoveIncomingRepair,
        }
    }
}

/// One channel's stored state.
#[derive(Debug, Clone, Default)]
struct Stored {
    lamport: Option<i64>,
    /// Append order, as a backend would keep it.
    log: Vec<LogEntry>,
    outgoing: Vec<OutgoingEntry>,
    incoming: BTreeMap<MessageId, IncomingEntry>,
    outgoing_repair: BTreeMap<MessageId, OutgoingRepairEntry>,
    incoming_repair: BTreeMap<MessageId, IncomingRepairEntry>,
}

impl Stored {
    fn apply(&mut self, op: &StoreOp) {
        match op {
            StoreOp::SaveLamport(l) => self.lamport = Some(*l),
            StoreOp::AppendLogEntry(e) => {
                self.log.retain(|x| x.message_id != e.message_id);
                self.log.push(e.clone());
            }
            StoreOp::RemoveLogEntry(id) => self.log.retain(|x| &x.message_id != id),
            StoreOp::SetRetrievalHint { message_id, hint } => {
                if let Some(e) = self.log.iter_mut().find(|x| &x.message_id == message_id) {
                    e.retrieval_hint = hint.clone();
                }
            }
            StoreOp::SaveOutgoing(e) => {
                match self
                    .outgoing
                    .iter_mut()
                    .find(|x| x.message_id == e.message_id)
                {
                    Some(slot) => *slot = e.clone(),
                    None => self.outgoing.push(e.clone()),
                }
            }
            StoreOp::RemoveOutgoing(id) => self.outgoing.retain(|x| &x.message_id != id),
            StoreOp::SaveIncoming(e) => {
                self.incoming.insert(e.message_id.clone(), e.clone());
            }
            StoreOp::RemoveIncoming(id) => {
                self.incoming.remove(id);
            }
            StoreOp::SaveOutgoingRepair(e) => {
                self.outgoing_repair
                    .insert(e.entry.message_id.clone(), e.clone());
            }
            StoreOp::RemoveOutgoingRepair(id) => {
                self.outgoing_repair.remove(id);
            }
            StoreOp::SaveIncomingRepair(e) => {
                self.incoming_repair
                    .insert(e.entry.message_id.clone(), e.clone());
            }
            StoreOp::RemoveIncomingRepair(id) => {
                self.incoming_repair.remove(id);
            }
        }
    }

    fn snapshot(&self) -> ChannelSnapshot {
        // The log in log order: (lamport, id), oldest first.
        let mut log = self.log.clone();
        log.sort_by(|a, b| {
            (a.lamport_timestamp, &a.message_id).cmp(&(b.lamport_timestamp, &b.message_id))
        });
        ChannelSnapshot {
            lamport: self.lamport,
            log,
            outgoing: self.outgoing.clone(),
            incoming: self.incoming.values().cloned().collect(),
            outgoing_repair: self.outgoing_repair.values().cloned().collect(),
            incoming_repair: self.incoming_repair.values().cloned().collect(),
        }
    }
}

#[derive(Debug, Default)]
struct MemoryState {
    channels: HashMap<ChannelId, Stored>,
    calls: BTreeMap<Call, u64>,
    /// Calls of this kind fail while the counter is positive (decremented per failure).
    failing: HashMap<Call, u32>,
    /// Every call fails after this many more calls succeed.
    fail_after: Option<u64>,
}

/// An in-memory store. Clones share the same state, so a test can "restart" a manager against
/// it; calls are counted and failures can be injected.
#[derive(Debug, Clone, Default)]
pub struct MemoryPersistence {
    state: Arc<Mutex<MemoryState>>,
}

impl MemoryPersistence {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        // A panic while the lock was held leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next `times` calls of `call` fail.
    pub fn fail_next(&self, call: Call, times: u32) {
        self.lock().failing.insert(call, times);
    }

    /// Makes every call fail once `successes` more calls have succeeded (`None` stops it).
    pub fn fail_after(&self, successes: Option<u64>) {
        self.lock().fail_after = successes;
    }

    /// How many times `call` was made (failed calls included).
    pub fn calls(&self, call: Call) -> u64 {
        self.lock().calls.get(&call).copied().unwrap_or(0)
    }

    /// The stored state of a channel, as `load_channel` would return it.
    pub fn stored(&self, channel: &ChannelId) -> Option<ChannelSnapshot> {
        self.lock().channels.get(channel).map(Stored::snapshot)
    }

    /// Ids of channels with stored state.
    pub fn channels(&self) -> Vec<ChannelId> {
        let mut v: Vec<ChannelId> = self.lock().channels.keys().cloned().collect();
        v.sort();
        v
    }

    /// Counts a call and decides whether it fails.
    fn enter(state: &mut MemoryState, call: Call) -> PersistenceResult<()> {
        *state.calls.entry(call).or_default() += 1;
        if let Some(left) = state.failing.get_mut(&call) {
            if *left > 0 {
                *left -= 1;
                return Err(PersistenceError::new(format!(
                    "injected failure of {call:?}"
                )));
            }
        }
        match state.fail_after {
            Some(0) => Err(PersistenceError::new(format!(
                "injected failure of {call:?}"
            ))),
            Some(n) => {
                state.fail_after = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn single(&self, channel: &ChannelId, op: StoreOp) -> PersistenceResult<()> {
        let mut state = self.lock();
        Self::enter(&mut state, Call::of(&op))?;
        state
            .channels
            .entry(channel.clone())
            .or_default()
            .apply(&op);
        Ok(())
    }
}

#[async_trait]
impl Persistence for MemoryPersistence {
    async fn save_lamport(&self, channel: &ChannelId, lamport: i64) -> PersistenceResult<()> {
        self.single(channel, StoreOp::SaveLamport(lamport))
    }
    async fn append_log_entry(
        &self,
        channel: &ChannelId,
        entry: &LogEntry,
    ) -> PersistenceResult<()> {
        self.single(channel, StoreOp::AppendLogEntry(entry.clone()))
    }
    async fn remove_log_entry(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()> {
        self.single(channel, StoreOp::RemoveLogEntry(id.clone()))
    }
    async fn set_retrieval_hint(
        &self,
        channel: &ChannelId,
        id: &MessageId,
        hint: &Bytes,
    ) -> PersistenceResult<()> {
        self.single(
            channel,
            StoreOp::SetRetrievalHint {
                message_id: id.clone(),
                hint: hint.clone(),
            },
        )
    }
    async fn save_outgoing(
        &self,
        channel: &ChannelId,
        entry: &OutgoingEntry,
    ) -> PersistenceResult<()> {
        self.single(channel, StoreOp::SaveOutgoing(entry.clone()))
    }
    async fn remove_outgoing(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()> {
        self.single(channel, StoreOp::RemoveOutgoing(id.clone()))
    }
    async fn save_incoming(
        &self,
        channel: &ChannelId,
        entry: &IncomingEntry,
    ) -> PersistenceResult<()> {
        self.single(channel, StoreOp::SaveIncoming(entry.clone()))
    }
    async fn remove_incoming(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()> {
        self.single(channel, StoreOp::RemoveIncoming(id.clone()))
    }
    async fn save_outgoing_repair(
        &self,
        channel: &ChannelId,
        entry: &OutgoingRepairEntry,
    ) -> PersistenceResult<()> {
        self.single(channel, StoreOp::SaveOutgoingRepair(entry.clone()))
    }
    async fn remove_outgoing_repair(
        &self,
        channel: &ChannelId,
        id: &MessageId,
    ) -> PersistenceResult<()> {
        self.single(channel, StoreOp::RemoveOutgoingRepair(id.clone()))
    }
    async fn save_incoming_repair(
        &self,
        channel: &ChannelId,
        entry: &IncomingRepairEntry,
    ) -> PersistenceResult<()> {
        self.single(channel, StoreOp::SaveIncomingRepair(entry.clone()))
    }
    async fn remove_incoming_repair(
        &self,
        channel: &ChannelId,
        id: &MessageId,
    ) -> PersistenceResult<()> {
        self.single(channel, StoreOp::RemoveIncomingRepair(id.clone()))
    }
    async fn drop_channel(&self, channel: &ChannelId) -> PersistenceResult<()> {
        let mut state = self.lock();
        Self::enter(&mut state, Call::DropChannel)?;
        state.channels.remove(channel);
        Ok(())
    }
    async fn load_channel(&self, channel: &ChannelId) -> PersistenceResult<ChannelSnapshot> {
        let mut state = self.lock();
        Self::enter(&mut state, Call::LoadChannel)?;
        Ok(state
            .channels
            .get(channel)
            .map(Stored::snapshot)
            .unwrap_or_default())
    }

    /// Atomic: either every operation is applied or none is (a failure injected on any of the
    /// batch's operation kinds fails the whole batch).
    async fn apply_batch(&self, channel: &ChannelId, ops: &[StoreOp]) -> PersistenceResult<()> {
        let mut state = self.lock();
        Self::enter(&mut state, Call::ApplyBatch)?;
        let mut next = state.channels.get(channel).cloned().unwrap_or_default();
        for op in ops {
            Self::enter(&mut state, Call::of(op))?;
            next.apply(op);
        }
        state.channels.insert(channel.clone(), next);
        Ok(())
    }
}
