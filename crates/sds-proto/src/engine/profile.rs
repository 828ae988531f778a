//! What differs between the wire profiles inside the engine: codec, bloom filter, id hashes and
//! SDS-R arithmetic. Everything else in the engine is shared.

use bytes::Bytes;

use super::config::Config;
use super::types::{EngineError, Event, ReceivedKind, Unwrapped};
use crate::bloom::spec::{SpecFilterView, SpecIdHashes};
use crate::bloom::{
    BloomError, BloomFilter, FilterView, IdHashes, RollingBloomFilter, SpecRollingBloomFilter,
};
use crate::id::{ChannelId, MessageId, ParticipantId};
use crate::message::{HistoryEntry, SdsMessage};
use crate::wire::spec::{MessageKind, SpecHistoryEntry, SpecMessage};
use crate::wire::{nim, spec, DecodeError, Profile};

/// An id's hashes in the channel's profile.
#[derive(Debug, Clone, Copy)]
pub(super) enum Hashes {
    Nim(IdHashes),
    Spec(SpecIdHashes),
}

/// The channel's own rolling filter.
#[derive(Debug, Clone)]
pub(super) enum ChannelFilter {
    Nim(RollingBloomFilter),
    /// Received filters are read with its initial parameters (it never changes size).
    Spec(SpecRollingBloomFilter),
}

/// A received filter, validated.
pub(super) enum ReceivedFilter<'a> {
    Nim(FilterView<'a>),
    Spec(SpecFilterView<'a>),
}

impl ReceivedFilter<'_> {
    /// Whether the id with `hashes` may be in the filter (hashes of another profile: no).
    pub(super) fn contains_hashes(&self, hashes: Hashes) -> bool {
        match (self, hashes) {
            (ReceivedFilter::Nim(v), Hashes::Nim(h)) => v.contains_hashes(h),
            (ReceivedFilter::Spec(f), Hashes::Spec(h)) => f.contains_hashes(h),
            _ => false,
        }
    }
}

impl ChannelFilter {
    pub(super) fn new(config: &Config) -> Result<Self, BloomError> {
        let (capacity, error_rate) = (config.bloom_capacity, config.bloom_error_rate);
        Ok(match config.profile {
            Profile::NimSds => ChannelFilter::Nim(RollingBloomFilter::new(capacity, error_rate)?),
            Profile::Spec => {
                ChannelFilter::Spec(SpecRollingBloomFilter::new(capacity, error_rate)?)
            }
        })
    }

    pub(super) fn hashes(&self, id: &[u8]) -> Hashes {
        match self {
            ChannelFilter::Nim(_) => Hashes::Nim(IdHashes::of(id)),
            ChannelFilter::Spec(_) => Hashes::Spec(SpecIdHashes::of(id)),
        }
    }

    pub(super) fn add(&mut self, id: MessageId) {
        match self {
            ChannelFilter::Nim(r) => {
                r.add(id);
            }
            ChannelFilter::Spec(rolling) => {
                rolling.add(id);
            }
        }
    }

    pub(super) fn contains(&self, id: &[u8]) -> bool {
        match self {
            ChannelFilter::Nim(r) => r.contains(id),
            ChannelFilter::Spec(rolling) => rolling.contains(id),
        }
    }

    /// The nim-sds filter, when the channel runs that profile.
    pub(super) fn nim(&self) -> Option<&BloomFilter> {
        match self {
            ChannelFilter::Nim(r) => Some(r.filter()),
            ChannelFilter::Spec(_) => None,
        }
    }

    /// Validates a received filter (non-empty bytes), read in place.
    pub(super) fn read<'a>(&self, bytes: &'a [u8]) -> Result<ReceivedFilter<'a>, BloomError> {
        match self {
            ChannelFilter::Nim(_) => FilterView::parse(bytes).map(ReceivedFilter::Nim),
            ChannelFilter::Spec(rolling) => {
                SpecFilterView::parse(bytes, rolling.initial_params()).map(ReceivedFilter::Spec)
            }
        }
    }

    /// Encodes one of our messages (content or sync) with this filter.
    pub(super) fn encode(&self, msg: &SdsMessage) -> Bytes {
        match self {
            ChannelFilter::Nim(r) => Bytes::from(nim::encode_with_filter(msg, r.filter())),
            ChannelFilter::Spec(rolling) => {
                let filter = Bytes::from(rolling.filter().to_bytes());
                Bytes::from(spec::encode(&spec_message(msg, Some(filter))))
            }
        }
    }
}

