//! The Reliable Channel: see [`ReliableChannel`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sds_manager::{
    Bytes, ChannelId, Event, HistoryEntry, ManagerConfig, MessageId, Notification,
    ReliabilityManager, SendFailure, Subscription, TransmitKind,
};
use sds_proto::wire::Profile;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::lossy::LossySender;
use crate::rate_limit::{Budget, EphemeralDropReason, Purpose, Queued, RateLimit, SendQueue};
use crate::segmentation::{
    self, Frame, FrameError, Reassembly, ReassemblyDropReason, ReassemblyLimits, SEGMENT_OVERHEAD,
};
use crate::{NodeConfig, NodeError, NodeHandle};

/// Settings of a [`ReliableChannel`]. The defaults are those of the Reliable Channel API
/// (sync every 30 s, resend after 30 s up to 10 times, retrieval every 10 s, no lost-message
/// timeout, 200 causal-history entries, 2 possible acknowledgements, query on connect,
/// segments of 100 KB); the SDS and retrieval ones take effect through
/// [`apply_to_manager`](Self::apply_to_manager) and [`apply_to_node`](Self::apply_to_node),
/// as the manager and node are made before the channel.
///
/// ```
/// use std::time::Duration;
/// use sds_libp2p::{RateLimit, ReliableChannelConfig};
///
/// let config = ReliableChannelConfig::default()
///     .with_segment_size(50_000)
///     .with_rate_limit(Some(RateLimit::new(10, Duration::from_secs(1))));
/// assert_eq!(config.sync_interval, Duration::from_secs(30));
/// let manager = config.apply_to_manager(sds_manager::ManagerConfig::default());
/// assert_eq!(manager.engine.max_resend_attempts, 10);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReliableChannelConfig {
    /// Interval between two sync messages (default 30 s; the specification's
    /// `sync_min_interval_ms`).
    pub sync_interval: Duration,
    /// How long an unacknowledged message waits before it is sent again (default 30 s;
    /// `retry_interval_ms`). A message only possibly acknowledged waits twice as long.
    pub retry_interval: Duration,
    /// Resends before a message is given up (default 10; `max_retry_attempts`).
    pub max_retry_attempts: u32,
    /// How long a missing message, asked of a peer, may take before it is asked again
    /// (default 10 s; `retrieve_frequency_ms`).
    pub retrieve_frequency: Duration,
    /// How long a missing dependency is waited for before it is reported irretrievably lost
    /// and what waited for it is delivered (default `None`: forever, the specification's 0 for
    /// `timeout_for_lost_messages_ms`).
    pub lost_message_timeout: Option<Duration>,
    /// Recent messages cited in each message's causal history (default 200;
    /// `causal_history_size`).
    pub causal_history_size: usize,
    /// Bloom-filter hits that count as an acknowledgement (default 2;
    /// `possible_acks_threshold`).
    pub possible_acks_threshold: u32,
    /// Ask each peer, when it connects (and those connected when the channel opens), for its
    /// latest messages of the channel (default true; `query_on_connect`).
    pub query_on_connect: bool,
    /// How many latest messages the query on connect asks for (default 32; at most the
    /// node's `max_ids_per_request`).
    pub query_on_connect_messages: u16,
    /// Largest payload sent as one SDS message; larger ones are split into segments of this
    /// size (default 100 000 bytes).
    pub segment_size: usize,
    /// Largest payload [`send`](ReliableChannel::send) takes (default 16 MiB).
    pub max_payload_size: usize,
    /// Bounds on received messages being reassembled.
    pub reassembly: ReassemblyLimits,
    /// The send budget (default `None`: no limit).
    pub rate_limit: Option<RateLimit>,
    /// Most messages waiting to be published (handed to `send` and not yet taken by the
    /// channel's task, or waiting for budget; default 1 000): beyond it `send` refuses.
    pub max_queued_messages: usize,
    /// Most bytes of messages waiting to be published (default 64 MiB): beyond it `send`
    /// refuses.
    pub max_queued_bytes: usize,
    /// Most events waiting in [`ChannelEvents`] (default 16 384); beyond it newer events are
    /// dropped and [`ChannelEvent::Lagged`] says how many.
    pub event_capacity: usize,
}

