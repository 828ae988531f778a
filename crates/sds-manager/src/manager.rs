//! The `ReliabilityManager`: many channels over one participant id, persisted through a
//! [`Persistence`] backend, with timer-driven periodic work.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sds_proto::engine::{
    ephemeral_message, Channel, ChannelSnapshot, Config, ConfigError, EngineError, Event,
    IncomingEntry, LogEntry, OutgoingEntry, Received, Transmit, Unwrapped,
};
use sds_proto::wire::DecodeError;
use sds_proto::{Bytes, ChannelId, MessageId, ParticipantId};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::budget::Held;
use crate::catch_up::{self, LoggedMessage};
use crate::notifications::Hub;
use crate::observe::{self, Sizes};
use crate::persistence::{Persistence, PersistenceError};
use crate::Subscription;

pub use sds_proto::engine::HintProvider;

/// Settings of a manager: the default, changed field by field or with the `with_*` methods.
///
/// ```
/// use std::time::Duration;
/// use sds_manager::{Config, ManagerConfig};
///
/// let config = ManagerConfig::default()
///     .with_engine(Config::default().with_sync_interval(Duration::from_secs(10)))
///     .with_max_channels(16);
/// assert_eq!(config.max_channels, 16);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct ManagerConfig {
    /// Settings of every channel.
    pub engine: Config,
    /// Most channels in memory at once; a message for a new channel beyond it is refused before
    /// anything is loaded (default 1 000).
    pub max_channels: usize,
    /// What a received message for a channel the application has not joined does (default:
    /// refused; see [`UnjoinedChannels`]).
    pub unjoined_channels: UnjoinedChannels,
    /// How many notifications a [`subscribe`](ReliabilityManager::subscribe)r's queue holds
    /// before newer ones are dropped and a [`Notification::Lagged`] says how many (default
    /// 16 384: above the largest burst one operation produces at the default settings, where
    /// one received message can deliver the 10 000 that waited for it, so a subscriber that
    /// reads after each operation misses nothing). The queue grows only as far as it is used.
    pub notification_capacity: usize,
    /// Most bytes held on behalf of remote members across all channels in memory, as the
    /// engine charges them (`Channel::held_bytes`: messages waiting for dependencies with their
    /// indexes and timers, SDS-R entries). An operation that leaves more makes the channel
    /// holding the most give way — its heaviest sender's oldest waiting messages first
    /// (`Dropped` events, reason `Evicted`), as its own full buffer would — and then the next,
    /// until the total is within the budget. Default 512 MiB: twice one channel's
    /// `max_incoming_buffer_bytes`, so that one channel under a flood still reaches its own
    /// bound while all channels together hold no more, however many there are.
    pub max_held_bytes: usize,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            engine: Config::default(),
            max_channels: 1_000,
            unjoined_channels: UnjoinedChannels::default(),
            notification_capacity: 16_384,
            max_held_bytes: 512 << 20,
        }
    }
}

impl ManagerConfig {
    /// Sets [`engine`](Self::engine).
    #[must_use]
    pub fn with_engine(mut self, engine: Config) -> Self {
        self.engine = engine;
        self
    }

    /// Sets [`max_channels`](Self::max_channels).
    #[must_use]
    pub fn with_max_channels(mut self, max_channels: usize) -> Self {
        self.max_channels = max_channels;
        self
    }

    /// Sets [`unjoined_channels`](Self::unjoined_channels).
    #[must_use]
    pub fn with_unjoined_channels(mut self, unjoined_channels: UnjoinedChannels) -> Self {
        self.unjoined_channels = unjoined_channels;
        self
    }

    /// Sets [`max_held_bytes`](Self::max_held_bytes).
    #[must_use]
    pub fn with_max_held_bytes(mut self, max_held_bytes: usize) -> Self {
        self.max_held_bytes = max_held_bytes;
        self
    }

    /// Sets [`notification_capacity`](Self::notification_capacity).
    #[must_use]
    pub fn with_notification_capacity(mut self, notification_capacity: usize) -> Self {
        self.notification_capacity = notification_capacity;
        self
    }
}

/// What a received message does for a channel the application has not joined.
///
/// The application joins a channel by sending on it, marking dependencies met on it, asking
/// for its sync message or state, or with [`ReliabilityManager::join_channel`]; joins last while
/// the manager runs (an application joins its channels again after a restart, and their stored
/// state is loaded then). Joined channels are bounded by [`ManagerConfig::max_channels`]; bytes
/// from the network can never take their places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum UnjoinedChannels {
    /// Refused with [`ManagerError::NotJoined`] before anything is loaded, created or stored.
    #[default]
    Refuse,
    /// Opened, as a channel of their own kind: at most `max` of them at once, apart from the
    /// joined ones; beyond that the least recently used is evicted (from memory and from the
    /// store: nobody joined it) to make room. A channel opened this way becomes a joined one
    /// when the application joins it. For tools that take any channel (the C ABI, `sds peer`).
    Accept {
        /// Most channels opened by received messages at once.
        max: usize,
    },
}

