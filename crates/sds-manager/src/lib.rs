//! # sds
//!
//! Scalable Data Sync (SDS, vacp2p RFC 109) and its repair extension SDS-R for applications: the
//! async [`ReliabilityManager`] and the [`Persistence`] interface its state is stored through.
//!
//! ```
//! use std::sync::Arc;
//! use sds_manager::{ManagerConfig, MemoryPersistence, Notification, ReliabilityManager};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = Arc::new(MemoryPersistence::new());
//! let alice = ReliabilityManager::new("alice", ManagerConfig::default(), store.clone()).unwrap();
//! let bob = ReliabilityManager::new("bob", ManagerConfig::default(), Arc::new(sds_manager::NoopPersistence)).unwrap();
//! let mut bob_events = bob.subscribe();
//! bob.join_channel("chat").await.unwrap(); // messages for channels not joined are refused
//!
//! let wire = alice.wrap_outgoing_message(&b"hello"[..], "m1", "chat").await.unwrap();
//! let got = bob.unwrap_received_message(wire).await.unwrap();
//! assert_eq!(&got.content[..], b"hello");
//! assert!(matches!(bob_events.recv().await, Some(Notification::Event(_))));
//! // Alice's message is stored as unacknowledged before wrap returned.
//! assert_eq!(store.stored(&"chat".into()).unwrap().outgoing.len(), 1);
//! # });
//! ```

mod budget;
mod catch_up;
mod manager;
mod notifications;
pub mod observe;
pub mod persistence;

pub use catch_up::LoggedMessage;
pub use manager::{
    HintProvider, ManagerConfig, ManagerError, ManagerResult, Notification, ReliabilityManager,
    UnjoinedChannels,
};
pub use notifications::{Subscription, TryRecvError};
pub use persistence::{
    Call, MemoryPersistence, NoopPersistence, Persistence, PersistenceError, PersistenceResult,
};
pub use sds_proto::engine::{
    ChannelSnapshot, Config, DropReason, Event, IncomingEntry, IncomingRepairEntry, LamportUnit,
    LogEntry, OutgoingEntry, OutgoingRepairEntry, ReceivedKind, SendFailure, StoreOp, Transmit,
    TransmitKind, Unwrapped,
};
pub use sds_proto::{Bytes, ChannelId, HistoryEntry, MessageId, ParticipantId};

/// The channel id a received message names, read without decoding the rest (nim-sds wire
/// format), for filtering before [`ReliabilityManager::unwrap_received_message`].
pub use sds_proto::wire::nim::extract_channel_id;
