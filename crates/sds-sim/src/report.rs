//! The outcome of a run as data: what was measured against the SDS requirements, and the
//! timeline behind the plot. Nothing here prints; `serde` gives the JSON form of `sds sim
//! --json`.

use serde::Serialize;

use crate::clock::{unstamp, Stamp, NEVER};
use crate::retrieval;
use crate::scenario::{Role, Scenario};

/// Everything measured about one message.
pub(crate) struct MessageStats {
    pub(crate) sender: usize,
    pub(crate) sent_at: u64,
    /// First acknowledgement signal at the sender (acknowledged or possibly acknowledged).
    pub(crate) acked_at: Option<u64>,
    /// Delivery time per member (the sender counts as delivered at send time).
    pub(crate) delivered: Vec<Stamp>,
    /// Members that lost the original broadcast.
    pub(crate) missed: Vec<bool>,
    /// When each member first learned it was missing (a missing-dependency report) or got it
    /// (delivered, or received and waiting for its own dependencies).
    pub(crate) detected: Vec<Stamp>,
}

/// What happened on the wire, and to members.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) transmissions: u64,
    pub(crate) bytes: u64,
    pub(crate) resends: u64,
    pub(crate) repairs: u64,
    pub(crate) syncs: u64,
    /// SDS-R repair requests carried by new messages and syncs (resends repeat theirs).
    pub(crate) repair_requests: u64,
    pub(crate) irretrievably_lost: u64,
    pub(crate) restarts: u64,
    /// Broadcasts of attacking members (also counted in `transmissions` and `bytes`).
    pub(crate) hostile_broadcasts: u64,
    pub(crate) hostile_bytes: u64,
    /// Requests and answers between members (not on the bus: not in `transmissions`).
    pub(crate) retrieval: retrieval::Counters,
}

impl Counters {
    pub(crate) fn add(&mut self, o: &Counters) {
        self.transmissions += o.transmissions;
        self.bytes += o.bytes;
        self.resends += o.resends;
        self.repairs += o.repairs;
        self.syncs += o.syncs;
        self.repair_requests += o.repair_requests;
        self.irretrievably_lost += o.irretrievably_lost;
        self.restarts += o.restarts;
        self.hostile_broadcasts += o.hostile_broadcasts;
        self.hostile_bytes += o.hostile_bytes;
        self.retrieval.add(&o.retrieval);
    }
}

/// The outcome of one run. Its JSON form (field names in camelCase, in this order) is the
/// output of `sds sim --json`; the timeline is not part of it.
///
/// A key's last word names its unit: `…Ms` milliseconds, `…S` seconds (`durationS`),
/// `…SendIntervals` multiples of the send interval S (`medianSendIntervals`: 0.5 is S/2);
/// `fraction…` and `completeness` are between 0 and 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The scenario, as run.
    pub parameters: Parameters,
    /// Messages sent by the whole group.
    pub messages_sent: usize,
    /// (message, member other than its sender) pairs delivered.
    pub deliveries: usize,
    /// (message, member other than its sender) pairs: every message sent, to every other member.
    pub expected_deliveries: usize,
    /// `deliveries` / `expected_deliveries`.
    pub completeness: f64,
    /// Messages that every member delivered.
    pub messages_everywhere: usize,
    /// When senders heard of acknowledgements (requirement: within 1·S).
    pub acknowledgement: Acknowledgement,
    /// (message, member) pairs whose first broadcast was lost on its way or found the member
    /// offline.
    pub missed_on_first_broadcast: usize,
    /// When members that lost a first broadcast learned of the message (requirement: within
    /// 3·S).
    pub missing_detection: MissingDetection,
    /// When every member had a message (requirement: within 6·S).
    pub eventual_consistency: EventualConsistency,
    /// What went over the bus.
    pub wire: Wire,
    /// What members asked one another for and got, when the scenario has retrieval (absent
    /// otherwise, also from the JSON form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<retrieval::Stats>,
    /// The outcomes among honest members alone, when the scenario has hostile ones (absent
    /// otherwise, also from the JSON form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub honest: Option<Honest>,
    /// Delivered and open pairs over virtual time, for a plot.
    #[serde(skip)]
    pub timeline: Timeline,
}

/// The outcomes among honest members: messages honest members sent, as received by honest
/// members.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Honest {
    /// Honest members.
    pub members: usize,
    /// What they achieved among themselves.
    pub outcomes: Outcomes,
    /// What hostile members' traffic did to them.
    pub effects: Effects,
}

