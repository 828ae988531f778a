//! The node's task: it owns the swarm, takes the handle's commands, publishes the manager's
//! transmissions, routes gossip and retrieval to the worker, and reports events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::request_response;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{mdns, Multiaddr, PeerId, Swarm};
use sds_manager::{Bytes, ChannelId, Event, MessageId, Notification, Subscription};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::behaviour::{self, Behaviour, BehaviourEvent};
use crate::retrieve::{RateLimiter, Request, Response, Retriever};
use crate::waku::{Route, Router};

use super::worker::{job_bytes, Done, Job};
use super::{peer_of, Command, NodeConfig, NodeError, NodeEvent, NodeStatus};
use crate::lossy::LossySender;

/// Most authors whose publishing rate is tracked at once.
const MAX_AUTHORS: usize = 10_000;

/// Retrieval answers carrying messages that were not asked for, after which a peer is no
/// longer asked (while it stays connected).
const MAX_MISMATCHES: u32 = 3;

/// Gossipsub application score given per mismatched retrieval answer (weighed by gossipsub's
/// `app_specific_weight`, 10 by default: three mismatches, −120, take a peer below the
/// graylist threshold of −80 even with the most a topic's positive terms give, +11).
const MISMATCH_SCORE: f64 = -4.0;

pub(super) struct Actor {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) peer_id: PeerId,
    pub(super) subscription: Subscription,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) jobs: mpsc::UnboundedSender<Job>,
    pub(super) done: mpsc::UnboundedReceiver<Done>,
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) events: LossySender<NodeEvent>,
    /// Joined channels and their framing on gossipsub.
    pub(super) router: Router,
    /// Claimed channels (their periodic transmissions are published by their claimant), with
    /// how many latest messages to ask of each peer that connects.
    pub(super) claimed: HashMap<ChannelId, u16>,
    pub(super) connections: HashMap<ConnectionId, (PeerId, Multiaddr)>,
    pub(super) dial_targets: Vec<Multiaddr>,
    pub(super) listen_addrs: Vec<Multiaddr>,
    pub(super) retriever: Retriever,
    pub(super) serve_limit: RateLimiter,
    pub(super) author_limit: RateLimiter,
    /// Retrieval requests in flight: the peer asked and what (to check answers).
    pub(super) outstanding: HashMap<request_response::OutboundRequestId, (PeerId, Arc<Request>)>,
    /// Retrieval answers with messages not asked for, per connected peer.
    pub(super) mismatches: HashMap<PeerId, u32>,
    pub(super) status: NodeStatus,
    pub(super) config: NodeConfig,
}

impl Actor {
    pub(super) async fn run(mut self) {
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
        self.events.emit(event);
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
        self.send_retrieval(peer, request, latest as usize);
    }

    /// Sends a retrieval request for `count` messages to `peer`, keeping what it asked for to
    /// check the answer against, and reports it.
    fn send_retrieval(&mut self, peer: PeerId, request: Request, count: usize) {
        let channel_id = request.channel.clone();
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
    pub(super) fn dial(&mut self, addr: Multiaddr) -> Result<(), NodeError> {
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
            let count = request.ids.len();
            self.send_retrieval(peer, request, count);
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
