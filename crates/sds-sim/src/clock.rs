//! Virtual time: milliseconds since the Unix epoch, starting at [`T0`].

/// The virtual time at which every run starts (milliseconds since the Unix epoch).
pub(crate) const T0: u64 = 1_700_000_000_000;

/// A virtual time as milliseconds since the start of the run, in 4 bytes: per-(member,
/// message) records are the bulk of the simulator's own memory.
pub(crate) type Stamp = u32;

/// No time (not delivered, not detected).
pub(crate) const NEVER: Stamp = Stamp::MAX;

pub(crate) fn stamp(t: u64) -> Stamp {
    Stamp::try_from(t - T0).unwrap_or(NEVER - 1)
}

pub(crate) fn unstamp(s: Stamp) -> Option<u64> {
    (s != NEVER).then(|| T0 + u64::from(s))
}