/// Why a manager call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// An argument cannot be used (empty content or id, an id used twice, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Content or message above the configured size.
    #[error("message too large: {size} bytes, limit {limit}")]
    MessageTooLarge {
        /// Size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// Received bytes are not a valid message.
    #[error("cannot decode message: {0}")]
    Decode(#[source] DecodeError),
    /// The store failed; nothing of the operation was announced and the channel will be reloaded
    /// from the store on next use.
    #[error(transparent)]
    Persistence(#[from] PersistenceError),
    /// Creating another channel would exceed `max_channels`.
    #[error("too many channels (limit {limit})")]
    TooManyChannels {
        /// The limit.
        limit: usize,
    },
    /// A received message for a channel the application has not joined (see
    /// [`UnjoinedChannels`]); nothing was loaded, created or stored.
    #[error("channel {channel} is not joined")]
    NotJoined {
        /// The channel the message names.
        channel: ChannelId,
    },
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The protocol refused the input (for example a message citing itself, or a full incoming
    /// buffer).
    #[error("protocol: {0}")]
    Protocol(#[source] EngineError),
    /// The operation's task ended abnormally (a bug); the channel is reloaded from the store on
    /// next use.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<EngineError> for ManagerError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Decode(d) => ManagerError::Decode(d),
            EngineError::MessageTooLarge { size, limit } => {
                ManagerError::MessageTooLarge { size, limit }
            }
            EngineError::EmptyContent
            | EngineError::EmptyMessageId
            | EngineError::IdTooLong { .. }
            | EngineError::DuplicateMessageId(_) => ManagerError::InvalidArgument(e.to_string()),
            other => ManagerError::Protocol(other),
        }
    }
}

/// Result of a manager call.
pub type ManagerResult<T> = Result<T, ManagerError>;

/// What the manager hands to the application, in order, once it is durable.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Notification {
    /// A protocol event.
    Event(Event),
    /// Bytes to broadcast, produced by periodic work (resends, syncs, repairs).
    Transmit(Transmit),
    /// Periodic work on a channel failed (for example its store batch); nothing of it was
    /// announced, and it is retried about a second later.
    TaskError {
        /// The channel.
        channel_id: ChannelId,
        /// What failed.
        error: ManagerError,
    },
    /// This subscriber's queue was full: `missed` notifications were dropped here (see
    /// [`ReliabilityManager::subscribe`]).
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// Milliseconds since the Unix epoch, advancing with tokio's clock (so a paused test clock
/// pauses it too).
#[derive(Debug, Clone, Copy)]
struct Clock {
    base_ms: u64,
    base: Instant,
}

impl Clock {
    fn new() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            base_ms,
            base: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base_ms
            .saturating_add(self.base.elapsed().as_millis() as u64)
    }

    fn instant_of(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms.saturating_sub(self.base_ms))
    }
}

/// A channel's place in the manager: loaded or not (never loaded, or discarded after a store
/// failure).
#[derive(Default)]
struct Slot {
    channel: Option<Channel>,
    /// The channel's sizes as last counted in the gauges.
    sizes: Sizes,
}

impl Slot {
    /// Discards the in-memory channel (it is reloaded from the store on next use).
    fn discard(&mut self) {
        self.channel = None;
        Sizes::moved(std::mem::take(&mut self.sizes), Sizes::default());
    }
}

/// The channels in memory: joined ones and those opened by received messages.
#[derive(Default)]
struct Channels {
    slots: HashMap<ChannelId, Arc<tokio::sync::Mutex<Slot>>>,
    joined: std::collections::HashSet<ChannelId>,
    /// Channels opened by received messages (not joined), least recently used first.
    remote: std::collections::VecDeque<ChannelId>,
}

impl Channels {
    /// Forgets a channel entirely (removed or evicted).
    fn forget(&mut self, id: &ChannelId) {
        self.slots.remove(id);
        self.joined.remove(id);
        self.remote.retain(|c| c != id);
    }
}

/// Who asks for a channel: the application (joins it) or a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    App,
    Remote,
}

/// A locked slot whose channel is discarded if an operation panics part-way, so that it is
/// reloaded from the store instead of used half-changed.
struct DiscardOnPanic<'a>(tokio::sync::MutexGuard<'a, Slot>);

impl Drop for DiscardOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.discard();
        }
    }
}

/// Next deadlines of loaded channels.
#[derive(Default)]
struct Timers {
    of: HashMap<ChannelId, u64>,
    queue: BTreeSet<(u64, ChannelId)>,
}

impl Timers {
    /// Sets a channel's deadline; returns whether it is now the earliest.
    fn set(&mut self, id: &ChannelId, deadline: Option<u64>) -> bool {
        if let Some(old) = self.of.remove(id) {
            self.queue.remove(&(old, id.clone()));
        }
        let Some(d) = deadline else {
            return false;
        };
        self.of.insert(id.clone(), d);
        self.queue.insert((d, id.clone()));
        self.queue.first().is_some_and(|(first, _)| *first == d)
    }