/// What hostile members' traffic did to the honest members, as their engines and
/// applications saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Effects {
    /// Broadcasts of the attacking members.
    pub hostile_broadcasts: u64,
    /// Bytes they broadcast (once per broadcast, not per copy).
    pub hostile_bytes: u64,
    /// Deliveries at an honest member of a message citing one it had not delivered (nor seen
    /// declared lost) before: causal order broken.
    pub order_violations: u64,
    /// Deliveries at an honest member of a message it had delivered (or sent) before.
    pub duplicates_delivered: u64,
    /// Deliveries at honest members of messages no honest member sent: junk, which SDS cannot
    /// tell from content, delivered in causal order.
    pub hostile_delivered: u64,
    /// Ids that honest members delivered with different contents (an equivocating sender).
    pub divergent_ids: u64,
    /// The most bytes one honest member held on behalf of others at once, as its engine
    /// charges them (`Channel::held_bytes`: messages waiting for dependencies with their
    /// indexes, SDS-R entries).
    pub peak_held_bytes: u64,
    /// Bytes honest members rebroadcast: resends of their own messages and SDS-R repairs.
    pub rebroadcast_bytes: u64,
    /// Received messages refused because their lamport timestamp was too far ahead.
    pub refused_clock: u64,
    /// Received messages refused because they were for another channel.
    pub refused_channel: u64,
    /// Received messages refused for another reason (a full buffer, a malformed message, …).
    pub refused_other: u64,
    /// Received messages with the id of one held and other content (`Conflict`).
    pub conflicts: u64,
    /// Received messages older than forgotten ids, not delivered (`Stale`).
    pub stale: u64,
    /// Waiting messages dropped to make room (`Dropped`, evicted).
    pub evicted: u64,
    /// Waiting messages dropped because they could never complete (`Dropped`, expired).
    pub expired: u64,
    /// The largest lead of an honest member's lamport clock over the wall clock at the end of
    /// the run, in seconds (0 when none was ahead).
    pub clock_lead_s: f64,
}

/// Delivery, acknowledgement, detection and consistency among a set of members (the fields of
/// the same names in [`Report`], for all members).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcomes {
    /// Messages sent by the set's members.
    pub messages_sent: usize,
    /// (message, receiver in the set other than its sender) pairs delivered.
    pub deliveries: usize,
    /// Every message sent, to every other member of the set.
    pub expected_deliveries: usize,
    /// `deliveries` / `expected_deliveries`.
    pub completeness: f64,
    /// Messages that every member of the set delivered.
    pub messages_everywhere: usize,
    /// When senders heard of acknowledgements.
    pub acknowledgement: Acknowledgement,
    /// Pairs whose first broadcast was lost or found the receiver offline.
    pub missed_on_first_broadcast: usize,
    /// When receivers that lost a first broadcast learned of the message.
    pub missing_detection: MissingDetection,
    /// When every member of the set had a message.
    pub eventual_consistency: EventualConsistency,
}

impl Outcomes {
    /// The outcomes among the members `p` for which `within[p]`.
    fn new(messages: &[MessageStats], within: &[bool], s_ms: f64) -> Outcomes {
        let members = within.iter().filter(|w| **w).count();
        let messages: Vec<&MessageStats> = messages.iter().filter(|m| within[m.sender]).collect();
        let sent = messages.len();
        let pairs = sent * (members - 1);
        let delivered: usize = messages
            .iter()
            .map(|m| {
                m.delivered
                    .iter()
                    .enumerate()
                    .filter(|(q, d)| *q != m.sender && within[*q] && **d != NEVER)
                    .count()
            })
            .sum();
        let mut ack: Vec<f64> = Vec::new();
        let mut never_acked = 0usize;
        let mut detect: Vec<f64> = Vec::new();
        let mut missed_pairs = 0usize;
        let mut undetected = 0usize;
        let mut consistency: Vec<f64> = Vec::new();
        for m in &messages {
            match m.acked_at {
                Some(t) => ack.push((t - m.sent_at) as f64),
                None => never_acked += 1,
            }
            for (q, _) in within.iter().enumerate().filter(|(_, w)| **w) {
                if m.missed[q] {
                    missed_pairs += 1;
                    match unstamp(m.detected[q]) {
                        Some(t) => detect.push((t - m.sent_at) as f64),
                        None => undetected += 1,
                    }
                }
            }
            let times = || {
                m.delivered
                    .iter()
                    .zip(within)
                    .filter(|(_, w)| **w)
                    .map(|(d, _)| *d)
            };
            if times().all(|d| d != NEVER) {
                let last = times().filter_map(unstamp).max().unwrap_or(m.sent_at);
                consistency.push((last - m.sent_at) as f64);
            }
        }
        // Detection counts every missed pair; an undetected one never meets the requirement.
        let detection_within = {
            let ok = detect.iter().filter(|x| **x <= 3.0 * s_ms).count();
            ok as f64 / missed_pairs.max(1) as f64
        };
        let consistent_within = {
            let ok = consistency.iter().filter(|x| **x <= 6.0 * s_ms).count();
            ok as f64 / sent.max(1) as f64
        };
        Outcomes {
            messages_sent: sent,
            deliveries: delivered,
            expected_deliveries: pairs,
            completeness: delivered as f64 / pairs.max(1) as f64,
            messages_everywhere: consistency.len(),
            acknowledgement: Acknowledgement {
                never_acknowledged: never_acked,
                latency: latency(&mut ack, Some(1.0), s_ms),
            },
            missed_on_first_broadcast: missed_pairs,
            missing_detection: MissingDetection {
                undetected,
                latency: latency(&mut detect, Some(3.0), s_ms),
                fraction_detected_within_requirement: detection_within,
            },
            eventual_consistency: EventualConsistency {
                latency: latency(&mut consistency, Some(6.0), s_ms),
                fraction_consistent_within_requirement: consistent_within,
            },
        }
    }
}

