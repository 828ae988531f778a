//! Waku relay framing: SDS messages carried as `WakuMessage`s on a Waku pubsub topic, so that
//! a node can take part in a Waku relay network.
//!
//! With [`Framing::Waku`] a node speaks gossipsub under Waku relay's protocol id
//! ([`RELAY_PROTOCOL`]) with Waku's rules:
//!
//! * **One pubsub topic** for every channel ([`WakuFraming::pubsub_topic`], by default
//!   [`DEFAULT_PUBSUB_TOPIC`], cluster 0 shard 0 in the static-sharding form
//!   `/waku/2/rs/<cluster>/<shard>`); channels are told apart by the **content topic** of
//!   the envelope, `/{application}/{version}/{name}/{encoding}`: by default
//!   `/sds/1/<channel id in hex>/proto` ([`WakuFraming::content_topic`]), or one given per
//!   channel ([`WakuFraming::with_content_topic`]).
//! * **Envelope**: each SDS message is the `payload` of a [`WakuMessage`] (14/WAKU2-MESSAGE),
//!   version 0 (no Waku-level encryption), stamped with the time of publication in
//!   nanoseconds, not ephemeral.
//! * **Unsigned**: gossip messages carry no author, sequence number or signature (gossipsub's
//!   anonymous mode, `StrictNoSign` in other implementations), and a message that carries one
//!   is refused.
//! * **Message ids** are the SHA-256 of the gossip message's data (the encoded
//!   `WakuMessage`). SDS sends the very same SDS bytes again on purpose (resends, SDS-R
//!   rebroadcasts); each publication gets its own timestamp, strictly increasing at a node, so
//!   its envelope, and with it its id, differs from every earlier one, and gossipsub's
//!   duplicate cache does not swallow it. Copies of one publication flooded by the mesh share
//!   the id and are deduplicated as usual.
//!
//! Received gossip on the pubsub topic is decoded as a `WakuMessage` (bounded by gossipsub's
//! `max_transmit_size`; the decoder does not panic on any input). An envelope that does not
//! decode, or has an empty payload or content topic, is rejected (it costs the sender score,
//! as Waku relay's validator does). A valid envelope on a content topic of a joined channel
//! goes to SDS; one on any other content topic (another application on the same shard), or of
//! another version (Waku-level encryption), is ignored: neither processed nor forwarded, and
//! not held, so that no one can make a node carry traffic outside its own channels and its
//! bounds. Waku relays give no score for forwarding (their mesh delivery weight is 0), so this
//! costs the node nothing with its peers; it does mean a node relays only its own channels'
//! messages. Waku has no author to rate-limit, so
//! [`NodeConfig::author_rate`](crate::NodeConfig::author_rate) does not apply in this mode;
//! the byte bound on what waits for SDS still does.
//!
//! Retrieval of missing messages (`/sds/retrieve/1`) works between sds-rs nodes as in the SDS
//! framing; Waku nodes do not speak it.
//!
//! ## What is verified
//!
//! * The envelope: our `WakuMessage` bytes equal those of js-waku's encoder (`@waku/core`
//!   0.0.40) and protobuf codec (`@waku/proto` 0.0.15) for the same messages, and js-waku reads
//!   ours to the same fields (`tests/waku_js.rs`).
//! * A live relay: two nodes connected only to a js-waku relay peer (the published
//!   `@waku/relay` 0.0.14 on js-libp2p 1.9, over TCP with noise and yamux) exchange SDS
//!   messages through it, and a message js-waku publishes in its own envelope reaches both
//!   (`tests/waku_live.rs`).
//! * Not tested: nwaku, and Waku networks with RLN (messages without a rate-limit proof are
//!   dropped there). js-waku's default set-up (websockets and mplex) cannot reach a node,
//!   which has neither; a js-waku peer needs TCP (or QUIC) and yamux configured, as nwaku
//!   offers. nwaku relays drop `WakuMessage`s above 150 KiB by default, smaller than the
//!   largest SDS message a node accepts by default.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use libp2p::gossipsub::{self, IdentTopic, TopicHash};
use prost::Message as _;
use sds_manager::ChannelId;
use sha2::{Digest, Sha256};

use crate::behaviour::topic_of;

/// Waku relay's gossipsub protocol id.
pub const RELAY_PROTOCOL: &str = "/vac/waku/relay/2.0.0";

/// Waku's default pubsub topic: cluster 0, shard 0 (`/waku/2/rs/0/0`).
pub const DEFAULT_PUBSUB_TOPIC: &str = "/waku/2/rs/0/0";

