//! The SDS message as it travels on the wire.

use bytes::Bytes;

use crate::id::{ChannelId, MessageId, ParticipantId};

/// One entry of a causal history or of a repair request: a message id with an optional
/// retrieval hint (for example a transport-level message hash) and the id of its sender.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct HistoryEntry {
    /// Id of the referenced message.
    pub message_id: MessageId,
    /// Opaque bytes that help fetch the message from elsewhere; empty when unknown.
    pub retrieval_hint: Bytes,
    /// Original sender of the referenced message; empty when unknown.
    pub sender_id: ParticipantId,
}

impl HistoryEntry {
    /// An entry with only a message id.
    pub fn new(message_id: impl Into<MessageId>) -> Self {
        HistoryEntry {
            message_id: message_id.into(),
            ..HistoryEntry::default()
        }
    }
}

/// An SDS message: application content wrapped with the metadata SDS needs for causal ordering,
/// acknowledgement and repair.
///
/// `content` and `bloom_filter` are [`Bytes`], so cloning or slicing a message does not copy the
/// ~19 KB bloom filter that rides on every message at default settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdsMessage {
    /// Unique id of this message.
    pub message_id: MessageId,
    /// Lamport timestamp of the sender when the message was created.
    pub lamport_timestamp: i64,
    /// Recent message ids the sender had in its log, oldest first.
    pub causal_history: Vec<HistoryEntry>,
    /// The channel the message belongs to.
    pub channel_id: ChannelId,
    /// Application payload; empty for a sync message.
    pub content: Bytes,
    /// The sender's serialized bloom filter of received ids; empty when absent.
    pub bloom_filter: Bytes,
    /// Id of the participant that created the message; empty when unknown.
    pub sender_id: ParticipantId,
    /// Messages the sender is missing and asks the group to rebroadcast (SDS-R).
    pub repair_request: Vec<HistoryEntry>,
}
