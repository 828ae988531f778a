//! Engine configuration.

use std::time::Duration;

use super::clock::LamportUnit;
use crate::wire::{Limits, Profile};

/// Settings of a channel. [`Config::default`] follows nim-sds's defaults where nim-sds has one.
///
/// Times are [`Duration`]s, counted by the engine in whole milliseconds (anything finer is
/// dropped). Build one from the default and change what differs, field by field or with the
/// `with_*` methods:
///
/// ```
/// use std::time::Duration;
/// use sds_proto::engine::Config;
///
/// let config = Config::default()
///     .with_resend_interval(Duration::from_secs(10))
///     .with_max_resend_attempts(3);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Config {
    /// Capacity of the rolling bloom filter of received ids (default 10 000).
    pub bloom_capacity: i64,
    /// False-positive rate of the bloom filter (default 0.001).
    pub bloom_error_rate: f64,
    /// Entries kept in the local log (default 1 000).
    pub max_message_history: usize,
    /// Log entries cited in each sent message's causal history (default 10).
    pub max_causal_history: usize,
    /// Delay before an unacknowledged message is sent again (default 60 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub resend_interval: Duration,
    /// Delay before a possibly-acknowledged message is sent again (default 120 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub possibly_acked_resend_interval: Duration,
    /// Resends before a message is given up with `SendFailed` (default 5).
    pub max_resend_attempts: u32,
    /// Bloom-filter hits, from distinct received messages, that acknowledge a message
    /// (default 2; 1 behaves like nim-sds).
    pub possible_ack_threshold: u32,
    /// Interval of periodic sync messages once started (default 30 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub sync_interval: Duration,
    /// Send a periodic sync only when the channel was quiet — nothing received or sent during
    /// the last sync interval — or when an SDS-R repair request is due (the spec's option for
    /// large groups; default false: every sync is sent).
    pub quiet_sync: bool,
    /// Rebroadcast one of our recent messages when another member's later message carries a
    /// bloom filter without it, at most once per this long and at most
    /// `max_resend_attempts` times per message (`None`, the default: never). This reaches
    /// members that lost a message nobody cites any more, which they could not detect.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub filter_resend_after: Option<Duration>,
    /// Time after which a dependency that has not arrived is declared irretrievably lost and its
    /// dependents are delivered anyway; `None` waits forever (default 10 minutes).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub lost_dependency_timeout: Option<Duration>,
    /// How far ahead of our wall clock a received lamport timestamp may be (compared in the
    /// clock's unit; default one day). A message further ahead — and ahead of
    /// our own clock — is refused with `LamportTooFarAhead`: one member must not be able to drag
    /// everyone's clock into the future, or to the end of its range where no send fits.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_clock_lead: Duration,
    /// Most messages waiting for dependencies (default 10 000). When the buffer is full, the
    /// oldest message of the sender holding the most bytes gives way to a newcomer.
    pub max_incoming_buffer: usize,
    /// Most bytes of messages waiting for dependencies (default 256 MiB), counting each
    /// message's bytes plus 1 KiB per dependency it waits for (the indexes and timers it
    /// makes us keep). Eviction as for `max_incoming_buffer`.
    pub max_incoming_buffer_bytes: usize,
    /// Most unacknowledged own messages; the oldest is given up when a send would exceed it
    /// (default 50 000).
    pub max_outgoing_buffer: usize,
    /// Ids remembered for duplicate detection and dependency checks beyond the log
    /// (default 10 000; at least `max_message_history`).
    pub max_known_ids: usize,
    /// SDS-R: minimum delay before a missing message is requested (default 30 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub repair_t_min: Duration,
    /// SDS-R: maximum delay of requests and responses; outgoing requests older than this are
    /// dropped (default 300 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub repair_t_max: Duration,
    /// SDS-R: number of response groups (default 1: everyone may respond).
    pub num_response_groups: u32,
    /// SDS-R: most repair requests attached to one message (default 3).
    pub max_repair_requests: usize,
    /// SDS-R: most entries in each repair buffer; on overflow the entry due last is dropped
    /// (default 1 000).
    pub max_repair_buffer: usize,
    /// SDS-R: a message we rebroadcast is not rebroadcast again, however often it is asked
    /// for, before this long (default `None`: `repair_t_max`).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub repair_cooldown: Option<Duration>,
    /// SDS-R: most bytes rebroadcast per window of `repair_t_max`; answers beyond it are
    /// dropped (default 16 MiB).
    pub max_repair_bytes: u64,
    /// Bounds on received messages.
    pub limits: Limits,
    /// Wire profile: layout, bloom filter and SDS-R arithmetic (default nim-sds). Ephemeral
    /// messages exist only on the spec profile.
    pub profile: Profile,
    /// Unit of the lamport clock; `None` (the default) takes the profile's: seconds on the
    /// nim-sds profile, as nim-sds counts, milliseconds on the spec profile, as the spec says.
    /// Every member of a group must count in the same unit (see [`Config::clock_unit`]).
    pub lamport_unit: Option<LamportUnit>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bloom_capacity: 10_000,
            bloom_error_rate: 0.001,
            max_message_history: 1_000,
            max_causal_history: 10,
            resend_interval: Duration::from_secs(60),
            possibly_acked_resend_interval: Duration::from_secs(120),
            max_resend_attempts: 5,
            possible_ack_threshold: 2,
            sync_interval: Duration::from_secs(30),
            quiet_sync: false,
            filter_resend_after: None,
            lost_dependency_timeout: Some(Duration::from_secs(600)),
            max_clock_lead: Duration::from_secs(86_400),
            max_incoming_buffer: 10_000,
            max_incoming_buffer_bytes: 256 * 1024 * 1024,
            max_outgoing_buffer: 50_000,
            max_known_ids: 10_000,
            repair_t_min: Duration::from_secs(30),
            repair_t_max: Duration::from_secs(300),
            num_response_groups: 1,
            max_repair_requests: 3,
            max_repair_buffer: 1_000,
            repair_cooldown: None,
            max_repair_bytes: 16 << 20,
            limits: Limits::default(),
            profile: Profile::NimSds,
            lamport_unit: None,
        }
    }
}