/// How a node puts SDS messages on gossipsub.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Framing {
    /// SDS bytes as they are, one gossipsub topic per channel ([`topic_of`]), signed by their
    /// author, under gossipsub's own protocol id (the default).
    #[default]
    Sds,
    /// SDS bytes in `WakuMessage` envelopes on a Waku relay pubsub topic (see the [module
    /// documentation](self)).
    Waku(WakuFraming),
}

/// Settings of the Waku framing.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WakuFraming {
    /// The pubsub topic every channel is published on (default [`DEFAULT_PUBSUB_TOPIC`]).
    pub pubsub_topic: String,
    /// Content topics given to channels, instead of the default (see
    /// [`content_topic`](Self::content_topic)).
    pub content_topics: HashMap<ChannelId, String>,
}

impl Default for WakuFraming {
    fn default() -> Self {
        WakuFraming {
            pubsub_topic: DEFAULT_PUBSUB_TOPIC.to_string(),
            content_topics: HashMap::new(),
        }
    }
}

impl WakuFraming {
    /// Waku framing on the default pubsub topic, default content topics.
    pub fn new() -> Self {
        Self::default()
    }

    /// On `pubsub_topic` (for example `/waku/2/rs/1/0`: cluster 1, shard 0).
    pub fn with_pubsub_topic(mut self, pubsub_topic: impl Into<String>) -> Self {
        self.pubsub_topic = pubsub_topic.into();
        self
    }

    /// Carries `channel` under `content_topic` (for example to meet an application that
    /// chose its own, such as `/my-app/1/room/proto`).
    pub fn with_content_topic(
        mut self,
        channel: impl Into<ChannelId>,
        content_topic: impl Into<String>,
    ) -> Self {
        self.content_topics
            .insert(channel.into(), content_topic.into());
        self
    }

    /// Why these settings cannot work, if they cannot: an empty pubsub topic, an empty content
    /// topic, or one content topic given to two channels (their messages could not be told
    /// apart).
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.pubsub_topic.is_empty() {
            return Err("the Waku pubsub topic is empty".into());
        }
        let mut seen = std::collections::HashSet::new();
        for topic in self.content_topics.values() {
            if topic.is_empty() {
                return Err("a Waku content topic is empty".into());
            }
            if !seen.insert(topic) {
                return Err(format!(
                    "the Waku content topic {topic} is given to two channels"
                ));
            }
        }
        Ok(())
    }

    /// The content topic of `channel`: the one given with
    /// [`with_content_topic`](Self::with_content_topic), else `/sds/1/<channel id in
    /// hex>/proto`.
    pub fn content_topic(&self, channel: &ChannelId) -> String {
        if let Some(topic) = self.content_topics.get(channel) {
            return topic.clone();
        }
        let mut name = String::from("/sds/1/");
        for b in channel.as_bytes() {
            name.push_str(&format!("{b:02x}"));
        }
        name.push_str("/proto");
        name
    }
}

/// A `WakuMessage` (14/WAKU2-MESSAGE): the envelope of Waku relay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WakuMessage {
    /// The application's bytes (here: one SDS message); field 1.
    pub payload: Vec<u8>,
    /// The content topic, `/{application}/{version}/{name}/{encoding}`; field 2.
    pub content_topic: String,
    /// 0 for payloads without Waku-level encryption; field 3.
    pub version: Option<u32>,
    /// Nanoseconds since the Unix epoch; field 10 (`sint64`).
    pub timestamp: Option<i64>,
    /// Application metadata (at most 64 bytes by the specification); field 11.
    pub meta: Option<Vec<u8>>,
    /// A rate-limit proof (RLN, 17/WAKU2-RLN-RELAY), kept as its encoded bytes; field 21.
    pub rate_limit_proof: Option<Vec<u8>>,
    /// Not to be stored by Waku store nodes; field 31.
    pub ephemeral: Option<bool>,
}

/// Why bytes are not a `WakuMessage`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WakuDecodeError {
    /// Not protobuf, or fields of the wrong type.
    #[error("not a WakuMessage: {0}")]
    Protobuf(String),
    /// The payload is empty (Waku relay refuses such messages).
    #[error("WakuMessage with an empty payload")]
    EmptyPayload,
    /// The content topic is empty (Waku relay refuses such messages).
    #[error("WakuMessage without a content topic")]
    EmptyContentTopic,
}

