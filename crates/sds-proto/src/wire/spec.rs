//! The spec wire profile: the `SdsMessage` layout of the SDS specification, as spoken by
//! `@waku/sds`.
//!
//! | # | field | encode | decode |
//! |---|---|---|---|
//! | 1 | sender id (string) | only when non-empty | optional, `""` when absent |
//! | 2 | message id (string) | only when non-empty | optional, `""` when absent |
//! | 3 | channel id (string) | only when non-empty | optional, `""` when absent |
//! | 10 | lamport timestamp (`uint64`, proto3 `optional`) | whenever set, even 0 | presence kept |
//! | 11 | causal history (repeated `HistoryEntry`) | one field per entry | every entry must decode |
//! | 12 | bloom filter (`optional bytes`, see [`crate::bloom::spec`]) | whenever set, even empty | presence kept |
//! | 13 | repair request (repeated `HistoryEntry`, SDS-R) | one field per entry | every entry must decode |
//! | 20 | content (`optional bytes`) | whenever set, even empty | presence kept |
//!
//! `HistoryEntry`: 1 message id (only when non-empty), 2 retrieval hint (`optional bytes`,
//! whenever set), 3 sender id (`optional string`, whenever set, even `""`).
//!
//! Fields are written in ascending field-number order; any order is accepted on decode, unknown
//! fields are skipped and a repeated singular field keeps its last value. A known field sent
//! with the wrong wire type is rejected ([`DecodeError::WireType`]) instead of being misread.
//! Whether a message is a content, sync or ephemeral message follows from which fields are
//! present ([`SpecMessage::kind`]); a message that is none of these is not an SDS message.
//!
//! This layout is **not** interchangeable with the nim-sds layout ([`super::nim`]): the field
//! numbers differ, so each side fails to decode the other's messages.

use bytes::Bytes;

use super::pb::{self, Fields, Value};
use super::{check_len, id, DecodeError, LimitKind, Limits};
use crate::id::{ChannelId, MessageId, ParticipantId};

const F_SENDER: u64 = 1;
const F_ID: u64 = 2;
const F_CHANNEL: u64 = 3;
const F_LAMPORT: u64 = 10;
const F_HISTORY: u64 = 11;
const F_BLOOM: u64 = 12;
const F_REPAIR: u64 = 13;
const F_CONTENT: u64 = 20;

const E_ID: u64 = 1;
const E_HINT: u64 = 2;
const E_SENDER: u64 = 3;

/// A causal-history or repair-request entry of the spec profile, with field presence kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SpecHistoryEntry {
    /// Id of the referenced message.
    pub message_id: MessageId,
    /// Retrieval hint, when one was set (it may be set and empty).
    pub retrieval_hint: Option<Bytes>,
    /// Sender of the referenced message, when set (it may be set and empty).
    pub sender_id: Option<ParticipantId>,
}

impl SpecHistoryEntry {
    /// An entry with only a message id.
    pub fn new(message_id: impl Into<MessageId>) -> Self {
        SpecHistoryEntry {
            message_id: message_id.into(),
            ..SpecHistoryEntry::default()
        }
    }
}

/// What a spec-profile message is, decided by which fields it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageKind {
    /// Lamport timestamp set and non-empty content: delivered in causal order, acknowledged,
    /// repaired.
    Content,
    /// Lamport timestamp set and content absent or empty: carries causal history and a bloom
    /// filter only.
    Sync,
    /// No lamport timestamp and non-empty content: delivered at once, never acknowledged,
    /// never repaired.
    Ephemeral,
}

impl MessageKind {
    /// A stable lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Content => "content",
            MessageKind::Sync => "sync",
            MessageKind::Ephemeral => "ephemeral",
        }
    }
}

/// An SDS message in the spec profile, with the presence of every optional field kept so that
/// decoding and re-encoding reproduces the original bytes (for fields in canonical order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecMessage {
    /// Id of the participant that created the message (`""` when absent).
    pub sender_id: ParticipantId,
    /// Unique id of this message (`""` when absent).
    pub message_id: MessageId,
    /// The channel the message belongs to (`""` when absent).
    pub channel_id: ChannelId,
    /// Lamport timestamp; `None` for an ephemeral message.
    pub lamport_timestamp: Option<u64>,
    /// Recent message ids the sender had in its log.
    pub causal_history: Vec<SpecHistoryEntry>,
    /// The sender's serialized bloom filter, when sent.
    pub bloom_filter: Option<Bytes>,
    /// Messages the sender asks the group to rebroadcast (SDS-R).
    pub repair_request: Vec<SpecHistoryEntry>,
    /// Application payload, when sent.
    pub content: Option<Bytes>,
}