/// The scenario as it ran (the history resolved), in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Parameters {
    /// Participants in the channel.
    pub participants: usize,
    /// Mean seconds between two messages of one participant (S).
    pub send_interval_s: f64,
    /// Seconds of sending.
    pub duration_s: f64,
    /// Limit on the group's sends (0: none).
    pub message_limit: usize,
    /// Seconds simulated after the sending period.
    pub tail_s: f64,
    /// Loss probability outside bursts.
    pub loss: f64,
    /// Smallest and largest one-way latency, in milliseconds.
    pub latency_ms: [u64; 2],
    /// Seconds between loss bursts (0: none).
    pub burst_every_s: f64,
    /// Mean online seconds between churn events (0: no churn).
    pub churn_online_s: f64,
    /// Whether repair was on.
    pub repair: bool,
    /// The wire profile's name (`nim-sds`, `spec`).
    pub profile: &'static str,
    /// SDS-R T_min, in seconds.
    pub repair_t_min_s: f64,
    /// SDS-R T_max, in seconds.
    pub repair_t_max_s: f64,
    /// Log entries each member kept.
    pub history: usize,
    /// The seed.
    pub seed: u64,
    /// Seconds after which members gave up on a missing dependency (0: never, and then left
    /// out of the JSON form).
    #[serde(skip_serializing_if = "never")]
    pub lost_timeout_s: f64,
}

/// Whether a timeout is off (0).
fn never(timeout: &f64) -> bool {
    *timeout == 0.0
}

/// The distribution of one latency, against its requirement.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// Measurements.
    pub count: usize,
    /// Median, in milliseconds (none without measurements).
    pub median_ms: Option<f64>,
    /// 90th percentile, in milliseconds.
    pub p90_ms: Option<f64>,
    /// 99th percentile, in milliseconds.
    pub p99_ms: Option<f64>,
    /// Median, in send intervals (multiples of S; JSON `medianSendIntervals`).
    pub median_send_intervals: Option<f64>,
    /// 90th percentile, in send intervals.
    pub p90_send_intervals: Option<f64>,
    /// 99th percentile, in send intervals.
    pub p99_send_intervals: Option<f64>,
    /// The requirement, in send intervals (1 for acknowledgement: within 1·S).
    pub requirement_send_intervals: Option<f64>,
    /// Measurements within the requirement, as a fraction of the measurements.
    pub fraction_within_requirement: Option<f64>,
}

/// Acknowledgements at senders.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Acknowledgement {
    /// Messages whose sender never heard of an acknowledgement.
    pub never_acknowledged: usize,
    /// From send to the first acknowledgement signal.
    pub latency: Latency,
}

/// Detection of missed messages.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MissingDetection {
    /// Missed pairs never detected.
    pub undetected: usize,
    /// From send to detection, over detected pairs.
    pub latency: Latency,
    /// Pairs detected within 3·S, as a fraction of every missed pair (an undetected one never
    /// meets the requirement).
    pub fraction_detected_within_requirement: f64,
}

/// Eventual consistency.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventualConsistency {
    /// From send to the last member's delivery, over messages every member delivered.
    pub latency: Latency,
    /// Messages every member had within 6·S, as a fraction of every message sent.
    pub fraction_consistent_within_requirement: f64,
}

