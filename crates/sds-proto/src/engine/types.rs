//! What goes in and out of a [`Channel`](super::Channel): events, transmissions, store
//! operations, snapshots and errors.

use bytes::Bytes;

use crate::bloom::BloomError;
use crate::id::{ChannelId, MessageId, ParticipantId};
use crate::message::HistoryEntry;
use crate::wire::DecodeError;

/// Something the application should learn about.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A message is delivered, in causal order: its dependencies were delivered before it.
    MessageReady {
        /// Channel.
        channel_id: ChannelId,
        /// The delivered message.
        message_id: MessageId,
        /// Its content.
        content: Bytes,
        /// Its place in the channel's log: the entry's [`LogEntry::arrival`], larger for every
        /// later delivery or send on the channel. An application that records the last
        /// sequence it handled can read what it missed after a crash from the store
        /// (`ReliabilityManager::read_log` in the `sds-manager` crate).
        sequence: u64,
    },
    /// One of our messages is acknowledged: it was cited in a received causal history, or
    /// found in enough received bloom filters.
    Acknowledged {
        /// Channel.
        channel_id: ChannelId,
        /// Our message.
        message_id: MessageId,
    },
    /// One of our messages was found in a received bloom filter, `count` times so far.
    PossiblyAcknowledged {
        /// Channel.
        channel_id: ChannelId,
        /// Our message.
        message_id: MessageId,
        /// Distinct received messages whose filter held it.
        count: u32,
    },
    /// A received message waits for dependencies we do not have.
    MissingDependencies {
        /// Channel.
        channel_id: ChannelId,
        /// The waiting message.
        message_id: MessageId,
        /// What it waits for and we lack, as the sender cited them (with retrieval hints): what
        /// to fetch. A dependency waiting in our own incoming buffer is held, not missing, and
        /// is left out (no event at all when the message waits only for such).
        missing: Vec<HistoryEntry>,
    },
    /// A received sync message cites messages we lack. Nothing waits for them (a sync is
    /// neither buffered nor delivered), but the group has them: fetch them as the dependencies
    /// of [`MissingDependencies`](Event::MissingDependencies). They are also requested through
    /// SDS-R, as those are.
    MissingMessages {
        /// Channel.
        channel_id: ChannelId,
        /// The sync message that cited them.
        cited_by: MessageId,
        /// What we lack, as the sender cited them (with retrieval hints); not what waits in our
        /// incoming buffer.
        missing: Vec<HistoryEntry>,
    },
    /// One of our messages was given up without acknowledgement.
    SendFailed {
        /// Channel.
        channel_id: ChannelId,
        /// Our message.
        message_id: MessageId,
        /// Why.
        reason: SendFailure,
    },
    /// A dependency did not arrive within the lost-dependency timeout; messages waiting for it
    /// are delivered without it.
    IrretrievablyLost {
        /// Channel.
        channel_id: ChannelId,
        /// The lost message, as it was cited.
        entry: HistoryEntry,
    },
    /// SDS-R: we rebroadcast a message someone asked to be repaired. Informational: the bytes
    /// to broadcast are in the matching [`Transmit`] (kind [`TransmitKind::Repair`]), and only
    /// that one should be broadcast.
    RepairReady {
        /// Channel.
        channel_id: ChannelId,
        /// The repaired message.
        message_id: MessageId,
        /// Its original bytes.
        bytes: Bytes,
    },
    /// A received message carried a bloom filter that failed validation; it was ignored for
    /// acknowledgement and the message was otherwise processed.
    InvalidBloomFilter {
        /// Channel.
        channel_id: ChannelId,
        /// The message that carried it.
        message_id: MessageId,
        /// What was wrong.
        error: BloomError,
    },
    /// A waiting message was dropped from the incoming buffer without being delivered. It is
    /// not remembered: if it arrives again it is handled as new.
    Dropped {
        /// Channel.
        channel_id: ChannelId,
        /// The dropped message.
        message_id: MessageId,
        /// Why.
        reason: DropReason,
    },
    /// A received message has the id of a message we hold but different content (see
    /// [`ReceivedKind::Conflict`]): the first one stays; this one is dropped.
    MessageConflict {
        /// Channel.
        channel_id: ChannelId,
        /// The id used twice.
        message_id: MessageId,
        /// The sender named by the conflicting copy.
        sender_id: ParticipantId,
    },
    /// An ephemeral message arrived (spec profile): delivered at once, never buffered, logged,
    /// acknowledged or stored.
    Ephemeral {
        /// Channel.
        channel_id: ChannelId,
        /// The message id.
        message_id: MessageId,
        /// The sender (empty when not given).
        sender_id: ParticipantId,
        /// The content.
        content: Bytes,
    },
}

