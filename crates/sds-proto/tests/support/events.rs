//! Event helpers shared by the engine tests.

use sds_proto::engine::Event;

/// Ids of the `MessageReady` events, in order.
pub fn ready(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MessageReady { message_id, .. } => Some(message_id.to_string()),
            _ => None,
        })
        .collect()
}

/// Ids of the `Acknowledged` events, in order.
pub fn acked(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Acknowledged { message_id, .. } => Some(message_id.to_string()),
            _ => None,
        })
        .collect()
}
