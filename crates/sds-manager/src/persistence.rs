//! The `Persistence` interface: where a channel's state lives between operations and restarts.

use std::collections::{BTreeMap, HashMap, HashSet};
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

/// Storage for channel state.
///
/// A backend implements three methods: [`apply_batch`](Persistence::apply_batch), which the
/// manager calls once per protocol operation with all of that operation's changes (and
/// publishes nothing of the operation before it returns; make it atomic — one transaction — if
/// the backend can), [`drop_channel`](Persistence::drop_channel) and
/// [`load_channel`](Persistence::load_channel). [`read_log`](Persistence::read_log) reads the
/// log from a point on, for an application catching up after a crash; its default reads the
/// loaded log, and a backend that keeps more (the history the bounded log has evicted) or can
/// read less overrides it. The thirteen single mutations (`save_lamport`, `append_log_entry`, …)
/// are provided: each is a batch of one.
///
/// # Wrapping a store
///
/// A decorator — counting, logging, encrypting, injecting faults — forwards the four methods
/// and nothing else:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use sds_manager::persistence::{MemoryPersistence, Persistence, PersistenceResult};
/// use sds_manager::{ChannelId, ChannelSnapshot, LogEntry, StoreOp};
///
/// struct Counting<P> {
///     inner: P,
///     ops: AtomicU64,
/// }
///
/// #[async_trait::async_trait]
/// impl<P: Persistence> Persistence for Counting<P> {
///     async fn apply_batch(&self, channel: &ChannelId, ops: &[StoreOp]) -> PersistenceResult<()> {
///         self.ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
///         self.inner.apply_batch(channel, ops).await
///     }
///     async fn drop_channel(&self, channel: &ChannelId) -> PersistenceResult<()> {
///         self.inner.drop_channel(channel).await
///     }
///     async fn load_channel(&self, channel: &ChannelId) -> PersistenceResult<ChannelSnapshot> {
///         self.inner.load_channel(channel).await
///     }
///     async fn read_log(
///         &self,
///         channel: &ChannelId,
///         after: u64,
///         limit: usize,
///     ) -> PersistenceResult<Vec<LogEntry>> {
///         self.inner.read_log(channel, after, limit).await
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = Counting { inner: MemoryPersistence::new(), ops: AtomicU64::new(0) };
/// store.save_lamport(&"lobby".into(), 7).await.unwrap();
/// assert_eq!(store.ops.load(Ordering::Relaxed), 1);
/// assert_eq!(store.load_channel(&"lobby".into()).await.unwrap().lamport, Some(7));
/// # });
/// ```
#[async_trait]
pub trait Persistence: Send + Sync {
    /// Applies all store operations of one protocol operation, in order; atomically (all or
    /// none) if the backend can.
    async fn apply_batch(&self, channel: &ChannelId, ops: &[StoreOp]) -> PersistenceResult<()>;
    /// Deletes everything stored for the channel (meant to be one transaction).
    async fn drop_channel(&self, channel: &ChannelId) -> PersistenceResult<()>;
    /// Everything stored for the channel; an empty snapshot for an unknown one. The log comes
    /// in log order: by (lamport, id), oldest first.
    async fn load_channel(&self, channel: &ChannelId) -> PersistenceResult<ChannelSnapshot>;

    /// Up to `limit` log entries of the channel whose [`arrival`](LogEntry::arrival) is above
    /// `after`, in arrival order: what was delivered or sent on the channel since the entry
    /// numbered `after` (0: from the start). Marked-met markers are not entries and are left
    /// out.
    ///
    /// The default reads the log [`load_channel`](Persistence::load_channel) returns: the
    /// bounded log, up to `max_message_history` entries. A backend that keeps the entries the
    /// log evicts (such as `sds-sqlite` with its `keep_history` option) returns those too.
    async fn read_log(
        &self,
        channel: &ChannelId,
        after: u64,
        limit: usize,
    ) -> PersistenceResult<Vec<LogEntry>> {
        let mut log: Vec<LogEntry> = self
            .load_channel(channel)
            .await?
            .log
            .into_iter()
            .filter(|e| !e.is_met_marker() && e.arrival > after)
            .collect();
        log.sort_by_key(|e| e.arrival);
        log.truncate(limit);
        Ok(log)
    }