/// Why a waiting message was dropped from the incoming buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// It waited the lost-dependency timeout for messages that wait themselves (a dependency
    /// cycle, or a message that waits for such), or for a message dropped so: it could never
    /// be delivered in causal order.
    Expired,
    /// The buffer was full: the oldest message of the sender holding the most bytes gave way
    /// to a newer one.
    Evicted,
}

/// Why a message was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendFailure {
    /// It was sent `max_resend_attempts` more times without acknowledgement.
    RetriesExhausted,
    /// The outgoing buffer was full and it was the oldest entry.
    BufferFull,
}

/// Why bytes are to be broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransmitKind {
    /// A resend of an unacknowledged message, or of one a member's bloom filter showed it
    /// lacks (the original bytes).
    Resend,
    /// A periodic sync message.
    Sync,
    /// An SDS-R rebroadcast of a requested message (its original bytes).
    Repair,
}

impl TransmitKind {
    /// The kind's name in lower case (`resend`, `sync`, `repair`), as the C ABI, `sds peer`
    /// and the metrics' labels spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            TransmitKind::Resend => "resend",
            TransmitKind::Sync => "sync",
            TransmitKind::Repair => "repair",
        }
    }
}

/// Bytes to broadcast on the channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    /// Channel.
    pub channel_id: ChannelId,
    /// Id of the message carried.
    pub message_id: MessageId,
    /// The encoded message.
    pub bytes: Bytes,
    /// Why.
    pub kind: TransmitKind,
}

/// A message in the local log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Message id.
    pub message_id: MessageId,
    /// Its lamport timestamp.
    pub lamport_timestamp: i64,
    /// Who sent it (empty when unknown).
    pub sender_id: crate::id::ParticipantId,
    /// Retrieval hint for citing it (empty when none).
    pub retrieval_hint: Bytes,
    /// The message as received or sent, byte for byte.
    pub bytes: Bytes,
    /// When the entry entered the log, as a sequence number of the channel: a later entry has
    /// a larger one (0: unknown, for example state stored before it was kept). The engine sets
    /// it when the entry enters the log. The log is ordered by (lamport, id), but it evicts by
    /// arrival: the entry with the smallest number goes first, so an entry stays until
    /// `max_message_history` later ones have arrived, whatever its lamport.
    pub arrival: u64,
}

impl LogEntry {
    /// A marker for an id marked met by the application: stored like a log entry (so the
    /// marking survives a restart) but with no bytes, no lamport and no arrival, and never part
    /// of the log proper, its causal histories or its eviction count.
    pub fn met_marker(message_id: MessageId) -> Self {
        LogEntry {
            message_id,
            lamport_timestamp: 0,
            sender_id: crate::id::ParticipantId::default(),
            retrieval_hint: Bytes::new(),
            bytes: Bytes::new(),
            arrival: 0,
        }
    }

    /// Whether this entry is a [`met_marker`](Self::met_marker): every real log entry carries
    /// the message's bytes.
    pub fn is_met_marker(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// One of our messages awaiting acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEntry {
    /// Message id.
    pub message_id: MessageId,
    /// The bytes sent (resends repeat them).
    pub bytes: Bytes,
    /// When it was last sent (ms since the epoch).
    pub send_time: u64,
    /// Resends so far.
    pub attempts: u32,
    /// Distinct received bloom filters that held it.
    pub possible_acks: u32,
}

/// A received message waiting for dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingEntry {
    /// Message id.
    pub message_id: MessageId,
    /// The message as received.
    pub bytes: Bytes,
    /// Dependencies still missing, as cited.
    pub missing: Vec<HistoryEntry>,
    /// When it was received (ms since the epoch).
    pub received_at: u64,
}