/// The wire form, with field numbers and types as in Waku's `message.proto`.
#[derive(Clone, PartialEq, prost::Message)]
struct Wire {
    #[prost(bytes = "vec", tag = "1")]
    payload: Vec<u8>,
    #[prost(string, tag = "2")]
    content_topic: String,
    #[prost(uint32, optional, tag = "3")]
    version: Option<u32>,
    #[prost(sint64, optional, tag = "10")]
    timestamp: Option<i64>,
    #[prost(bytes = "vec", optional, tag = "11")]
    meta: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "21")]
    rate_limit_proof: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "31")]
    ephemeral: Option<bool>,
}

impl WakuMessage {
    /// A version 0 message of `payload` on `content_topic`, stamped `timestamp_ns`, not
    /// ephemeral: what a node publishes.
    pub fn new(payload: Vec<u8>, content_topic: impl Into<String>, timestamp_ns: i64) -> Self {
        WakuMessage {
            payload,
            content_topic: content_topic.into(),
            version: Some(0),
            timestamp: Some(timestamp_ns),
            meta: None,
            rate_limit_proof: None,
            ephemeral: Some(false),
        }
    }

    /// The protobuf encoding: fields in number order, each optional field written when set
    /// (even at its default value), the payload and content topic when not empty.
    pub fn encode(&self) -> Vec<u8> {
        Wire {
            payload: self.payload.clone(),
            content_topic: self.content_topic.clone(),
            version: self.version,
            timestamp: self.timestamp,
            meta: self.meta.clone(),
            rate_limit_proof: self.rate_limit_proof.clone(),
            ephemeral: self.ephemeral,
        }
        .encode_to_vec()
    }

    /// Decodes `bytes` (unknown fields are skipped). Refuses what Waku relay refuses: bytes
    /// that are not the protobuf of a `WakuMessage`, an empty payload, an empty content topic.
    pub fn decode(bytes: &[u8]) -> Result<Self, WakuDecodeError> {
        let wire = Wire::decode(bytes).map_err(|e| WakuDecodeError::Protobuf(e.to_string()))?;
        if wire.payload.is_empty() {
            return Err(WakuDecodeError::EmptyPayload);
        }
        if wire.content_topic.is_empty() {
            return Err(WakuDecodeError::EmptyContentTopic);
        }
        Ok(WakuMessage {
            payload: wire.payload,
            content_topic: wire.content_topic,
            version: wire.version,
            timestamp: wire.timestamp,
            meta: wire.meta,
            rate_limit_proof: wire.rate_limit_proof,
            ephemeral: wire.ephemeral,
        })
    }
}

/// Waku relay's gossipsub message id: the SHA-256 of the message's data.
pub(crate) fn message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    gossipsub::MessageId::new(&Sha256::digest(&message.data))
}

/// What received gossip is.
#[derive(Debug)]
pub(crate) enum Route {
    /// SDS bytes for a joined channel.
    Channel(ChannelId, Vec<u8>),
    /// Not for us: a topic we did not join, or (Waku) a valid envelope of another content
    /// topic or version. Neither processed nor forwarded.
    Ignore,
    /// Bytes no member could have sent: refused (costs the sender score).
    Invalid,
}

/// The joined channels and how their messages are framed on gossipsub.
#[derive(Debug)]
pub(crate) struct Router {
    waku: Option<WakuFraming>,
    /// Joined channels by gossipsub topic (SDS framing) or by content topic (Waku framing).
    channels: HashMap<String, ChannelId>,
    /// The last timestamp put on a Waku envelope, in nanoseconds.
    last_timestamp: i64,
}

impl Router {
    pub(crate) fn new(framing: &Framing) -> Self {
        Router {
            waku: match framing {
                Framing::Sds => None,
                Framing::Waku(w) => Some(w.clone()),
            },
            channels: HashMap::new(),
            last_timestamp: 0,
        }
    }

    /// The gossipsub topic `channel` is published on.
    pub(crate) fn topic(&self, channel: &ChannelId) -> IdentTopic {
        match &self.waku {
            None => topic_of(channel),
            Some(w) => IdentTopic::new(w.pubsub_topic.clone()),
        }
    }

    fn key(&self, channel: &ChannelId) -> String {
        match &self.waku {
            None => topic_of(channel).hash().into_string(),
            Some(w) => w.content_topic(channel),
        }
    }

    /// Records `channel` as joined; `false` if it already was.
    pub(crate) fn join(&mut self, channel: &ChannelId) -> bool {
        let key = self.key(channel);
        if self.channels.contains_key(&key) {
            return false;
        }
        self.channels.insert(key, channel.clone());
        true
    }