    fn take_due(&mut self, now: u64) -> Vec<ChannelId> {
        let mut due = Vec::new();
        while let Some((d, id)) = self.queue.first().cloned() {
            if d > now {
                break;
            }
            self.queue.remove(&(d, id.clone()));
            self.of.remove(&id);
            due.push(id);
        }
        due
    }
}

struct Periodic {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

struct Inner {
    participant_id: ParticipantId,
    config: ManagerConfig,
    persistence: Arc<dyn Persistence>,
    clock: Clock,
    channels: Mutex<Channels>,
    hub: Hub,
    /// Set when the last handle to the manager is dropped: periodic work stops.
    shutdown: watch::Sender<bool>,
    hint_provider: RwLock<Option<HintProvider>>,
    timers: Mutex<Timers>,
    /// Bytes held for remote members, per channel ([`ManagerConfig::max_held_bytes`]).
    held: Mutex<Held>,
    /// Taken while channels shed bytes for the budget, one operation at a time.
    shedding: tokio::sync::Mutex<()>,
    wake: Notify,
    periodic_on: AtomicBool,
    periodic: tokio::sync::Mutex<Option<Periodic>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The SDS reliability manager of one participant: wraps outgoing and unwraps incoming messages
/// on any number of channels, persists every change before announcing it, and runs the
/// protocol's timers.
///
/// Cheap to clone; clones share the same manager. Each channel has its own lock, so channels
/// proceed in parallel.
///
/// Every async method is cancel safe: an operation runs in a task of its own, so once called
/// it completes — stored, then announced — even if the caller stops polling it (a timeout, a
/// `select!` branch, an aborted task); only its result is then lost. Methods must be called
/// within a tokio runtime.
///
/// Dropping the last handle stops periodic work (no transmission or store write comes after
/// the drop, beyond a tick already running); [`cleanup`](Self::cleanup) is the orderly way
/// that waits for it.
#[derive(Clone)]
pub struct ReliabilityManager {
    inner: Arc<Inner>,
    _last: Arc<LastHandle>,
}

/// Dropped with the last handle of a manager: tells the periodic driver to stop (it holds the
/// manager's internals, so they would otherwise live on).
struct LastHandle(Arc<Inner>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        self.0.periodic_on.store(false, Ordering::SeqCst);
        let _ = self.0.shutdown.send(true);
    }
}

impl std::fmt::Debug for ReliabilityManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReliabilityManager")
            .field("participant_id", &self.inner.participant_id)
            .field("channels", &lock(&self.inner.channels).slots.len())
            .finish_non_exhaustive()
    }
}

impl ReliabilityManager {
    /// A manager for `participant_id` (empty: SDS-R off and no sender id on the wire).
    pub fn new(
        participant_id: impl Into<ParticipantId>,
        config: ManagerConfig,
        persistence: Arc<dyn Persistence>,
    ) -> ManagerResult<Self> {
        config.engine.validate()?;
        if config.max_channels == 0 {
            return Err(ConfigError("max_channels must be at least 1".into()).into());
        }
        if config.notification_capacity < 2 {
            return Err(ConfigError("notification_capacity must be at least 2".into()).into());
        }
        if config.max_held_bytes == 0 {
            return Err(ConfigError("max_held_bytes must be at least 1".into()).into());
        }
        let inner = Arc::new(Inner {
            participant_id: participant_id.into(),
            config,
            persistence,
            clock: Clock::new(),
            channels: Mutex::new(Channels::default()),
            hub: Hub::default(),
            shutdown: watch::channel(false).0,
            hint_provider: RwLock::new(None),
            timers: Mutex::new(Timers::default()),
            held: Mutex::new(Held::default()),
            shedding: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            periodic_on: AtomicBool::new(false),
            periodic: tokio::sync::Mutex::new(None),
        });
        Ok(ReliabilityManager {
            _last: Arc::new(LastHandle(inner.clone())),
            inner,
        })
    }

    /// The participant id.
    pub fn participant_id(&self) -> &ParticipantId {
        &self.inner.participant_id
    }