/// A missing message we will ask the group to repair (SDS-R).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRepairEntry {
    /// The missing message, as cited.
    pub entry: HistoryEntry,
    /// Absolute time from which the request may be sent (ms since the epoch).
    pub t_req: u64,
    /// Requests for it we have sent (attached to our messages) while something still waited
    /// for it. The wait before asking again is one T_req offset after the first and doubles
    /// with each later one, up to T_max.
    pub retries: u32,
}

/// A repair we may answer by rebroadcasting a message (SDS-R).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRepairEntry {
    /// The requested message, as requested.
    pub entry: HistoryEntry,
    /// Its original bytes.
    pub bytes: Bytes,
    /// Absolute time at which we rebroadcast unless someone else does first.
    pub t_resp: u64,
}

/// A change to a channel's stored state. One protocol operation yields a batch of these, meant
/// to be applied atomically before its events are published.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// The channel's lamport clock.
    SaveLamport(i64),
    /// A message entered the log.
    AppendLogEntry(LogEntry),
    /// A message left the log.
    RemoveLogEntry(MessageId),
    /// A logged message got a retrieval hint.
    SetRetrievalHint {
        /// Message id.
        message_id: MessageId,
        /// The hint.
        hint: Bytes,
    },
    /// An outgoing entry was added or changed.
    SaveOutgoing(OutgoingEntry),
    /// An outgoing entry was removed.
    RemoveOutgoing(MessageId),
    /// An incoming entry was added or changed.
    SaveIncoming(IncomingEntry),
    /// An incoming entry was removed.
    RemoveIncoming(MessageId),
    /// An outgoing repair entry was added or changed.
    SaveOutgoingRepair(OutgoingRepairEntry),
    /// An outgoing repair entry was removed.
    RemoveOutgoingRepair(MessageId),
    /// An incoming repair entry was added or changed.
    SaveIncomingRepair(IncomingRepairEntry),
    /// An incoming repair entry was removed.
    RemoveIncomingRepair(MessageId),
    /// The highest lamport timestamp of a delivered message that left the log rose to this: a
    /// restored channel refuses unknown content at or below it as a possible replay
    /// ([`ChannelSnapshot::low_water`]).
    SaveLowWater(i64),
}

/// Everything stored about a channel, from which [`Channel::restore`](super::Channel::restore)
/// rebuilds it. The bloom filter is not stored: it is rebuilt from the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelSnapshot {
    /// The lamport clock, if one was stored.
    pub lamport: Option<i64>,
    /// The highest lamport timestamp of a delivered message that left the log, if one did
    /// ([`StoreOp::SaveLowWater`]). A restored channel knows the ids of its log only; unknown
    /// content at or below this mark may be a message delivered before, and is refused as
    /// [`ReceivedKind::Stale`].
    pub low_water: Option<i64>,
    /// The log, in (lamport, id) order, oldest first; each entry carries its arrival, which
    /// decides eviction.
    pub log: Vec<LogEntry>,
    /// Unacknowledged outgoing messages.
    pub outgoing: Vec<OutgoingEntry>,
    /// Messages waiting for dependencies.
    pub incoming: Vec<IncomingEntry>,
    /// Repairs we will request.
    pub outgoing_repair: Vec<OutgoingRepairEntry>,
    /// Repairs we may answer.
    pub incoming_repair: Vec<IncomingRepairEntry>,
}

/// How a received message was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceivedKind {
    /// Delivered now (see the `MessageReady` events).
    Delivered,
    /// Waiting for dependencies.
    Buffered,
    /// Already delivered or buffered; nothing changed.
    Duplicate,
    /// Another message under the id of one we hold (logged or waiting), with different
    /// content: the sender equivocates, or someone forges its ids. Nothing changed; a
    /// [`Event::MessageConflict`] reports it.
    Conflict,
    /// A content message we do not remember whose lamport timestamp is at or below that of
    /// messages whose ids we have forgotten ([`Config::max_known_ids`](super::Config)): it may
    /// be one delivered long ago, replayed, so it is not delivered again. Nothing changed.
    Stale,
    /// Sent by this participant; ignored.
    Own,
    /// A sync message: acknowledgements reviewed, nothing delivered.
    Sync,
    /// An ephemeral message (spec profile): announced by an `Ephemeral` event, nothing stored.
    Ephemeral,
}

