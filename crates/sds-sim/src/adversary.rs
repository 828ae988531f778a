//! Hostile members that attack: each crafts wire bytes outside any engine, as an attacker
//! would, encodes them in the scenario's profile and broadcasts them through the simulated
//! network like any member, at the scenario's rate and within its byte budget. An attacking
//! member runs no protocol: it listens to the bus (to learn honest ids, senders and bytes) and
//! never sends a message of its own or helps with repair.

use std::collections::{HashSet, VecDeque};

use sds_proto::engine::{decode, encode, Config, Received};
use sds_proto::{Bytes, ChannelId, HistoryEntry, MessageId, ParticipantId, SdsMessage};
use serde::Serialize;

use crate::rng::Rng;
use crate::scenario::Hostility;

/// How much the attacking members send.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttackSettings {
    /// Attacks per second of each attacking member, during the sending period (one attack is
    /// one crafted message, or the few of a kind that go together: a pair of cycling messages,
    /// a burst of syncs, the two versions of an equivocated message).
    pub rate: f64,
    /// Bytes each attacking member sends at most (0: no limit).
    pub budget: u64,
}

impl Default for AttackSettings {
    fn default() -> Self {
        AttackSettings {
            rate: 1.0,
            budget: 0,
        }
    }
}

/// Missing messages each flood message cites: each costs a receiver what it keeps to wait for
/// it (the engine charges 1 KiB).
const FLOOD_DEPENDENCIES: usize = 32;
/// Content bytes of a junk message.
const JUNK_CONTENT: usize = 256;
/// Junk messages in one burst, or syncs in one replay burst.
const BURST: usize = 16;
/// Repair requests in one sync: as many as a message may carry.
const REPAIR_ENTRIES: usize = 64;
/// Honest messages remembered for replays and repair requests.
const SEEN: usize = 1_024;
/// How far in the future a clock attack's second message is stamped: ten years.
const FAR_FUTURE_MS: u64 = 10 * 365 * 86_400_000;
/// Honest messages an equivocated or far-future message cites (the newest seen): it is
/// deliverable wherever they were delivered.
const CITED: usize = 3;

/// Who gets one crafted broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    /// Every other member.
    All,
    /// The members whose index has this parity (0 or 1).
    Half(usize),
}

impl Audience {
    pub(crate) fn includes(self, member: usize) -> bool {
        match self {
            Audience::All => true,
            Audience::Half(parity) => member % 2 == parity,
        }
    }
}

/// One crafted broadcast.
pub(crate) struct Shot {
    pub(crate) bytes: Bytes,
    pub(crate) to: Audience,
}

/// An honest message seen on the bus.
struct Seen {
    id: MessageId,
    sender: ParticipantId,
    bytes: Bytes,
}

/// One attacking member.
pub(crate) struct Adversary {
    kind: Hostility,
    /// The sender id it writes (its member id).
    me: ParticipantId,
    /// Its member number, in the ids it makes up.
    member: usize,
    channel: ChannelId,
    config: Config,
    /// The member that repair requests name as sender on every other attack.
    target: ParticipantId,
    rng: Rng,
    /// Milliseconds between attacks.
    interval: u64,
    budget: u64,
    sent: u64,
    attacks: u64,
    seen: VecDeque<Seen>,
    seen_ids: HashSet<MessageId>,
    /// The next seen message a repair request starts with.
    cursor: usize,
}

impl Adversary {
    pub(crate) fn new(
        kind: Hostility,
        member: usize,
        config: &Config,
        channel: ChannelId,
        target: ParticipantId,
        settings: &AttackSettings,
        rng: Rng,
    ) -> Self {
        Adversary {
            kind,
            me: ParticipantId::from(format!("p{member:04}")),
            member,
            channel,
            config: config.clone(),
            target,
            rng,
            interval: ((1_000.0 / settings.rate) as u64).max(1),
            budget: settings.budget,
            sent: 0,
            attacks: 0,
            seen: VecDeque::new(),
            seen_ids: HashSet::new(),
            cursor: 0,
        }
    }

    /// When the first attack comes, after `start`: within one interval.
    pub(crate) fn first_attack(&mut self, start: u64) -> u64 {
        start + self.rng.range(1, self.interval)
    }

