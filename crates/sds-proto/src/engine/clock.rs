//! The unit of the lamport clock.
//!
//! A channel's clock follows the wall clock (`max(now, L + 1)` on send), so its values are
//! times in some unit. The spec counts milliseconds; nim-sds counts seconds. Members of one
//! group must count in the same unit: a message stamped on the smaller scale sorts below
//! everything stamped on the larger one, so it is never among the newest entries that causal
//! histories cite.

/// What one step of the lamport clock is worth when it follows the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum LamportUnit {
    /// Milliseconds since the Unix epoch, as the spec counts (the spec profile's unit).
    Milliseconds,
    /// Seconds since the Unix epoch, as nim-sds counts (the nim-sds profile's unit).
    Seconds,
}

impl LamportUnit {
    /// The wall clock `now_ms` (milliseconds since the epoch) as a clock value in this unit.
    pub fn clock(self, now_ms: u64) -> i64 {
        let v = match self {
            LamportUnit::Milliseconds => now_ms,
            LamportUnit::Seconds => now_ms / 1_000,
        };
        i64::try_from(v).unwrap_or(i64::MAX)
    }

    /// A duration of `ms` milliseconds in this unit, rounded up (so that a nonzero duration
    /// stays nonzero).
    pub fn duration(self, ms: u64) -> i64 {
        let v = match self {
            LamportUnit::Milliseconds => ms,
            LamportUnit::Seconds => ms.div_ceil(1_000),
        };
        i64::try_from(v).unwrap_or(i64::MAX)
    }

    /// The unit's name on the command line and in configuration.
    pub fn name(self) -> &'static str {
        match self {
            LamportUnit::Milliseconds => "milliseconds",
            LamportUnit::Seconds => "seconds",
        }
    }
}

impl std::str::FromStr for LamportUnit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "milliseconds" | "ms" => Ok(LamportUnit::Milliseconds),
            "seconds" | "s" => Ok(LamportUnit::Seconds),
            other => Err(format!(
                "unknown lamport unit {other:?} (known: milliseconds, seconds)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LamportUnit;

    #[test]
    fn conversions_never_overflow() {
        assert_eq!(LamportUnit::Seconds.clock(1_700_000_000_999), 1_700_000_000);
        assert_eq!(
            LamportUnit::Milliseconds.clock(1_700_000_000_999),
            1_700_000_000_999
        );
        assert_eq!(LamportUnit::Milliseconds.clock(u64::MAX), i64::MAX);
        assert_eq!(
            LamportUnit::Seconds.clock(u64::MAX),
            (u64::MAX / 1_000) as i64
        );
        assert_eq!(LamportUnit::Seconds.duration(1), 1);
        assert_eq!(LamportUnit::Seconds.duration(2_000), 2);
        assert_eq!(
            LamportUnit::Seconds.duration(u64::MAX),
            (u64::MAX / 1_000 + 1) as i64
        );
        assert_eq!(LamportUnit::Milliseconds.duration(u64::MAX), i64::MAX);
        assert_eq!("seconds".parse(), Ok(LamportUnit::Seconds));
        assert_eq!("ms".parse(), Ok(LamportUnit::Milliseconds));
        assert!("hours".parse::<LamportUnit>().is_err());
    }
}
