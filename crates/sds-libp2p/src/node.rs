//! The node: a libp2p swarm and a task that drives it and one `ReliabilityManager`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::core::ConnectedPoint;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{mdns, noise, tcp, yamux, Multiaddr, PeerId, Swarm, Transport};
use sds_manager::{
    Bytes, ChannelId, Event, ManagerError, MessageId, Notification, ReceivedKind,
    ReliabilityManager, Subscription,
};
use sds_proto::wire::Limits;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::behaviour::{self, Behaviour, BehaviourEvent};
use crate::retrieve::{self, RateLimiter, Request, Response, RetrievalConfig, Retriever};
use crate::waku::{Framing, Route, Router};

/// Most authors whose publishing rate is tracked at once.
const MAX_AUTHORS: usize = 10_000;

/// Retrieval answers carrying messages that were not asked for, after which a peer is no
/// longer asked (while it stays connected).
const MAX_MISMATCHES: u32 = 3;

/// Gossipsub application score given per mismatched retrieval answer (weighed by gossipsub's
/// `app_specific_weight`, 10 by default: three mismatches, −120, take a peer below the
/// graylist threshold of −80 even with the most a topic's positive terms give, +11).
const MISMATCH_SCORE: f64 = -4.0;

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
            events: event_tx,
            missed: 0,
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

/// Work the node hands to the manager, off its own task.
enum Job {
    Gossip {
        id: gossipsub::MessageId,
        from: PeerId,
        bytes: Bytes,
    },
    Retrieved {
        peer: PeerId,
        bytes: Bytes,
        /// What was asked: the answer is checked against it.
        request: Arc<Request>,
    },
    Serve {
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    },
}

/// What came of a [`Job`].
enum Done {
    Verdict {
        id: gossipsub::MessageId,
        from: PeerId,
        acceptance: MessageAcceptance,
    },
    Retrieved {
        peer: PeerId,
        channel_id: ChannelId,
        message_id: MessageId,
        kind: ReceivedKind,
    },
    Mismatch {
        peer: PeerId,
        channel_id: ChannelId,
    },
    Serve {
        peer: PeerId,
        channel: ResponseChannel<Response>,
        messages: Vec<Bytes>,
    },
}

fn job_bytes(job: &Job) -> usize {
    match job {
        Job::Gossip { bytes, .. } | Job::Retrieved { bytes, .. } => bytes.len(),
        Job::Serve { .. } => 0,
    }
}

/// Whether `bytes`, from the answer to `request`, are a message it asked for (decoded as the
/// manager will decode them; see [`retrieve::answer_matches`]).
fn answered(manager: &ReliabilityManager, request: &Request, bytes: &Bytes) -> bool {
    let decoded = sds_proto::engine::decode(bytes, &manager.config().engine);
    let ids = match &decoded {
        Ok(sds_proto::engine::Received::Message(m)) => Some((&m.channel_id, &m.message_id)),
        // Ephemeral messages are never logged, so never served.
        Ok(_) | Err(_) => None,
    };
    retrieve::answer_matches(request, ids)
}

