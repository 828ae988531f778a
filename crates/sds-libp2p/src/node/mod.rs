//! The node: a libp2p swarm and a task that drives it and one `ReliabilityManager`.
//!
//! The node's parts, a file each: this one, its public face (configuration, events, the
//! handle); `actor.rs`, the task that owns the swarm; `worker.rs`, the task that hands gossip
//! and retrieval to the manager.

mod actor;
mod worker;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, Transport};
use sds_manager::{
    Bytes, ChannelId, Event, ManagerError, MessageId, ReceivedKind, ReliabilityManager,
};
use sds_proto::wire::Limits;
use tokio::sync::{mpsc, oneshot};

use crate::behaviour::{self};
use crate::retrieve::{self, RateLimiter, RetrievalConfig, Retriever};
use crate::waku::{Framing, Router};

use crate::lossy::LossySender;
use actor::Actor;
use worker::worker;

/// Decides, for each received gossip message, whether the node processes it (`true`) or drops
/// it as if it had never arrived (`false`): fault injection for tests and experiments (loss at
/// this layer, not in gossipsub). Dropped messages are not forwarded.
pub type GossipFilter = Arc<dyn Fn(&ChannelId, &[u8]) -> bool + Send + Sync>;

/// Settings of a [`Node`].
#[derive(Clone)]
pub struct NodeConfig {
    /// Addresses to listen on (for example `/ip4/0.0.0.0/tcp/0`, `/ip4/0.0.0.0/udp/0/quic-v1`,
    /// `/memory/7`).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and again while disconnected (with or without a `/p2p/` part).
    pub peers: Vec<Multiaddr>,
    /// How often disconnected [`peers`](Self::peers) are dialled again (default 5 s).
    pub redial_interval: Duration,
    /// Discover peers on the LAN with mDNS (default false).
    pub mdns: bool,
    /// The manager's limits (`Config::limits` of its engine settings): gossip and retrieval
    /// sizes are derived from them.
    pub limits: Limits,
    /// Gossipsub's heartbeat (default 1 s).
    pub heartbeat_interval: Duration,
    /// Retrieval of missing messages.
    pub retrieval: RetrievalConfig,
    /// Messages per second one author may publish on average (default 50); beyond it (and
    /// [`author_burst`](Self::author_burst)) its messages are not processed, and rejected —
    /// costing score — when the author itself handed them to us.
    pub author_rate: f64,
    /// Messages one author may publish in a burst (default 500).
    pub author_burst: f64,
    /// Most bytes of received gossip and retrieved messages waiting for the manager (default
    /// 64 MiB); beyond it received gossip is ignored (not forwarded, not processed).
    pub max_inbound_bytes: usize,
    /// Most events waiting in [`NodeEvents`] (default 16 384); beyond it newer events are
    /// dropped and [`NodeEvent::Lagged`] says how many.
    pub event_capacity: usize,
    /// How long an unused connection stays open (default 60 s).
    pub idle_connection_timeout: Duration,
    /// Most connections other peers have opened to us at once (default 128); further inbound
    /// connections are refused as they are established.
    pub max_incoming_connections: u32,
    /// Most inbound connections still in their handshake (security, multiplexing) at once
    /// (default 32); further ones are refused before the handshake.
    pub max_pending_incoming: u32,
    /// Most connections with one peer, both directions together (default 4: one each way on
    /// each of TCP and QUIC); further ones are refused.
    pub max_connections_per_peer: u32,
    /// Drops received gossip before SDS sees it (see [`GossipFilter`]; default none).
    pub gossip_filter: Option<GossipFilter>,
    /// How SDS messages go on gossipsub: as they are on a topic per channel (default), or in
    /// Waku relay envelopes ([`Framing`]).
    pub framing: Framing,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("mdns", &self.mdns)
            .field("retrieval", &self.retrieval)
            .field("gossip_filter", &self.gossip_filter.is_some())
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: Vec::new(),
            peers: Vec::new(),
            redial_interval: Duration::from_secs(5),
            mdns: false,
            limits: Limits::default(),
            heartbeat_interval: Duration::from_secs(1),
            retrieval: RetrievalConfig::default(),
            author_rate: 50.0,
            author_burst: 500.0,
            max_inbound_bytes: 64 << 20,
            event_capacity: 16_384,
            idle_connection_timeout: Duration::from_secs(60),
            max_incoming_connections: 128,
            max_pending_incoming: 32,
            max_connections_per_peer: 4,
            gossip_filter: None,
            framing: Framing::Sds,
        }
    }
}