/// Traffic on the bus.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Wire {
    /// Broadcasts of any kind.
    pub transmissions: u64,
    /// Bytes broadcast (once per broadcast, not per copy).
    pub bytes: u64,
    /// `bytes` per delivery (the sender's own included).
    pub bytes_per_delivery: f64,
    /// Rebroadcasts by senders (unacknowledged messages, filter resends).
    pub resends: u64,
    /// Member restarts from their stores.
    pub restarts: u64,
    /// SDS-R repair rebroadcasts.
    pub repairs: u64,
    /// SDS-R repair requests carried by new messages and syncs.
    pub repair_requests: u64,
    /// Periodic syncs.
    pub syncs: u64,
}

/// Delivered and open pairs over virtual time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Virtual milliseconds the run covered.
    pub span_ms: u64,
    /// Samples in time order: at most about 400, at least a second apart.
    pub samples: Vec<Sample>,
}

/// The state of the group at one virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Virtual milliseconds since the start.
    pub at_ms: u64,
    /// (message, member) pairs delivered so far, senders included.
    pub delivered_pairs: u64,
    /// (message, member) pairs not (yet) delivered among the messages sent so far.
    pub open_gaps: u64,
    /// Messages sent up to `at_ms`.
    pub sent_so_far: usize,
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).copied()
}

/// Sorts `v` and summarizes it against a requirement in multiples of `s_ms`.
fn latency(v: &mut [f64], requirement: Option<f64>, s_ms: f64) -> Latency {
    v.sort_by(f64::total_cmp);
    let within = requirement.map(|r| {
        let ok = v.iter().filter(|x| **x <= r * s_ms).count();
        ok as f64 / v.len().max(1) as f64
    });
    Latency {
        count: v.len(),
        median_ms: percentile(v, 50.0),
        p90_ms: percentile(v, 90.0),
        p99_ms: percentile(v, 99.0),
        median_send_intervals: percentile(v, 50.0).map(|x| x / s_ms),
        p90_send_intervals: percentile(v, 90.0).map(|x| x / s_ms),
        p99_send_intervals: percentile(v, 99.0).map(|x| x / s_ms),
        requirement_send_intervals: requirement,
        fraction_within_requirement: within,
    }
}

impl Report {
    /// Summarizes a finished run of `scenario` (its history resolved); `effects`, measured when
    /// the scenario has hostile members, make the honest section.
    pub(crate) fn new(
        scenario: &Scenario,
        messages: &[MessageStats],
        counters: &Counters,
        timeline: Timeline,
        effects: Option<Effects>,
    ) -> Report {
        let n = scenario.participants;
        let s_ms = scenario.send_interval * 1000.0;
        let all = Outcomes::new(messages, &vec![true; n], s_ms);
        let honest = effects.map(|effects| {
            let within: Vec<bool> = (0..n).map(|p| scenario.role(p) == Role::Honest).collect();
            Honest {
                members: n - scenario.hostile_members(),
                outcomes: Outcomes::new(messages, &within, s_ms),
                effects,
            }
        });
        let (delivered, sent) = (all.deliveries, all.messages_sent);
        let net = &scenario.network;
        Report {
            parameters: Parameters {
                participants: n,
                send_interval_s: scenario.send_interval,
                duration_s: scenario.duration,
                message_limit: scenario.messages,
                tail_s: scenario.tail,
                loss: net.loss,
                latency_ms: [net.latency_min, net.latency_max],
                burst_every_s: net.burst_every,
                churn_online_s: scenario.churn_online,
                repair: scenario.repair,
                profile: scenario.profile.name(),
                repair_t_min_s: scenario.repair_t_min,
                repair_t_max_s: scenario.repair_t_max,
                history: scenario.history,
                seed: scenario.seed,
                lost_timeout_s: scenario.lost_timeout,
            },
            messages_sent: all.messages_sent,
            deliveries: all.deliveries,
            expected_deliveries: all.expected_deliveries,
            completeness: all.completeness,
            messages_everywhere: all.messages_everywhere,
            acknowledgement: all.acknowledgement,
            missed_on_first_broadcast: all.missed_on_first_broadcast,
            missing_detection: all.missing_detection,
            eventual_consistency: all.eventual_consistency,
            wire: Wire {
                transmissions: counters.transmissions,
                bytes: counters.bytes,
                bytes_per_delivery: counters.bytes as f64 / (delivered + sent).max(1) as f64,
                resends: counters.resends,
                restarts: counters.restarts,
                repairs: counters.repairs,
                repair_requests: counters.repair_requests,
                syncs: counters.syncs,
            },
            retrieval: scenario
                .retrieval
                .as_ref()
                .map(|settings| counters.retrieval.stats(settings)),
            honest,
            timeline,
        }
    }
}