/// Runs jobs against the manager, one at a time, in order; reports back to the node.
async fn worker(
    manager: ReliabilityManager,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    done: mpsc::UnboundedSender<Done>,
    queued: Arc<AtomicUsize>,
    max_response_bytes: usize,
    max_ids: usize,
) {
    while let Some(job) = jobs.recv().await {
        let size = job_bytes(&job);
        let result = match job {
            Job::Gossip { id, from, bytes } => {
                let acceptance = match manager.unwrap_received_message(bytes).await {
                    Ok(_) => MessageAcceptance::Accept,
                    // Bytes no SDS member could have sent.
                    Err(ManagerError::Decode(_))
                    | Err(ManagerError::MessageTooLarge { .. })
                    | Err(ManagerError::InvalidArgument(_)) => MessageAcceptance::Reject,
                    Err(e) => {
                        tracing::debug!(error = %e, "received gossip not processed");
                        MessageAcceptance::Ignore
                    }
                };
                Done::Verdict {
                    id,
                    from,
                    acceptance,
                }
            }
            Job::Retrieved {
                peer,
                bytes,
                request,
            } if !answered(&manager, &request, &bytes) => {
                tracing::debug!(%peer, "retrieval answer with a message not asked for");
                Done::Mismatch {
                    peer,
                    channel_id: request.channel.clone(),
                }
            }
            Job::Retrieved { peer, bytes, .. } => {
                match manager.unwrap_received_message(bytes).await {
                    Ok(u) => Done::Retrieved {
                        peer,
                        channel_id: u.channel_id,
                        message_id: u.message_id,
                        kind: u.kind,
                    },
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "retrieved message not processed");
                        queued.fetch_sub(size, Ordering::SeqCst);
                        continue;
                    }
                }
            }
            Job::Serve {
                peer,
                request,
                channel,
            } => {
                // Only channels already open here: a request must not make us load or create
                // one.
                let messages = if manager.channel_ids().contains(&request.channel) {
                    match manager.get_log(request.channel.clone()).await {
                        Ok(log) => {
                            let entries = || log.iter().map(|e| (&e.message_id, &e.bytes));
                            let mut out =
                                retrieve::select(&request.ids, entries(), max_response_bytes);
                            let used: usize = out.iter().map(|b| b.len()).sum();
                            if request.latest > 0 && (out.is_empty() || used < max_response_bytes) {
                                out.extend(retrieve::select_latest(
                                    (request.latest as usize)
                                        .min(max_ids.saturating_sub(out.len())),
                                    entries(),
                                    &request.ids,
                                    max_response_bytes.saturating_sub(used),
                                ));
                            }
                            out
                        }
                        Err(_) => Vec::new(),
                    }
                } else {
                    Vec::new()
                };
                Done::Serve {
                    peer,
                    channel,
                    messages,
                }
            }
        };
        queued.fetch_sub(size, Ordering::SeqCst);
        if done.send(result).is_err() {
            return;
        }
    }
}

struct Actor {
    swarm: Swarm<Behaviour>,
    peer_id: PeerId,
    subscription: Subscription,
    commands: mpsc::UnboundedReceiver<Command>,
    jobs: mpsc::UnboundedSender<Job>,
    done: mpsc::UnboundedReceiver<Done>,
    queued: Arc<AtomicUsize>,
    events: mpsc::Sender<NodeEvent>,
    missed: u64,
    /// Joined channels and their framing on gossipsub.
    router: Router,
    /// Claimed channels (their periodic transmissions are published by their claimant), with
    /// how many latest messages to ask of each peer that connects.
    claimed: HashMap<ChannelId, u16>,
    connections: HashMap<ConnectionId, (PeerId, Multiaddr)>,
    dial_targets: Vec<Multiaddr>,
    listen_addrs: Vec<Multiaddr>,
    retriever: Retriever,
    serve_limit: RateLimiter,
    author_limit: RateLimiter,
    /// Retrieval requests in flight: the peer asked and what (to check answers).
    outstanding: HashMap<request_response::OutboundRequestId, (PeerId, Arc<Request>)>,
    /// Retrieval answers with messages not asked for, per connected peer.
    mismatches: HashMap<PeerId, u32>,
    status: NodeStatus,
    config: NodeConfig,
}