/// Why a node call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The manager refused.
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// The settings cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// A transport could not be set up, or an address cannot be listened on or dialled.
    #[error("transport: {0}")]
    Transport(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// Gossipsub did not publish the bytes (for example no peer has joined the channel yet).
    #[error("publish: {0}")]
    Publish(String),
}

/// What a node reports to the application.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NodeEvent {
    /// An SDS event of the manager (deliveries, acknowledgements, missing messages, …).
    Sds(Event),
    /// The node listens on this address.
    Listening(Multiaddr),
    /// A peer connected (its first connection).
    PeerConnected(PeerId),
    /// A peer disconnected (its last connection).
    PeerDisconnected(PeerId),
    /// Bytes for a channel could not be published (for example no peer has joined it yet);
    /// SDS sends unacknowledged messages again later.
    PublishFailed {
        /// The channel.
        channel_id: ChannelId,
        /// The message carried.
        message_id: MessageId,
        /// Why.
        error: String,
    },
    /// Missing messages were asked of a peer.
    RetrievalRequested {
        /// The peer asked.
        peer: PeerId,
        /// The channel.
        channel_id: ChannelId,
        /// How many messages.
        count: usize,
    },
    /// A message came back from a retrieval request and went through the manager.
    Retrieved {
        /// The peer that answered.
        peer: PeerId,
        /// The channel.
        channel_id: ChannelId,
        /// The message.
        message_id: MessageId,
        /// What the manager did with it.
        kind: ReceivedKind,
    },
    /// A peer answered a retrieval request with a message that was not asked for (another id,
    /// another channel, or bytes that are no message): it was not processed, and it costs the
    /// peer gossip score; after a few such answers the peer is no longer asked.
    RetrievalMismatch {
        /// The peer that answered.
        peer: PeerId,
        /// The channel asked about.
        channel_id: ChannelId,
    },
    /// We answered a peer's retrieval request.
    RetrievalServed {
        /// The peer.
        peer: PeerId,
        /// Messages sent.
        count: usize,
    },
    /// Periodic work of the manager failed on a channel (it is retried).
    TaskError {
        /// The channel.
        channel_id: ChannelId,
        /// What failed.
        error: String,
    },
    /// `missed` events were dropped: the application did not keep up (see
    /// [`NodeConfig::event_capacity`]), or the manager's queue to the node overflowed.
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// A node's state, for display.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct NodeStatus {
    /// Our peer id.
    pub peer_id: Option<PeerId>,
    /// The addresses we listen on.
    pub listen_addrs: Vec<Multiaddr>,
    /// Connected peers.
    pub peers: Vec<PeerId>,
    /// Gossipsub's score of each connected peer (below −80 a peer is graylisted: its messages
    /// are ignored).
    pub peer_scores: Vec<(PeerId, f64)>,
    /// Per joined channel, the peers that joined it too.
    pub channel_peers: Vec<(ChannelId, usize)>,
    /// Messages published (first sends and periodic transmissions).
    pub published: u64,
    /// Publications that failed.
    pub publish_failed: u64,
    /// Gossip messages received for joined channels.
    pub gossip_received: u64,
    /// Gossip messages dropped by the [`GossipFilter`].
    pub gossip_filtered: u64,
    /// Gossip messages not processed: over an author's rate, or no room to wait.
    pub gossip_refused: u64,
    /// Retrieval requests sent.
    pub retrieval_requests: u64,
    /// Messages received in retrieval answers.
    pub retrieved: u64,
    /// Messages in retrieval answers that were not asked for (not processed).
    pub retrieval_mismatches: u64,
    /// Retrieval requests answered, and refused for their rate.
    pub served: u64,
    /// Retrieval requests refused for their rate.
    pub served_refused: u64,
    /// Missing messages being asked for now.
    pub retrieval_pending: usize,
    /// Open connections (a peer may have more than one).
    pub connections: usize,
}

