//! The JSON forms of messages and decode results used by the golden vectors and the `sds wire`
//! tools (feature `json`).
//!
//! * A **message object** has the keys `messageId`, `lamportTimestamp`, `causalHistory`,
//!   `channelId`, `content` (hex), `bloomFilter` (hex), `senderId` and `repairRequest`; the two
//!   lists hold **entry objects** `{messageId, retrievalHint (hex), senderId}`.
//! * Ids are JSON strings. An id whose bytes are not UTF-8 is written as `null` with a sibling
//!   key `<key>Hex` holding its bytes; on input either form is accepted.
//! * Byte strings are lower-case hex, `""` for none; lamport timestamps are JSON integers.
//!
//! Spec-profile messages ([`SpecMessage`]) have the form of the `@waku/sds` vectors
//! (`messages.json`): `class` (`ContentMessage`, `SyncMessage`, `EphemeralMessage` or `null`),
//! `senderId`, `messageId`, `channelId`, `lamportTimestamp` (a decimal string, `null` when
//! absent), `causalHistory` and `repairRequest` (entries `{messageId, retrievalHint?, senderId?}`,
//! optional keys left out when absent), `content` and `bloomFilter` (hex, `null` when absent).

use serde_json::{json, Map, Value};

use crate::message::{HistoryEntry, SdsMessage};
use crate::wire::spec::{MessageKind, SpecHistoryEntry, SpecMessage};
use crate::wire::DecodeError;
use crate::Bytes;

/// Why a JSON value is not a valid message object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct JsonError {
    /// Where in the object the problem is (for example `causalHistory[2].messageId`).
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

fn err(path: &str, problem: impl Into<String>) -> JsonError {
    JsonError {
        path: path.to_string(),
        problem: problem.into(),
    }
}

fn put_id(obj: &mut Map<String, Value>, key: &str, id: impl AsRef<[u8]>) {
    let id = id.as_ref();
    match std::str::from_utf8(id).ok() {
        Some(s) => {
            obj.insert(key.to_string(), Value::String(s.to_string()));
        }
        None => {
            obj.insert(key.to_string(), Value::Null);
            obj.insert(format!("{key}Hex"), Value::String(hex::encode(id)));
        }
    }
}

fn entry_to_json(e: &HistoryEntry) -> Value {
    let mut obj = Map::new();
    put_id(&mut obj, "messageId", &e.message_id);
    obj.insert(
        "retrievalHint".into(),
        Value::String(hex::encode(&e.retrieval_hint)),
    );
    put_id(&mut obj, "senderId", &e.sender_id);
    Value::Object(obj)
}

/// The message object of `msg`.
pub fn message_to_json(msg: &SdsMessage) -> Value {
    let mut obj = Map::new();
    put_id(&mut obj, "messageId", &msg.message_id);
    obj.insert("lamportTimestamp".into(), json!(msg.lamport_timestamp));
    obj.insert(
        "causalHistory".into(),
        Value::Array(msg.causal_history.iter().map(entry_to_json).collect()),
    );
    put_id(&mut obj, "channelId", &msg.channel_id);
    obj.insert("content".into(), Value::String(hex::encode(&msg.content)));
    obj.insert(
        "bloomFilter".into(),
        Value::String(hex::encode(&msg.bloom_filter)),
    );
    put_id(&mut obj, "senderId", &msg.sender_id);
    obj.insert(
        "repairRequest".into(),
        Value::Array(msg.repair_request.iter().map(entry_to_json).collect()),
    );
    Value::Object(obj)
}

fn get_id<T: From<Vec<u8>> + From<String> + Default>(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    optional: bool,
) -> Result<T, JsonError> {
    let at = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match obj.get(key) {
        Some(Value::String(s)) => Ok(T::from(s.clone())),
        Some(Value::Null) | None => match obj.get(&format!("{key}Hex")) {
            Some(Value::String(h)) => hex::decode(h)
                .map(T::from)
                .map_err(|e| err(&at(&format!("{key}Hex")), format!("not hex: {e}"))),
            Some(_) => Err(err(&at(&format!("{key}Hex")), "must be a hex string")),
            None if optional => Ok(T::default()),
            None => Err(err(&at(key), "missing (a string is required)")),
        },
        Some(_) => Err(err(&at(key), "must be a string")),
    }
}

fn get_hex(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Bytes, JsonError> {
    let at = if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    };
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Bytes::new()),
        Some(Value::String(h)) => hex::decode(h)
            .map(Bytes::from)
            .map_err(|e| err(&at, format!("not hex: {e}"))),
        Some(_) => Err(err(&at, "must be a hex string")),
    }
}

/// The entries of the list under `key` (absent or null: none), each read by `read` with its
/// object and path.
fn get_list<T>(
    obj: &Map<String, Value>,
    key: &str,
    read: impl Fn(&Map<String, Value>, &str) -> Result<T, JsonError>,
) -> Result<Vec<T>, JsonError> {
    let list = match obj.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(err(key, "must be an array of entry objects")),
    };
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let path = format!("{key}[{i}]");
            let e = v
                .as_object()
                .ok_or_else(|| err(&path, "must be an entry object"))?;
            read(e, &path)
        })
        .collect()
}