    /// Stores the channel's lamport clock.
    async fn save_lamport(&self, channel: &ChannelId, lamport: i64) -> PersistenceResult<()> {
        self.apply_batch(channel, &[StoreOp::SaveLamport(lamport)])
            .await
    }
    /// Appends a message to the channel's log.
    async fn append_log_entry(
        &self,
        channel: &ChannelId,
        entry: &LogEntry,
    ) -> PersistenceResult<()> {
        self.apply_batch(channel, &[StoreOp::AppendLogEntry(entry.clone())])
            .await
    }
    /// Removes a message from the log.
    async fn remove_log_entry(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()> {
        self.apply_batch(channel, &[StoreOp::RemoveLogEntry(id.clone())])
            .await
    }
    /// Sets the retrieval hint of a logged message.
    async fn set_retrieval_hint(
        &self,
        channel: &ChannelId,
        id: &MessageId,
        hint: &Bytes,
    ) -> PersistenceResult<()> {
        let op = StoreOp::SetRetrievalHint {
            message_id: id.clone(),
            hint: hint.clone(),
        };
        self.apply_batch(channel, &[op]).await
    }
    /// Adds or replaces an outgoing (unacknowledged) entry.
    async fn save_outgoing(
        &self,
        channel: &ChannelId,
        entry: &OutgoingEntry,
    ) -> PersistenceResult<()> {
        self.apply_batch(channel, &[StoreOp::SaveOutgoing(entry.clone())])
            .await
    }
    /// Removes an outgoing entry.
    async fn remove_outgoing(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()> {
        self.apply_batch(channel, &[StoreOp::RemoveOutgoing(id.clone())])
            .await
    }
    /// Adds or replaces an incoming (waiting) entry.
    async fn save_incoming(
        &self,
        channel: &ChannelId,
        entry: &IncomingEntry,
    ) -> PersistenceResult<()> {
        self.apply_batch(channel, &[StoreOp::SaveIncoming(entry.clone())])
            .await
    }
    /// Removes an incoming entry.
    async fn remove_incoming(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()> {
        self.apply_batch(channel, &[StoreOp::RemoveIncoming(id.clone())])
            .await
    }
    /// Adds or replaces an outgoing repair entry.
    async fn save_outgoing_repair(
        &self,
        channel: &ChannelId,
        entry: &OutgoingRepairEntry,
    ) -> PersistenceResult<()> {
        self.apply_batch(channel, &[StoreOp::SaveOutgoingRepair(entry.clone())])
            .await
    }
    /// Removes an outgoing repair entry.
    async fn remove_outgoing_repair(
        &self,
        channel: &ChannelId,
        id: &MessageId,
    ) -> PersistenceResult<()> {
        self.apply_batch(channel, &[StoreOp::RemoveOutgoingRepair(id.clone())])
            .await
    }
    /// Adds or replaces an incoming repair entry.
    async fn save_incoming_repair(
        &self,
        channel: &ChannelId,
        entry: &IncomingRepairEntry,
    ) -> PersistenceResult<()> {
        self.apply_batch(channel, &[StoreOp::SaveIncomingRepair(entry.clone())])
            .await
    }
    /// Removes an incoming repair entry.
    async fn remove_incoming_repair(
        &self,
        channel: &ChannelId,
        id: &MessageId,
    ) -> PersistenceResult<()> {
        self.apply_batch(channel, &[StoreOp::RemoveIncomingRepair(id.clone())])
            .await
    }
    /// Stores the channel's low-water mark (see [`ChannelSnapshot::low_water`]).
    async fn save_low_water(&self, channel: &ChannelId, mark: i64) -> PersistenceResult<()> {
        self.apply_batch(channel, &[StoreOp::SaveLowWater(mark)])
            .await
    }
}

/// A shared store is a store: `Arc<SqliteStore>`, `Arc<dyn Persistence>` and the like can be
/// handed where a `Persistence` is expected, and kept by the caller as well.
#[async_trait]
impl<P: Persistence + ?Sized> Persistence for Arc<P> {
    async fn apply_batch(&self, channel: &ChannelId, ops: &[StoreOp]) -> PersistenceResult<()> {
        (**self).apply_batch(channel, ops).await
    }
    async fn drop_channel(&self, channel: &ChannelId) -> PersistenceResult<()> {
        (**self).drop_channel(channel).await
    }
    async fn load_channel(&self, channel: &ChannelId) -> PersistenceResult<ChannelSnapshot> {
        (**self).load_channel(channel).await
    }
    async fn read_log(
        &self,
        channel: &ChannelId,
        after: u64,
        limit: usize,
    ) -> PersistenceResult<Vec<LogEntry>> {
        (**self).read_log(channel, after, limit).await
    }
}

/// Stores nothing and loads empty channels: state lives only as long as the manager.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopPersistence;

#[async_trait]
impl Persistence for NoopPersistence {
    async fn apply_batch(&self, _: &ChannelId, _: &[StoreOp]) -> PersistenceResult<()> {
        Ok(())
    }
    async fn drop_channel(&self, _: &ChannelId) -> PersistenceResult<()> {
        Ok(())
    }
    async fn load_channel(&self, _: &ChannelId) -> PersistenceResult<ChannelSnapshot> {
        Ok(ChannelSnapshot::default())
    }
}

/// The names of the persistence calls, for counting and failure injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
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
    /// `read_log`.
    ReadLog,
    /// `save_low_water`.
    SaveLowWater,
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
            StoreOp::SaveLowWater(_) => Call::SaveLowWater,
        }
    }
}

