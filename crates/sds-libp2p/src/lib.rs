//! # sds-libp2p
//!
//! Scalable Data Sync over a real network: a [`Node`] runs one [`sds_manager::ReliabilityManager`] over
//! [rust-libp2p](https://docs.rs/libp2p): TCP (noise, yamux) and QUIC on tokio, plus libp2p's
//! in-process memory transport for tests.
//!
//! * Joining an SDS channel subscribes the gossipsub topic [`topic_of`] the channel; the
//!   manager's transmissions (first sends, resends, SDS-R rebroadcasts, syncs) are published
//!   there, and received gossip goes to `unwrap_received_message`.
//! * Missing messages (the manager's `MissingDependencies` and `MissingMessages` events) are
//!   asked for from connected peers over `/sds/retrieve/1` ([`retrieve`]), served from their
//!   logs, rate-limited per peer; the answers go through `unwrap` like any message.
//! * Events reach the application as a [`Stream`](futures::Stream) ([`NodeEvents`]).
//! * Peers come from explicit multiaddrs ([`NodeConfig::peers`], redialled while
//!   disconnected) and, when [`NodeConfig::mdns`] is on, from mDNS on the LAN; `identify` and
//!   `ping` run on every connection.
//!
//! * A [`ReliableChannel`] on a node is the application-facing layer of the Reliable Channel
//!   API: `send(payload) -> MessageId`, `send_ephemeral`, lifecycle events
//!   ([`ChannelEvent`]), segmentation of large payloads ([`segmentation`]), a send budget
//!   ([`rate_limit`]) and a query on connect, with the specification's defaults
//!   ([`ReliableChannelConfig`]).
//!
//! The SDS protocol state lives in the manager (a library with no I/O of its own); the node's
//! task is a thin driver on top: it moves bytes between the swarm and the manager, and it
//! decides nothing about SDS.
//!
//! ## Gossipsub for SDS
//!
//! What follows is the default framing, [`Framing::Sds`]; with [`Framing::Waku`] the node
//! speaks Waku relay instead (see [`waku`] and the section below).
//!
//! * **Message ids** are the author's peer id and sequence number, not a content hash: SDS
//!   retransmits identical bytes on purpose (resends, SDS-R rebroadcasts by other members),
//!   and gossipsub's duplicate cache would swallow every such copy under a content id. Each
//!   publication is its own gossip message; the copies of one publication the mesh floods are
//!   still deduplicated (see the source of `message_id`).
//! * **Size**: `max_transmit_size` is the manager's `Limits::max_message_size` plus room for
//!   gossipsub's envelope (gossipsub's default of 64 KiB would drop large SDS messages).
//! * **Validation**: strict (every message signed by its author), and a message is forwarded
//!   only once SDS accepted it: bytes that do not decode as SDS are rejected, which costs the
//!   peer that sent them score.
//! * **Peer scoring** is on: invalid messages and an author publishing faster than
//!   [`NodeConfig::author_rate`] (when it hands them to us itself) weigh heavily, so such a
//!   peer is graylisted by gossipsub itself; delivery quotas, which would punish the peers of a
//!   quiet chat, are off.
//!
//! ## A reliable channel
//!
//! ```no_run
//! use std::sync::Arc;
//! use sds_libp2p::{ChannelEvent, Keypair, Node, NodeConfig, ReliableChannel, ReliableChannelConfig};
//! use sds_manager::{ManagerConfig, MemoryPersistence, ReliabilityManager};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ReliableChannelConfig::default();
//! let manager = ReliabilityManager::new(
//!     "alice",
//!     config.apply_to_manager(ManagerConfig::default()),
//!     Arc::new(MemoryPersistence::new()),
//! )?;
//! let node_config = NodeConfig {
//!     listen: vec!["/ip4/0.0.0.0/tcp/4001".parse()?],
//!     ..NodeConfig::default()
//! };
//! let (node, _node_events) =
//!     Node::spawn(manager, Keypair::generate_ed25519(), config.apply_to_node(node_config)).await?;
//! let (channel, mut events) = ReliableChannel::open(node, "room", config).await?;
//! let id = channel.send(&b"hello"[..])?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         ChannelEvent::Acknowledged { message_id, chunks }
//!             if message_id == id && chunks.is_complete() => break,
//!         ChannelEvent::Received { payload, .. } => println!("{} bytes", payload.len()),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Waku relay framing
//!
//! [`NodeConfig::framing`] set to [`Framing::Waku`] puts each SDS message in a `WakuMessage`
//! envelope (14/WAKU2-MESSAGE) with a content topic per channel, on one Waku pubsub topic
//! (`/waku/2/rs/<cluster>/<shard>`, default `/waku/2/rs/0/0`), over gossipsub under Waku
//! relay's protocol id `/vac/waku/relay/2.0.0`, unsigned, with SHA-256 message ids, so that the
//! node can join a Waku network. The envelope bytes are checked against js-waku's own encoder
//! (`tests/waku_js.rs`), and two nodes exchange SDS messages through a live js-waku relay peer
//! (`tests/waku_live.rs`); not tested against nwaku. See [`waku`] for the rules, what is
//! verified and how SDS resends get past Waku's content-hash message ids.
//!
//! ## Limits
//!
//! Everything a remote peer makes a node hold is bounded: gossip waiting for SDS
//! ([`NodeConfig::max_inbound_bytes`]), retrieval requests and responses (sizes, ids per
//! request), the missing messages being asked for, and the per-peer and per-author rate state.
//! A reliable channel bounds the messages it reassembles ([`ReassemblyLimits`]) and what waits
//! to be published ([`ReliableChannelConfig::max_queued_messages`] and `max_queued_bytes`).
//!
//! Connections are bounded too, by libp2p's `connection_limits`: inbound connections
//! established ([`NodeConfig::max_incoming_connections`], default 128) and still in their
//! handshake ([`NodeConfig::max_pending_incoming`], default 32), and connections per peer
//! ([`NodeConfig::max_connections_per_peer`], default 4); one over a limit is refused.
//! Connections we dial ourselves are bounded by the peers we are given.

mod behaviour;
mod lossy;
mod node;
pub mod rate_limit;
mod reliable_channel;
pub mod retrieve;
pub mod segmentation;
pub mod waku;

pub use behaviour::topic_of;
pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId};
pub use node::{
    GossipFilter, Node, NodeConfig, NodeError, NodeEvent, NodeEvents, NodeHandle, NodeStatus,
};
pub use rate_limit::{EphemeralDropReason, RateLimit};
pub use reliable_channel::{
    ChannelError, ChannelEvent, ChannelEvents, ChunkInfo, ReliableChannel, ReliableChannelConfig,
};
pub use retrieve::RetrievalConfig;
pub use segmentation::{ReassemblyDropReason, ReassemblyLimits};
pub use waku::{Framing, WakuFraming};