    /// The settings the manager was made with (for example its engine's profile and limits,
    /// to decode received bytes the way it will).
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    /// Subscribes to events and periodic transmissions, from now on. Any number of
    /// subscribers may exist; each gets every notification, in order, in a queue of its own of
    /// [`ManagerConfig::notification_capacity`]. Lag policy: when a subscriber's queue is full,
    /// newer notifications are dropped for it and a [`Notification::Lagged`] takes their place;
    /// operations never wait for a subscriber. Dropping the subscription unsubscribes.
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_with_capacity(self.inner.config.notification_capacity)
    }

    /// [`subscribe`](Self::subscribe) with a queue of its own capacity (at least 2), for a
    /// consumer that reads after each operation and must see every notification of even the
    /// largest one.
    pub fn subscribe_with_capacity(&self, capacity: usize) -> Subscription {
        self.inner.hub.subscribe(capacity)
    }

    /// Sets (or clears) the retrieval-hint provider of every channel.
    pub async fn set_retrieval_hint_provider(&self, provider: Option<HintProvider>) {
        let this = self.clone();
        let _ = detached(async move {
            *this
                .inner
                .hint_provider
                .write()
                .unwrap_or_else(|e| e.into_inner()) = provider.clone();
            for slot in this.slots() {
                if let Some(ch) = slot.lock().await.channel.as_mut() {
                    ch.set_hint_provider(provider.clone());
                }
            }
            Ok(())
        })
        .await;
    }

    // ----- protocol operations -------------------------------------------------------------

    /// Wraps `content` as message `message_id` on `channel` and returns the bytes to
    /// broadcast. The message is stored as unacknowledged before this returns.
    ///
    /// Message, channel and participant ids are distinct types: string literals convert into
    /// any of them, but an id of one kind is never taken for another.
    ///
    /// ```
    /// # async fn f(m: &sds_manager::ReliabilityManager) {
    /// let (id, channel) = (sds_manager::MessageId::from("m1"), sds_manager::ChannelId::from("lobby"));
    /// let _ = m.wrap_outgoing_message(&b"hi"[..], id, channel).await;
    /// # }
    /// ```
    ///
    /// ```compile_fail
    /// # async fn f(m: &sds_manager::ReliabilityManager) {
    /// let (id, channel) = (sds_manager::MessageId::from("m1"), sds_manager::ChannelId::from("lobby"));
    /// let _ = m.wrap_outgoing_message(&b"hi"[..], channel, id).await; // swapped: refused
    /// # }
    /// ```
    pub async fn wrap_outgoing_message(
        &self,
        content: impl Into<Bytes>,
        message_id: impl Into<MessageId>,
        channel: impl Into<ChannelId>,
    ) -> ManagerResult<Bytes> {
        let channel = nonempty_channel(channel.into())?;
        let (content, message_id) = (content.into(), message_id.into());
        let bytes = self
            .on_channel("wrap", channel, move |ch, now| {
                ch.wrap(content, message_id, now)
            })
            .await?;
        observe::sent(bytes.len());
        Ok(bytes)
    }

    /// Wraps `content` as ephemeral message `message_id` on `channel` (spec profile only): the
    /// bytes to broadcast, with no lamport timestamp, history or filter. Nothing is kept or
    /// stored, and it is never resent or acknowledged.
    pub fn wrap_ephemeral_message(
        &self,
        content: impl Into<Bytes>,
        message_id: impl Into<MessageId>,
        channel: impl Into<ChannelId>,
    ) -> ManagerResult<Bytes> {
        let channel = nonempty_channel(channel.into())?;
        Ok(ephemeral_message(
            &self.inner.config.engine,
            &channel,
            &self.inner.participant_id,
            &message_id.into(),
            content.into(),
        )?)
    }

    /// Processes a received message: returns its content, the dependencies it still waits for
    /// (with retrieval hints) and its channel. Deliveries come as `MessageReady` events, in
    /// causal order.
    pub async fn unwrap_received_message(
        &self,
        bytes: impl Into<Bytes>,
    ) -> ManagerResult<Unwrapped> {
        let bytes = bytes.into();
        let limits = &self.inner.config.engine.limits;
        if bytes.len() > limits.max_message_size {
            return Err(ManagerError::MessageTooLarge {
                size: bytes.len(),
                limit: limits.max_message_size,
            });
        }
        // Decode before touching any channel: a malformed message creates and loads nothing.
        let msg = match sds_proto::engine::decode(&bytes, &self.inner.config.engine)? {
            Received::Message(msg) => msg,
            // Announced at once (unless it is our own, echoed back); no channel is created or
            // loaded and nothing is stored (EPH-06).
            Received::Ephemeral(e) => {
                nonempty_channel(e.channel_id.clone())?;
                let (event, unwrapped) = e.announce(&self.inner.participant_id);
                if let Some(event) = event {
                    self.inner.hub.publish([Notification::Event(event)]);
                }
                observe::received(bytes.len(), &unwrapped.kind);
                return Ok(unwrapped);
            }
        };
        let channel = nonempty_channel(msg.channel_id.clone())?;
        let size = bytes.len();
        let unwrapped = self
            .on_channel("unwrap", channel, move |ch, now| {
                ch.unwrap_message(msg, bytes, now)
            })
            .await?;
        observe::received(size, &unwrapped.kind);
        Ok(unwrapped)
    }

    /// Treats `ids` as delivered for dependency purposes on `channel` (retrieved out of band).
    pub async fn mark_dependencies_met(
        &self,
        ids: &[MessageId],
        channel: impl Into<ChannelId>,
    ) -> ManagerResult<()> {
        let channel = nonempty_channel(channel.into())?;
        let ids = ids.to_vec();
        self.on_channel("mark_dependencies_met", channel, move |ch, now| {
            ch.mark_dependencies_met(&ids, now);
            Ok(())
        })
        .await
    }

    /// Builds a sync message for `channel` (see [`Channel::sync_message`]).
    pub async fn sync_message(
        &self,
        channel: impl Into<ChannelId>,
    ) -> ManagerResult<Option<Bytes>> {
        let channel = nonempty_channel(channel.into())?;
        self.on_channel("sync_message", channel, |ch, now| ch.sync_message(now))
            .await
    }

    /// Joins `channel` (see [`join_channel`](Self::join_channel)).
    pub async fn ensure_channel(&self, channel: impl Into<ChannelId>) -> ManagerResult<()> {
        let channel = nonempty_channel(channel.into())?;
        self.on_channel("ensure_channel", channel, |_, _| Ok(()))
            .await
    }

    /// Joins `channel`: received messages for it are accepted from now on (see
    /// [`UnjoinedChannels`]), and its stored state is loaded if it is not in memory yet. Sending
    /// on a channel joins it too. Joins last while the manager runs.
    pub async fn join_channel(&self, channel: impl Into<ChannelId>) -> ManagerResult<()> {
        self.ensure_channel(channel).await
    }

    /// Deletes `channel`, in memory and in the store (exactly one `drop_channel`, also for a
    /// channel that is only stored). On a store failure the channel stays as it was.
    pub async fn remove_channel(&self, channel: impl Into<ChannelId>) -> ManagerResult<()> {
        let channel = nonempty_channel(channel.into())?;
        let inner = self.inner.clone();
        detached(async move {
            let slot = lock(&inner.channels).slots.get(&channel).cloned();
            match slot {
                Some(slot) => {
                    let mut guard = slot.lock().await;
                    inner.persistence.drop_channel(&channel).await?;
                    guard.discard();
                    lock(&inner.channels).forget(&channel);
                    lock(&inner.held).set(&channel, 0);
                }
                None => inner.persistence.drop_channel(&channel).await?,
            }
            lock(&inner.timers).set(&channel, None);
            Ok(())
        })
        .await
    }

    /// Deletes every channel the manager knows, in memory and in the store. A failure (or a
    /// cancellation) part-way leaves the channels not yet dropped in place, each channel
    /// dropped entirely or not at all; calling again finishes.
    pub async fn reset(&self) -> ManagerResult<()> {
        let mut ids: Vec<ChannelId> = lock(&self.inner.channels).slots.keys().cloned().collect();
        ids.sort();
        for id in ids {
            self.remove_channel(id).await?;
        }
        Ok(())
    }

    /// Stops periodic work (and waits for it), then releases all in-memory state. The store is
    /// untouched: a new manager on it restores everything.
    pub async fn cleanup(&self) {
        let this = self.clone();
        let _ = detached(async move {
            this.stop_periodic_tasks_now().await;
            for slot in this.slots() {
                slot.lock().await.discard();
            }
            *lock(&this.inner.channels) = Channels::default();
            *lock(&this.inner.timers) = Timers::default();
            *lock(&this.inner.held) = Held::default();
            Ok(())
        })
        .await;
    }

    // ----- periodic work -------------------------------------------------------------------

    /// Starts the timer-driven periodic work of every channel: resends and give-ups, lost
    /// dependencies, SDS-R rebroadcasts, and a sync message per channel every sync interval.
    /// Must be called within a tokio runtime. Calling it again while running does nothing.
    pub async fn start_periodic_tasks(&self) {
        let this = self.clone();
        let _ = detached(async move {
            this.start_periodic_tasks_now().await;
            Ok(())
        })
        .await;
    }

    async fn start_periodic_tasks_now(&self) {
        let mut periodic = self.inner.periodic.lock().await;
        if periodic.is_some() {
            return;
        }
        self.inner.periodic_on.store(true, Ordering::SeqCst);
        let now = self.inner.clock.now_ms();
        for slot in self.slots() {
            let mut guard = slot.lock().await;
            if let Some(ch) = guard.channel.as_mut() {
                ch.set_sync_timer(Some(now));
                let id = ch.channel_id().clone();
                let deadline = ch.poll_timeout();
                lock(&self.inner.timers).set(&id, deadline);
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let handle = tokio::spawn(drive(self.inner.clone(), stop_rx));
        *periodic = Some(Periodic { stop, handle });
    }

    /// Runs, now, whatever periodic work is due on every channel in memory (resends, give-ups,
    /// lost dependencies, repair rebroadcasts, and syncs if periodic tasks run), for
    /// applications that drive time themselves instead of calling
    /// [`start_periodic_tasks`](Self::start_periodic_tasks). Failures are reported like those of
    /// periodic work.
    pub async fn run_due_work(&self) {
        let this = self.clone();
        let _ = detached(async move {
            let now = this.inner.clock.now_ms();
            for id in this.channel_ids() {
                this.inner.tick(&id, now).await;
            }
            Ok(())
        })
        .await;
    }

    /// Stops periodic work and waits until it has stopped.
    pub async fn stop_periodic_tasks(&self) {
        let this = self.clone();
        let _ = detached(async move {
            this.stop_periodic_tasks_now().await;
            Ok(())
        })
        .await;
    }

    async fn stop_periodic_tasks_now(&self) {
        let mut periodic = self.inner.periodic.lock().await;
        self.inner.periodic_on.store(false, Ordering::SeqCst);
        if let Some(p) = periodic.take() {
            let _ = p.stop.send(true);
            let _ = p.handle.await;
        }
        for slot in self.slots() {
            if let Some(ch) = slot.lock().await.channel.as_mut() {
                ch.set_sync_timer(None);
            }
        }
    }

    // ----- getters -------------------------------------------------------------------------

    /// Ids of the channels in memory, sorted.
    pub fn channel_ids(&self) -> Vec<ChannelId> {
        let mut ids: Vec<ChannelId> = lock(&self.inner.channels).slots.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Bytes held on behalf of remote members across the channels in memory, as their engines
    /// charge them: what [`ManagerConfig::max_held_bytes`] bounds.
    pub fn held_bytes(&self) -> usize {
        lock(&self.inner.held).total()
    }

    /// The whole state of `channel` (loading it if needed).
    pub async fn snapshot(&self, channel: impl Into<ChannelId>) -> ManagerResult<ChannelSnapshot> {
        self.read(channel, |ch| ch.snapshot()).await
    }

    /// The log of `channel`, oldest first.
    pub async fn get_log(&self, channel: impl Into<ChannelId>) -> ManagerResult<Vec<LogEntry>> {
        self.read(channel, |ch| ch.log().cloned().collect()).await
    }

    /// Up to `limit` messages of `channel`'s log whose sequence is above `after` (0: from the
    /// start), oldest first, read from the store: what was delivered and sent on the channel
    /// since the delivery whose [`MessageReady`](Event::MessageReady) event carried `after`.
    /// With an application that records the last sequence it handled, this makes delivery to
    /// it at-least-once across crashes (see the `catch_up` example).
    ///
    /// Only the store is read, whether or not the channel is in memory. How far back it goes
    /// is the store's: the bounded log (`max_message_history` entries) by default, everything
    /// with a store that keeps history (`sds-sqlite`'s `Options::keep_history`,
    /// [`MemoryPersistence::keeping_history`](crate::MemoryPersistence::keeping_history)).
    ///
    /// This method is cancel safe: it only reads.
    pub async fn read_log(
        &self,
        channel: impl Into<ChannelId>,
        after: u64,
        limit: usize,
    ) -> ManagerResult<Vec<LoggedMessage>> {
        let channel = nonempty_channel(channel.into())?;
        let entries = self
            .inner
            .persistence
            .read_log(&channel, after, limit)
            .await?;
        let config = &self.inner.config.engine;
        entries
            .into_iter()
            .map(|e| catch_up::logged(e, config))
            .collect()
    }

    /// The unacknowledged outgoing messages of `channel`.
    pub async fn get_outgoing(
        &self,
        channel: impl Into<ChannelId>,
    ) -> ManagerResult<Vec<OutgoingEntry>> {
        self.read(channel, |ch| ch.outgoing().cloned().collect())
            .await
    }

    /// The messages of `channel` waiting for dependencies.
    pub async fn get_incoming(
        &self,
        channel: impl Into<ChannelId>,
    ) -> ManagerResult<Vec<IncomingEntry>> {
        self.read(channel, |ch| ch.incoming()).await
    }

    /// The lamport clock of `channel`.
    pub async fn lamport(&self, channel: impl Into<ChannelId>) -> ManagerResult<i64> {
        self.read(channel, |ch| ch.lamport()).await
    }

    /// Whether `channel`'s bloom filter holds `id`.
    pub async fn bloom_contains(
        &self,
        channel: impl Into<ChannelId>,
        id: &MessageId,
    ) -> ManagerResult<bool> {
        let id = id.clone();
        self.read(channel, move |ch| ch.filter_contains(id.as_bytes()))
            .await
    }

    async fn read<T: Send + 'static>(
        &self,
        channel: impl Into<ChannelId>,
        f: impl FnOnce(&Channel) -> T + Send + 'static,
    ) -> ManagerResult<T> {
        let channel = nonempty_channel(channel.into())?;
        self.on_channel("read", channel, |ch, _| Ok(f(ch))).await
    }

    /// Runs one protocol operation on `channel` in a task of its own, so that it completes
    /// (stored, then announced) even if the caller's future is dropped.
    async fn on_channel<T: Send + 'static>(
        &self,
        op: &'static str,
        channel: ChannelId,
        f: impl FnOnce(&mut Channel, u64) -> Result<T, EngineError> + Send + 'static,
    ) -> ManagerResult<T> {
        let inner = self.inner.clone();
        let span = tracing::debug_span!("sds", op, channel = %channel);
        let origin = if op == "unwrap" {
            Origin::Remote
        } else {
            Origin::App
        };
        detached(async move { inner.with_channel(&channel, origin, f).await }.instrument(span))
            .await
    }

    fn slots(&self) -> Vec<Arc<tokio::sync::Mutex<Slot>>> {
        lock(&self.inner.channels).slots.values().cloned().collect()
    }
}

