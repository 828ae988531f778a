//! Rate-limit management: a send budget of so many messages per epoch (as RLN relay imposes),
//! with the publications that do not fit queued or dropped.
//!
//! Every publication counts, one per gossip message: first sends (one per segment), resends
//! and repairs, syncs, ephemeral messages. Within an epoch:
//!
//! * regular messages (first sends, resends, repairs) are published while the budget lasts,
//!   then queued, in order, until the next epoch;
//! * ephemeral messages and syncs are published only while the budget is below
//!   [`RateLimit::ephemeral_threshold`] of the epoch's messages, and otherwise dropped (an
//!   ephemeral message is worth nothing late; a sync is made again next interval).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use sds_manager::{Bytes, MessageId};
use tokio::time::Instant;

/// A send budget: at most [`messages_per_epoch`](Self::messages_per_epoch) publications in
/// every [`epoch`](Self::epoch).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Publications allowed per epoch (default 100).
    pub messages_per_epoch: u32,
    /// The epoch (default 60 s).
    pub epoch: Duration,
    /// Share of the epoch's budget past which ephemeral messages and syncs are dropped
    /// (default 0.9: at 90 % spent).
    pub ephemeral_threshold: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            messages_per_epoch: 100,
            epoch: Duration::from_secs(60),
            ephemeral_threshold: 0.9,
        }
    }
}

impl RateLimit {
    /// A budget of `messages_per_epoch` publications every `epoch`.
    pub fn new(messages_per_epoch: u32, epoch: Duration) -> Self {
        RateLimit {
            messages_per_epoch,
            epoch,
            ..RateLimit::default()
        }
    }

    /// Sets [`messages_per_epoch`](Self::messages_per_epoch).
    #[must_use]
    pub fn with_messages_per_epoch(mut self, messages_per_epoch: u32) -> Self {
        self.messages_per_epoch = messages_per_epoch;
        self
    }

    /// Sets [`epoch`](Self::epoch).
    #[must_use]
    pub fn with_epoch(mut self, epoch: Duration) -> Self {
        self.epoch = epoch;
        self
    }

    /// Sets [`ephemeral_threshold`](Self::ephemeral_threshold).
    #[must_use]
    pub fn with_ephemeral_threshold(mut self, ephemeral_threshold: f64) -> Self {
        self.ephemeral_threshold = ephemeral_threshold;
        self
    }
}

/// Why an ephemeral message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EphemeralDropReason {
    /// The epoch's budget is nearly spent (past [`RateLimit::ephemeral_threshold`]).
    RateLimitApproached,
    /// The epoch's budget is spent.
    RateLimitReached,
}

impl EphemeralDropReason {
    /// The reason as the Reliable Channel API spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            EphemeralDropReason::RateLimitApproached => "rate_limit_approached",
            EphemeralDropReason::RateLimitReached => "rate_limit_reached",
        }
    }
}

/// The budget of the current epoch.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: Option<RateLimit>,
    epoch_start: Instant,
    used: u32,
}

impl Budget {
    /// A budget under `limit` (`None`: unlimited), its first epoch starting at `now`.
    pub(crate) fn new(limit: Option<RateLimit>, now: Instant) -> Self {
        Budget {
            limit,
            epoch_start: now,
            used: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        let Some(limit) = &self.limit else { return };
        let epoch = limit.epoch.max(Duration::from_millis(1));
        let elapsed = now.saturating_duration_since(self.epoch_start);
        if elapsed >= epoch {
            let epochs = (elapsed.as_nanos() / epoch.as_nanos()) as u32;
            self.epoch_start += epoch * epochs;
            self.used = 0;
        }
    }

    /// Takes one publication of the budget, if there is one left this epoch.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.roll(now);
        match &self.limit {
            None => true,
            Some(limit) if self.used < limit.messages_per_epoch => {
                self.used += 1;
                true
            }
            Some(_) => false,
        }
    }

    /// Takes one publication for an ephemeral message or a sync, unless the budget is past
    /// the ephemeral threshold: then says why not.
    pub(crate) fn take_ephemeral(&mut self, now: Instant) -> Result<(), EphemeralDropReason> {
        self.roll(now);
        let Some(limit) = &self.limit else {
            return Ok(());
        };
        if self.used >= limit.messages_per_epoch {
            return Err(EphemeralDropReason::RateLimitReached);
        }
        let threshold = f64::from(limit.messages_per_epoch) * limit.ephemeral_threshold;
        if f64::from(self.used) >= threshold {
            return Err(EphemeralDropReason::RateLimitApproached);
        }
        self.used += 1;
        Ok(())
    }