impl Default for ReliableChannelConfig {
    fn default() -> Self {
        ReliableChannelConfig {
            sync_interval: Duration::from_secs(30),
            retry_interval: Duration::from_secs(30),
            max_retry_attempts: 10,
            retrieve_frequency: Duration::from_secs(10),
            lost_message_timeout: None,
            causal_history_size: 200,
            possible_acks_threshold: 2,
            query_on_connect: true,
            query_on_connect_messages: 32,
            segment_size: 100_000,
            max_payload_size: 16 << 20,
            reassembly: ReassemblyLimits::default(),
            rate_limit: None,
            max_queued_messages: 1_000,
            max_queued_bytes: 64 << 20,
            event_capacity: 16_384,
        }
    }
}

macro_rules! setters {
    ($($field:ident: $ty:ty => $with:ident;)*) => {
        impl ReliableChannelConfig {
            $(
                #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
                #[must_use]
                pub fn $with(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

setters! {
    sync_interval: Duration => with_sync_interval;
    retry_interval: Duration => with_retry_interval;
    max_retry_attempts: u32 => with_max_retry_attempts;
    retrieve_frequency: Duration => with_retrieve_frequency;
    lost_message_timeout: Option<Duration> => with_lost_message_timeout;
    causal_history_size: usize => with_causal_history_size;
    possible_acks_threshold: u32 => with_possible_acks_threshold;
    query_on_connect: bool => with_query_on_connect;
    query_on_connect_messages: u16 => with_query_on_connect_messages;
    segment_size: usize => with_segment_size;
    max_payload_size: usize => with_max_payload_size;
    reassembly: ReassemblyLimits => with_reassembly;
    rate_limit: Option<RateLimit> => with_rate_limit;
    max_queued_messages: usize => with_max_queued_messages;
    max_queued_bytes: usize => with_max_queued_bytes;
    event_capacity: usize => with_event_capacity;
}

impl ReliableChannelConfig {
    /// `manager` with this channel's SDS settings: sync and resend intervals, resend attempts,
    /// lost-message timeout, causal-history size, acknowledgement threshold, and the wire
    /// profile of the specification (which ephemeral messages need). Every member of a
    /// channel must use the same profile.
    pub fn apply_to_manager(&self, manager: ManagerConfig) -> ManagerConfig {
        let engine = manager
            .engine
            .clone()
            .with_sync_interval(self.sync_interval)
            .with_resend_interval(self.retry_interval)
            .with_possibly_acked_resend_interval(self.retry_interval.saturating_mul(2))
            .with_max_resend_attempts(self.max_retry_attempts)
            .with_lost_dependency_timeout(self.lost_message_timeout)
            .with_max_causal_history(self.causal_history_size)
            .with_possible_ack_threshold(self.possible_acks_threshold)
            .with_profile(Profile::Spec);
        manager.with_engine(engine)
    }

    /// `node` with this channel's retrieval setting
    /// ([`retrieve_frequency`](Self::retrieve_frequency)).
    pub fn apply_to_node(&self, mut node: NodeConfig) -> NodeConfig {
        node.retrieval.retry_after = self.retrieve_frequency;
        node
    }
}

/// Which segments of a message an event covers, cumulatively: every chunk that reached the
/// event's stage so far. A message sent whole is one chunk, index 0.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChunkInfo {
    /// Chunk indices, ascending.
    pub chunks: Vec<u32>,
    /// How many chunks the message has.
    pub total_chunks: u32,
}

impl ChunkInfo {
    /// Whether every chunk is in.
    pub fn is_complete(&self) -> bool {
        self.chunks.len() as u64 == u64::from(self.total_chunks)
    }
}

/// What a [`ReliableChannel`] reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// Chunks of one of our messages are being published (again, on a resend).
    Sending {
        /// The message.
        message_id: MessageId,
        /// Chunks being sent so far.
        chunks: ChunkInfo,
    },
    /// Chunks of one of our messages were published, not acknowledged yet.
    Sent {
        /// The message.
        message_id: MessageId,
        /// Chunks sent so far.
        chunks: ChunkInfo,
    },
    /// Chunks of one of our messages were found in other members' bloom filters.
    PossiblyAcknowledged {
        /// The message.
        message_id: MessageId,
        /// Chunks possibly acknowledged so far.
        chunks: ChunkInfo,
    },
    /// Chunks of one of our messages were acknowledged: complete when every chunk is.
    Acknowledged {
        /// The message.
        message_id: MessageId,
        /// Chunks acknowledged so far.
        chunks: ChunkInfo,
    },
    /// Chunks of one of our messages will not be sent (again): they could not be wrapped, or
    /// were given up unacknowledged after the resend attempts.
    IrrecoverableError {
        /// The message.
        message_id: MessageId,
        /// Chunks failed so far.
        chunks: ChunkInfo,
        /// What went wrong.
        error: String,
    },
    /// A message of another member, whole (reassembled from its segments), delivered once.
    Received {
        /// The message.
        message_id: MessageId,
        /// Its payload.
        payload: Bytes,
        /// Sent with `send_ephemeral`.
        ephemeral: bool,
    },
    /// A message the channel knew of could not be retrieved within the lost-message timeout.
    IrretrievablyLost {
        /// The message (for a segment, the message it belongs to).
        message_id: MessageId,
        /// The SDS history entry, as it was cited.
        entry: HistoryEntry,
    },
    /// A publication waits for the next epoch's budget.
    Queued {
        /// The message.
        message_id: MessageId,
        /// The chunk.
        chunk: u32,
    },
    /// An ephemeral message was dropped for the rate limit.
    EphemeralDropped {
        /// The message.
        message_id: MessageId,
        /// Why.
        reason: EphemeralDropReason,
    },
    /// A chunk could not be published now (for example no peer is on the channel yet); SDS
    /// sends it again after the retry interval.
    PublishFailed {
        /// The message.
        message_id: MessageId,
        /// The chunk.
        chunk: u32,
        /// Why.
        error: String,
    },
    /// A received message being reassembled was given up.
    ReassemblyDropped {
        /// The message.
        message_id: MessageId,
        /// Why.
        reason: ReassemblyDropReason,
    },
    /// A received message is no reliable-channel frame (or a segment whose SDS id does not
    /// match its frame): not delivered.
    InvalidFrame {
        /// The SDS message.
        message_id: MessageId,
        /// What was wrong.
        error: String,
    },
    /// `missed` events were dropped: the application did not keep up (see
    /// [`ReliableChannelConfig::event_capacity`]), or the manager's queue to the channel
    /// overflowed.
    Lagged {
        /// How many.
        missed: u64,
    },
}

impl ChannelEvent {
    /// The event's name: the Reliable Channel API's (`sending-message`, `message-sent`,
    /// `message-possibly-acknowledged`, `message-acknowledged`,
    /// `sending-message-irrecoverable-error`, `message-received`, `irretrievable-message`,
    /// `ephemeral-message-dropped`), or, for events the API does not name, one in the same
    /// style (`message-queued`, `publish-failed`, `reassembly-dropped`, `invalid-frame`,
    /// `lagged`).
    pub fn name(&self) -> &'static str {
        match self {
            ChannelEvent::Sending { .. } => "sending-message",
            ChannelEvent::Sent { .. } => "message-sent",
            ChannelEvent::PossiblyAcknowledged { .. } => "message-possibly-acknowledged",
            ChannelEvent::Acknowledged { .. } => "message-acknowledged",
            ChannelEvent::IrrecoverableError { .. } => "sending-message-irrecoverable-error",
            ChannelEvent::Received { .. } => "message-received",
            ChannelEvent::IrretrievablyLost { .. } => "irretrievable-message",
            ChannelEvent::EphemeralDropped { .. } => "ephemeral-message-dropped",
            ChannelEvent::Queued { .. } => "message-queued",
            ChannelEvent::PublishFailed { .. } => "publish-failed",
            ChannelEvent::ReassemblyDropped { .. } => "reassembly-dropped",
            ChannelEvent::InvalidFrame { .. } => "invalid-frame",
            ChannelEvent::Lagged { .. } => "lagged",
        }
    }
}

/// Why a [`ReliableChannel`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// A payload must not be empty.
    #[error("empty payload")]
    EmptyPayload,
    /// The payload is above the limit ([`ReliableChannelConfig::max_payload_size`], or for an
    /// ephemeral message the segment size: those are never segmented).
    #[error("payload of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// Too many messages or bytes wait to be published
    /// ([`ReliableChannelConfig::max_queued_messages`], `max_queued_bytes`).
    #[error("too many messages waiting to be published")]
    QueueFull,
    /// The settings cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// The node (or its manager) refused.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The channel is closed.
    #[error("the channel is closed")]
    Closed,
}

enum Command {
    Send {
        message_id: MessageId,
        payload: Bytes,
        ephemeral: bool,
    },
    Close(oneshot::Sender<()>),
}

/// Messages and bytes handed to `send` and not yet taken by the channel's task.
#[derive(Debug, Default)]
struct InFlight {
    messages: AtomicUsize,
    bytes: AtomicUsize,
}

impl InFlight {
    fn release(&self, bytes: usize) {
        self.messages.fetch_sub(1, Ordering::SeqCst);
        self.bytes.fetch_sub(bytes, Ordering::SeqCst);
    }
}

/// A reliable channel: an application-facing channel on top of a [`Node`](crate::Node), after
/// the Reliable Channel API of the Waku specifications.
///
/// [`ReliableChannel::send`] hands over a payload and returns the [`MessageId`] its events
/// carry; [`ChannelEvents`] reports each message's lifecycle ([`ChannelEvent`]): sending,
/// sent, possibly acknowledged, acknowledged or an irrecoverable error for our messages;
/// received (reassembled, once) and irretrievably lost for the others'. Underneath:
///
/// * **SDS** tracks every message (causal order, acknowledgement, resends, syncs), in the
///   node's manager, with the settings of the specification
///   ([`ReliableChannelConfig::apply_to_manager`]).
/// * **Segmentation** ([`segmentation`](crate::segmentation)): a payload above
///   [`segment_size`](ReliableChannelConfig::segment_size) is sent as several SDS messages and
///   reassembled before delivery.
/// * **Rate limit** ([`rate_limit`](crate::rate_limit)): with a
///   [`RateLimit`], every publication of the channel (first sends, resends, repairs, syncs,
///   ephemeral messages) counts against the epoch's budget; regular ones wait in a queue,
///   ephemeral ones and syncs are dropped when the budget is nearly spent. For that the
///   channel [`claim`](NodeHandle::claim)s its periodic transmissions from the node.
/// * **Retrieval**: missing messages are asked of peers by the node, and on connect every
///   peer is asked for its latest messages of the channel (query on connect).
#[derive(Debug)]
pub struct ReliableChannel {
    channel: ChannelId,
    config: ReliableChannelConfig,
    manager: ReliabilityManager,
    commands: mpsc::UnboundedSender<Command>,
    in_flight: Arc<InFlight>,
    counter: AtomicU64,
}

/// The events of a [`ReliableChannel`], as a [`Stream`](futures::Stream).
#[derive(Debug)]
pub struct ChannelEvents {
    rx: mpsc::Receiver<ChannelEvent>,
}

impl ChannelEvents {
    /// The next event; `None` once the channel is closed and every event was read.
    ///
    /// This method is cancel safe: an event is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<ChannelEvent> {
        self.rx.recv().await
    }
}