/// Runs `op` in a task of its own: it completes even if the caller's future is dropped.
async fn detached<T: Send + 'static>(
    op: impl std::future::Future<Output = ManagerResult<T>> + Send + 'static,
) -> ManagerResult<T> {
    tokio::spawn(op)
        .await
        .unwrap_or_else(|e| Err(ManagerError::Internal(format!("operation task: {e}"))))
}

fn nonempty_channel(channel: ChannelId) -> ManagerResult<ChannelId> {
    if channel.is_empty() {
        Err(ManagerError::InvalidArgument(
            "channel id must not be empty".into(),
        ))
    } else {
        Ok(channel)
    }
}

impl Inner {
    /// The slot of `id`, creating it if `origin` may: joined channels up to `max_channels`,
    /// channels opened by received messages as [`UnjoinedChannels`] says. Also returns a
    /// channel opened by a received message that must be evicted to make room.
    fn slot(
        &self,
        id: &ChannelId,
        origin: Origin,
    ) -> ManagerResult<(Arc<tokio::sync::Mutex<Slot>>, Option<ChannelId>)> {
        let mut channels = lock(&self.channels);
        let joined = channels.joined.contains(id);
        if origin == Origin::App && !joined {
            let joined_now = channels.joined.len();
            if joined_now >= self.config.max_channels {
                return Err(ManagerError::TooManyChannels {
                    limit: self.config.max_channels,
                });
            }
            channels.joined.insert(id.clone());
            channels.remote.retain(|c| c != id);
        }
        if let Some(slot) = channels.slots.get(id).cloned() {
            if origin == Origin::Remote && !joined {
                // Most recently used last.
                channels.remote.retain(|c| c != id);
                channels.remote.push_back(id.clone());
            }
            return Ok((slot, None));
        }
        let mut evict = None;
        if origin == Origin::Remote && !joined {
            match self.config.unjoined_channels {
                UnjoinedChannels::Refuse => {
                    return Err(ManagerError::NotJoined {
                        channel: id.clone(),
                    })
                }
                UnjoinedChannels::Accept { max } => {
                    if channels.remote.len() >= max.max(1) {
                        evict = channels.remote.pop_front();
                    }
                    channels.remote.push_back(id.clone());
                }
            }
        }
        let slot = Arc::new(tokio::sync::Mutex::new(Slot::default()));
        channels.slots.insert(id.clone(), slot.clone());
        Ok((slot, evict))
    }