/// `msg` in the spec profile's layout, with this bloom filter.
fn spec_message(msg: &SdsMessage, bloom_filter: Option<Bytes>) -> SpecMessage {
    let entry = |e: &HistoryEntry| SpecHistoryEntry {
        message_id: e.message_id.clone(),
        retrieval_hint: (!e.retrieval_hint.is_empty()).then(|| e.retrieval_hint.clone()),
        sender_id: (!e.sender_id.is_empty()).then(|| e.sender_id.clone()),
    };
    SpecMessage {
        sender_id: msg.sender_id.clone(),
        message_id: msg.message_id.clone(),
        channel_id: msg.channel_id.clone(),
        // The field is unsigned: a clock never goes below zero.
        lamport_timestamp: Some(msg.lamport_timestamp.max(0) as u64),
        causal_history: msg.causal_history.iter().map(entry).collect(),
        bloom_filter,
        repair_request: msg.repair_request.iter().map(entry).collect(),
        // A sync leaves field 20 out (SYNC-03).
        content: (!msg.content.is_empty()).then(|| msg.content.clone()),
    }
}

/// Encodes a content or sync message in `profile`'s layout as it is, its bloom filter
/// included when not empty: for tools and tests that write messages no channel would (a
/// channel encodes its own, with its filter, in [`Channel::wrap`](super::Channel::wrap)).
/// What a receiver makes of the bytes is [`decode`]'s business.
pub fn encode(msg: &SdsMessage, profile: Profile) -> Bytes {
    match profile {
        Profile::NimSds => Bytes::from(nim::encode(msg)),
        Profile::Spec => {
            let filter = (!msg.bloom_filter.is_empty()).then(|| msg.bloom_filter.clone());
            Bytes::from(spec::encode(&spec_message(msg, filter)))
        }
    }
}

/// An ephemeral message (spec profile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EphemeralMessage {
    /// The message id.
    pub message_id: MessageId,
    /// The channel.
    pub channel_id: ChannelId,
    /// The sender (empty when not given).
    pub sender_id: ParticipantId,
    /// The content (never empty).
    pub content: Bytes,
}

impl EphemeralMessage {
    /// Receiving it as participant `us`: the `Ephemeral` event that announces it and the result
    /// of receiving it — or, for our own message echoed back (sender `us`, non-empty), no event
    /// and a result of kind [`ReceivedKind::Own`], as for our own content messages.
    pub fn announce(self, us: &ParticipantId) -> (Option<Event>, Unwrapped) {
        let own = !us.is_empty() && self.sender_id == *us;
        let event = (!own).then(|| Event::Ephemeral {
            channel_id: self.channel_id.clone(),
            message_id: self.message_id.clone(),
            sender_id: self.sender_id,
            content: self.content.clone(),
        });
        let unwrapped = Unwrapped {
            message_id: self.message_id,
            content: self.content,
            missing_dependencies: Vec::new(),
            channel_id: self.channel_id,
            kind: if own {
                ReceivedKind::Own
            } else {
                ReceivedKind::Ephemeral
            },
        };
        (event, unwrapped)
    }
}

/// A decoded received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A content or sync message, for [`Channel::unwrap_message`](super::Channel::unwrap_message).
    Message(SdsMessage),
    /// An ephemeral message: nothing to keep, only to announce.
    Ephemeral(EphemeralMessage),
}

/// Encodes an ephemeral message (spec profile only): sender, id, channel and content; no
/// lamport timestamp, causal history or bloom filter (EPH-01).
pub fn ephemeral_message(
    config: &Config,
    channel_id: &ChannelId,
    participant_id: &ParticipantId,
    message_id: &MessageId,
    content: Bytes,
) -> Result<Bytes, EngineError> {
    if config.profile != Profile::Spec {
        return Err(EngineError::EphemeralUnsupported);
    }
    super::check_content(config, &content)?;
    super::check_id(config, message_id)?;
    Ok(Bytes::from(spec::encode(&SpecMessage {
        sender_id: participant_id.clone(),
        message_id: message_id.clone(),
        channel_id: channel_id.clone(),
        content: Some(content),
        ..SpecMessage::default()
    })))
}

