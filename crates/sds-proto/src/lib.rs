//! # sds-proto
//!
//! The sans-IO core of Scalable Data Sync (SDS, vacp2p RFC 109) and its repair extension SDS-R:
//! message types, wire codecs, bloom filters and the Nim string hash the nim-sds wire profile
//! depends on. Nothing here does I/O, reads a clock or spawns a task.
//!
//! ```
//! use bytes::Bytes;
//! use sds_proto::wire::{nim, Limits};
//! use sds_proto::{HistoryEntry, SdsMessage};
//!
//! let msg = SdsMessage {
//!     message_id: "m1".into(),
//!     lamport_timestamp: 1,
//!     causal_history: vec![HistoryEntry::new("m0")],
//!     channel_id: "ch".into(),
//!     content: Bytes::from_static(b"hello"),
//!     ..SdsMessage::default()
//! };
//! let bytes = Bytes::from(nim::encode(&msg));
//! assert_eq!(nim::extract_channel_id(&bytes).unwrap(), b"ch");
//! assert_eq!(nim::decode(&bytes, &Limits::default()).unwrap(), msg);
//! ```

pub mod bloom;
pub mod engine;
pub mod id;
#[cfg(feature = "json")]
pub mod json;
pub mod message;
pub mod nim_hash;
pub mod repair;
pub mod wire;

pub use bytes::Bytes;
pub use id::{ChannelId, MessageId, ParticipantId};
pub use message::{HistoryEntry, SdsMessage};