enum Command {
    Join(ChannelId, oneshot::Sender<()>),
    Publish {
        channel_id: ChannelId,
        message_id: MessageId,
        bytes: Bytes,
    },
    Dial(Multiaddr, oneshot::Sender<Result<(), NodeError>>),
    PublishNow {
        channel_id: ChannelId,
        message_id: MessageId,
        bytes: Bytes,
        done: oneshot::Sender<Result<(), NodeError>>,
    },
    Claim {
        channel_id: ChannelId,
        query_latest: u16,
        done: oneshot::Sender<()>,
    },
    Release(ChannelId),
    Status(oneshot::Sender<NodeStatus>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle on a running node (cheap to clone). The node stops when every handle is dropped or
/// on [`shutdown`](Self::shutdown).
#[derive(Clone, Debug)]
pub struct NodeHandle {
    manager: ReliabilityManager,
    peer_id: PeerId,
    commands: mpsc::UnboundedSender<Command>,
}

/// The events of a node, as a [`Stream`](futures::Stream).
#[derive(Debug)]
pub struct NodeEvents {
    rx: mpsc::Receiver<NodeEvent>,
}

impl NodeEvents {
    /// The next event; `None` once the node has stopped and every event was read.
    ///
    /// This method is cancel safe: an event is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<NodeEvent> {
        self.rx.recv().await
    }
}

impl futures::Stream for NodeEvents {
    type Item = NodeEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<NodeEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// A network node running SDS: see the crate documentation.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Starts a node with identity `keypair` that drives `manager` (and starts the manager's
    /// periodic tasks): listens on [`NodeConfig::listen`], dials [`NodeConfig::peers`], and
    /// runs in a task of its own. Must be called within a tokio runtime.
    ///
    /// This method is cancel safe: dropped before it returns, no node runs (the manager keeps
    /// the retrieval hint provider and the periodic tasks it may already have been given).
    pub async fn spawn(
        manager: ReliabilityManager,
        keypair: Keypair,
        config: NodeConfig,
    ) -> Result<(NodeHandle, NodeEvents), NodeError> {
        if config.event_capacity == 0 {
            return Err(NodeError::Config(
                "event_capacity must be at least 1".into(),
            ));
        }
        let behaviour = behaviour::build(&keypair, &config)?;
        let transport_err = |e: &dyn std::fmt::Display| NodeError::Transport(e.to_string());
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| transport_err(&e))?
            .with_quic()
            .with_other_transport(
                |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                    Ok(MemoryTransport::default()
                        .upgrade(Version::V1)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux::Config::default()))
                },
            )
            .map_err(|e| transport_err(&e))?
            .with_behaviour(move |_| behaviour)
            .map_err(|e| transport_err(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout))
            .build();
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Transport(format!("listen on {addr}: {e}")))?;
        }
        let peer_id = *swarm.local_peer_id();
        let hint = retrieve::hint_for(&peer_id);
        manager
            .set_retrieval_hint_provider(Some(Arc::new(move |_: &MessageId| Some(hint.clone()))))
            .await;
        let subscription = manager.subscribe();
        manager.start_periodic_tasks().await;

        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::channel(config.event_capacity);
        let (job_tx, job_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(worker(
            manager.clone(),
            job_rx,
            done_tx,
            queued.clone(),
            config.retrieval.max_response_bytes,
            config.retrieval.max_ids_per_request,
        ));
        let mut actor = Actor {
            swarm,
            peer_id,
            subscription,
            commands: command_rx,
            jobs: job_tx,
            done: done_rx,
            queued,
            events: LossySender::new(event_tx, |missed| NodeEvent::Lagged { missed }),
            router: Router::new(&config.framing),
            claimed: HashMap::new(),
            connections: HashMap::new(),
            dial_targets: config.peers.clone(),
            listen_addrs: Vec::new(),
            retriever: Retriever::new(config.retrieval.clone()),
            serve_limit: RateLimiter::new(
                config.retrieval.serve_rate,
                config.retrieval.serve_burst,
            ),
            author_limit: RateLimiter::new(config.author_rate, config.author_burst),
            outstanding: HashMap::new(),
            mismatches: HashMap::new(),
            status: NodeStatus::default(),
            config,
        };
        for addr in actor.dial_targets.clone() {
            actor.dial(addr).ok();
        }
        tokio::spawn(async move { actor.run().await });
        Ok((
            NodeHandle {
                manager,
                peer_id,
                commands,
            },
            NodeEvents { rx: event_rx },
        ))
    }
}

impl NodeHandle {
    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The manager the node drives.
    pub fn manager(&self) -> &ReliabilityManager {
        &self.manager
    }

