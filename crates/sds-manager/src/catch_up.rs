//! Catching up from the store: the messages of a channel's log after a sequence number, for an
//! application that must handle every delivery at least once across crashes.
//!
//! Every delivery ([`Event::MessageReady`](sds_proto::engine::Event::MessageReady)) carries a
//! `sequence`, the message's place in its channel's log; our own messages take one too when
//! they are sent. The store holds each of them before the event is published. An application
//! records the last sequence it has handled (in its own database, with the effect of handling
//! it); after a restart it reads the log after that sequence, handles what it finds, and then
//! follows the events. A crash between the store's commit and the application's handling then
//! loses nothing: the message is read back.

use sds_proto::engine::{self, Config, LogEntry, Received};
use sds_proto::{Bytes, MessageId, ParticipantId};

use crate::manager::{ManagerError, ManagerResult};

/// A message of a channel's log, read back from the store (see
/// [`ReliabilityManager::read_log`](crate::ReliabilityManager::read_log)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoggedMessage {
    /// Its place in the channel's log: the `sequence` its delivery event carried.
    pub sequence: u64,
    /// Message id.
    pub message_id: MessageId,
    /// Who sent it (our own participant id for our messages; empty when unknown).
    pub sender_id: ParticipantId,
    /// Its lamport timestamp.
    pub lamport_timestamp: i64,
    /// Its content.
    pub content: Bytes,
}

/// The content of a stored log entry: its bytes decoded as they were received or sent.
pub(crate) fn logged(entry: LogEntry, config: &Config) -> ManagerResult<LoggedMessage> {
    let content = match engine::decode(&entry.bytes, config).map_err(ManagerError::Protocol)? {
        Received::Message(m) => m.content,
        Received::Ephemeral(e) => e.content,
    };
    Ok(LoggedMessage {
        sequence: entry.arrival,
        message_id: entry.message_id,
        sender_id: entry.sender_id,
        lamport_timestamp: entry.lamport_timestamp,
        content,
    })
}
