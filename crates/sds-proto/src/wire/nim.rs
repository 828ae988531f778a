//! The nim-sds wire profile.
//!
//! Layout (field number, wire type, rule on encode / rule on decode):
//!
//! | # | field | encode | decode |
//! |---|---|---|---|
//! | 1 | message id (string) | always, even empty | required, last occurrence wins |
//! | 2 | lamport timestamp (varint, `u64` cast of `i64`) | always, even 0 | required; ≥ 2^63 is an error |
//! | 3 | causal history (repeated `HistoryEntry`) | one field per entry | every entry must decode |
//! | 4 | channel id (string) | always, even empty | required |
//! | 5 | content (bytes) | always, even empty | required |
//! | 6 | bloom filter (bytes, see [`crate::bloom`]) | always, even empty | optional; not looked into |
//! | 7 | sender id (string) | only when non-empty | optional |
//! | 13 | repair request (repeated `HistoryEntry`) | one field per entry | every entry must decode |
//!
//! `HistoryEntry`: 1 message id (always written, required), 2 retrieval hint (only when
//! non-empty), 3 sender id (only when non-empty).
//!
//! A field sent with an unexpected wire type is skipped (so a required one counts as missing),
//! unknown fields are skipped, and a repeated singular field keeps its last value. Structural
//! errors are reported as [`ProtoError`](super::ProtoError)s in the order nim-sds reports them.
//! Unlike nim-sds, a lamport timestamp of 2^63 or more is a typed error rather than a process
//! abort, and every size and count is bounded by [`Limits`].

use bytes::Bytes;

use super::pb::{self, Fields, Value};
use super::{check_len, id, DecodeError, Field, LimitKind, Limits};
use crate::bloom::BloomFilter;
use crate::message::{HistoryEntry, SdsMessage};

const F_ID: u64 = 1;
const F_LAMPORT: u64 = 2;
const F_HISTORY: u64 = 3;
const F_CHANNEL: u64 = 4;
const F_CONTENT: u64 = 5;
const F_BLOOM: u64 = 6;
const F_SENDER: u64 = 7;
const F_REPAIR: u64 = 13;

const E_ID: u64 = 1;
const E_HINT: u64 = 2;
const E_SENDER: u64 = 3;

fn entry_len(e: &HistoryEntry) -> usize {
    let mut n = pb::bytes_field_len(E_ID as u32, e.message_id.len());
    if !e.retrieval_hint.is_empty() {
        n += pb::bytes_field_len(E_HINT as u32, e.retrieval_hint.len());
    }
    if !e.sender_id.is_empty() {
        n += pb::bytes_field_len(E_SENDER as u32, e.sender_id.len());
    }
    n
}

fn put_entry(out: &mut Vec<u8>, field: u64, e: &HistoryEntry) {
    pb::put_len_header(out, field as u32, entry_len(e));
    pb::put_bytes_field(out, E_ID as u32, e.message_id.as_bytes());
    if !e.retrieval_hint.is_empty() {
        pb::put_bytes_field(out, E_HINT as u32, &e.retrieval_hint);
    }
    if !e.sender_id.is_empty() {
        pb::put_bytes_field(out, E_SENDER as u32, e.sender_id.as_bytes());
    }
}

/// What goes into field 6.
#[derive(Clone, Copy)]
enum BloomField<'a> {
    /// Bytes already serialized.
    Bytes(&'a [u8]),
    /// A live filter, serialized straight into the message.
    Filter(&'a BloomFilter),
}

impl BloomField<'_> {
    fn len(self) -> usize {
        match self {
            BloomField::Bytes(b) => b.len(),
            BloomField::Filter(f) => f.serialized_len(),
        }
    }
}