    /// Joins `channel`: the manager accepts its messages and the node subscribes its topic.
    ///
    /// This method is cancel safe: dropped before it returns, the channel may or may not be
    /// joined; joining again is harmless.
    pub async fn join(&self, channel: impl Into<ChannelId>) -> Result<(), NodeError> {
        let channel = channel.into();
        self.manager.join_channel(channel.clone()).await?;
        let (tx, rx) = oneshot::channel();
        self.command(Command::Join(channel, tx))?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Sends `content` as message `message_id` on `channel` (joining it): wrapped by the
    /// manager, stored as unacknowledged, then published. A failed publication is reported as
    /// [`NodeEvent::PublishFailed`]; SDS sends the message again until it is acknowledged.
    ///
    /// This method is cancel safe: dropped before it returns, the message is either not sent
    /// at all, or stored as unacknowledged (the manager's wrap completes once started) and
    /// then published, now or by SDS's resends.
    pub async fn send(
        &self,
        channel: impl Into<ChannelId>,
        message_id: impl Into<MessageId>,
        content: impl Into<Bytes>,
    ) -> Result<(), NodeError> {
        let (channel, message_id) = (channel.into(), message_id.into());
        let bytes = self
            .manager
            .wrap_outgoing_message(content, message_id.clone(), channel.clone())
            .await?;
        self.command(Command::Publish {
            channel_id: channel,
            message_id,
            bytes,
        })
    }

    /// Publishes `bytes` (an SDS message of `channel`, with id `message_id`, already wrapped
    /// by the manager) and says whether gossipsub took them. A failure is also reported as
    /// [`NodeEvent::PublishFailed`].
    ///
    /// This method is cancel safe in that the bytes are published, or not, as a whole; once
    /// it was polled the publication may happen even if the future is dropped before it
    /// finishes.
    pub async fn publish(
        &self,
        channel: impl Into<ChannelId>,
        message_id: impl Into<MessageId>,
        bytes: Bytes,
    ) -> Result<(), NodeError> {
        let (done, rx) = oneshot::channel();
        self.command(Command::PublishNow {
            channel_id: channel.into(),
            message_id: message_id.into(),
            bytes,
            done,
        })?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Joins `channel` and takes over its periodic transmissions (resends, syncs, repairs):
    /// the node no longer publishes them, and whoever claimed the channel publishes them (with
    /// [`publish`](Self::publish)) as it reads them from its own
    /// [`subscribe`](ReliabilityManager::subscribe)d manager, for example under a rate limit
    /// (see [`ReliableChannel`](crate::ReliableChannel)). With `query_latest` above 0, every
    /// connected peer, and every peer that connects later, is asked for its `query_latest`
    /// most recent messages of the channel (at most
    /// [`RetrievalConfig::max_ids_per_request`], and not at all when retrieval is off): what
    /// was sent while we were away; what those cite and we lack is then retrieved as usual.
    ///
    /// This method is cancel safe: dropped before the node answered, the claim may or may not
    /// have been made; claiming again is harmless.
    pub async fn claim(
        &self,
        channel: impl Into<ChannelId>,
        query_latest: u16,
    ) -> Result<(), NodeError> {
        let channel = channel.into();
        self.manager.join_channel(channel.clone()).await?;
        let (done, rx) = oneshot::channel();
        self.command(Command::Claim {
            channel_id: channel,
            query_latest,
            done,
        })?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Gives the periodic transmissions of `channel` back to the node (see
    /// [`claim`](Self::claim)); the channel stays joined.
    pub fn release(&self, channel: impl Into<ChannelId>) -> Result<(), NodeError> {
        self.command(Command::Release(channel.into()))
    }

    /// Dials `addr` (once; add it to [`NodeConfig::peers`] to keep it connected).
    ///
    /// This method is cancel safe: dropped before it returns, the dial may still be made.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Dial(addr, tx))?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// The node's state.
    ///
    /// This method is cancel safe: it changes nothing.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Status(tx))?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Stops the node (the swarm and its connections; the manager is the caller's, with its
    /// periodic tasks still running) and waits until it has stopped.
    ///
    /// This method is cancel safe: once polled, the node stops whether or not the wait for it
    /// is dropped.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.command(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    fn command(&self, c: Command) -> Result<(), NodeError> {
        self.commands.send(c).map_err(|_| NodeError::Stopped)
    }
}

/// The peer an address names in its `/p2p/` part.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}