impl SpecMessage {
    /// The kind of message the present fields make this, or `None` when they make it none
    /// (no lamport timestamp and no content), which receivers drop.
    pub fn kind(&self) -> Option<MessageKind> {
        let has_content = self.content.as_ref().is_some_and(|c| !c.is_empty());
        match (self.lamport_timestamp.is_some(), has_content) {
            (true, true) => Some(MessageKind::Content),
            (true, false) => Some(MessageKind::Sync),
            (false, true) => Some(MessageKind::Ephemeral),
            (false, false) => None,
        }
    }
}

fn entry_len(e: &SpecHistoryEntry) -> usize {
    let mut n = 0;
    if !e.message_id.is_empty() {
        n += pb::bytes_field_len(E_ID as u32, e.message_id.len());
    }
    if let Some(h) = &e.retrieval_hint {
        n += pb::bytes_field_len(E_HINT as u32, h.len());
    }
    if let Some(s) = &e.sender_id {
        n += pb::bytes_field_len(E_SENDER as u32, s.len());
    }
    n
}

fn put_entry(out: &mut Vec<u8>, field: u64, e: &SpecHistoryEntry) {
    pb::put_len_header(out, field as u32, entry_len(e));
    if !e.message_id.is_empty() {
        pb::put_bytes_field(out, E_ID as u32, e.message_id.as_bytes());
    }
    if let Some(h) = &e.retrieval_hint {
        pb::put_bytes_field(out, E_HINT as u32, h);
    }
    if let Some(s) = &e.sender_id {
        pb::put_bytes_field(out, E_SENDER as u32, s.as_bytes());
    }
}

/// The exact size of `encode(msg)`.
pub fn encoded_len(msg: &SpecMessage) -> usize {
    let string = |field: u64, id: &[u8]| {
        if id.is_empty() {
            0
        } else {
            pb::bytes_field_len(field as u32, id.len())
        }
    };
    let entries = |list: &[SpecHistoryEntry], field: u64| -> usize {
        list.iter()
            .map(|e| pb::bytes_field_len(field as u32, entry_len(e)))
            .sum()
    };
    string(F_SENDER, msg.sender_id.as_bytes())
        + string(F_ID, msg.message_id.as_bytes())
        + string(F_CHANNEL, msg.channel_id.as_bytes())
        + msg
            .lamport_timestamp
            .map_or(0, |l| pb::varint_field_len(F_LAMPORT as u32, l))
        + entries(&msg.causal_history, F_HISTORY)
        + msg
            .bloom_filter
            .as_ref()
            .map_or(0, |b| pb::bytes_field_len(F_BLOOM as u32, b.len()))
        + entries(&msg.repair_request, F_REPAIR)
        + msg
            .content
            .as_ref()
            .map_or(0, |c| pb::bytes_field_len(F_CONTENT as u32, c.len()))
}

/// Encodes `msg` exactly as `@waku/sds` encodes a message with the same fields set.
pub fn encode(msg: &SpecMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(msg));
    encode_into(msg, &mut out);
    out
}

/// Appends the encoding of `msg` to `out`.
pub fn encode_into(msg: &SpecMessage, out: &mut Vec<u8>) {
    out.reserve(encoded_len(msg));
    for (field, id) in [
        (F_SENDER, msg.sender_id.as_bytes()),
        (F_ID, msg.message_id.as_bytes()),
        (F_CHANNEL, msg.channel_id.as_bytes()),
    ] {
        if !id.is_empty() {
            pb::put_bytes_field(out, field as u32, id);
        }
    }
    if let Some(l) = msg.lamport_timestamp {
        pb::put_varint_field(out, F_LAMPORT as u32, l);
    }
    for e in &msg.causal_history {
        put_entry(out, F_HISTORY, e);
    }
    if let Some(b) = &msg.bloom_filter {
        pb::put_bytes_field(out, F_BLOOM as u32, b);
    }
    for e in &msg.repair_request {
        put_entry(out, F_REPAIR, e);
    }
    if let Some(c) = &msg.content {
        pb::put_bytes_field(out, F_CONTENT as u32, c);
    }
}

/// A length-delimited field's body, or the typed error for a wrong wire type.
fn len_value<'a>(field: u64, value: Value<'a>) -> Result<&'a [u8], DecodeError> {
    match value {
        Value::Len(b) => Ok(b),
        _ => Err(DecodeError::WireType { field }),
    }
}

fn decode_entry(buf: &Bytes, raw: &[u8], limits: &Limits) -> Result<SpecHistoryEntry, DecodeError> {
    let mut entry = SpecHistoryEntry::default();
    for field in Fields::new(raw) {
        let (number, value) = field?;
        match number {
            E_ID => entry.message_id = id(buf, len_value(number, value)?, limits)?,
            E_HINT => {
                let h = len_value(number, value)?;
                check_len(LimitKind::HintLength, h.len(), limits.max_hint_len)?;
                entry.retrieval_hint = Some(buf.slice_ref(h));
            }
            E_SENDER => entry.sender_id = Some(id(buf, len_value(number, value)?, limits)?),
            _ => {}
        }
    }
    Ok(entry)
}