impl futures::Stream for ChannelEvents {
    type Item = ChannelEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ChannelEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// Most log entries read at once while rebuilding partial messages.
const REBUILD_PAGE: usize = 256;

impl ReliableChannel {
    /// Opens `channel` on `node`: rebuilds the partial messages being reassembled from the
    /// channel's stored log, joins and [`claim`](NodeHandle::claim)s the channel (which asks
    /// the connected peers for their latest messages when
    /// [`query_on_connect`](ReliableChannelConfig::query_on_connect) is on), and starts the
    /// channel's task. Must be called within a tokio runtime.
    ///
    /// Open a channel before anything else joins it on the node: a message delivered in
    /// between would be counted as handled. Once a restart, segments delivered before it are
    /// not delivered again; a message whose last segment was stored just before a crash, but
    /// not reported, is taken as delivered.
    ///
    /// This method is not cancel safe: dropped part-way, the channel may be claimed on the
    /// node with no task to publish its transmissions (open it again, or
    /// [`release`](NodeHandle::release) it).
    pub async fn open(
        node: NodeHandle,
        channel: impl Into<ChannelId>,
        config: ReliableChannelConfig,
    ) -> Result<(ReliableChannel, ChannelEvents), ChannelError> {
        let channel = channel.into();
        let manager = node.manager().clone();
        let limits = &manager.config().engine.limits;
        if config.segment_size == 0 || config.event_capacity == 0 {
            return Err(ChannelError::Config(
                "segment_size and event_capacity must be at least 1".into(),
            ));
        }
        let largest = config.segment_size + SEGMENT_OVERHEAD + ID_LEN;
        if largest > limits.max_content_size {
            return Err(ChannelError::Config(format!(
                "segments of {} bytes and their frame exceed the manager's content limit of {}",
                config.segment_size, limits.max_content_size
            )));
        }
        let subscription = manager.subscribe();
        let me = manager.participant_id().clone();
        let mut reassembly = Reassembly::new(config.reassembly.clone());
        let mut handled = 0u64;
        let now = Instant::now();
        loop {
            let page = manager
                .read_log(channel.clone(), handled, REBUILD_PAGE)
                .await
                .map_err(NodeError::from)?;
            let Some(last) = page.last() else { break };
            handled = last.sequence;
            for m in page {
                if m.sender_id == me {
                    continue;
                }
                if let Ok(Frame::Segment(s)) = segmentation::decode(&m.content) {
                    if segmentation::segment_id(&s.id, s.index, s.count) == m.message_id {
                        // Completed ones were delivered before: only remembered.
                        reassembly.add(s, now);
                    }
                }
            }
        }
        let query = if config.query_on_connect {
            config.query_on_connect_messages
        } else {
            0
        };
        node.claim(channel.clone(), query).await?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::channel(config.event_capacity);
        let in_flight = Arc::new(InFlight::default());
        let driver = Driver {
            channel: channel.clone(),
            node,
            manager: manager.clone(),
            subscription,
            commands: command_rx,
            events: LossySender::new(event_tx, |missed| ChannelEvent::Lagged { missed }),
            budget: Budget::new(config.rate_limit.clone(), now),
            queue: SendQueue::new(config.max_queued_messages, config.max_queued_bytes),
            reassembly,
            progress: HashMap::new(),
            progress_order: VecDeque::new(),
            handled,
            in_flight: in_flight.clone(),
            segment_size: config.segment_size,
        };
        tokio::spawn(driver.run());
        Ok((
            ReliableChannel {
                channel,
                config,
                manager,
                commands,
                in_flight,
                counter: AtomicU64::new(0),
            },
            ChannelEvents { rx: event_rx },
        ))
    }