fn get_entries(obj: &Map<String, Value>, key: &str) -> Result<Vec<HistoryEntry>, JsonError> {
    get_list(obj, key, |e, path| {
        Ok(HistoryEntry {
            message_id: get_id(e, "messageId", path, false)?,
            retrieval_hint: get_hex(e, "retrievalHint", path)?,
            sender_id: get_id(e, "senderId", path, true)?,
        })
    })
}

/// Reads a message object. `messageId`, `lamportTimestamp` and `channelId` are required; the
/// other keys default to empty.
pub fn message_from_json(value: &Value) -> Result<SdsMessage, JsonError> {
    let obj = value
        .as_object()
        .ok_or_else(|| err("", "a message object (JSON object) is required"))?;
    let lamport_timestamp = match obj.get("lamportTimestamp") {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            err(
                "lamportTimestamp",
                "must be an integer in the signed 64-bit range",
            )
        })?,
        Some(_) => return Err(err("lamportTimestamp", "must be an integer")),
        None => return Err(err("lamportTimestamp", "missing (an integer is required)")),
    };
    Ok(SdsMessage {
        message_id: get_id(obj, "messageId", "", false)?,
        lamport_timestamp,
        causal_history: get_entries(obj, "causalHistory")?,
        channel_id: get_id(obj, "channelId", "", false)?,
        content: get_hex(obj, "content", "")?,
        bloom_filter: get_hex(obj, "bloomFilter", "")?,
        sender_id: get_id(obj, "senderId", "", true)?,
        repair_request: get_entries(obj, "repairRequest")?,
    })
}

fn spec_entry_to_json(e: &SpecHistoryEntry) -> Value {
    let mut obj = Map::new();
    put_id(&mut obj, "messageId", &e.message_id);
    if let Some(h) = &e.retrieval_hint {
        obj.insert("retrievalHint".into(), Value::String(hex::encode(h)));
    }
    if let Some(s) = &e.sender_id {
        put_id(&mut obj, "senderId", s);
    }
    Value::Object(obj)
}

/// The `@waku/sds` class name of a message kind.
pub fn spec_class_name(kind: Option<MessageKind>) -> Option<&'static str> {
    kind.map(|k| match k {
        MessageKind::Content => "ContentMessage",
        MessageKind::Sync => "SyncMessage",
        MessageKind::Ephemeral => "EphemeralMessage",
    })
}

/// The message object of a spec-profile message (see the module documentation).
pub fn spec_message_to_json(msg: &SpecMessage) -> Value {
    let mut obj = Map::new();
    obj.insert("class".into(), json!(spec_class_name(msg.kind())));
    put_id(&mut obj, "senderId", &msg.sender_id);
    put_id(&mut obj, "messageId", &msg.message_id);
    put_id(&mut obj, "channelId", &msg.channel_id);
    obj.insert(
        "lamportTimestamp".into(),
        json!(msg.lamport_timestamp.map(|l| l.to_string())),
    );
    for (key, list) in [
        ("causalHistory", &msg.causal_history),
        ("repairRequest", &msg.repair_request),
    ] {
        obj.insert(
            key.into(),
            Value::Array(list.iter().map(spec_entry_to_json).collect()),
        );
    }
    for (key, bytes) in [
        ("content", &msg.content),
        ("bloomFilter", &msg.bloom_filter),
    ] {
        obj.insert(key.into(), json!(bytes.as_ref().map(hex::encode)));
    }
    Value::Object(obj)
}

fn get_opt_hex(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<Bytes>, JsonError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => get_hex(obj, key, path).map(Some),
    }
}

fn get_opt_id<T: From<Vec<u8>> + From<String> + Default>(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<T>, JsonError> {
    if obj.contains_key(key) || obj.contains_key(&format!("{key}Hex")) {
        get_id(obj, key, path, false).map(Some)
    } else {
        Ok(None)
    }
}

fn get_spec_entries(
    obj: &Map<String, Value>,
    key: &str,
) -> Result<Vec<SpecHistoryEntry>, JsonError> {
    get_list(obj, key, |e, path| {
        Ok(SpecHistoryEntry {
            message_id: get_id(e, "messageId", path, true)?,
            retrieval_hint: get_opt_hex(e, "retrievalHint", path)?,
            sender_id: get_opt_id(e, "senderId", path)?,
        })
    })
}

/// Reads a spec-profile message object. Every key is optional; `lamportTimestamp` may be a
/// decimal string or a JSON integer; `class` is ignored (the present fields decide the kind).
pub fn spec_message_from_json(value: &Value) -> Result<SpecMessage, JsonError> {
    let obj = value
        .as_object()
        .ok_or_else(|| err("", "a message object (JSON object) is required"))?;
    let range = "must be an integer from 0 to 2^64-1 (a number or a decimal string)";
    let lamport_timestamp = match obj.get("lamportTimestamp") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| err("lamportTimestamp", range))?),
        Some(Value::String(s)) => Some(
            s.parse::<u64>()
                .map_err(|_| err("lamportTimestamp", range))?,
        ),
        Some(_) => return Err(err("lamportTimestamp", range)),
    };
    Ok(SpecMessage {
        sender_id: get_id(obj, "senderId", "", true)?,
        message_id: get_id(obj, "messageId", "", true)?,
        channel_id: get_id(obj, "channelId", "", true)?,
        lamport_timestamp,
        causal_history: get_spec_entries(obj, "causalHistory")?,
        bloom_filter: get_opt_hex(obj, "bloomFilter", "")?,
        repair_request: get_spec_entries(obj, "repairRequest")?,
        content: get_opt_hex(obj, "content", "")?,
    })
}