fn len_with(msg: &SdsMessage, bloom: BloomField<'_>) -> usize {
    let entries = |list: &[HistoryEntry], field: u64| -> usize {
        list.iter()
            .map(|e| pb::bytes_field_len(field as u32, entry_len(e)))
            .sum()
    };
    let mut n = pb::bytes_field_len(F_ID as u32, msg.message_id.len())
        + pb::varint_field_len(F_LAMPORT as u32, msg.lamport_timestamp as u64)
        + entries(&msg.causal_history, F_HISTORY)
        + pb::bytes_field_len(F_CHANNEL as u32, msg.channel_id.len())
        + pb::bytes_field_len(F_CONTENT as u32, msg.content.len())
        + pb::bytes_field_len(F_BLOOM as u32, bloom.len())
        + entries(&msg.repair_request, F_REPAIR);
    if !msg.sender_id.is_empty() {
        n += pb::bytes_field_len(F_SENDER as u32, msg.sender_id.len());
    }
    n
}

fn encode_with(msg: &SdsMessage, bloom: BloomField<'_>, out: &mut Vec<u8>) {
    out.reserve(len_with(msg, bloom));
    pb::put_bytes_field(out, F_ID as u32, msg.message_id.as_bytes());
    // nim-sds writes `uint64(lamport)`: a negative clock becomes a ten-byte varint.
    pb::put_varint_field(out, F_LAMPORT as u32, msg.lamport_timestamp as u64);
    for e in &msg.causal_history {
        put_entry(out, F_HISTORY, e);
    }
    pb::put_bytes_field(out, F_CHANNEL as u32, msg.channel_id.as_bytes());
    pb::put_bytes_field(out, F_CONTENT as u32, &msg.content);
    match bloom {
        BloomField::Bytes(b) => pb::put_bytes_field(out, F_BLOOM as u32, b),
        BloomField::Filter(f) => {
            pb::put_len_header(out, F_BLOOM as u32, f.serialized_len());
            f.serialize_into(out);
        }
    }
    if !msg.sender_id.is_empty() {
        pb::put_bytes_field(out, F_SENDER as u32, msg.sender_id.as_bytes());
    }
    for e in &msg.repair_request {
        put_entry(out, F_REPAIR, e);
    }
}

/// The exact size of `encode(msg)`.
pub fn encoded_len(msg: &SdsMessage) -> usize {
    len_with(msg, BloomField::Bytes(&msg.bloom_filter))
}

/// Encodes `msg` exactly as nim-sds's `serializeMessage` does.
pub fn encode(msg: &SdsMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(msg));
    encode_into(msg, &mut out);
    out
}

/// Appends the encoding of `msg` to `out`.
pub fn encode_into(msg: &SdsMessage, out: &mut Vec<u8>) {
    encode_with(msg, BloomField::Bytes(&msg.bloom_filter), out);
}

/// Encodes `msg` with `filter`'s serialization as its bloom filter (`msg.bloom_filter` is
/// ignored). The filter is written straight into the message, with no intermediate copy: the
/// result equals `encode` of `msg` with `bloom_filter = filter.serialize()`.
pub fn encode_with_filter(msg: &SdsMessage, filter: &BloomFilter) -> Vec<u8> {
    let bloom = BloomField::Filter(filter);
    let mut out = Vec::with_capacity(len_with(msg, bloom));
    encode_with(msg, bloom, &mut out);
    out
}

fn push_bounded<'a>(
    list: &mut Vec<&'a [u8]>,
    item: &'a [u8],
    kind: LimitKind,
    limit: usize,
) -> Result<(), DecodeError> {
    check_len(kind, list.len() + 1, limit)?;
    list.push(item);
    Ok(())
}

