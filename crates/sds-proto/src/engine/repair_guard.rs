//! SDS-R against amplification: what a repair request can make us rebroadcast.
//!
//! A repair request costs its sender a few dozen bytes per id; answering it costs us the whole
//! message. So a request names at most [`Config::max_repair_requests`] ids that count (more are
//! ignored), a message is rebroadcast at most once per cooldown however often it is asked for,
//! and the bytes rebroadcast per window (T_max) are capped.
//!
//! [`Config::max_repair_requests`]: super::Config::max_repair_requests

use std::collections::HashMap;

use crate::MessageId;

/// When each message was last rebroadcast, and the bytes rebroadcast in the current window.
#[derive(Debug, Default, Clone)]
pub(super) struct RepairGuard {
    last_sent: HashMap<MessageId, u64>,
    window_start: u64,
    window_bytes: u64,
}

impl RepairGuard {
    /// Whether `id` may be scheduled for a rebroadcast at `now`: not rebroadcast within the
    /// last `cooldown`.
    pub(super) fn may_schedule(&self, id: &MessageId, now: u64, cooldown: u64) -> bool {
        self.last_sent
            .get(id)
            .is_none_or(|&t| now >= t.saturating_add(cooldown))
    }

    /// Whether `len` more bytes may be rebroadcast at `now`, windows of `window` holding at
    /// most `budget` bytes; counts them if so.
    pub(super) fn take_budget(&mut self, len: usize, now: u64, window: u64, budget: u64) -> bool {
        if now >= self.window_start.saturating_add(window.max(1)) {
            self.window_start = now;
            self.window_bytes = 0;
        }
        let len = len as u64;
        if self.window_bytes.saturating_add(len) > budget {
            return false;
        }
        self.window_bytes += len;
        true
    }

    /// `id` was rebroadcast at `now`. Entries older than `cooldown` are forgotten once more
    /// than `keep` are held, so the map stays within about `keep` entries.
    pub(super) fn sent(&mut self, id: MessageId, now: u64, cooldown: u64, keep: usize) {
        if self.last_sent.len() >= keep.max(1) {
            self.last_sent
                .retain(|_, t| now < t.saturating_add(cooldown));
        }
        if self.last_sent.len() < keep.max(1) {
            self.last_sent.insert(id, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_waits_out_its_cooldown_and_the_window_caps_bytes() {
        let mut g = RepairGuard::default();
        let id = MessageId::from("m");
        assert!(g.may_schedule(&id, 100, 50));
        g.sent(id.clone(), 100, 50, 10);
        assert!(!g.may_schedule(&id, 149, 50));
        assert!(g.may_schedule(&id, 150, 50));
        assert!(g.take_budget(60, 0, 1_000, 100));
        assert!(!g.take_budget(60, 10, 1_000, 100));
        assert!(g.take_budget(40, 20, 1_000, 100));
        // A new window.
        assert!(g.take_budget(60, 1_000, 1_000, 100));
    }
}