impl Actor {
    async fn run(mut self) {
        // The first tick one interval from now: the peers were just dialled in `spawn`.
        let period = self.config.redial_interval.max(Duration::from_millis(10));
        let mut redial = tokio::time::interval_at(Instant::now() + period, period);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry = tokio::time::interval(
            (self.config.retrieval.retry_after / 2).max(Duration::from_millis(50)),
        );
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(tx)) => {
                        let _ = tx.send(());
                        return;
                    }
                    Some(c) => self.on_command(c),
                    None => return,
                },
                Some(done) = self.done.recv() => self.on_done(done),
                notification = self.subscription.recv() => match notification {
                    Some(n) => self.on_notification(n),
                    None => return,
                },
                _ = redial.tick() => self.redial(),
                _ = retry.tick() => self.retrieve(),
            }
        }
    }

    fn emit(&mut self, event: NodeEvent) {
        if self.missed > 0 {
            let lagged = NodeEvent::Lagged {
                missed: self.missed,
            };
            if self.events.try_send(lagged).is_err() {
                self.missed += 1;
                return;
            }
            self.missed = 0;
        }
        if self.events.try_send(event).is_err() {
            self.missed += 1;
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Join(channel, tx) => {
                self.join(channel);
                let _ = tx.send(());
            }
            Command::PublishNow {
                channel_id,
                message_id,
                bytes,
                done,
            } => {
                let _ = done.send(self.publish(channel_id, message_id, bytes));
            }
            Command::Claim {
                channel_id,
                query_latest,
                done,
            } => {
                self.join(channel_id.clone());
                self.claimed.insert(channel_id.clone(), query_latest);
                let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                for peer in peers {
                    self.query_latest(peer, &channel_id, query_latest);
                }
                let _ = done.send(());
            }
            Command::Release(channel_id) => {
                self.claimed.remove(&channel_id);
            }
            Command::Publish {
                channel_id,
                message_id,
                bytes,
            } => {
                let _ = self.publish(channel_id, message_id, bytes);
            }
            Command::Dial(addr, tx) => {
                let _ = tx.send(self.dial(addr));
            }
            Command::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Command::Shutdown(_) => {}
        }
    }

    fn join(&mut self, channel: ChannelId) {
        let topic = self.router.topic(&channel);
        if !self.router.is_joined_topic(&topic.hash()) {
            behaviour::score_topic(&mut self.swarm.behaviour_mut().gossipsub, topic.clone());
            if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
                tracing::warn!(%channel, error = %e, "cannot subscribe");
            }
        }
        self.router.join(&channel);
    }

    /// Asks `peer` for its `latest` most recent messages of `channel` (none when 0).
    fn query_latest(&mut self, peer: PeerId, channel: &ChannelId, latest: u16) {
        let max = u16::try_from(self.config.retrieval.max_ids_per_request).unwrap_or(u16::MAX);
        let latest = latest.min(max);
        if latest == 0 || !self.config.retrieval.enabled {
            return;
        }
        let request = Request {
            channel: channel.clone(),
            ids: Vec::new(),
            latest,
        };
        let asked = Arc::new(request.clone());
        let id = self
            .swarm
            .behaviour_mut()
            .retrieve
            .send_request(&peer, request);
        self.outstanding.insert(id, (peer, asked));
        self.status.retrieval_requests += 1;
        self.emit(NodeEvent::RetrievalRequested {
            peer,
            channel_id: channel.clone(),
            count: latest as usize,
        });
    }

    fn publish(
        &mut self,
        channel_id: ChannelId,
        message_id: MessageId,
        bytes: Bytes,
    ) -> Result<(), NodeError> {
        let topic = self.router.topic(&channel_id);
        let data = self.router.frame(&channel_id, &bytes);
        match self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
            Ok(_) => {
                self.status.published += 1;
                Ok(())
            }
            Err(e) => {
                self.status.publish_failed += 1;
                tracing::debug!(%channel_id, %message_id, error = %e, "publish failed");
                let error = e.to_string();
                self.emit(NodeEvent::PublishFailed {
                    channel_id,
                    message_id,
                    error: error.clone(),
                });
                Err(NodeError::Publish(error))
            }
        }
    }

    /// Dials `addr`; if it names its peer, only while that peer is neither connected nor
    /// being dialled (some implementations handle a second connection from one peer badly).
    fn dial(&mut self, addr: Multiaddr) -> Result<(), NodeError> {
        let opts = match peer_of(&addr) {
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        match self.swarm.dial(opts) {
            // Connected or being dialled already.
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => Ok(()),
            Err(e) => Err(NodeError::Transport(format!("dial {addr}: {e}"))),
        }
    }

    /// Dials the configured peers we have no connection to.
    fn redial(&mut self) {
        for addr in self.dial_targets.clone() {
            let connected = match peer_of(&addr) {
                Some(peer) => self.swarm.is_connected(&peer),
                None => self.connections.values().any(|(_, a)| *a == addr),
            };
            if !connected {
                if let Err(e) = self.dial(addr) {
                    tracing::debug!(error = %e, "redial failed");
                }
            }
        }
    }

    fn status(&self) -> NodeStatus {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let mut channel_peers: Vec<(ChannelId, usize)> = self
            .router
            .joined()
            .into_iter()
            .map(|(channel, topic)| {
                let n = gossipsub
                    .all_peers()
                    .filter(|(_, topics)| topics.contains(&&topic))
                    .count();
                (channel, n)
            })
            .collect();
        channel_peers.sort();
        NodeStatus {
            peer_id: Some(self.peer_id),
            listen_addrs: self.listen_addrs.clone(),
            peers: self.swarm.connected_peers().copied().collect(),
            peer_scores: self
                .swarm
                .connected_peers()
                .filter_map(|p| gossipsub.peer_score(p).map(|s| (*p, s)))
                .collect(),
            channel_peers,
            retrieval_pending: self.retriever.pending(),
            connections: self.connections.len(),
            ..self.status.clone()
        }
    }

    /// Peers that joined one of our channels: those retrieval asks.
    fn channel_peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.iter().any(|t| self.router.is_joined_topic(t)))
            .map(|(p, _)| *p)
            .filter(|p| self.mismatches.get(p).copied().unwrap_or(0) < MAX_MISMATCHES)
            .collect();
        peers.sort();
        peers
    }

    /// Sends the retrieval requests that are due.
    fn retrieve(&mut self) {
        let peers = self.channel_peers();
        for (peer, request) in self.retriever.due(&peers, Instant::now()) {
            let (channel_id, count) = (request.channel.clone(), request.ids.len());
            let asked = Arc::new(request.clone());
            let id = self
                .swarm
                .behaviour_mut()
                .retrieve
                .send_request(&peer, request);
            self.outstanding.insert(id, (peer, asked));
            self.status.retrieval_requests += 1;
            self.emit(NodeEvent::RetrievalRequested {
                peer,
                channel_id,
                count,
            });
        }
    }

    fn on_notification(&mut self, n: Notification) {
        match n {
            // A claimed channel's claimant publishes its transmissions.
            Notification::Transmit(t) if self.claimed.contains_key(&t.channel_id) => {}
            Notification::Transmit(t) => {
                let _ = self.publish(t.channel_id, t.message_id, t.bytes);
            }
            Notification::Event(event) => {
                let now = Instant::now();
                let mut asked = false;
                match &event {
                    Event::MissingDependencies {
                        channel_id,
                        missing,
                        ..
                    }
                    | Event::MissingMessages {
                        channel_id,
                        missing,
                        ..
                    } => {
                        for entry in missing {
                            self.retriever.missing(
                                channel_id,
                                &entry.message_id,
                                &entry.retrieval_hint,
                                now,
                            );
                        }
                        asked = true;
                    }
                    Event::MessageReady {
                        channel_id,
                        message_id,
                        ..
                    } => self.retriever.done(channel_id, message_id),
                    Event::IrretrievablyLost { channel_id, entry } => {
                        self.retriever.done(channel_id, &entry.message_id)
                    }
                    _ => {}
                }
                self.emit(NodeEvent::Sds(event));
                if asked {
                    self.retrieve();
                }
            }
            Notification::TaskError { channel_id, error } => self.emit(NodeEvent::TaskError {
                channel_id,
                error: error.to_string(),
            }),
            Notification::Lagged { missed } => self.emit(NodeEvent::Lagged { missed }),
            _ => {}
        }
    }

    /// Hands a job to the worker if the bytes waiting allow it.
    fn queue(&mut self, job: Job) -> Result<(), Box<Job>> {
        let size = job_bytes(&job);
        let waiting = self.queued.load(Ordering::SeqCst);
        if waiting.saturating_add(size) > self.config.max_inbound_bytes {
            return Err(Box::new(job));
        }
        self.queued.fetch_add(size, Ordering::SeqCst);
        self.jobs.send(job).map_err(|e| {
            self.queued.fetch_sub(size, Ordering::SeqCst);
            Box::new(e.0)
        })
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Verdict {
                id,
                from,
                acceptance,
            } => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &from, acceptance);
            }
            Done::Retrieved {
                peer,
                channel_id,
                message_id,
                kind,
            } => {
                self.status.retrieved += 1;
                self.emit(NodeEvent::Retrieved {
                    peer,
                    channel_id,
                    message_id,
                    kind,
                });
            }
            Done::Mismatch { peer, channel_id } => {
                self.status.retrieval_mismatches += 1;
                let count = self.mismatches.entry(peer).or_insert(0);
                *count = count.saturating_add(1);
                let score = MISMATCH_SCORE * f64::from(*count);
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .set_application_score(&peer, score);
                self.emit(NodeEvent::RetrievalMismatch { peer, channel_id });
            }
            Done::Serve {
                peer,
                channel,
                messages,
            } => {
                let count = messages.len();
                if self
                    .swarm
                    .behaviour_mut()
                    .retrieve
                    .send_response(channel, Response::Messages(messages))
                    .is_ok()
                {
                    self.status.served += 1;
                    self.emit(NodeEvent::RetrievalServed { peer, count });
                }
            }
        }
    }

    fn on_gossip(&mut self, from: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        let ignore = |this: &mut Self| {
            this.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&id, &from, MessageAcceptance::Ignore);
        };
        let (channel, data) = match self.router.route(&message.topic, message.data) {
            Route::Channel(channel, data) => (channel, data),
            Route::Ignore => return ignore(self),
            Route::Invalid => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &from, MessageAcceptance::Reject);
                return;
            }
        };
        self.status.gossip_received += 1;
        if let Some(filter) = &self.config.gossip_filter {
            if !filter(&channel, &data) {
                self.status.gossip_filtered += 1;
                ignore(self);
                return;
            }
        }
        if let Some(author) = message.source {
            // Authors are cheap to mint: their buckets are bounded, and all start afresh when
            // there are too many (which lets one burst more through, no more).
            self.author_limit.bound(MAX_AUTHORS);
            if !self.author_limit.allow(author, Instant::now()) {
                self.status.gossip_refused += 1;
                // The author handed it to us itself: it is the one flooding.
                let acceptance = if author == from {
                    MessageAcceptance::Reject
                } else {
                    MessageAcceptance::Ignore
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &from, acceptance);
                return;
            }
        }
        let job = Job::Gossip {
            id: id.clone(),
            from,
            bytes: Bytes::from(data),
        };
        if self.queue(job).is_err() {
            self.status.gossip_refused += 1;
            ignore(self);
        }
    }

    fn on_retrieve(&mut self, event: request_response::Event<Request, Response>) {
        use request_response::{Event as RrEvent, Message};
        match event {
            RrEvent::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                if !self.serve_limit.allow(peer, Instant::now()) {
                    self.status.served_refused += 1;
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .retrieve
                        .send_response(channel, Response::RateLimited);
                    return;
                }
                let refused = self.queue(Job::Serve {
                    peer,
                    request,
                    channel,
                });
                if let Err(Job::Serve { channel, .. }) = refused.map_err(|job| *job) {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .retrieve
                        .send_response(channel, Response::Messages(Vec::new()));
                }
            }
            RrEvent::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some((_, request)) = self.outstanding.remove(&request_id) else {
                    return;
                };
                match response {
                    Response::Messages(messages) => {
                        for bytes in messages {
                            let job = Job::Retrieved {
                                peer,
                                bytes,
                                request: request.clone(),
                            };
                            if self.queue(job).is_err() {
                                break;
                            }
                        }
                    }
                    Response::RateLimited => {
                        tracing::debug!(%peer, "retrieval refused: rate limited");
                    }
                }
            }
            RrEvent::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.outstanding.remove(&request_id);
                tracing::debug!(%peer, %error, "retrieval request failed");
            }
            RrEvent::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "retrieval request not answered");
            }
            RrEvent::ResponseSent { .. } => {}
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Retrieve(e)) => self.on_retrieve(e),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.dial(addr.with_p2p(peer).unwrap_or_else(|a| a));
                    }
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.clone().with(Protocol::P2p(self.peer_id));
                self.listen_addrs.push(full.clone());
                self.emit(NodeEvent::Listening(full));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(self.peer_id));
                self.listen_addrs.retain(|a| *a != full);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = match endpoint {
                    ConnectedPoint::Dialer { address, .. } => address,
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
                };
                self.connections.insert(connection_id, (peer_id, addr));
                if num_established.get() == 1 {
                    self.emit(NodeEvent::PeerConnected(peer_id));
                    let claimed: Vec<(ChannelId, u16)> =
                        self.claimed.iter().map(|(c, n)| (c.clone(), *n)).collect();
                    for (channel, latest) in claimed {
                        self.query_latest(peer_id, &channel, latest);
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.connections.remove(&connection_id);
                if num_established == 0 {
                    self.serve_limit.forget(&peer_id);
                    self.mismatches.remove(&peer_id);
                    self.emit(NodeEvent::PeerDisconnected(peer_id));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sds_manager::{ManagerConfig, MemoryPersistence};

    fn manager(name: &str) -> ReliabilityManager {
        ReliabilityManager::new(
            name,
            ManagerConfig::default(),
            Arc::new(MemoryPersistence::new()),
        )
        .unwrap()
    }

    /// A retrieval answer is processed only when it carries a message the request asked for.
    #[tokio::test]
    async fn retrieval_answers_are_checked_against_the_request() {
        let (author, us) = (manager("author"), manager("us"));
        us.join_channel("c").await.unwrap();
        let x = author
            .wrap_outgoing_message(&b"x"[..], "x", "c")
            .await
            .unwrap();
        let (jobs, job_rx) = mpsc::unbounded_channel();
        let (done_tx, mut done) = mpsc::unbounded_channel();
        tokio::spawn(worker(
            us.clone(),
            job_rx,
            done_tx,
            Arc::new(AtomicUsize::new(0)),
            1 << 20,
            64,
        ));
        let peer = PeerId::random();
        let ask = |channel: &str, id: &str| {
            Arc::new(Request {
                channel: ChannelId::from(channel),
                ids: vec![MessageId::from(id)],
                latest: 0,
            })
        };
        for (request, bytes) in [
            (ask("c", "a"), x.clone()),
            (ask("d", "x"), x.clone()),
            (ask("c", "x"), Bytes::from_static(b"not a message")),
        ] {
            let job = Job::Retrieved {
                peer,
                bytes,
                request,
            };
            assert!(jobs.send(job).is_ok());
            let answer = done.recv().await;
            assert!(matches!(answer, Some(Done::Mismatch { .. })));
        }
        assert!(
            us.get_log("c").await.unwrap().is_empty(),
            "nothing processed"
        );
        let job = Job::Retrieved {
            peer,
            bytes: x,
            request: ask("c", "x"),
        };
        assert!(jobs.send(job).is_ok());
        assert!(matches!(done.recv().await, Some(Done::Retrieved { .. })));
        assert_eq!(us.get_log("c").await.unwrap().len(), 1);
    }
}
