//! The libp2p protocols a node runs, and how gossipsub is set up for SDS.

use std::time::Duration;

use libp2p::gossipsub::{
    self, IdentTopic, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds, TopicScoreParams,
    ValidationMode,
};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{connection_limits, identify, mdns, ping};
use sds_manager::ChannelId;

use crate::retrieve::{self, Codec};
use crate::waku::{self, Framing};
use crate::{NodeConfig, NodeError};

/// What gossipsub adds around an SDS message on the wire (topic, source, sequence number,
/// signature, public key, protobuf framing), with room to spare: `max_transmit_size` is the
/// largest SDS message plus this.
pub(crate) const GOSSIP_OVERHEAD: usize = 4096;

/// The protocols of a node.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// First, so that a connection over the limits is refused before any other protocol sets
    /// up state for it.
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) retrieve: request_response::Behaviour<Codec>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
}

/// The gossipsub topic of an SDS channel: `/sds/1/` and the channel id in hex (channel ids are
/// bytes; hex keeps any of them a valid topic string).
pub fn topic_of(channel: &ChannelId) -> IdentTopic {
    let mut name = String::from("/sds/1/");
    for b in channel.as_bytes() {
        name.push_str(&format!("{b:02x}"));
    }
    IdentTopic::new(name)
}

/// The gossipsub message id of a message: its author and the author's sequence number.
///
/// Not a hash of the content. Gossipsub drops every message whose id it has seen within its
/// duplicate-cache time, and SDS retransmits the very same bytes on purpose: a resend of an
/// unacknowledged message, an SDS-R repair rebroadcast (by another member, of the original
/// author's bytes), a message rebroadcast because a member's bloom filter lacks it. With
/// content ids, gossipsub would swallow every one of them at every node that saw the first
/// copy, and a member that missed the first copy would never get it by gossip. Author and
/// sequence number make each publication its own gossip message, while the copies of one
/// publication that the mesh floods are still deduplicated. Messages are signed (strict
/// validation), so only the author can mint ids under its name. SDS itself recognises the
/// repeated copies (a duplicate costs one lookup).
pub(crate) fn message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    let mut id = message.source.map(|p| p.to_bytes()).unwrap_or_default();
    id.extend_from_slice(&message.sequence_number.unwrap_or(0).to_be_bytes());
    gossipsub::MessageId::new(&id)
}

/// Peer scoring for one SDS topic: invalid messages (bytes SDS cannot decode, or an author above
/// its rate) weigh heavily, so that a peer sending them is graylisted after a few; delivery
/// quotas (P3), which would punish honest peers of a quiet chat, are off.
pub(crate) fn topic_score_params() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 0.5,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 20.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -20.0,
        invalid_message_deliveries_decay: 0.99,
        ..TopicScoreParams::default()
    }
}

/// Builds the protocols of a node with identity `keypair`.
pub(crate) fn build(keypair: &Keypair, config: &NodeConfig) -> Result<Behaviour, NodeError> {
    let limits = &config.limits;
    let mut builder = gossipsub::ConfigBuilder::default();
    // Forwarded only once SDS accepted the bytes (see `actor`), so that a peer forwarding
    // garbage is the one penalised and the garbage goes no further.
    builder
        .validate_messages()
        .max_transmit_size(limits.max_message_size.saturating_add(GOSSIP_OVERHEAD))
        .heartbeat_interval(config.heartbeat_interval);
    let authenticity = match &config.framing {
        Framing::Sds => {
            builder
                .validation_mode(ValidationMode::Strict)
                .message_id_fn(message_id);
            MessageAuthenticity::Signed(keypair.clone())
        }
        Framing::Waku(waku) => {
            waku.check().map_err(NodeError::Config)?;
            builder
                .protocol_id(waku::RELAY_PROTOCOL, gossipsub::Version::V1_1)
                .validation_mode(ValidationMode::Anonymous)
                .message_id_fn(waku::message_id);
            MessageAuthenticity::Anonymous
        }
    };
    let gossip_config = builder
        .build()
        .map_err(|e| NodeError::Config(format!("gossipsub: {e}")))?;
    let mut gossipsub = gossipsub::Behaviour::new(authenticity, gossip_config)
        .map_err(|e| NodeError::Config(format!("gossipsub: {e}")))?;
    let mut params = PeerScoreParams::default();
    // Several nodes on one machine (tests, a LAN demo) share an address: do not count that
    // against them.
    params
        .ip_colocation_factor_whitelist
        .insert(std::net::Ipv4Addr::LOCALHOST.into());
    gossipsub
        .with_peer_score(params, PeerScoreThresholds::default())
        .map_err(|e| NodeError::Config(format!("gossipsub scoring: {e}")))?;

    let codec = Codec::new(
        &config.retrieval,
        limits.max_id_len,
        limits.max_message_size,
    );
    let retrieve = request_response::Behaviour::with_codec(
        codec,
        [(retrieve::PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(config.retrieval.request_timeout),
    );
    let identify =
        identify::Behaviour::new(identify::Config::new("/sds/1.0.0".into(), keypair.public()));
    let ping = ping::Behaviour::new(ping::Config::new());
    let mdns = if config.mdns {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), keypair.public().to_peer_id())
                .map_err(|e| NodeError::Transport(format!("mdns: {e}")))?,
        )
    } else {
        None
    };
    let connections = connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_established_incoming(Some(config.max_incoming_connections))
            .with_max_pending_incoming(Some(config.max_pending_incoming))
            .with_max_established_per_peer(Some(config.max_connections_per_peer)),
    );
    Ok(Behaviour {
        limits: connections,
        gossipsub,
        retrieve,
        identify,
        ping,
        mdns: mdns.into(),
    })
}

/// Adds the score parameters of `topic` (joined channels).
pub(crate) fn score_topic(gossipsub: &mut gossipsub::Behaviour, topic: IdentTopic) {
    gossipsub.set_topic_params(topic, topic_score_params()).ok();
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::PeerId;

    fn gossip(source: PeerId, seq: u64, data: &[u8]) -> gossipsub::Message {
        gossipsub::Message {
            source: Some(source),
            data: data.to_vec(),
            sequence_number: Some(seq),
            topic: topic_of(&ChannelId::from("c")).hash(),
        }
    }

    #[test]
    fn repeated_bytes_get_distinct_ids_and_one_publication_one_id() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let first = message_id(&gossip(a, 1, b"sds bytes"));
        // The author's resend and another member's repair rebroadcast of the same bytes.
        assert_ne!(first, message_id(&gossip(a, 2, b"sds bytes")));
        assert_ne!(first, message_id(&gossip(b, 1, b"sds bytes")));
        // Copies of one publication (as the mesh floods it) are the same gossip message.
        assert_eq!(first, message_id(&gossip(a, 1, b"sds bytes")));
    }

    #[test]
    fn topics_are_per_channel() {
        assert_eq!(topic_of(&ChannelId::from("ab")).to_string(), "/sds/1/6162");
        assert_ne!(
            topic_of(&ChannelId::from("a")).hash(),
            topic_of(&ChannelId::from("b")).hash()
        );
    }
}