    /// Removes a channel opened by a received message from memory and the store, to make room.
    async fn evict(&self, id: &ChannelId) -> ManagerResult<()> {
        let slot = lock(&self.channels).slots.get(id).cloned();
        if let Some(slot) = slot {
            let mut guard = slot.lock().await;
            self.persistence.drop_channel(id).await?;
            guard.discard();
        }
        lock(&self.channels).forget(id);
        lock(&self.timers).set(id, None);
        lock(&self.held).set(id, 0);
        tracing::debug!(channel = %id, "channel opened by received messages evicted");
        Ok(())
    }

    /// Runs one protocol operation on a channel: load it if needed, apply `f`, commit the store
    /// batch, then publish events and transmissions.
    async fn with_channel<T>(
        &self,
        id: &ChannelId,
        origin: Origin,
        f: impl FnOnce(&mut Channel, u64) -> Result<T, EngineError>,
    ) -> ManagerResult<T> {
        let (slot, evict) = self.slot(id, origin)?;
        if let Some(victim) = evict {
            if let Err(e) = self.evict(&victim).await {
                lock(&self.channels).forget(id);
                return Err(e);
            }
        }
        let mut guard = DiscardOnPanic(slot.lock().await);
        let now = self.clock.now_ms();
        let ch = self.loaded(id, &mut guard.0, now).await?;
        let value = f(ch, now)?;
        self.commit(id, &mut guard.0).await?;
        drop(guard);
        self.keep_budget().await;
        Ok(value)
    }