/// Defines a `with_*` setter per field, for building a [`Config`] in one expression.
macro_rules! with_setters {
    ($($field:ident: $ty:ty => $with:ident;)*) => {
        impl Config {
            $(
                #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
                #[must_use]
                pub fn $with(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

with_setters! {
    bloom_capacity: i64 => with_bloom_capacity;
    bloom_error_rate: f64 => with_bloom_error_rate;
    max_message_history: usize => with_max_message_history;
    max_causal_history: usize => with_max_causal_history;
    resend_interval: Duration => with_resend_interval;
    possibly_acked_resend_interval: Duration => with_possibly_acked_resend_interval;
    max_resend_attempts: u32 => with_max_resend_attempts;
    possible_ack_threshold: u32 => with_possible_ack_threshold;
    sync_interval: Duration => with_sync_interval;
    quiet_sync: bool => with_quiet_sync;
    filter_resend_after: Option<Duration> => with_filter_resend_after;
    lost_dependency_timeout: Option<Duration> => with_lost_dependency_timeout;
    max_clock_lead: Duration => with_max_clock_lead;
    max_incoming_buffer: usize => with_max_incoming_buffer;
    max_incoming_buffer_bytes: usize => with_max_incoming_buffer_bytes;
    max_outgoing_buffer: usize => with_max_outgoing_buffer;
    max_known_ids: usize => with_max_known_ids;
    repair_t_min: Duration => with_repair_t_min;
    repair_t_max: Duration => with_repair_t_max;
    num_response_groups: u32 => with_num_response_groups;
    max_repair_requests: usize => with_max_repair_requests;
    max_repair_buffer: usize => with_max_repair_buffer;
    repair_cooldown: Option<Duration> => with_repair_cooldown;
    max_repair_bytes: u64 => with_max_repair_bytes;
    limits: Limits => with_limits;
    profile: Profile => with_profile;
    lamport_unit: Option<LamportUnit> => with_lamport_unit;
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// The unit the lamport clock counts in: [`lamport_unit`](Self::lamport_unit) if set,
    /// otherwise the profile's. A message stamped on a smaller scale than the rest of the group
    /// sorts below everything the others hold, so it is never among the newest entries causal
    /// histories cite: a nim-sds member (seconds) and a member counting milliseconds would keep
    /// citing messages the other lacks.
    pub fn clock_unit(&self) -> LamportUnit {
        self.lamport_unit.unwrap_or(match self.profile {
            Profile::NimSds => LamportUnit::Seconds,
            Profile::Spec => LamportUnit::Milliseconds,
        })
    }

    /// Checks that every setting can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError(m.to_string()));
        if self.bloom_capacity <= 0 {
            return fail("bloom_capacity must be positive");
        }
        if !(self.bloom_error_rate > 0.0 && self.bloom_error_rate < 1.0) {
            return fail("bloom_error_rate must be strictly between 0 and 1");
        }
        if self.max_message_history == 0 {
            return fail("max_message_history must be at least 1");
        }
        if self.max_causal_history > self.limits.max_causal_history {
            return fail("max_causal_history exceeds limits.max_causal_history");
        }
        if ms(self.resend_interval) == 0 || ms(self.possibly_acked_resend_interval) == 0 {
            return fail("resend intervals must be at least 1 ms");
        }
        if ms(self.sync_interval) == 0 {
            return fail("sync_interval must be at least 1 ms");
        }
        if self.possible_ack_threshold == 0 {
            return fail("possible_ack_threshold must be at least 1");
        }
        if self.filter_resend_after.map(ms) == Some(0) {
            return fail("filter_resend_after must be at least 1 ms (or None)");
        }
        if self.lost_dependency_timeout.map(ms) == Some(0) {
            return fail("lost_dependency_timeout must be at least 1 ms (or None)");
        }
        if ms(self.max_clock_lead) == 0 || ms(self.max_clock_lead) > i64::MAX as u64 {
            return fail("max_clock_lead must be at least 1 ms and at most i64::MAX ms");
        }
        if self.max_incoming_buffer == 0 || self.max_outgoing_buffer == 0 {
            return fail("buffer capacities must be at least 1");
        }
        if self.max_repair_requests > self.limits.max_repair_request {
            return fail("max_repair_requests exceeds limits.max_repair_request");
        }
        if ms(self.repair_t_max) > i64::MAX as u64 || ms(self.repair_t_min) > i64::MAX as u64 {
            return fail("repair times must be at most i64::MAX ms");
        }
        if self.max_known_ids < self.max_message_history {
            return fail("max_known_ids must be at least max_message_history");
        }
        // Every channel builds one: a filter that cannot be built would make every operation
        // on every channel fail.
        if let Err(e) = super::profile::ChannelFilter::new(self) {
            return Err(ConfigError(format!(
                "bloom_capacity {} at bloom_error_rate {}: {e}",
                self.bloom_capacity, self.bloom_error_rate
            )));
        }
        Ok(())
    }
}

/// A duration in whole milliseconds, as the engine counts (saturating far beyond any setting).
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