fn decode_entry(buf: &Bytes, raw: &[u8], limits: &Limits) -> Result<HistoryEntry, DecodeError> {
    let (mut msg_id, mut hint, mut sender) = (None, None, None);
    for field in Fields::new(raw) {
        match field? {
            (E_ID, Value::Len(b)) => msg_id = Some(b),
            (E_HINT, Value::Len(b)) => hint = Some(b),
            (E_SENDER, Value::Len(b)) => sender = Some(b),
            _ => {}
        }
    }
    let msg_id = msg_id.ok_or(DecodeError::MissingField(Field::HistoryEntryMessageId))?;
    let retrieval_hint = match hint {
        Some(h) => {
            check_len(LimitKind::HintLength, h.len(), limits.max_hint_len)?;
            buf.slice_ref(h)
        }
        None => Bytes::new(),
    };
    Ok(HistoryEntry {
        message_id: id(buf, msg_id, limits)?,
        retrieval_hint,
        sender_id: sender
            .map(|s| id(buf, s, limits))
            .transpose()?
            .unwrap_or_default(),
    })
}

/// Decodes a nim-sds message, accepting and rejecting exactly what nim-sds's `SdsMessage.decode`
/// accepts and rejects (within `limits`), without panicking on any input.
///
/// Every id, the content, the bloom filter and the retrieval hints are zero-copy slices of
/// `buf` (see [`MessageId::detached`](crate::id::MessageId::detached) for keeping an id beyond the message).
pub fn decode(buf: &Bytes, limits: &Limits) -> Result<SdsMessage, DecodeError> {
    check_len(LimitKind::MessageSize, buf.len(), limits.max_message_size)?;
    let mut msg_id = None;
    let mut lamport = None;
    let mut channel = None;
    let mut content = None;
    let mut bloom = None;
    let mut sender = None;
    let mut history: Vec<&[u8]> = Vec::new();
    let mut repair: Vec<&[u8]> = Vec::new();
    for field in Fields::new(buf) {
        match field? {
            (F_ID, Value::Len(b)) => msg_id = Some(b),
            (F_LAMPORT, Value::Varint(v)) => lamport = Some(v),
            (F_HISTORY, Value::Len(b)) => push_bounded(
                &mut history,
                b,
                LimitKind::CausalHistory,
                limits.max_causal_history,
            )?,
            (F_CHANNEL, Value::Len(b)) => channel = Some(b),
            (F_CONTENT, Value::Len(b)) => content = Some(b),
            (F_BLOOM, Value::Len(b)) => bloom = Some(b),
            (F_SENDER, Value::Len(b)) => sender = Some(b),
            (F_REPAIR, Value::Len(b)) => push_bounded(
                &mut repair,
                b,
                LimitKind::RepairRequest,
                limits.max_repair_request,
            )?,
            _ => {}
        }
    }

    // The checks below run in the order nim-sds runs them, so that a message with several
    // problems reports the same one.
    let message_id = id(
        buf,
        msg_id.ok_or(DecodeError::MissingField(Field::MessageId))?,
        limits,
    )?;
    let lamport = lamport.ok_or(DecodeError::MissingField(Field::LamportTimestamp))?;
    let lamport_timestamp =
        i64::try_from(lamport).map_err(|_| DecodeError::LamportOutOfRange(lamport))?;
    let causal_history = history
        .iter()
        .map(|raw| decode_entry(buf, raw, limits))
        .collect::<Result<Vec<_>, _>>()?;
    let channel_id = id(
        buf,
        channel.ok_or(DecodeError::MissingField(Field::ChannelId))?,
        limits,
    )?;
    let content = content.ok_or(DecodeError::MissingField(Field::Content))?;
    check_len(
        LimitKind::ContentSize,
        content.len(),
        limits.max_content_size,
    )?;
    let content = buf.slice_ref(content);
    let bloom_filter = bloom.map(|b| buf.slice_ref(b)).unwrap_or_default();
    let sender_id = sender
        .map(|s| id(buf, s, limits))
        .transpose()?
        .unwrap_or_default();
    let repair_request = repair
        .iter()
        .map(|raw| decode_entry(buf, raw, limits))
        .collect::<Result<Vec<_>, _>>()?;

    Ok(SdsMessage {
        message_id,
        lamport_timestamp,
        causal_history,
        channel_id,
        content,
        bloom_filter,
        sender_id,
        repair_request,
    })
}