    /// Brings the bytes held for remote members back within [`ManagerConfig::max_held_bytes`]:
    /// the channel holding the most sheds what the total exceeds, then the next, one at a time
    /// (called with no channel locked). A channel that fails to commit is reported as
    /// periodic work is.
    async fn keep_budget(&self) {
        let budget = self.config.max_held_bytes;
        if lock(&self.held).total() <= budget {
            return;
        }
        let _one_at_a_time = self.shedding.lock().await;
        loop {
            let (id, target) = {
                let held = lock(&self.held);
                match held.heaviest() {
                    Some((id, bytes)) if held.total() > budget => {
                        let target = held.target(bytes, budget);
                        (id, target)
                    }
                    _ => return,
                }
            };
            let Some(slot) = lock(&self.channels).slots.get(&id).cloned() else {
                lock(&self.held).set(&id, 0);
                continue;
            };
            let mut guard = DiscardOnPanic(slot.lock().await);
            let Some(ch) = guard.0.channel.as_mut() else {
                // Discarded meanwhile: it holds nothing.
                lock(&self.held).set(&id, 0);
                continue;
            };
            let released = ch.shed_held(target);
            tracing::debug!(channel = %id, released, "held bytes shed for the manager's budget");
            if let Err(error) = self.commit(&id, &mut guard.0).await {
                // The channel was discarded: it holds nothing in memory now.
                self.hub.publish([Notification::TaskError {
                    channel_id: id,
                    error,
                }]);
            } else if released == 0 {
                // Cannot happen (a channel sheds down to any target); never loop on it.
                return;
            }
        }
    }

