//! Wire codecs.
//!
//! SDS has more than one wire layout in the field. This crate speaks the **nim-sds profile**
//! ([`nim`]): the layout, field-presence rules and quirks of the reference implementation
//! nim-sds, byte for byte, and has a codec for the **spec profile** ([`spec`]), the layout of
//! the SDS specification spoken by `@waku/sds`. Every decoder here validates every length and count it takes from the
//! wire against [`Limits`] and returns a typed [`DecodeError`]; no input makes it panic.

use std::fmt;

pub mod nim;
pub(crate) mod pb;
pub mod spec;

pub use pb::ProtoError;

use bytes::Bytes;

/// Bounds applied while decoding untrusted bytes. Every bound is checked before the work or the
/// allocation it guards.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct Limits {
    /// Largest encoded message accepted, in bytes, checked before decoding (default 1.25 MiB:
    /// the largest content plus room for the bloom filter and histories).
    pub max_message_size: usize,
    /// Largest content accepted, in bytes (default 1 MiB, nim-sds's `MaxMessageSize`).
    pub max_content_size: usize,
    /// Most causal-history entries in one message (default 512).
    pub max_causal_history: usize,
    /// Most repair-request entries in one message (default 64).
    pub max_repair_request: usize,
    /// Longest message, channel or sender id, in bytes (default 1024).
    pub max_id_len: usize,
    /// Longest retrieval hint, in bytes (default 1024).
    pub max_hint_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 1024 * 1024 + 256 * 1024,
            max_content_size: 1024 * 1024,
            max_causal_history: 512,
            max_repair_request: 64,
            max_id_len: 1024,
            max_hint_len: 1024,
        }
    }
}

impl Limits {
    /// No bounds at all (beyond what fits in memory). Meant for tools that inspect trusted bytes.
    pub fn unlimited() -> Self {
        Limits {
            max_message_size: usize::MAX,
            max_content_size: usize::MAX,
            max_causal_history: usize::MAX,
            max_repair_request: usize::MAX,
            max_id_len: usize::MAX,
            max_hint_len: usize::MAX,
        }
    }

    /// Sets [`max_message_size`](Self::max_message_size).
    #[must_use]
    pub fn with_max_message_size(mut self, value: usize) -> Self {
        self.max_message_size = value;
        self
    }

    /// Sets [`max_content_size`](Self::max_content_size).
    #[must_use]
    pub fn with_max_content_size(mut self, value: usize) -> Self {
        self.max_content_size = value;
        self
    }

    /// Sets [`max_causal_history`](Self::max_causal_history).
    #[must_use]
    pub fn with_max_causal_history(mut self, value: usize) -> Self {
        self.max_causal_history = value;
        self
    }

    /// Sets [`max_repair_request`](Self::max_repair_request).
    #[must_use]
    pub fn with_max_repair_request(mut self, value: usize) -> Self {
        self.max_repair_request = value;
        self
    }

    /// Sets [`max_id_len`](Self::max_id_len).
    #[must_use]
    pub fn with_max_id_len(mut self, value: usize) -> Self {
        self.max_id_len = value;
        self
    }

    /// Sets [`max_hint_len`](Self::max_hint_len).
    #[must_use]
    pub fn with_max_hint_len(mut self, value: usize) -> Self {
        self.max_hint_len = value;
        self
    }
}

/// A field the decoder requires, named as nim-sds names it in `MissingRequiredField` errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// `SdsMessage.messageId` (field 1).
    MessageId,
    /// `SdsMessage.lamportTimestamp` (field 2).
    LamportTimestamp,
    /// `SdsMessage.channelId` (field 4).
    ChannelId,
    /// `SdsMessage.content` (field 5).
    Content,
    /// `HistoryEntry.messageId` (field 1 of a causal-history or repair-request entry).
    HistoryEntryMessageId,
}