    /// When the attack after one at `now` comes (`None`: the budget is spent).
    pub(crate) fn next_attack(&self, now: u64) -> Option<u64> {
        (self.budget == 0 || self.sent < self.budget).then_some(now + self.interval)
    }

    /// Takes note of bytes that arrived: honest content messages are remembered for replays
    /// and repair requests.
    pub(crate) fn observe(&mut self, bytes: &Bytes) {
        let Ok(Received::Message(m)) = decode(bytes, &self.config) else {
            return;
        };
        // Content only, and not what an attacking member made up (its ids start with "x").
        if m.content.is_empty()
            || m.message_id.as_bytes().first() == Some(&b'x')
            || self.seen_ids.contains(&m.message_id)
        {
            return;
        }
        if self.seen.len() == SEEN {
            if let Some(old) = self.seen.pop_front() {
                self.seen_ids.remove(&old.id);
            }
            self.cursor = self.cursor.saturating_sub(1);
        }
        self.seen_ids.insert(m.message_id.clone());
        self.seen.push_back(Seen {
            id: m.message_id,
            sender: m.sender_id,
            bytes: bytes.clone(),
        });
    }

    /// The broadcasts of one attack at `now`, within the budget.
    pub(crate) fn attack(&mut self, now: u64) -> Vec<Shot> {
        let n = self.attacks;
        self.attacks += 1;
        let lamport = self.config.clock_unit().clock(now);
        let all = |bytes| Shot {
            bytes,
            to: Audience::All,
        };
        let shots = match self.kind {
            Hostility::Flood => {
                let deps: Vec<HistoryEntry> = (0..FLOOD_DEPENDENCIES)
                    .map(|d| HistoryEntry::new(self.id(&format!("ghost-{n}-{d}"))))
                    .collect();
                vec![all(self.content(
                    self.id(&format!("flood-{n}")),
                    lamport,
                    deps,
                ))]
            }
            Hostility::Junk => (0..BURST)
                .map(|i| all(self.content(self.id(&format!("junk-{n}-{i}")), lamport, Vec::new())))
                .collect(),
            Hostility::Cycles => {
                let (x, y) = (self.id(&format!("cx-{n}")), self.id(&format!("cy-{n}")));
                vec![
                    all(self.content(x.clone(), lamport, vec![HistoryEntry::new(y.clone())])),
                    all(self.content(y, lamport, vec![HistoryEntry::new(x)])),
                ]
            }
            Hostility::Clock => {
                let future = if n.is_multiple_of(2) {
                    i64::MAX
                } else {
                    self.config.clock_unit().clock(now + FAR_FUTURE_MS)
                };
                let cited = self.newest_seen();
                vec![all(self.content(
                    self.id(&format!("clock-{n}")),
                    future,
                    cited,
                ))]
            }
            Hostility::Replay => self.replay(n, lamport),
            Hostility::RepairAmplification => self.repair_requests(n, lamport),
            Hostility::ChannelSpam => {
                let mut msg = self.message(self.id(&format!("spam-{n}")), lamport, Vec::new());
                msg.channel_id = ChannelId::from(format!("spam-{}-{n}", self.member));
                vec![all(encode(&msg, self.config.profile))]
            }
            Hostility::Equivocation => {
                let id = self.id(&format!("eq-{n}"));
                let cited = self.newest_seen();
                (0..2)
                    .map(|half| {
                        let mut msg = self.message(id.clone(), lamport, cited.clone());
                        msg.content = Bytes::from(format!("version {half} of {id}"));
                        Shot {
                            bytes: encode(&msg, self.config.profile),
                            to: Audience::Half(half),
                        }
                    })
                    .collect()
            }
            Hostility::Conforming | Hostility::Silent => Vec::new(),
        };
        self.within_budget(shots)
    }

    /// Keeps the shots that fit in what is left of the budget, and counts them.
    fn within_budget(&mut self, shots: Vec<Shot>) -> Vec<Shot> {
        let mut kept = Vec::with_capacity(shots.len());
        for shot in shots {
            let len = shot.bytes.len() as u64;
            if self.budget > 0 && self.sent + len > self.budget {
                // Spent: nothing more, ever.
                self.sent = self.budget;
                break;
            }
            self.sent += len;
            kept.push(shot);
        }
        kept
    }