/// The error object of the vectors' decode results:
/// `{kind: "DecodeFailure", protoError}`, `{kind: "MissingRequiredField", field}`,
/// `{kind: "Defect", defect: "RangeDefect", ...}` for a lamport timestamp nim-sds cannot hold
/// (nim-sds aborts there; this crate returns an error), and `{kind: "LimitExceeded", ...}` for
/// this crate's own bounds.
pub fn decode_error_to_json(e: &DecodeError) -> Value {
    match e {
        DecodeError::Proto(p) => json!({"kind": "DecodeFailure", "protoError": p.name()}),
        DecodeError::MissingField(f) => json!({"kind": "MissingRequiredField", "field": f.name()}),
        DecodeError::LamportOutOfRange(v) => json!({
            "kind": "Defect",
            "defect": "RangeDefect",
            "msg": "value out of range",
            "lamportTimestamp": v,
            "note": "nim-sds aborts on this input; it is rejected here with a typed error",
        }),
        DecodeError::WireType { field } => json!({"kind": "WrongWireType", "field": field}),
        DecodeError::LimitExceeded {
            kind,
            limit,
            actual,
        } => json!({
            "kind": "LimitExceeded",
            "limit": kind.name(),
            "max": limit,
            "actual": actual,
        }),
    }
}

/// The `extractChannelId` object of the vectors' decode results: `{ok: channel}` (with
/// `okHex` for a channel that is not UTF-8) or `{err: "reDeserializationError"}`.
pub fn channel_result_to_json(r: Result<&[u8], DecodeError>) -> Value {
    match r {
        Ok(channel) => {
            let mut obj = Map::new();
            put_id(&mut obj, "ok", channel);
            Value::Object(obj)
        }
        Err(_) => json!({"err": "reDeserializationError"}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{MessageId, ParticipantId};

    #[test]
    fn spec_messages_round_trip_with_presence() {
        let msg = SpecMessage {
            sender_id: ParticipantId::from(vec![0xc3]),
            message_id: "m".into(),
            lamport_timestamp: Some(u64::MAX),
            causal_history: vec![
                SpecHistoryEntry {
                    message_id: "a".into(),
                    retrieval_hint: Some(Bytes::new()),
                    sender_id: Some(ParticipantId::default()),
                },
                SpecHistoryEntry::new("b"),
            ],
            bloom_filter: Some(Bytes::new()),
            ..SpecMessage::default()
        };
        let v = spec_message_to_json(&msg);
        assert_eq!(v["class"], "SyncMessage");
        assert_eq!(v["lamportTimestamp"], "18446744073709551615");
        assert_eq!(v["senderIdHex"], "c3");
        assert_eq!(
            v["causalHistory"][0],
            json!({"messageId": "a", "retrievalHint": "", "senderId": ""})
        );
        assert_eq!(v["causalHistory"][1], json!({"messageId": "b"}));
        assert_eq!(v["content"], Value::Null);
        assert_eq!(spec_message_from_json(&v), Ok(msg));
        let bad = json!({"lamportTimestamp": "-1"});
        assert_eq!(
            spec_message_from_json(&bad).map_err(|e| e.path),
            Err("lamportTimestamp".to_string())
        );
    }

    #[test]
    fn non_utf8_ids_round_trip_through_hex_keys() {
        let msg = SdsMessage {
            message_id: MessageId::from(vec![0xff, 0xfe]),
            lamport_timestamp: -5,
            causal_history: vec![HistoryEntry {
                message_id: "a".into(),
                retrieval_hint: Bytes::from_static(&[1, 2]),
                sender_id: ParticipantId::from(vec![0x80]),
            }],
            channel_id: "ch".into(),
            ..SdsMessage::default()
        };
        let v = message_to_json(&msg);
        assert_eq!(v["messageId"], Value::Null);
        assert_eq!(v["messageIdHex"], "fffe");
        assert_eq!(v["causalHistory"][0]["senderIdHex"], "80");
        assert_eq!(message_from_json(&v), Ok(msg));
    }

    #[test]
    fn errors_name_the_path() {
        let v = json!({"messageId": "m", "lamportTimestamp": 1, "channelId": "c",
                       "causalHistory": [{"messageId": 3}]});
        assert_eq!(
            message_from_json(&v).unwrap_err().path,
            "causalHistory[0].messageId"
        );
        let v = json!({"messageId": "m", "lamportTimestamp": 18446744073709551615u64, "channelId": "c"});
        assert_eq!(message_from_json(&v).unwrap_err().path, "lamportTimestamp");
    }
}