    /// The channel.
    pub fn channel_id(&self) -> &ChannelId {
        &self.channel
    }

    /// Sends `payload` (segmented when above
    /// [`segment_size`](ReliableChannelConfig::segment_size)) and returns the id its events
    /// carry. The message is wrapped and stored by SDS in the channel's task, then published
    /// when the rate limit allows; it is resent until acknowledged or the resend attempts run
    /// out.
    pub fn send(&self, payload: impl Into<Bytes>) -> Result<MessageId, ChannelError> {
        let payload = payload.into();
        self.check(&payload, self.config.max_payload_size)?;
        self.hand_over(payload, false)
    }

    /// Sends `payload` as an ephemeral message: never segmented (at most
    /// [`segment_size`](ReliableChannelConfig::segment_size)), not stored, acknowledged or
    /// resent, and dropped ([`ChannelEvent::EphemeralDropped`]) when the rate limit is nearly
    /// reached. Needs the specification's wire profile
    /// ([`apply_to_manager`](ReliableChannelConfig::apply_to_manager)).
    pub fn send_ephemeral(&self, payload: impl Into<Bytes>) -> Result<MessageId, ChannelError> {
        let payload = payload.into();
        self.check(&payload, self.config.segment_size)?;
        self.hand_over(payload, true)
    }