/// One channel's stored state.
#[derive(Debug, Clone, Default)]
struct Stored {
    lamport: Option<i64>,
    low_water: Option<i64>,
    /// Append order, as a backend would keep it.
    log: Vec<LogEntry>,
    outgoing: Vec<OutgoingEntry>,
    incoming: BTreeMap<MessageId, IncomingEntry>,
    outgoing_repair: BTreeMap<MessageId, OutgoingRepairEntry>,
    incoming_repair: BTreeMap<MessageId, IncomingRepairEntry>,
    /// Entries the log evicted, when the store keeps history.
    history: Vec<LogEntry>,
    /// The ids in `history`: a message logged again leaves the history without a scan of it.
    history_ids: HashSet<MessageId>,
}

impl Stored {
    fn apply(&mut self, op: &StoreOp, keep_history: bool) {
        match op {
            StoreOp::SaveLamport(l) => self.lamport = Some(*l),
            StoreOp::SaveLowWater(l) => self.low_water = Some(*l),
            StoreOp::AppendLogEntry(e) => {
                self.log.retain(|x| x.message_id != e.message_id);
                if self.history_ids.remove(&e.message_id) {
                    self.history.retain(|x| x.message_id != e.message_id);
                }
                self.log.push(e.clone());
            }
            StoreOp::RemoveLogEntry(id) => {
                if let Some(at) = self.log.iter().position(|x| &x.message_id == id) {
                    let entry = self.log.remove(at);
                    if keep_history && !entry.is_met_marker() {
                        self.history_ids.insert(entry.message_id.clone());
                        self.history.push(entry);
                    }
                }
            }
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

    fn read_log(&self, after: u64, limit: usize) -> Vec<LogEntry> {
        let mut log: Vec<LogEntry> = (self.log.iter().chain(&self.history))
            .filter(|e| !e.is_met_marker() && e.arrival > after)
            .cloned()
            .collect();
        log.sort_by_key(|e| e.arrival);
        log.truncate(limit);
        log
    }

    fn snapshot(&self) -> ChannelSnapshot {
        // The log in log order: (lamport, id), oldest first.
        let mut log = self.log.clone();
        log.sort_by(|a, b| {
            (a.lamport_timestamp, &a.message_id).cmp(&(b.lamport_timestamp, &b.message_id))
        });
        ChannelSnapshot {
            lamport: self.lamport,
            low_water: self.low_water,
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
    /// Entries the log evicts stay readable through `read_log`.
    keep_history: bool,
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

    /// An empty store that keeps the log entries the bounded log evicts, so that
    /// [`read_log`](Persistence::read_log) returns the whole history of a channel.
    pub fn keeping_history() -> Self {
        let store = Self::default();
        store.lock().keep_history = true;
        store
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
}

#[async_trait]
impl Persistence for MemoryPersistence {
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

    async fn read_log(
        &self,
        channel: &ChannelId,
        after: u64,
        limit: usize,
    ) -> PersistenceResult<Vec<LogEntry>> {
        let mut state = self.lock();
        Self::enter(&mut state, Call::ReadLog)?;
        Ok(state
            .channels
            .get(channel)
            .map(|c| c.read_log(after, limit))
            .unwrap_or_default())
    }

    /// Atomic: either every operation is applied or none is (a failure injected on any of the
    /// batch's operation kinds fails the whole batch). Applying an operation cannot fail, so
    /// the batch is checked against the injected failures first and then applied in place: a
    /// batch costs what its operations touch, not a copy of the channel's stored state.
    async fn apply_batch(&self, channel: &ChannelId, ops: &[StoreOp]) -> PersistenceResult<()> {
        let mut state = self.lock();
        Self::enter(&mut state, Call::ApplyBatch)?;
        for op in ops {
            Self::enter(&mut state, Call::of(op))?;
        }
        let keep = state.keep_history;
        let stored = state.channels.entry(channel.clone()).or_default();
        for op in ops {
            stored.apply(op, keep);
        }
        Ok(())
    }
}
