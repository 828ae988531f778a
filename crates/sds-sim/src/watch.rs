//! What one honest member goes through when the group has hostile members: what it delivered
//! and in which order, what it refused, dropped or held. Kept only in scenarios with hostile
//! members; the report's honest section sums it over honest members.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sds_proto::engine::{decode, Channel, Config, DropReason, EngineError, Event, ReceivedKind};
use sds_proto::engine::{LamportUnit, Received, Unwrapped};
use sds_proto::MessageId;

use crate::member::Member;
use crate::report::{Counters, Effects};

/// Counts of one honest member (summed, or for `peak_held` the largest, over the honest
/// members in the report).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) order_violations: u64,
    pub(crate) duplicates_delivered: u64,
    pub(crate) hostile_delivered: u64,
    pub(crate) peak_held: u64,
    pub(crate) rebroadcast_bytes: u64,
    pub(crate) refused_clock: u64,
    pub(crate) refused_channel: u64,
    pub(crate) refused_other: u64,
    pub(crate) conflicts: u64,
    pub(crate) stale: u64,
    pub(crate) evicted: u64,
    pub(crate) expired: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, o: &Tally) {
        self.order_violations += o.order_violations;
        self.duplicates_delivered += o.duplicates_delivered;
        self.hostile_delivered += o.hostile_delivered;
        self.peak_held = self.peak_held.max(o.peak_held);
        self.rebroadcast_bytes += o.rebroadcast_bytes;
        self.refused_clock += o.refused_clock;
        self.refused_channel += o.refused_channel;
        self.refused_other += o.refused_other;
        self.conflicts += o.conflicts;
        self.stale += o.stale;
        self.evicted += o.evicted;
        self.expired += o.expired;
    }
}

/// One honest member's record.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// Every id it delivered or sent.
    delivered: HashSet<MessageId>,
    /// Ids its engine declared lost: what waited for them is delivered without them.
    lost: HashSet<MessageId>,
    /// The content (a hash of it) of each message it delivered that no honest member sent.
    pub(crate) foreign: HashMap<MessageId, u64>,
    pub(crate) tally: Tally,
}

/// FNV-1a: a content's fingerprint, the same on every run.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Watch {
    /// The member sent this message.
    pub(crate) fn sent(&mut self, id: &MessageId) {
        self.delivered.insert(id.clone());
    }

    /// The member received bytes, with this result; it now holds `held` bytes for others.
    pub(crate) fn received(&mut self, got: &Result<Unwrapped, EngineError>, held: usize) {
        let t = &mut self.tally;
        match got {
            Ok(u) if u.kind == ReceivedKind::Stale => t.stale += 1,
            Ok(u) if u.kind == ReceivedKind::Conflict => t.conflicts += 1,
            Ok(_) => {}
            Err(EngineError::LamportTooFarAhead { .. }) => t.refused_clock += 1,
            Err(EngineError::WrongChannel { .. }) => t.refused_channel += 1,
            Err(_) => t.refused_other += 1,
        }
        t.peak_held = t.peak_held.max(held as u64);
    }

    /// The member rebroadcast `len` bytes (a resend or a repair).
    pub(crate) fn rebroadcast(&mut self, len: usize) {
        self.tally.rebroadcast_bytes += len as u64;
    }

    /// An event of the member's engine. A delivery is checked against what the member
    /// delivered before: every message it cites must be among them (causal order), and it must
    /// not be one of them (no duplicate). `honest` tells whether an honest member sent it.
    pub(crate) fn event(&mut self, e: &Event, ch: &Channel, config: &Config, honest: bool) {
        match e {
            Event::MessageReady {
                message_id,
                content,
                ..
            } => {
                if !self.delivered.insert(message_id.clone()) {
                    self.tally.duplicates_delivered += 1;
                    return;
                }
                let cited =
                    ch.log_entry(message_id)
                        .and_then(|entry| match decode(&entry.bytes, config) {
                            Ok(Received::Message(m)) => Some(m.causal_history),
                            _ => None,
                        });
                // (A message already gone from the log again cannot be checked.)
                let in_order = cited.is_none_or(|cited| {
                    cited.iter().all(|c| {
                        self.delivered.contains(&c.message_id) || self.lost.contains(&c.message_id)
                    })
                });
                if !in_order {
                    self.tally.order_violations += 1;
                }
                if !honest {
                    self.tally.hostile_delivered += 1;
                    self.foreign
                        .insert(message_id.clone(), fingerprint(content));
                }
            }
            // Its dependents may be delivered without it.
            Event::IrretrievablyLost { entry, .. } => {
                self.lost.insert(entry.message_id.clone());
            }
            Event::Dropped { reason, .. } => match reason {
                DropReason::Evicted => self.tally.evicted += 1,
                DropReason::Expired => self.tally.expired += 1,
                _ => {}
            },
            _ => {}
        }
    }
}

/// The effects on the honest members (those with a [`Watch`]) of a run that ended at `end`.
pub(crate) fn effects(
    members: &[Member],
    counters: &Counters,
    end: u64,
    config: &Config,
) -> Effects {
    let mut t = Tally::default();
    let mut contents: BTreeMap<&MessageId, BTreeSet<u64>> = BTreeMap::new();
    let mut lead_ms = 0i64;
    let unit = config.clock_unit();
    for m in members {
        let Some(w) = &m.watch else {
            continue;
        };
        t.add(&w.tally);
        for (id, hash) in &w.foreign {
            contents.entry(id).or_default().insert(*hash);
        }
        let lead = m.ch.lamport().saturating_sub(unit.clock(end)).max(0);
        let ms = match unit {
            LamportUnit::Seconds => lead.saturating_mul(1_000),
            LamportUnit::Milliseconds => lead,
        };
        lead_ms = lead_ms.max(ms);
    }
    Effects {
        hostile_broadcasts: counters.hostile_broadcasts,
        hostile_bytes: counters.hostile_bytes,
        order_violations: t.order_violations,
        duplicates_delivered: t.duplicates_delivered,
        hostile_delivered: t.hostile_delivered,
        divergent_ids: contents.values().filter(|c| c.len() > 1).count() as u64,
        peak_held_bytes: t.peak_held,
        rebroadcast_bytes: t.rebroadcast_bytes,
        refused_clock: t.refused_clock,
        refused_channel: t.refused_channel,
        refused_other: t.refused_other,
        conflicts: t.conflicts,
        stale: t.stale,
        evicted: t.evicted,
        expired: t.expired,
        clock_lead_s: lead_ms as f64 / 1_000.0,
    }
}