fn push_entry(
    list: &mut Vec<SpecHistoryEntry>,
    entry: SpecHistoryEntry,
    kind: LimitKind,
    limit: usize,
) -> Result<(), DecodeError> {
    check_len(kind, list.len() + 1, limit)?;
    list.push(entry);
    Ok(())
}

/// Decodes a spec-profile message within `limits`, without panicking on any input.
///
/// The result may be of no [`MessageKind`]; callers that only want SDS messages check
/// [`SpecMessage::kind`]. Ids, content, bloom filter and hints are zero-copy slices of `buf`.
pub fn decode(buf: &Bytes, limits: &Limits) -> Result<SpecMessage, DecodeError> {
    check_len(LimitKind::MessageSize, buf.len(), limits.max_message_size)?;
    let mut msg = SpecMessage::default();
    for field in Fields::new(buf) {
        let (number, value) = field?;
        match number {
            F_SENDER => msg.sender_id = id(buf, len_value(number, value)?, limits)?,
            F_ID => msg.message_id = id(buf, len_value(number, value)?, limits)?,
            F_CHANNEL => msg.channel_id = id(buf, len_value(number, value)?, limits)?,
            F_LAMPORT => match value {
                Value::Varint(v) => msg.lamport_timestamp = Some(v),
                _ => return Err(DecodeError::WireType { field: number }),
            },
            F_HISTORY => {
                let entry = decode_entry(buf, len_value(number, value)?, limits)?;
                push_entry(
                    &mut msg.causal_history,
                    entry,
                    LimitKind::CausalHistory,
                    limits.max_causal_history,
                )?;
            }
            F_BLOOM => msg.bloom_filter = Some(buf.slice_ref(len_value(number, value)?)),
            F_REPAIR => {
                let entry = decode_entry(buf, len_value(number, value)?, limits)?;
                push_entry(
                    &mut msg.repair_request,
                    entry,
                    LimitKind::RepairRequest,
                    limits.max_repair_request,
                )?;
            }
            F_CONTENT => {
                let c = len_value(number, value)?;
                check_len(LimitKind::ContentSize, c.len(), limits.max_content_size)?;
                msg.content = Some(buf.slice_ref(c));
            }
            _ => {}
        }
    }
    Ok(msg)
}

/// Reads only the channel id (field 3) of an encoded message; `""` when absent.
pub fn extract_channel_id(buf: &[u8]) -> Result<&[u8], DecodeError> {
    let mut channel: &[u8] = &[];
    for field in Fields::new(buf) {
        let (number, value) = field?;
        if number == F_CHANNEL {
            channel = len_value(number, value)?;
        }
    }
    Ok(channel)
}

/// The message id and content of an encoded message, read without decoding it (see
/// [`pb::peek_id_content`](super::pb::peek_id_content)).
pub(crate) fn peek_id_content(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    super::pb::peek_id_content(buf, F_ID, F_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_follows_presence() {
        let mut m = SpecMessage::default();
        assert_eq!(m.kind(), None);
        m.content = Some(Bytes::from_static(b""));
        assert_eq!(m.kind(), None);
        m.content = Some(Bytes::from_static(b"x"));
        assert_eq!(m.kind(), Some(MessageKind::Ephemeral));
        m.lamport_timestamp = Some(0);
        assert_eq!(m.kind(), Some(MessageKind::Content));
        m.content = Some(Bytes::new());
        assert_eq!(m.kind(), Some(MessageKind::Sync));
        m.content = None;
        assert_eq!(m.kind(), Some(MessageKind::Sync));
    }

    #[test]
    fn wrong_wire_type_is_typed() {
        // Field 2 (message id) as a varint.
        let buf = Bytes::from_static(&[0x10, 0x05]);
        assert_eq!(
            decode(&buf, &Limits::default()),
            Err(DecodeError::WireType { field: 2 })
        );
        // Field 10 (lamport) as bytes.
        let buf = Bytes::from_static(&[0x52, 0x00]);
        assert_eq!(
            decode(&buf, &Limits::default()),
            Err(DecodeError::WireType { field: 10 })
        );
    }

    #[test]
    fn limits_are_enforced() {
        let msg = SpecMessage {
            lamport_timestamp: Some(1),
            content: Some(Bytes::from(vec![7u8; 100])),
            causal_history: vec![SpecHistoryEntry::new("a"), SpecHistoryEntry::new("b")],
            ..SpecMessage::default()
        };
        let buf = Bytes::from(encode(&msg));
        let limits = Limits {
            max_content_size: 99,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&buf, &limits),
            Err(DecodeError::LimitExceeded {
                kind: LimitKind::ContentSize,
                ..
            })
        ));
        let limits = Limits {
            max_causal_history: 1,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&buf, &limits),
            Err(DecodeError::LimitExceeded {
                kind: LimitKind::CausalHistory,
                actual: 2,
                ..
            })
        ));
        assert_eq!(decode(&buf, &Limits::default()), Ok(msg));
    }
}