    /// Whether a joined channel is published on gossipsub topic `topic`.
    pub(crate) fn is_joined_topic(&self, topic: &TopicHash) -> bool {
        match &self.waku {
            None => self.channels.contains_key(topic.as_str()),
            Some(w) => !self.channels.is_empty() && topic.as_str() == w.pubsub_topic,
        }
    }

    /// The joined channels with their gossipsub topics.
    pub(crate) fn joined(&self) -> Vec<(ChannelId, TopicHash)> {
        self.channels
            .values()
            .map(|c| (c.clone(), self.topic(c).hash()))
            .collect()
    }

    /// The gossip data that carries SDS bytes `bytes` of `channel`.
    pub(crate) fn frame(&mut self, channel: &ChannelId, bytes: &[u8]) -> Vec<u8> {
        match &self.waku {
            None => bytes.to_vec(),
            Some(w) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                // Strictly increasing, so that no two publications of the node share an id.
                let timestamp = now.max(self.last_timestamp.saturating_add(1));
                self.last_timestamp = timestamp;
                WakuMessage::new(bytes.to_vec(), w.content_topic(channel), timestamp).encode()
            }
        }
    }

    /// What gossip `data` received on `topic` is.
    pub(crate) fn route(&self, topic: &TopicHash, data: Vec<u8>) -> Route {
        match &self.waku {
            None => match self.channels.get(topic.as_str()) {
                Some(channel) => Route::Channel(channel.clone(), data),
                None => Route::Ignore,
            },
            Some(w) => {
                if topic.as_str() != w.pubsub_topic {
                    return Route::Ignore;
                }
                let Ok(message) = WakuMessage::decode(&data) else {
                    return Route::Invalid;
                };
                match self.channels.get(&message.content_topic) {
                    // Version 0 is SDS bytes in the clear; another version on our content
                    // topic is someone else's use of it.
                    Some(channel) if message.version.unwrap_or(0) == 0 => {
                        Route::Channel(channel.clone(), message.payload)
                    }
                    _ => Route::Ignore,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waku() -> Router {
        let mut r = Router::new(&Framing::Waku(
            WakuFraming::new().with_content_topic("named", "/app/1/room/proto"),
        ));
        r.join(&ChannelId::from("ab"));
        r.join(&ChannelId::from("named"));
        r
    }

    /// Bytes written by hand from the field table of `message.proto`: payload `01 02 03`,
    /// content topic `/a/1/b/proto`, version 0, timestamp 1 (zigzag 2), ephemeral false.
    #[test]
    fn encoding_follows_the_field_table() {
        let expected: Vec<u8> = [
            &[0x0a, 0x03, 0x01, 0x02, 0x03][..],
            &[0x12, 0x0c],
            b"/a/1/b/proto",
            &[0x18, 0x00],
            &[0x50, 0x02],
            &[0xf8, 0x01, 0x00],
        ]
        .concat();
        let m = WakuMessage::new(vec![1, 2, 3], "/a/1/b/proto", 1);
        assert_eq!(m.encode(), expected);
        assert_eq!(WakuMessage::decode(&expected), Ok(m));
        // A negative timestamp is zigzag-encoded: -1 is 1.
        let mut m = WakuMessage::new(vec![1], "/t", -1);
        m.version = None;
        m.ephemeral = None;
        assert_eq!(
            m.encode(),
            [0x0a, 0x01, 0x01, 0x12, 0x02, b'/', b't', 0x50, 0x01]
        );
    }

    #[test]
    fn unknown_fields_are_skipped_and_empty_fields_refused() {
        let mut bytes = WakuMessage::new(vec![7], "/a/1/b/proto", 5).encode();
        // Field 99, varint 1.
        bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
        assert_eq!(WakuMessage::decode(&bytes).map(|m| m.payload), Ok(vec![7]));
        assert_eq!(
            WakuMessage::decode(&WakuMessage::new(vec![], "/a/1/b/proto", 5).encode()),
            Err(WakuDecodeError::EmptyPayload)
        );
        assert_eq!(
            WakuMessage::decode(&WakuMessage::new(vec![1], "", 5).encode()),
            Err(WakuDecodeError::EmptyContentTopic)
        );
        // A string field that is not UTF-8.
        assert!(matches!(
            WakuMessage::decode(&[0x0a, 0x01, 0x01, 0x12, 0x01, 0xff]),
            Err(WakuDecodeError::Protobuf(_))
        ));
    }

    /// Garbage from a fixed-seed generator, and every truncation and one-byte change of a real
    /// envelope: decoding returns (never panics) and anything it accepts re-encodes to a
    /// message that decodes to itself.
    #[test]
    fn decoding_garbage_returns() {
        let mut state = 0x5eed_u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        };
        let valid = WakuMessage::new(vec![9; 40], "/sds/1/6162/proto", 1 << 60).encode();
        let mut inputs: Vec<Vec<u8>> = (0..valid.len()).map(|n| valid[..n].to_vec()).collect();
        for i in 0..valid.len() {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let mut b = valid.clone();
                b[i] = v;
                inputs.push(b);
            }
        }
        for _ in 0..20_000 {
            let len = usize::from(next()) % 64;
            inputs.push((0..len).map(|_| next()).collect());
        }
        let mut accepted = 0;
        for input in &inputs {
            if let Ok(m) = WakuMessage::decode(input) {
                accepted += 1;
                assert_eq!(WakuMessage::decode(&m.encode()), Ok(m));
            }
        }
        assert!(accepted > 0);
    }

    #[test]
    fn waku_routes_by_content_topic_on_one_pubsub_topic() {
        let mut r = waku();
        let topic = IdentTopic::new(DEFAULT_PUBSUB_TOPIC).hash();
        assert_eq!(r.topic(&ChannelId::from("ab")).hash(), topic);
        assert!(r.is_joined_topic(&topic));
        let data = r.frame(&ChannelId::from("ab"), b"sds");
        let m = WakuMessage::decode(&data).unwrap();
        assert_eq!(m.content_topic, "/sds/1/6162/proto");
        assert!(matches!(
            r.route(&topic, data),
            Route::Channel(c, p) if c.as_bytes() == b"ab" && p == b"sds"
        ));
        let named = r.frame(&ChannelId::from("named"), b"x");
        assert!(matches!(r.route(&topic, named), Route::Channel(c, _) if c.as_bytes() == b"named"));
        // Another application on the shard: neither processed nor forwarded.
        let other = WakuMessage::new(vec![1], "/other/1/chat/proto", 1).encode();
        assert!(matches!(r.route(&topic, other), Route::Ignore));
        // Encrypted (version 1) on our content topic: not SDS bytes.
        let mut enc = WakuMessage::new(vec![1], "/sds/1/6162/proto", 1);
        enc.version = Some(1);
        assert!(matches!(r.route(&topic, enc.encode()), Route::Ignore));
        assert!(matches!(r.route(&topic, vec![0xff, 0xff]), Route::Invalid));
        let elsewhere = IdentTopic::new("/waku/2/rs/0/1").hash();
        assert!(matches!(r.route(&elsewhere, b"x".to_vec()), Route::Ignore));
    }

    #[test]
    fn resends_of_the_same_bytes_get_distinct_ids() {
        let mut r = waku();
        let channel = ChannelId::from("ab");
        let id = |data: Vec<u8>| {
            message_id(&gossipsub::Message {
                source: None,
                data,
                sequence_number: None,
                topic: IdentTopic::new(DEFAULT_PUBSUB_TOPIC).hash(),
            })
        };
        let first = r.frame(&channel, b"same sds bytes");
        let again = r.frame(&channel, b"same sds bytes");
        assert_ne!(id(first.clone()), id(again));
        assert_eq!(id(first.clone()), id(first));
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        assert!(WakuFraming::new().check().is_ok());
        assert!(WakuFraming::new().with_pubsub_topic("").check().is_err());
        assert!(WakuFraming::new()
            .with_content_topic("a", "")
            .check()
            .is_err());
        let shared = WakuFraming::new()
            .with_content_topic("a", "/app/1/room/proto")
            .with_content_topic("b", "/app/1/room/proto");
        assert!(shared.check().is_err());
        let distinct = WakuFraming::new()
            .with_content_topic("a", "/app/1/a/proto")
            .with_content_topic("b", "/app/1/b/proto");
        assert!(distinct.check().is_ok());
    }

    #[test]
    fn sds_framing_is_the_bytes_on_a_topic_per_channel() {
        let mut r = Router::new(&Framing::Sds);
        let channel = ChannelId::from("ab");
        assert!(r.join(&channel));
        assert!(!r.join(&channel));
        let topic = topic_of(&channel).hash();
        assert!(r.is_joined_topic(&topic));
        assert_eq!(r.frame(&channel, b"sds"), b"sds");
        assert!(matches!(r.route(&topic, b"sds".to_vec()), Route::Channel(c, _) if c == channel));
        let other = topic_of(&ChannelId::from("zz")).hash();
        assert!(matches!(r.route(&other, b"sds".to_vec()), Route::Ignore));
    }
}