/// Decodes received bytes in `config`'s profile and within its limits. On the spec profile,
/// bytes that are no SDS message are [`EngineError::NotAnSdsMessage`].
pub fn decode(bytes: &Bytes, config: &Config) -> Result<Received, EngineError> {
    match config.profile {
        Profile::NimSds => Ok(Received::Message(nim::decode(bytes, &config.limits)?)),
        Profile::Spec => {
            let m = spec::decode(bytes, &config.limits)?;
            match m.kind() {
                None => return Err(EngineError::NotAnSdsMessage),
                Some(MessageKind::Ephemeral) => {
                    if m.message_id.is_empty() {
                        return Err(EngineError::EmptyMessageId);
                    }
                    return Ok(Received::Ephemeral(EphemeralMessage {
                        message_id: m.message_id,
                        channel_id: m.channel_id,
                        sender_id: m.sender_id,
                        content: m.content.unwrap_or_default(),
                    }));
                }
                Some(MessageKind::Content | MessageKind::Sync) => {}
            }
            let lamport = m.lamport_timestamp.unwrap_or(0);
            let lamport_timestamp =
                i64::try_from(lamport).map_err(|_| DecodeError::LamportOutOfRange(lamport))?;
            let entry = |e: SpecHistoryEntry| HistoryEntry {
                message_id: e.message_id,
                retrieval_hint: e.retrieval_hint.unwrap_or_default(),
                sender_id: e.sender_id.unwrap_or_default(),
            };
            Ok(Received::Message(SdsMessage {
                message_id: m.message_id,
                lamport_timestamp,
                causal_history: m.causal_history.into_iter().map(entry).collect(),
                channel_id: m.channel_id,
                content: m.content.unwrap_or_default(),
                bloom_filter: m.bloom_filter.unwrap_or_default(),
                sender_id: m.sender_id,
                repair_request: m.repair_request.into_iter().map(entry).collect(),
            }))
        }
    }
}

/// Whether stored `bytes` that `config`'s profile cannot decode are a message of the other
/// profile: the store was written with the other profile.
pub(super) fn written_with_other_profile(config: &Config, bytes: &Bytes) -> bool {
    if decode(bytes, config).is_ok() {
        return false;
    }
    match config.profile {
        Profile::NimSds => spec::decode(bytes, &config.limits)
            .is_ok_and(|m| matches!(m.kind(), Some(MessageKind::Content | MessageKind::Sync))),
        Profile::Spec => nim::decode(bytes, &config.limits).is_ok(),
    }
}

/// SDS-R T_req offset in `profile`, in the same unit as `t_min`/`t_max`.
/// The message id and content of a message encoded in `profile`, read without decoding it.
pub(super) fn peek_id_content(profile: Profile, buf: &[u8]) -> Option<(&[u8], &[u8])> {
    match profile {
        Profile::NimSds => crate::wire::nim::peek_id_content(buf),
        Profile::Spec => crate::wire::spec::peek_id_content(buf),
    }
}

pub(super) fn t_req_offset(profile: Profile, p: &[u8], m: &[u8], t_min: u64, t_max: u64) -> u64 {
    match profile {
        Profile::NimSds => {
            crate::repair::t_req_offset(p, m, t_min as i64, t_max as i64).max(0) as u64
        }
        Profile::Spec => crate::repair::spec::t_req_offset(p, m, t_min, t_max),
    }
}

/// SDS-R T_resp offset in `profile`.
pub(super) fn t_resp_offset(profile: Profile, p: &[u8], s: &[u8], m: &[u8], t_max: u64) -> u64 {
    match profile {
        Profile::NimSds => crate::repair::t_resp_offset(p, s, m, t_max as i64).max(0) as u64,
        Profile::Spec => crate::repair::spec::t_resp_offset(p, s, m, t_max),
    }
}

/// SDS-R response-group membership in `profile`.
pub(super) fn in_response_group(
    profile: Profile,
    p: &[u8],
    s: &[u8],
    m: &[u8],
    groups: u32,
) -> bool {
    match profile {
        Profile::NimSds => crate::repair::in_response_group(p, s, m, i64::from(groups)),
        Profile::Spec => crate::repair::spec::in_response_group(p, s, m, u64::from(groups)),
    }
}