    /// An id of its own making (every one starts with "x").
    fn id(&self, what: &str) -> MessageId {
        MessageId::from(format!("x{:04}-{what}", self.member))
    }

    fn message(&self, id: MessageId, lamport: i64, deps: Vec<HistoryEntry>) -> SdsMessage {
        SdsMessage {
            message_id: id,
            lamport_timestamp: lamport,
            causal_history: deps,
            channel_id: self.channel.clone(),
            content: Bytes::from(vec![b'j'; JUNK_CONTENT]),
            bloom_filter: Bytes::new(),
            sender_id: self.me.clone(),
            repair_request: Vec::new(),
        }
    }

    /// A junk content message, encoded.
    fn content(&self, id: MessageId, lamport: i64, deps: Vec<HistoryEntry>) -> Bytes {
        encode(&self.message(id, lamport, deps), self.config.profile)
    }

    /// A sync (no content) with these repair requests, encoded.
    fn sync(&self, id: MessageId, lamport: i64, repair: Vec<HistoryEntry>) -> Bytes {
        let mut msg = self.message(id, lamport, Vec::new());
        msg.content = Bytes::new();
        msg.repair_request = repair;
        encode(&msg, self.config.profile)
    }

    /// The newest honest messages seen, as cited.
    fn newest_seen(&self) -> Vec<HistoryEntry> {
        self.seen
            .iter()
            .rev()
            .take(CITED)
            .map(|s| HistoryEntry {
                sender_id: s.sender.clone(),
                ..HistoryEntry::new(s.id.clone())
            })
            .collect()
    }

    /// Replays: two bursts of syncs under fresh ids (meant to push honest ids out of
    /// duplicate detection), then an old honest message as it was, then another re-encoded
    /// under the current timestamp.
    fn replay(&mut self, n: u64, lamport: i64) -> Vec<Shot> {
        let all = |bytes| Shot {
            bytes,
            to: Audience::All,
        };
        match n % 4 {
            0 | 1 => (0..BURST)
                .map(|i| all(self.sync(self.id(&format!("sync-{n}-{i}")), lamport, Vec::new())))
                .collect(),
            phase => {
                if self.seen.is_empty() {
                    return Vec::new();
                }
                // The older half of what was seen: what duplicate detection may have forgotten.
                let pick = self.rng.range(0, (self.seen.len() as u64 - 1) / 2) as usize;
                let old = &self.seen[pick];
                if phase == 2 {
                    return vec![all(old.bytes.clone())];
                }
                match decode(&old.bytes, &self.config) {
                    Ok(Received::Message(mut m)) => {
                        m.lamport_timestamp = lamport;
                        m.bloom_filter = Bytes::new();
                        vec![all(encode(&m, self.config.profile))]
                    }
                    _ => Vec::new(),
                }
            }
        }
    }

    /// A sync asking for the largest honest messages seen, the next ones in turn each time:
    /// under their true senders, and every other time under the target's id.
    fn repair_requests(&mut self, n: u64, lamport: i64) -> Vec<Shot> {
        if self.seen.is_empty() {
            return Vec::new();
        }
        let mut order: Vec<usize> = (0..self.seen.len()).collect();
        // Largest first; the cursor walks through them so that each request names others.
        order.sort_by_key(|&i| std::cmp::Reverse(self.seen[i].bytes.len()));
        let entries: Vec<HistoryEntry> = (0..REPAIR_ENTRIES.min(order.len()))
            .map(|k| &self.seen[order[(self.cursor + k) % order.len()]])
            .map(|s| HistoryEntry {
                sender_id: if n.is_multiple_of(2) {
                    s.sender.clone()
                } else {
                    self.target.clone()
                },
                ..HistoryEntry::new(s.id.clone())
            })
            .collect();
        self.cursor = (self.cursor + entries.len()) % order.len();
        vec![Shot {
            bytes: self.sync(self.id(&format!("repair-{n}")), lamport, entries),
            to: Audience::All,
        }]
    }
}
