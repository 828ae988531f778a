//! The JSON texts of results and events, in nim-sds's field names.

use base64::Engine as _;
use sds_manager::{Event, ManagerError, Unwrapped};
use sds_proto::engine::DropReason;
use sds_proto::HistoryEntry;
use serde_json::{json, Value};

/// A manager error as "`<nim-sds error name>`: `<reason>`".
pub fn error_text(e: &ManagerError) -> String {
    let kind = match e {
        ManagerError::InvalidArgument(_) => "reInvalidArgument",
        ManagerError::MessageTooLarge { .. } => "reMessageTooLarge",
        ManagerError::Decode(_) => "reDeserializationError",
        ManagerError::Persistence(_) => "rePersistenceError",
        _ => "reInternalError",
    };
    format!("{kind}: {e}")
}

/// An id as text (lossy for bytes that are not UTF-8).
pub fn id_text(id: &impl std::fmt::Display) -> String {
    id.to_string()
}

/// Standard padded base64, as nim-sds writes hints and messages in events.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn missing_json(entries: &[HistoryEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| json!({"messageId": id_text(&e.message_id), "retrievalHint": b64(&e.retrieval_hint)}))
            .collect(),
    )
}

/// Why a waiting message was dropped, as the `message_dropped` event's `reason`.
pub fn drop_reason_text(reason: DropReason) -> &'static str {
    match reason {
        DropReason::Expired => "expired",
        DropReason::Evicted => "evicted",
        _ => "other",
    }
}

/// The result of an unwrap: nim-sds's `message` (bytes as numbers), `channelId` and
/// `missingDeps`, then `messageId` and `kind`.
pub fn unwrapped_json(r: &Unwrapped) -> String {
    json!({
        "message": r.content.iter().map(|b| Value::from(*b)).collect::<Vec<_>>(),
        "channelId": id_text(&r.channel_id),
        "missingDeps": missing_json(&r.missing_dependencies),
        "messageId": id_text(&r.message_id),
        "kind": r.kind.as_str(),
    })
    .to_string()
}

/// An event as the JSON object the event callback gets (`None` for an event kind it has no
/// form for).
pub fn event_json(e: &Event) -> Option<Value> {
    Some(match e {
        Event::MessageReady {
            channel_id,
            message_id,
            ..
        } => {
            json!({"eventType": "message_ready", "messageId": id_text(message_id), "channelId": id_text(channel_id)})
        }
        Event::Acknowledged {
            channel_id,
            message_id,
        } => {
            json!({"eventType": "message_sent", "messageId": id_text(message_id), "channelId": id_text(channel_id)})
        }
        Event::MissingDependencies {
            channel_id,
            message_id,
            missing,
        } => {
            json!({"eventType": "missing_dependencies", "messageId": id_text(message_id), "channelId": id_text(channel_id), "missingDeps": missing_json(missing)})
        }
        // What a received sync cites and we lack: for a libsds application the same as a
        // message's missing dependencies (nim-sds, which handles a sync as a message, reports it
        // so), with the sync's id; that message is never announced as ready.
        Event::MissingMessages {
            channel_id,
            cited_by,
            missing,
        } => {
            json!({"eventType": "missing_dependencies", "messageId": id_text(cited_by), "channelId": id_text(channel_id), "missingDeps": missing_json(missing)})
        }
        Event::RepairReady {
            channel_id, bytes, ..
        } => {
            json!({"eventType": "repair_ready", "channelId": id_text(channel_id), "message": b64(bytes)})
        }
        Event::PossiblyAcknowledged {
            channel_id,
            message_id,
            count,
        } => {
            json!({"eventType": "possibly_acknowledged", "messageId": id_text(message_id), "channelId": id_text(channel_id), "count": count})
        }
        Event::SendFailed {
            channel_id,
            message_id,
            ..
        } => {
            json!({"eventType": "send_failed", "messageId": id_text(message_id), "channelId": id_text(channel_id)})
        }
        Event::IrretrievablyLost { channel_id, entry } => {
            json!({"eventType": "irretrievably_lost", "messageId": id_text(&entry.message_id), "channelId": id_text(channel_id), "retrievalHint": b64(&entry.retrieval_hint)})
        }
        Event::InvalidBloomFilter {
            channel_id,
            message_id,
            error,
        } => {
            json!({"eventType": "invalid_bloom_filter", "messageId": id_text(message_id), "channelId": id_text(channel_id), "error": error.to_string()})
        }
        Event::Dropped {
            channel_id,
            message_id,
            reason,
        } => {
            json!({"eventType": "message_dropped", "messageId": id_text(message_id), "channelId": id_text(channel_id), "reason": drop_reason_text(*reason)})
        }
        Event::MessageConflict {
            channel_id,
            message_id,
            sender_id,
        } => {
            json!({"eventType": "message_conflict", "messageId": id_text(message_id), "channelId": id_text(channel_id), "senderId": id_text(sender_id)})
        }
        // Only on the spec wire profile, which libsds contexts do not select (nim-sds layout).
        Event::Ephemeral {
            channel_id,
            message_id,
            content,
            ..
        } => {
            json!({"eventType": "ephemeral_message", "messageId": id_text(message_id), "channelId": id_text(channel_id), "content": b64(content)})
        }
        // An event this library does not know how to tell: left out.
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sds_proto::Bytes;

    #[test]
    fn ids_a_sync_cites_and_we_lack_are_missing_dependencies_for_libsds() {
        let e = Event::MissingMessages {
            channel_id: "ch".into(),
            cited_by: "sync-1".into(),
            missing: vec![HistoryEntry {
                retrieval_hint: Bytes::from_static(b"h"),
                ..HistoryEntry::new("m1")
            }],
        };
        assert_eq!(
            event_json(&e).unwrap(),
            json!({"eventType": "missing_dependencies", "messageId": "sync-1", "channelId": "ch",
                   "missingDeps": [{"messageId": "m1", "retrievalHint": "aA=="}]})
        );
    }
}