impl ReceivedKind {
    /// The kind's name in lower case (`delivered`, `buffered`, …), as the C ABI's results and
    /// the metrics' labels spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReceivedKind::Delivered => "delivered",
            ReceivedKind::Buffered => "buffered",
            ReceivedKind::Duplicate => "duplicate",
            ReceivedKind::Conflict => "conflict",
            ReceivedKind::Stale => "stale",
            ReceivedKind::Own => "own",
            ReceivedKind::Sync => "sync",
            ReceivedKind::Ephemeral => "ephemeral",
        }
    }
}

/// The result of receiving a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Unwrapped {
    /// The message id.
    pub message_id: MessageId,
    /// The content (also for a message that must wait).
    pub content: Bytes,
    /// Dependencies still missing, as cited (empty when delivered): those we lack, not those
    /// waiting in our incoming buffer (see [`Event::MissingDependencies`]). For a sync message,
    /// what it cites and we lack (see [`Event::MissingMessages`]).
    pub missing_dependencies: Vec<HistoryEntry>,
    /// The channel the message belongs to.
    pub channel_id: ChannelId,
    /// What happened.
    pub kind: ReceivedKind,
}

/// Why an input was refused. The channel is unchanged whenever one is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// `wrap` needs content; sync messages have their own call.
    #[error("content must not be empty")]
    EmptyContent,
    /// The message id is empty, or empty in a cited entry.
    #[error("message id must not be empty")]
    EmptyMessageId,
    /// Content above the configured maximum.
    #[error("content of {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Content size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// An id longer than the configured maximum.
    #[error("id of {len} bytes exceeds the limit of {limit}")]
    IdTooLong {
        /// Id length.
        len: usize,
        /// Limit.
        limit: usize,
    },
    /// The bytes are not a valid message.
    #[error("cannot decode message: {0}")]
    Decode(#[from] DecodeError),
    /// The message belongs to another channel.
    #[error("message is for channel {got}, not {expected}")]
    WrongChannel {
        /// This channel.
        expected: ChannelId,
        /// The message's channel.
        got: ChannelId,
    },
    /// A message cites itself as a dependency.
    #[error("message {0} cites itself")]
    SelfCitation(MessageId),
    /// The id was already used for a message in this channel.
    #[error("message id {0} is already in use in this channel")]
    DuplicateMessageId(MessageId),
    /// The message must wait for dependencies but is larger than the incoming buffer's byte
    /// bound (with what it is charged for its dependencies) even when empty.
    #[error("incoming buffer is full")]
    IncomingBufferFull,
    /// The lamport clock cannot advance any further.
    #[error("lamport clock would overflow")]
    ClockOverflow,
    /// A received message's lamport timestamp is further ahead of our wall clock than
    /// [`Config::max_clock_lead`](super::Config::max_clock_lead) allows (and ahead of our own
    /// clock): adopting it would drag our clock into the future, possibly to the end of its
    /// range. Nothing changed.
    #[error("lamport timestamp {lamport} is beyond the accepted limit {limit}")]
    LamportTooFarAhead {
        /// The message's lamport timestamp.
        lamport: i64,
        /// The highest lamport timestamp accepted at the time.
        limit: i64,
    },
    /// Spec profile: the bytes decode but carry neither a lamport timestamp nor content.
    #[error("not an SDS message (neither lamport timestamp nor content)")]
    NotAnSdsMessage,
    /// Ephemeral messages exist only on the spec profile (the nim-sds layout always carries a
    /// lamport timestamp).
    #[error("ephemeral messages need the spec wire profile")]
    EphemeralUnsupported,
    /// Spec profile: the received bloom filter cannot be read with our parameters (shorter than
    /// ours, or not whole 64-bit words). Nothing changed.
    #[error("invalid bloom filter: {0}")]
    InvalidBloomFilter(BloomError),
}