/// Decodes from a borrowed slice (one copy of the input). Prefer [`decode`] with [`Bytes`] on hot
/// paths.
pub fn decode_slice(buf: &[u8], limits: &Limits) -> Result<SdsMessage, DecodeError> {
    decode(&Bytes::copy_from_slice(buf), limits)
}

/// Reads only the channel id (field 4) of an encoded message, without decoding or allocating.
///
/// Agrees with nim-sds's `extractChannelId`: the whole buffer must be structurally valid, the
/// last field 4 wins, and an absent channel id is an error. The contents of other fields (for
/// example a malformed history entry or an out-of-range lamport) are not looked at.
pub fn extract_channel_id(buf: &[u8]) -> Result<&[u8], DecodeError> {
    let mut channel = None;
    for field in Fields::new(buf) {
        if let (F_CHANNEL, Value::Len(b)) = field? {
            channel = Some(b);
        }
    }
    channel.ok_or(DecodeError::MissingField(Field::ChannelId))
}

/// The message id and content of an encoded message, read without decoding it (see
/// [`pb::peek_id_content`](super::pb::peek_id_content)).
pub(crate) fn peek_id_content(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    super::pb::peek_id_content(buf, F_ID, F_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ProtoError;

    fn minimal() -> SdsMessage {
        SdsMessage {
            message_id: "m1".into(),
            lamport_timestamp: 1,
            channel_id: "ch".into(),
            content: Bytes::from_static(b"hello"),
            ..SdsMessage::default()
        }
    }

    // WIRE-01
    #[test]
    fn minimal_layout() {
        let bytes = encode(&minimal());
        assert_eq!(
            bytes,
            [
                0x0a, 0x02, b'm', b'1', 0x10, 0x01, 0x22, 0x02, b'c', b'h', 0x2a, 0x05, b'h', b'e',
                b'l', b'l', b'o', 0x32, 0x00
            ]
        );
        assert_eq!(encoded_len(&minimal()), bytes.len());
    }

    #[test]
    fn encoding_with_a_live_filter_equals_encoding_its_bytes() {
        let mut filter = BloomFilter::new(100, 0.01).unwrap();
        filter.insert(b"x");
        let mut msg = minimal();
        let direct = encode_with_filter(&msg, &filter);
        msg.bloom_filter = Bytes::from(filter.serialize());
        assert_eq!(direct, encode(&msg));
    }

    #[test]
    fn limits_are_enforced() {
        let mut msg = minimal();
        msg.causal_history = (0..5).map(|i| HistoryEntry::new(format!("h{i}"))).collect();
        let bytes = Bytes::from(encode(&msg));
        let tight = Limits {
            max_causal_history: 4,
            ..Limits::default()
        };
        assert_eq!(
            decode(&bytes, &tight),
            Err(DecodeError::LimitExceeded {
                kind: LimitKind::CausalHistory,
                limit: 4,
                actual: 5
            })
        );
        let small = Limits {
            max_message_size: bytes.len() - 1,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&bytes, &small),
            Err(DecodeError::LimitExceeded {
                kind: LimitKind::MessageSize,
                ..
            })
        ));
        let short_ids = Limits {
            max_id_len: 1,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&bytes, &short_ids),
            Err(DecodeError::LimitExceeded {
                kind: LimitKind::IdLength,
                ..
            })
        ));
        assert_eq!(decode(&bytes, &Limits::default()), Ok(msg));
    }

    #[test]
    fn structural_error_anywhere_wins_over_missing_fields() {
        // Only a broken trailing field: nim-sds reports the structural error, not "messageId".
        assert_eq!(
            decode(&Bytes::from_static(&[0x1a, 0x05, 0x00]), &Limits::default()),
            Err(DecodeError::Proto(ProtoError::MessageIncomplete))
        );
        assert_eq!(
            extract_channel_id(&[0x22, 0x01, b'c', 0x00]),
            Err(DecodeError::Proto(ProtoError::VarintDecode))
        );
    }
}