    /// When the next epoch starts (`None` without a limit).
    #[cfg(test)]
    pub(crate) fn next_epoch(&self) -> Option<Instant> {
        let limit = self.limit.as_ref()?;
        Some(self.epoch_start + limit.epoch.max(Duration::from_millis(1)))
    }
}

/// Why a publication is made: what the channel reports about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The first send of a message (or segment).
    First,
    /// A resend of an unacknowledged one.
    Resend,
    /// An SDS-R rebroadcast of someone's message.
    Repair,
}

/// One regular publication waiting for budget.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) message_id: MessageId,
    pub(crate) bytes: Bytes,
    pub(crate) purpose: Purpose,
}

/// Regular publications waiting for budget, in order, bounded in count and bytes; a resend
/// of a message already waiting is not queued twice.
#[derive(Debug)]
pub(crate) struct SendQueue {
    items: VecDeque<Queued>,
    ids: HashSet<MessageId>,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
}

impl SendQueue {
    pub(crate) fn new(max_items: usize, max_bytes: usize) -> Self {
        SendQueue {
            items: VecDeque::new(),
            ids: HashSet::new(),
            bytes: 0,
            max_items,
            max_bytes,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues `item`; `false` when it was already waiting or there is no room (SDS sends an
    /// unacknowledged message again later).
    pub(crate) fn push(&mut self, item: Queued) -> bool {
        if self.ids.contains(&item.message_id)
            || self.items.len() >= self.max_items
            || self.bytes.saturating_add(item.bytes.len()) > self.max_bytes
        {
            return false;
        }
        self.bytes += item.bytes.len();
        self.ids.insert(item.message_id.clone());
        self.items.push_back(item);
        true
    }

    /// The oldest waiting publication.
    pub(crate) fn pop(&mut self) -> Option<Queued> {
        let item = self.items.pop_front()?;
        self.bytes -= item.bytes.len();
        self.ids.remove(&item.message_id);
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refills_each_epoch() {
        let t = Instant::now();
        let mut b = Budget::new(Some(RateLimit::new(3, Duration::from_secs(10))), t);
        assert!((0..3).all(|_| b.take(t)));
        assert!(!b.take(t + Duration::from_secs(9)));
        assert_eq!(b.next_epoch(), Some(t + Duration::from_secs(10)));
        assert!(b.take(t + Duration::from_secs(10)));
        // Several epochs later: one fresh budget, aligned to the epochs.
        assert!(b.take(t + Duration::from_secs(35)));
        assert_eq!(b.next_epoch(), Some(t + Duration::from_secs(40)));
        let mut unlimited = Budget::new(None, t);
        assert!((0..10_000).all(|_| unlimited.take(t)));
        assert_eq!(unlimited.next_epoch(), None);
    }

    #[test]
    fn ephemeral_stops_at_the_threshold_regular_at_the_budget() {
        let t = Instant::now();
        let limit = RateLimit::new(10, Duration::from_secs(1)).with_ephemeral_threshold(0.8);
        let mut b = Budget::new(Some(limit), t);
        for _ in 0..7 {
            assert!(b.take(t));
        }
        assert_eq!(b.take_ephemeral(t), Ok(()), "7 of 10 used: below 80 %");
        assert_eq!(
            b.take_ephemeral(t),
            Err(EphemeralDropReason::RateLimitApproached)
        );
        assert!(b.take(t) && b.take(t), "regular messages use the rest");
        assert!(!b.take(t));
        assert_eq!(
            b.take_ephemeral(t),
            Err(EphemeralDropReason::RateLimitReached)
        );
    }

    #[test]
    fn queue_keeps_order_bounds_and_skips_repeats() {
        let item = |id: &str, n: usize| Queued {
            message_id: MessageId::from(id),
            bytes: Bytes::from(vec![0; n]),
            purpose: Purpose::First,
        };
        let mut q = SendQueue::new(3, 100);
        assert!(q.push(item("a", 10)));
        assert!(!q.push(item("a", 10)), "already waiting");
        assert!(q.push(item("b", 80)));
        assert!(!q.push(item("c", 20)), "over the bytes");
        assert!(q.push(item("c", 10)));
        assert!(!q.push(item("d", 0)), "over the count");
        assert_eq!(q.pop().map(|i| i.message_id), Some(MessageId::from("a")));
        assert!(q.push(item("a", 10)), "no longer waiting");
        let order: Vec<_> = std::iter::from_fn(|| q.pop())
            .map(|i| i.message_id)
            .collect();
        assert_eq!(order, ["b", "c", "a"].map(MessageId::from));
        assert!(q.is_empty());
    }
}