impl Field {
    /// The nim-sds name of the field.
    pub fn name(self) -> &'static str {
        match self {
            Field::MessageId => "messageId",
            Field::LamportTimestamp => "lamportTimestamp",
            Field::ChannelId => "channelId",
            Field::Content => "content",
            Field::HistoryEntryMessageId => "HistoryEntry.messageId",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which length-bounded item exceeded its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitKind {
    /// The whole encoded message ([`Limits::max_message_size`]).
    MessageSize,
    /// The content ([`Limits::max_content_size`]).
    ContentSize,
    /// Number of causal-history entries ([`Limits::max_causal_history`]).
    CausalHistory,
    /// Number of repair-request entries ([`Limits::max_repair_request`]).
    RepairRequest,
    /// Length of a message, channel or sender id ([`Limits::max_id_len`]).
    IdLength,
    /// Length of a retrieval hint ([`Limits::max_hint_len`]).
    HintLength,
}

impl LimitKind {
    /// A stable machine-readable name.
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::MessageSize => "messageSize",
            LimitKind::ContentSize => "contentSize",
            LimitKind::CausalHistory => "causalHistory",
            LimitKind::RepairRequest => "repairRequest",
            LimitKind::IdLength => "idLength",
            LimitKind::HintLength => "hintLength",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why bytes could not be decoded as an SDS message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The protobuf structure is broken somewhere in the buffer.
    #[error("malformed protobuf: {0}")]
    Proto(ProtoError),
    /// A required field is absent (or present only with the wrong wire type).
    #[error("required field {0} is missing")]
    MissingField(Field),
    /// The lamport timestamp is 2^63 or more and does not fit the signed 64-bit clock. nim-sds
    /// raises an uncatchable `RangeDefect` here and aborts.
    #[error("lamport timestamp {0} does not fit in a signed 64-bit integer")]
    LamportOutOfRange(u64),
    /// An item is larger or more numerous than the configured [`Limits`] allow.
    #[error("{kind} of {actual} exceeds the limit of {limit}")]
    LimitExceeded {
        /// What was too large.
        kind: LimitKind,
        /// The limit in force.
        limit: usize,
        /// The size or count seen (for counts: the first count above the limit).
        actual: usize,
    },
    /// A known field arrived with a wire type its definition does not allow (spec profile; the
    /// nim-sds profile skips such fields as nim-sds does).
    #[error("field {field} has the wrong wire type")]
    WireType {
        /// The field number.
        field: u64,
    },
}

impl From<ProtoError> for DecodeError {
    fn from(e: ProtoError) -> Self {
        DecodeError::Proto(e)
    }
}

/// `Err(LimitExceeded)` when `actual` is above `limit`.
pub(crate) fn check_len(kind: LimitKind, actual: usize, limit: usize) -> Result<(), DecodeError> {
    if actual > limit {
        Err(DecodeError::LimitExceeded {
            kind,
            limit,
            actual,
        })
    } else {
        Ok(())
    }
}

/// An id read from `bytes`, a slice of `buf`, within the id length limit.
pub(crate) fn id<T: From<Bytes>>(
    buf: &Bytes,
    bytes: &[u8],
    limits: &Limits,
) -> Result<T, DecodeError> {
    check_len(LimitKind::IdLength, bytes.len(), limits.max_id_len)?;
    // Zero-copy like everything else: an id keeps the message buffer alive, so whoever keeps an
    // id longer than its message should `detached` it.
    Ok(T::from(buf.slice_ref(bytes)))
}

/// The wire layouts this crate can speak.
///
/// The protocol engine ([`crate::engine`]) runs the nim-sds profile; the spec profile has its
/// codec ([`spec`]), bloom filter ([`crate::bloom::spec`]) and SDS-R arithmetic
/// ([`crate::repair::spec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Profile {
    /// The layout of nim-sds (see [`nim`]).
    #[default]
    #[cfg_attr(feature = "serde", serde(rename = "nim-sds"))]
    NimSds,
    /// The layout of the SDS specification, spoken by `@waku/sds` (see [`spec`]).
    #[cfg_attr(feature = "serde", serde(rename = "spec"))]
    Spec,
}

impl Profile {
    /// The profile's name on the command line and in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Profile::NimSds => "nim-sds",
            Profile::Spec => "spec",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nim-sds" | "nim" => Ok(Profile::NimSds),
            "spec" | "waku" => Ok(Profile::Spec),
            other => Err(format!(
                "unknown wire profile {other:?} (known: nim-sds, spec)"
            )),
        }
    }
}