    /// The channel in the slot, loading (and restoring) it from the store first if needed.
    async fn loaded<'a>(
        &self,
        id: &ChannelId,
        slot: &'a mut Slot,
        now: u64,
    ) -> ManagerResult<&'a mut Channel> {
        if slot.channel.is_none() {
            let snapshot = self.persistence.load_channel(id).await?;
            let mut ch = Channel::restore(
                id.clone(),
                self.participant_id.clone(),
                self.config.engine.clone(),
                snapshot,
                now,
            )?;
            ch.set_hint_provider(
                self.hint_provider
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            );
            if self.periodic_on.load(Ordering::SeqCst) {
                ch.set_sync_timer(Some(now));
            }
            slot.channel = Some(ch);
            // Restoring can trim the log or deliver what became deliverable: commit that too.
            self.commit(id, slot).await?;
        }
        slot.channel
            .as_mut()
            .ok_or_else(|| PersistenceError::new("channel state unavailable").into())
    }

    /// Commits the channel's pending store operations as one batch, then publishes its events
    /// and transmissions. On a store failure the in-memory channel is discarded, so it is
    /// reloaded from the store on next use, and nothing is published.
    async fn commit(&self, id: &ChannelId, slot: &mut Slot) -> ManagerResult<()> {
        let Some(ch) = slot.channel.as_mut() else {
            return Ok(());
        };
        let ops = ch.take_store_ops();
        let events: Vec<Event> = std::iter::from_fn(|| ch.poll_event()).collect();
        let transmits: Vec<Transmit> = std::iter::from_fn(|| ch.poll_transmit()).collect();
        let deadline = ch.poll_timeout();
        let sizes = Sizes::of(ch);
        if !ops.is_empty() {
            let started = std::time::Instant::now();
            let stored = self.persistence.apply_batch(id, &ops).await;
            observe::store_batch(started.elapsed(), stored.is_ok());
            if let Err(e) = stored {
                tracing::warn!(channel = %id, error = %e, "store batch failed; channel will be reloaded");
                slot.discard();
                lock(&self.timers).set(id, None);
                lock(&self.held).set(id, 0);
                return Err(e.into());
            }
        }
        Sizes::moved(std::mem::replace(&mut slot.sizes, sizes), sizes);
        lock(&self.held).set(id, sizes.held());
        if lock(&self.timers).set(id, deadline) {
            self.wake.notify_one();
        }
        observe::announced(&events, &transmits);
        self.hub.publish(
            events
                .into_iter()
                .map(Notification::Event)
                .chain(transmits.into_iter().map(Notification::Transmit)),
        );
        Ok(())
    }

    /// Periodic work of one channel at `now`.
    async fn tick(&self, id: &ChannelId, now: u64) {
        let slot = lock(&self.channels).slots.get(id).cloned();
        let Some(slot) = slot else {
            return;
        };
        let mut guard = slot.lock().await;
        let result = async {
            // A channel dropped after a failed batch comes back from the store; its sync, which
            // may be what failed, is redone now (resends and repairs follow from stored times).
            let reloaded = guard.channel.is_none();
            let ch = self.loaded(id, &mut guard, now).await?;
            if reloaded && self.periodic_on.load(Ordering::SeqCst) {
                ch.schedule_sync_at(Some(now));
            }
            ch.handle_timeout(now);
            self.commit(id, &mut guard).await
        }
        .await;
        if let Err(error) = result {
            self.hub.publish([Notification::TaskError {
                channel_id: id.clone(),
                error,
            }]);
            // Redo the work once the store may have recovered.
            lock(&self.timers).set(id, Some(now.saturating_add(1_000)));
        }
    }
}

/// The periodic driver: sleeps until the earliest channel deadline (or until woken because an
/// earlier one appeared), then runs every due channel.
async fn drive(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let next = lock(&inner.timers).queue.first().map(|(d, _)| *d);
        let sleep = match next {
            Some(d) => tokio::time::sleep_until(inner.clock.instant_of(d)),
            None => tokio::time::sleep(Duration::from_secs(3600)),
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = shutdown.changed() => return,
            _ = inner.wake.notified() => continue,
            _ = sleep => {}
        }
        if *stop.borrow() {
            return;
        }
        let now = inner.clock.now_ms();
        let due = lock(&inner.timers).take_due(now);
        for id in due {
            if *shutdown.borrow() {
                return;
            }
            inner.tick(&id, now).await;
        }
    }
}