    /// Stops the channel's task and gives its transmissions back to the node; the channel
    /// stays joined there (SDS keeps resending our unacknowledged messages). Events already
    /// produced can still be read.
    ///
    /// This method is cancel safe: once called, the channel stops whether or not the future
    /// is polled to the end.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    fn check(&self, payload: &Bytes, limit: usize) -> Result<(), ChannelError> {
        if payload.is_empty() {
            return Err(ChannelError::EmptyPayload);
        }
        if payload.len() > limit {
            return Err(ChannelError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        Ok(())
    }

    fn hand_over(&self, payload: Bytes, ephemeral: bool) -> Result<MessageId, ChannelError> {
        let len = payload.len();
        let messages = self.in_flight.messages.fetch_add(1, Ordering::SeqCst);
        let bytes = self.in_flight.bytes.fetch_add(len, Ordering::SeqCst);
        if messages >= self.config.max_queued_messages
            || bytes.saturating_add(len) > self.config.max_queued_bytes
        {
            self.in_flight.release(len);
            return Err(ChannelError::QueueFull);
        }
        let message_id = self.new_id(&payload);
        let command = Command::Send {
            message_id: message_id.clone(),
            payload,
            ephemeral,
        };
        if self.commands.send(command).is_err() {
            self.in_flight.release(len);
            return Err(ChannelError::Closed);
        }
        Ok(message_id)
    }

    /// A fresh message id: a digest of who sends, where, when, a counter, and the payload.
    fn new_id(&self, payload: &[u8]) -> MessageId {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut h = Sha256::new();
        for part in [
            self.manager.participant_id().as_bytes(),
            self.channel.as_bytes(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(n.to_be_bytes());
        h.update(nanos.to_be_bytes());
        h.update(payload);
        let digest = h.finalize();
        let hex: String = digest[..ID_LEN / 2]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        MessageId::from(hex.as_str())
    }
}

/// Length of the message ids `send` makes (hex characters).
const ID_LEN: usize = 32;

/// Most of our messages whose progress is tracked for cumulative chunk lists.
const MAX_PROGRESS: usize = 10_000;

#[derive(Debug, Default)]
struct Progress {
    total: u32,
    sending: BTreeSet<u32>,
    sent: BTreeSet<u32>,
    possibly: BTreeSet<u32>,
    acked: BTreeSet<u32>,
    failed: BTreeSet<u32>,
}

#[derive(Clone, Copy)]
enum Stage {
    Sending,
    Sent,
    Possibly,
    Acked,
    Failed,
}

struct Driver {
    channel: ChannelId,
    node: NodeHandle,
    manager: ReliabilityManager,
    subscription: Subscription,
    commands: mpsc::UnboundedReceiver<Command>,
    events: LossySender<ChannelEvent>,
    budget: Budget,
    queue: SendQueue,
    reassembly: Reassembly,
    progress: HashMap<MessageId, Progress>,
    progress_order: VecDeque<MessageId>,
    /// Deliveries up to this log sequence were accounted for when the channel opened.
    handled: u64,
    in_flight: Arc<InFlight>,
    segment_size: usize,
}

/// The channel an event concerns.
fn event_channel(event: &Event) -> Option<&ChannelId> {
    Some(match event {
        Event::MessageReady { channel_id, .. }
        | Event::Acknowledged { channel_id, .. }
        | Event::PossiblyAcknowledged { channel_id, .. }
        | Event::MissingDependencies { channel_id, .. }
        | Event::MissingMessages { channel_id, .. }
        | Event::SendFailed { channel_id, .. }
        | Event::IrretrievablyLost { channel_id, .. }
        | Event::RepairReady { channel_id, .. }
        | Event::InvalidBloomFilter { channel_id, .. }
        | Event::Dropped { channel_id, .. }
        | Event::MessageConflict { channel_id, .. }
        | Event::Ephemeral { channel_id, .. } => channel_id,
        _ => return None,
    })
}

impl Driver {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closed = None;
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Close(tx)) => {
                        closed = Some(tx);
                        break;
                    }
                    Some(Command::Send { message_id, payload, ephemeral }) => {
                        let len = payload.len();
                        if ephemeral {
                            self.send_ephemeral(message_id, payload).await;
                        } else {
                            self.send(message_id, payload).await;
                        }
                        self.in_flight.release(len);
                    }
                    None => break,
                },
                notification = self.subscription.recv() => match notification {
                    Some(n) => self.on_notification(n).await,
                    None => break,
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    for (message_id, reason) in self.reassembly.bound(now) {
                        self.emit(ChannelEvent::ReassemblyDropped { message_id, reason });
                    }
                }
            }
            if self.drain().await.is_err() {
                break;
            }
        }
        let _ = self.node.release(self.channel.clone());
        if let Some(tx) = closed {
            let _ = tx.send(());
        }
    }

    fn emit(&mut self, event: ChannelEvent) {
        self.events.emit(event);
    }

    /// Records that `chunk` of the message `sds_id` names reached `stage`, and reports it.
    fn advance(&mut self, sds_id: &MessageId, stage: Stage, error: Option<String>) {
        let (message_id, chunk, total) = segmentation::parse_segment_id(sds_id);
        if !self.progress.contains_key(&message_id) {
            if self.progress.len() >= MAX_PROGRESS {
                while let Some(old) = self.progress_order.pop_front() {
                    if self.progress.remove(&old).is_some() {
                        break;
                    }
                }
            }
            self.progress_order.push_back(message_id.clone());
        }
        let p = self.progress.entry(message_id.clone()).or_default();
        p.total = total;
        let set = match stage {
            Stage::Sending => &mut p.sending,
            Stage::Sent => &mut p.sent,
            Stage::Possibly => &mut p.possibly,
            Stage::Acked => &mut p.acked,
            Stage::Failed => &mut p.failed,
        };
        set.insert(chunk);
        let chunks = ChunkInfo {
            chunks: set.iter().copied().collect(),
            total_chunks: total,
        };
        let finished = p.acked.len() + p.failed.len() >= total as usize;
        if finished {
            self.progress.remove(&message_id);
        }
        self.emit(match stage {
            Stage::Sending => ChannelEvent::Sending { message_id, chunks },
            Stage::Sent => ChannelEvent::Sent { message_id, chunks },
            Stage::Possibly => ChannelEvent::PossiblyAcknowledged { message_id, chunks },
            Stage::Acked => ChannelEvent::Acknowledged { message_id, chunks },
            Stage::Failed => ChannelEvent::IrrecoverableError {
                message_id,
                chunks,
                error: error.unwrap_or_default(),
            },
        });
    }

    /// Wraps the frames of `payload` (stored as unacknowledged before this returns) and
    /// publishes or queues them.
    async fn send(&mut self, message_id: MessageId, payload: Bytes) {
        let segment_size = self.segment_size;
        let frames = if payload.len() > segment_size {
            segmentation::split(&message_id, &payload, segment_size)
        } else {
            vec![segmentation::whole(&payload)]
        };
        let total = frames.len() as u32;
        for (index, frame) in frames.into_iter().enumerate() {
            let sds_id = if total == 1 {
                message_id.clone()
            } else {
                segmentation::segment_id(&message_id, index as u32, total)
            };
            match self
                .manager
                .wrap_outgoing_message(frame, sds_id.clone(), self.channel.clone())
                .await
            {
                Ok(bytes) => {
                    self.regular(Queued {
                        message_id: sds_id,
                        bytes,
                        purpose: Purpose::First,
                    })
                    .await
                }
                Err(e) => {
                    // The rest is not sent: the message could never be whole.
                    for rest in index as u32..total {
                        let id = if total == 1 {
                            message_id.clone()
                        } else {
                            segmentation::segment_id(&message_id, rest, total)
                        };
                        self.advance(&id, Stage::Failed, Some(e.to_string()));
                    }
                    return;
                }
            }
        }
    }

    async fn send_ephemeral(&mut self, message_id: MessageId, payload: Bytes) {
        let frame = segmentation::whole(&payload);
        let bytes = match self.manager.wrap_ephemeral_message(
            frame,
            message_id.clone(),
            self.channel.clone(),
        ) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.advance(&message_id, Stage::Failed, Some(e.to_string()));
                return;
            }
        };
        if let Err(reason) = self.budget.take_ephemeral(Instant::now()) {
            self.emit(ChannelEvent::EphemeralDropped { message_id, reason });
            return;
        }
        match self
            .node
            .publish(self.channel.clone(), message_id.clone(), bytes)
            .await
        {
            Ok(()) => {
                self.emit(ChannelEvent::Sent {
                    message_id,
                    chunks: ChunkInfo {
                        chunks: vec![0],
                        total_chunks: 1,
                    },
                });
                // Never acknowledged: nothing more to track.
            }
            Err(e) => self.advance(&message_id, Stage::Failed, Some(e.to_string())),
        }
    }

    /// Publishes a regular publication now if the budget allows and nothing waits before it,
    /// otherwise queues it.
    async fn regular(&mut self, item: Queued) {
        if self.queue.is_empty() && self.budget.take(Instant::now()) {
            let _ = self.publish(item).await;
            return;
        }
        let (id, purpose) = (item.message_id.clone(), item.purpose);
        if !self.queue.push(item) {
            // Already waiting, or no room: SDS sends an unacknowledged message again later.
            tracing::debug!(channel = %self.channel, message = %id, "not queued");
        } else if purpose != Purpose::Repair {
            let (message_id, chunk, _) = segmentation::parse_segment_id(&id);
            self.emit(ChannelEvent::Queued { message_id, chunk });
        }
    }

    /// Publishes what waits, while the budget lasts. `Err` when the node has stopped.
    async fn drain(&mut self) -> Result<(), NodeError> {
        while !self.queue.is_empty() && self.budget.take(Instant::now()) {
            if let Some(item) = self.queue.pop() {
                self.publish(item).await?;
            }
        }
        Ok(())
    }

    async fn publish(&mut self, item: Queued) -> Result<(), NodeError> {
        let tracked = item.purpose != Purpose::Repair;
        if tracked {
            self.advance(&item.message_id, Stage::Sending, None);
        }
        let result = self
            .node
            .publish(self.channel.clone(), item.message_id.clone(), item.bytes)
            .await;
        match result {
            Ok(()) if tracked => self.advance(&item.message_id, Stage::Sent, None),
            Ok(()) => {}
            Err(NodeError::Stopped) => return Err(NodeError::Stopped),
            Err(e) if tracked => {
                let (message_id, chunk, _) = segmentation::parse_segment_id(&item.message_id);
                self.emit(ChannelEvent::PublishFailed {
                    message_id,
                    chunk,
                    error: e.to_string(),
                });
            }
            Err(_) => {}
        }
        Ok(())
    }

    async fn on_notification(&mut self, n: Notification) {
        match n {
            Notification::Transmit(t) if t.channel_id == self.channel => match t.kind {
                TransmitKind::Sync => {
                    // Periodic: dropped when the budget is nearly spent, made again later.
                    if self.budget.take_ephemeral(Instant::now()).is_ok() {
                        let _ = self.node.publish(t.channel_id, t.message_id, t.bytes).await;
                    }
                }
                TransmitKind::Repair => {
                    let item = Queued {
                        message_id: t.message_id,
                        bytes: t.bytes,
                        purpose: Purpose::Repair,
                    };
                    self.regular(item).await;
                }
                _ => {
                    let item = Queued {
                        message_id: t.message_id,
                        bytes: t.bytes,
                        purpose: Purpose::Resend,
                    };
                    self.regular(item).await;
                }
            },
            Notification::Event(event) if event_channel(&event) == Some(&self.channel) => {
                self.on_event(event)
            }
            Notification::Lagged { missed } => self.emit(ChannelEvent::Lagged { missed }),
            _ => {}
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Acknowledged { message_id, .. } => self.advance(&message_id, Stage::Acked, None),
            Event::PossiblyAcknowledged { message_id, .. } => {
                self.advance(&message_id, Stage::Possibly, None)
            }
            Event::SendFailed {
                message_id, reason, ..
            } => {
                let error = match reason {
                    SendFailure::RetriesExhausted => "not acknowledged after the resend attempts",
                    SendFailure::BufferFull => "given up: the outgoing buffer was full",
                    _ => "given up",
                };
                self.advance(&message_id, Stage::Failed, Some(error.into()))
            }
            // Deliveries up to `handled` were accounted for when the channel opened.
            Event::MessageReady {
                message_id,
                content,
                sequence,
                ..
            } if sequence > self.handled => self.on_delivered(message_id, content, false),
            Event::Ephemeral {
                message_id,
                content,
                ..
            } => self.on_delivered(message_id, content, true),
            Event::IrretrievablyLost { entry, .. } => {
                let (message_id, _, count) = segmentation::parse_segment_id(&entry.message_id);
                if count > 1 && self.reassembly.drop_partial(&message_id) {
                    self.emit(ChannelEvent::ReassemblyDropped {
                        message_id: message_id.clone(),
                        reason: ReassemblyDropReason::Lost,
                    });
                }
                self.emit(ChannelEvent::IrretrievablyLost { message_id, entry });
            }
            _ => {}
        }
    }

    fn on_delivered(&mut self, sds_id: MessageId, content: Bytes, ephemeral: bool) {
        let invalid = |error: FrameError| ChannelEvent::InvalidFrame {
            message_id: sds_id.clone(),
            error: error.to_string(),
        };
        match segmentation::decode(&content) {
            Ok(Frame::Whole(payload)) => self.emit(ChannelEvent::Received {
                message_id: sds_id,
                payload,
                ephemeral,
            }),
            Ok(Frame::Segment(segment)) => {
                let named = segmentation::segment_id(&segment.id, segment.index, segment.count);
                if ephemeral || named != sds_id {
                    let event = invalid(FrameError::Malformed(
                        "segment whose SDS id is not the one its frame names",
                    ));
                    self.emit(event);
                    return;
                }
                let added = self.reassembly.add(segment, Instant::now());
                for (message_id, reason) in added.dropped {
                    self.emit(ChannelEvent::ReassemblyDropped { message_id, reason });
                }
                if let Some((message_id, payload)) = added.complete {
                    self.emit(ChannelEvent::Received {
                        message_id,
                        payload,
                        ephemeral: false,
                    });
                }
            }
            Err(e) => {
                let event = invalid(e);
                self.emit(event);
            }
        }
    }
}
