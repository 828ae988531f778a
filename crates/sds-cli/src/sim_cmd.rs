//! `sds sim`: a deterministic discrete-event simulation of one SDS channel shared by many
//! participants, in virtual time, over the sans-IO engine.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sds::persistence::Persistence;
use sds_proto::engine::{Channel, Config, Event, ReceivedKind, TransmitKind};
use sds_proto::wire::Profile;
use sds_proto::{Bytes, MessageId};
use sds_sqlite::SqliteStore;
use serde_json::{json, Value};

use crate::rng::Rng;
use crate::CmdResult;

/// Options of `sds sim`.
#[derive(Args, Clone, Debug)]
pub(crate) struct SimArgs {
    /// Participants in the channel.
    #[arg(long, default_value_t = 50)]
    participants: usize,
    /// Mean seconds between two messages of one participant (S).
    #[arg(long, default_value_t = 10.0)]
    send_interval: f64,
    /// Virtual seconds during which participants send.
    #[arg(long, default_value_t = 600.0)]
    duration: f64,
    /// Keep only the earliest this many sends of the whole group (0: no limit; the duration
    /// still applies). A member offline at its send time skips that send.
    #[arg(long, default_value_t = 0)]
    messages: usize,
    /// Virtual seconds simulated after the sending period (--duration), for repairs to finish
    /// (default: twice the repair window T_max).
    #[arg(long, default_value_t = 600.0)]
    tail: f64,
    /// SDS-R T_min: seconds before a missing message may be requested (spec: at least 30).
    #[arg(long, default_value_t = 30.0)]
    repair_t_min: f64,
    /// SDS-R T_max: the repair window in seconds (spec: 120 to 600).
    #[arg(long, default_value_t = 300.0)]
    repair_t_max: f64,
    /// Probability that a copy is lost on its way to one receiver.
    #[arg(long, default_value_t = 0.2)]
    loss: f64,
    /// Smallest one-way latency, in milliseconds.
    #[arg(long, default_value_t = 50)]
    latency_min: u64,
    /// Largest one-way latency, in milliseconds.
    #[arg(long, default_value_t = 500)]
    latency_max: u64,
    /// Every this many virtual seconds, a burst of heavier loss (0: none).
    #[arg(long, default_value_t = 0.0)]
    burst_every: f64,
    /// Length of a loss burst, in virtual seconds.
    #[arg(long, default_value_t = 5.0)]
    burst_length: f64,
    /// Loss probability during a burst.
    #[arg(long, default_value_t = 0.8)]
    burst_loss: f64,
    /// Mean virtual seconds a participant stays online before going offline (0: never
    /// offline).
    #[arg(long, default_value_t = 0.0)]
    churn_online: f64,
    /// Mean virtual seconds a participant stays offline.
    #[arg(long, default_value_t = 30.0)]
    churn_offline: f64,
    /// Log entries each member keeps (0: enough for the group's traffic over two repair
    /// windows, between 1,000 and 10,000 — a message can only be repaired while someone still
    /// logs it).
    #[arg(long, default_value_t = 0)]
    history: usize,
    /// Turn repair off: SDS-R and the rebroadcasts prompted by members' filters.
    #[arg(long)]
    no_repair: bool,
    /// Do not rebroadcast a recent message when a member's bloom filter shows it lacks it (then a
    /// lost message nobody cites any more can stay undetected).
    #[arg(long)]
    no_filter_resend: bool,
    /// Every member sends every periodic sync, even when the channel is busy (default: only
    /// after a quiet sync interval, or with a repair request due).
    #[arg(long)]
    all_syncs: bool,
    /// Wire profile of every member: `nim-sds` or `spec` (@waku/sds layout, filter and SDS-R
    /// arithmetic).
    #[arg(long, default_value = "nim-sds")]
    profile: Profile,
    /// Seed of every random choice: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Also draw delivered fraction and open gaps over virtual time into this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Persist every member's state in SQLite files in this directory (`sqlite:DIR`); every
    /// operation is committed as it happens.
    #[arg(long)]
    store: Option<String>,
    /// Mean virtual seconds between restarts of a member, which then comes back from its store
    /// (needs --store; 0: no restarts).
    #[arg(long, default_value_t = 0.0)]
    restart_rate: f64,
    /// Threads that run members in parallel (0: one per core, used for busy windows only; 1 with
    /// --store). The report does not depend on it.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

const T0: u64 = 1_700_000_000_000;

/// Something that happens to one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Own {
    Send,
    Timer,
    Offline,
    Online,
    Restart,
}

/// An entry of the global event queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// An event of one member.
    Member(usize, Own),
    /// The next deliveries of the broadcast in this flight slot.
    Flight(usize),
}

/// One broadcast on its way: the receivers that will get a copy, soonest first. The queue holds
/// one entry per flight (its next delivery), not one per copy.
struct Flight {
    bytes: Bytes,
    /// (arrival time, receiver), sorted.
    arrivals: Vec<(u64, usize)>,
    next: usize,
    /// The message, when this is its first broadcast (a copy that finds its receiver offline
    /// counts as missed).
    original: Option<usize>,
}

/// A virtual time as milliseconds since the start of the run, in 4 bytes: per-(member,
/// message) records are the bulk of the simulator's own memory.
type Stamp = u32;
/// No time (not delivered, not detected).
const NEVER: Stamp = Stamp::MAX;

fn stamp(t: u64) -> Stamp {
    Stamp::try_from(t - T0).unwrap_or(NEVER - 1)
}

fn unstamp(s: Stamp) -> Option<u64> {
    (s != NEVER).then(|| T0 + u64::from(s))
}

/// Members' stores, when the simulation persists state.
struct Stores {
    rt: tokio::runtime::Runtime,
    stores: Vec<SqliteStore>,
}

/// Everything measured about one message.
struct MessageStats {
    sender: usize,
    sent_at: u64,
    /// First acknowledgement signal at the sender (acknowledged or possibly acknowledged).
    acked_at: Option<u64>,
    /// Delivery time per member (the sender counts as delivered at send time).
    delivered: Vec<Stamp>,
    /// Members that lost the original broadcast.
    missed: Vec<bool>,
    /// When each member first learned it was missing (a missing-dependency report) or got it
    /// (delivered, or received and waiting for its own dependencies).
    detected: Vec<Stamp>,
}

#[derive(Default)]
struct Counters {
    transmissions: u64,
    bytes: u64,
    resends: u64,
    repairs: u64,
    syncs: u64,
    /// SDS-R repair requests carried by new messages and syncs (resends repeat theirs).
    repair_requests: u64,
    irretrievably_lost: u64,
    restarts: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.transmissions += o.transmissions;
        self.bytes += o.bytes;
        self.resends += o.resends;
        self.repairs += o.repairs;
        self.syncs += o.syncs;
        self.repair_requests += o.repair_requests;
        self.irretrievably_lost += o.irretrievably_lost;
        self.restarts += o.restarts;
    }
}

/// The SDS-R repair requests a message we sent carries.
fn repair_requests_in(bytes: &Bytes, config: &Config) -> u64 {
    match sds_proto::engine::decode(bytes, config) {
        Ok(sds_proto::engine::Received::Message(m)) => m.repair_request.len() as u64,
        _ => 0,
    }
}

/// One participant: its engine and everything random or scheduled about it. Each member draws
/// from its own generators, so a run does not depend on how members are spread over threads.
struct Member {
    ch: Channel,
    rng: Rng,
    online: bool,
    /// Earliest pending timer event.
    timer_at: Option<u64>,
    /// Remaining send times, soonest last.
    sends: Vec<u64>,
    /// Messages sent so far (the suffix of the next id).
    sent: u64,
    /// Numbers this member's outputs: with the member index it orders them independently of
    /// threads.
    counter: u64,
}

/// Work for one member within a window.
enum Work {
    Deliver {
        bytes: Bytes,
        original: Option<usize>,
    },
    Own(Own),
}

struct Item {
    at: u64,
    key: u64,
    member: usize,
    work: Work,
}

/// A message sent during a window; it gets its index when the window is merged.
struct NewMessage {
    at: u64,
    sender: usize,
    /// The sender's message number.
    number: u64,
    id: MessageId,
    /// Receivers whose copy of the first broadcast was lost.
    missed: Vec<usize>,
}

/// A broadcast made during a window.
struct NewFlight {
    at: u64,
    member: usize,
    counter: u64,
    bytes: Bytes,
    arrivals: Vec<(u64, usize)>,
    /// (sender, message number) when this is a message's first broadcast.
    original: Option<(usize, u64)>,
}

enum Record {
    Delivered(usize, usize, u64),
    Detected(usize, usize, u64),
    Acked(usize, u64),
    /// An acknowledgement of a message sent in the same window (possible through a bloom
    /// filter's false positive): (sender, message number, time).
    AckedNew(usize, u64, u64),
    Missed(usize, usize),
}

/// What a group of members produced during one window, applied after it.
#[derive(Default)]
struct Outcome {
    /// (time, member, member counter, event) for later windows.
    later: Vec<(u64, usize, u64, Own)>,
    flights: Vec<NewFlight>,
    sends: Vec<NewMessage>,
    records: Vec<Record>,
    counters: Counters,
    error: Option<String>,
}

/// Read-only during a window.
struct Ctx<'a> {
    args: &'a SimArgs,
    config: &'a Config,
    index: &'a HashMap<MessageId, usize>,
    stores: Option<&'a Stores>,
    window_end: u64,
}

impl Ctx<'_> {
    fn loss_at(&self, t: u64) -> f64 {
        let a = self.args;
        if a.burst_every > 0.0 {
            let period = (a.burst_every * 1000.0) as u64;
            let length = (a.burst_length * 1000.0) as u64;
            if period > 0 && (t - T0) % period < length {
                return a.burst_loss;
            }
        }
        a.loss
    }
}

/// With the thread count left automatic, windows with fewer items than this run on one thread:
/// starting threads would cost more.
const PARALLEL_WORK: usize = 512;

/// In-window events generated during the window sort after the items handed in at the same
/// time.
const LOCAL_KEY: u64 = 1 << 62;

/// Processes one group of members (`members[i]` is member `first + i`) through a window.
struct Part<'a, 'c> {
    members: &'a mut [Member],
    first: usize,
    ctx: &'a Ctx<'c>,
    slots: Vec<Option<Item>>,
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    out: Outcome,
}

impl<'a, 'c> Part<'a, 'c> {
    fn run(members: &'a mut [Member], first: usize, items: Vec<Item>, ctx: &'a Ctx<'c>) -> Outcome {
        let heap = items
            .iter()
            .enumerate()
            .map(|(i, it)| Reverse((it.at, it.key, i)))
            .collect();
        let mut part = Part {
            members,
            first,
            ctx,
            slots: items.into_iter().map(Some).collect(),
            heap,
            out: Outcome::default(),
        };
        while let Some(Reverse((at, _, i))) = part.heap.pop() {
            let Some(item) = part.slots.get_mut(i).and_then(Option::take) else {
                continue;
            };
            if let Err(e) = part.step(item.member, at, item.work) {
                part.out.error = Some(e);
                break;
            }
        }
        part.out
    }

    fn member(&mut self, p: usize) -> &mut Member {
        &mut self.members[p - self.first]
    }

    fn schedule(&mut self, p: usize, at: u64, ev: Own) {
        let window_end = self.ctx.window_end;
        let m = self.member(p);
        let counter = m.counter;
        m.counter += 1;
        if at < window_end {
            self.slots.push(Some(Item {
                at,
                key: LOCAL_KEY + counter,
                member: p,
                work: Work::Own(ev),
            }));
            self.heap
                .push(Reverse((at, LOCAL_KEY + counter, self.slots.len() - 1)));
        } else {
            self.out.later.push((at, p, counter, ev));
        }
    }

    /// Makes sure a timer event is queued no later than the member's next deadline.
    fn schedule_timer(&mut self, p: usize, now: u64) {
        let m = self.member(p);
        if let Some(t) = m.ch.poll_timeout() {
            let t = t.max(now);
            if m.timer_at.is_none_or(|s| t < s) {
                m.timer_at = Some(t);
                self.schedule(p, t, Own::Timer);
            }
        }
    }

    fn step(&mut self, p: usize, t: u64, work: Work) -> Result<(), String> {
        let args = self.ctx.args;
        match work {
            Work::Deliver { bytes, original } => {
                if !self.member(p).online {
                    if let Some(m) = original {
                        self.out.records.push(Record::Missed(m, p));
                    }
                    return Ok(());
                }
                // Every copy on this network is well formed; one the engine refuses (for
                // example a full incoming buffer) is simply dropped, as a real peer would.
                let got = self.member(p).ch.unwrap(bytes, t);
                // A copy that must wait is in the member's hands: no longer to be detected.
                if let Ok(r) = got {
                    if r.kind == ReceivedKind::Buffered {
                        if let Some(&i) = self.ctx.index.get(&r.message_id) {
                            self.out.records.push(Record::Detected(i, p, t));
                        }
                    }
                }
                self.drain(p, t)
            }
            Work::Own(Own::Send) => {
                let m = self.member(p);
                m.sends.pop();
                let next = m.sends.last().copied();
                if let Some(next) = next {
                    self.schedule(p, next, Own::Send);
                }
                let m = self.member(p);
                if !m.online {
                    return Ok(());
                }
                let number = m.sent;
                m.sent += 1;
                let id = MessageId::from(format!("p{p:04}-{number}"));
                let content = Bytes::from(format!("message {number} from p{p:04}"));
                let bytes =
                    m.ch.wrap(content, id.clone(), t)
                        .map_err(|e| format!("p{p:04} cannot send: {e}"))?;
                self.out.counters.repair_requests += repair_requests_in(&bytes, self.ctx.config);
                let missed = self.broadcast(p, &bytes, t, Some(number));
                self.out.sends.push(NewMessage {
                    at: t,
                    sender: p,
                    number,
                    id,
                    missed,
                });
                self.drain(p, t)
            }
            Work::Own(Own::Timer) => {
                let m = self.member(p);
                if m.timer_at != Some(t) {
                    return Ok(()); // superseded by an earlier one
                }
                m.timer_at = None;
                if !m.online {
                    return Ok(());
                }
                if m.ch.poll_timeout().is_some_and(|d| d <= t) {
                    m.ch.handle_timeout(t);
                    self.drain(p, t)
                } else {
                    self.schedule_timer(p, t);
                    Ok(())
                }
            }
            Work::Own(Own::Offline) => {
                let m = self.member(p);
                m.online = false;
                let back = (m.rng.exp(args.churn_offline) * 1000.0) as u64;
                self.schedule(p, t + back.max(1), Own::Online);
                Ok(())
            }
            Work::Own(Own::Online) => {
                let m = self.member(p);
                m.online = true;
                m.ch.handle_timeout(t);
                let stay = (m.rng.exp(args.churn_online) * 1000.0) as u64;
                self.drain(p, t)?;
                self.schedule(p, t + stay.max(1), Own::Offline);
                Ok(())
            }
            Work::Own(Own::Restart) => {
                self.restart(p, t)?;
                let m = self.member(p);
                let next = (m.rng.exp(args.restart_rate) * 1000.0) as u64;
                self.schedule(p, t + next.max(1), Own::Restart);
                Ok(())
            }
        }
    }

    /// Broadcasts bytes from `from` to every other member, each copy lost independently;
    /// returns the receivers that lost it.
    fn broadcast(
        &mut self,
        from: usize,
        bytes: &Bytes,
        now: u64,
        original: Option<u64>,
    ) -> Vec<usize> {
        self.out.counters.transmissions += 1;
        self.out.counters.bytes += bytes.len() as u64;
        let loss = self.ctx.loss_at(now);
        let (lo, hi) = (self.ctx.args.latency_min, self.ctx.args.latency_max);
        let n = self.ctx.args.participants;
        let m = self.member(from);
        let mut arrivals = Vec::with_capacity(n);
        let mut lost = Vec::new();
        for to in 0..n {
            if to == from {
                continue;
            }
            if m.rng.unit() < loss {
                lost.push(to);
                continue;
            }
            arrivals.push((now + m.rng.range(lo, hi), to));
        }
        arrivals.sort_unstable();
        let counter = m.counter;
        m.counter += 1;
        self.out.flights.push(NewFlight {
            at: now,
            member: from,
            counter,
            bytes: bytes.clone(),
            arrivals,
            original: original.map(|k| (from, k)),
        });
        lost
    }

    /// Drains one member's outputs after an input at `now`: its store batch is committed first.
    fn drain(&mut self, p: usize, now: u64) -> Result<(), String> {
        let ctx = self.ctx;
        let m = &mut self.members[p - self.first];
        let ops = m.ch.take_store_ops();
        if let Some(st) = ctx.stores {
            if !ops.is_empty() {
                let channel = m.ch.channel_id().clone();
                st.rt
                    .block_on(st.stores[p].apply_batch(&channel, &ops))
                    .map_err(|e| format!("p{p:04}: store failed: {e}"))?;
            }
        }
        while let Some(e) = m.ch.poll_event() {
            let record = match e {
                Event::MessageReady { message_id, .. } => ctx
                    .index
                    .get(&message_id)
                    .map(|&i| Record::Delivered(i, p, now)),
                Event::Acknowledged { message_id, .. }
                | Event::PossiblyAcknowledged { message_id, .. } => {
                    match ctx.index.get(&message_id) {
                        Some(&i) => Some(Record::Acked(i, now)),
                        None => self
                            .out
                            .sends
                            .iter()
                            .find(|s| s.id == message_id)
                            .map(|s| Record::AckedNew(s.sender, s.number, now)),
                    }
                }
                Event::MissingDependencies { missing, .. }
                | Event::MissingMessages { missing, .. } => {
                    for e in missing {
                        if let Some(&i) = ctx.index.get(&e.message_id) {
                            self.out.records.push(Record::Detected(i, p, now));
                        }
                    }
                    None
                }
                Event::IrretrievablyLost { .. } => {
                    self.out.counters.irretrievably_lost += 1;
                    None
                }
                _ => None,
            };
            self.out.records.extend(record);
        }
        let mut transmits = Vec::new();
        while let Some(t) = m.ch.poll_transmit() {
            transmits.push(t);
        }
        for t in transmits {
            let c = &mut self.out.counters;
            match t.kind {
                TransmitKind::Resend => c.resends += 1,
                TransmitKind::Repair => c.repairs += 1,
                TransmitKind::Sync => {
                    c.syncs += 1;
                    c.repair_requests += repair_requests_in(&t.bytes, ctx.config);
                }
            }
            self.broadcast(p, &t.bytes, now, None);
        }
        self.schedule_timer(p, now);
        Ok(())
    }

    /// Restarts a member from its store: everything in memory is dropped and rebuilt.
    fn restart(&mut self, p: usize, now: u64) -> Result<(), String> {
        let Some(st) = self.ctx.stores else {
            return Ok(());
        };
        let config = self.ctx.config.clone();
        let m = self.member(p);
        let channel = m.ch.channel_id().clone();
        let participant = m.ch.participant_id().clone();
        let snapshot = st
            .rt
            .block_on(st.stores[p].load_channel(&channel))
            .map_err(|e| format!("p{p:04}: cannot load: {e}"))?;
        let sync_interval = config.sync_interval;
        let mut ch = Channel::restore(channel, participant, config, snapshot, now)
            .map_err(|e| e.to_string())?;
        ch.schedule_sync_at(Some(now + m.rng.range(0, sync_interval)));
        m.ch = ch;
        self.out.counters.restarts += 1;
        self.drain(p, now)
    }
}

struct Sim {
    args: SimArgs,
    members: Vec<Member>,
    threads: usize,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    next_event: u64,
    flights: Vec<Option<Flight>>,
    free_flights: Vec<usize>,
    messages: Vec<MessageStats>,
    index: HashMap<MessageId, usize>,
    counters: Counters,
    /// (virtual ms, delivered pairs, open gaps) samples for the plot.
    samples: Vec<(u64, u64, u64)>,
    delivered_pairs: u64,
    end: u64,
    config: Config,
    stores: Option<Stores>,
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).copied()
}

/// The generator of one member's stream `stream` (0: its sends, 1: everything else).
fn member_rng(seed: u64, p: usize, stream: u64) -> Rng {
    let mut mix = Rng(seed
        ^ (p as u64).wrapping_mul(0xa076_1d64_78bd_642f)
        ^ stream.wrapping_mul(0xe703_7ed1_a0b4_28db));
    Rng(mix.next())
}

impl Sim {
    fn new(args: SimArgs) -> Result<Self, String> {
        if args.participants < 2 {
            return Err("a simulation needs at least 2 participants".into());
        }
        if !(0.0..=1.0).contains(&args.loss) || !(0.0..=1.0).contains(&args.burst_loss) {
            return Err("loss probabilities must be between 0 and 1".into());
        }
        if args.send_interval <= 0.0 || args.duration <= 0.0 || args.tail < 0.0 {
            return Err("send interval and duration must be positive, tail not negative".into());
        }
        if args.latency_min > args.latency_max {
            return Err("latency-min must not exceed latency-max".into());
        }
        if args.latency_min == 0 {
            return Err("latency-min must be at least 1 ms".into());
        }
        if args.duration + args.tail > 40.0 * 86_400.0 {
            return Err("duration and tail together must stay under 40 days".into());
        }
        if args.repair_t_min < 0.0 || args.repair_t_max < args.repair_t_min {
            return Err("repair-t-max must be at least repair-t-min, both not negative".into());
        }
        let history = if args.history > 0 {
            args.history
        } else {
            let group_rate = args.participants as f64 / args.send_interval;
            ((group_rate * args.repair_t_max * 2.0).ceil() as usize).clamp(1_000, 10_000)
        };
        let config = Config {
            // Members never give up on a gap here: the report shows what repair achieves.
            lost_dependency_timeout: None,
            max_message_history: history,
            max_known_ids: history.max(10_000),
            repair_t_min: (args.repair_t_min * 1000.0) as u64,
            repair_t_max: (args.repair_t_max * 1000.0) as u64,
            // The spec's recommendation: one response group per 128 participants.
            num_response_groups: (args.participants / 128 + 1) as u32,
            quiet_sync: !args.all_syncs,
            // Long enough for the message to have reached a member before its next message.
            filter_resend_after: (!args.no_filter_resend && !args.no_repair)
                .then_some((2 * args.latency_max).max(1_000)),
            // In a large group nearly every rebroadcast misses someone: allow a few more rounds.
            max_resend_attempts: 10,
            profile: args.profile,
            ..Config::default()
        };
        let end_of_sends = T0 + (args.duration * 1000.0) as u64;
        let end = end_of_sends + (args.tail * 1000.0) as u64;

        // Every member's send times, fixed in advance from its own generator; a message limit
        // keeps the earliest ones overall.
        let mut schedule: Vec<(u64, usize)> = Vec::new();
        for p in 0..args.participants {
            let mut rng = member_rng(args.seed, p, 0);
            let mut t = T0;
            loop {
                t += ((rng.exp(args.send_interval) * 1000.0) as u64).max(1);
                if t >= end_of_sends {
                    break;
                }
                schedule.push((t, p));
            }
        }
        if args.messages > 0 {
            schedule.sort_unstable();
            schedule.truncate(args.messages);
        }
        let mut sends: Vec<Vec<u64>> = vec![Vec::new(); args.participants];
        for &(t, p) in &schedule {
            sends[p].push(t);
        }

        let mut members = Vec::with_capacity(args.participants);
        for (p, mut sends) in sends.into_iter().enumerate() {
            let id = if args.no_repair {
                String::new()
            } else {
                format!("p{p:04}")
            };
            let mut ch = Channel::new("sim".into(), id.into(), config.clone(), T0)
                .map_err(|e| e.to_string())?;
            let mut rng = member_rng(args.seed, p, 1);
            // Stagger the periodic syncs.
            ch.schedule_sync_at(Some(T0 + rng.range(0, config.sync_interval)));
            sends.sort_unstable_by(|a, b| b.cmp(a));
            members.push(Member {
                ch,
                rng,
                online: true,
                timer_at: None,
                sends,
                sent: 0,
                counter: 0,
            });
        }
        let stores = match args.store.as_deref() {
            None => None,
            Some(spec) => {
                let dir = spec
                    .strip_prefix("sqlite:")
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| format!("unknown store {spec:?} (expected sqlite:DIR)"))?;
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
                let mut stores = Vec::with_capacity(args.participants);
                for p in 0..args.participants {
                    let file = std::path::Path::new(dir).join(format!("p{p:04}.db"));
                    sds_sqlite::remove_database(&file)
                        .map_err(|e| format!("cannot remove {}: {e}", file.display()))?;
                    stores.push(SqliteStore::open(&file).map_err(|e| e.to_string())?);
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                Some(Stores { rt, stores })
            }
        };
        if args.restart_rate > 0.0 && stores.is_none() {
            return Err("--restart-rate needs --store sqlite:DIR to restart from".into());
        }
        let threads = if stores.is_some() {
            // The stores are driven from one runtime.
            1
        } else if args.threads > 0 {
            args.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
        .clamp(1, args.participants);
        let mut args = args;
        args.history = history;
        let mut sim = Sim {
            args,
            members,
            threads,
            queue: BinaryHeap::new(),
            next_event: 0,
            flights: Vec::new(),
            free_flights: Vec::new(),
            messages: Vec::new(),
            index: HashMap::new(),
            counters: Counters::default(),
            samples: Vec::new(),
            delivered_pairs: 0,
            end,
            config,
            stores,
        };
        for p in 0..sim.args.participants {
            if let Some(&first) = sim.members[p].sends.last() {
                sim.push(first, Ev::Member(p, Own::Send));
            }
            if let Some(t) = sim.members[p].ch.poll_timeout() {
                sim.members[p].timer_at = Some(t);
                sim.push(t, Ev::Member(p, Own::Timer));
            }
            if sim.args.restart_rate > 0.0 {
                let at = (sim.members[p].rng.exp(sim.args.restart_rate) * 1000.0) as u64;
                sim.push(T0 + at, Ev::Member(p, Own::Restart));
            }
            if sim.args.churn_online > 0.0 {
                let at = (sim.members[p].rng.exp(sim.args.churn_online) * 1000.0) as u64;
                sim.push(T0 + at, Ev::Member(p, Own::Offline));
            }
        }
        Ok(sim)
    }

    fn push(&mut self, at: u64, ev: Ev) {
        let id = self.next_event;
        self.next_event += 1;
        self.queue.push(Reverse((at, id, ev)));
    }

    fn add_flight(&mut self, flight: Flight) {
        let Some(&(first, _)) = flight.arrivals.first() else {
            return;
        };
        let slot = match self.free_flights.pop() {
            Some(i) => {
                self.flights[i] = Some(flight);
                i
            }
            None => {
                self.flights.push(Some(flight));
                self.flights.len() - 1
            }
        };
        self.push(first, Ev::Flight(slot));
    }

    /// Takes every event before `window_end` off the queue, as work for the member groups.
    fn take_window(&mut self, window_end: u64, chunk: usize) -> Vec<Vec<Item>> {
        let mut items: Vec<Vec<Item>> = (0..self.threads).map(|_| Vec::new()).collect();
        let mut key = 0u64;
        while let Some(&Reverse((at, _, ev))) = self.queue.peek() {
            if at >= window_end {
                break;
            }
            self.queue.pop();
            match ev {
                Ev::Member(p, own) => {
                    items[p / chunk].push(Item {
                        at,
                        key,
                        member: p,
                        work: Work::Own(own),
                    });
                    key += 1;
                }
                Ev::Flight(slot) => {
                    let Some(f) = self.flights.get_mut(slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    while let Some(&(t, to)) = f.arrivals.get(f.next) {
                        if t >= window_end {
                            break;
                        }
                        f.next += 1;
                        items[to / chunk].push(Item {
                            at: t,
                            key,
                            member: to,
                            work: Work::Deliver {
                                bytes: f.bytes.clone(),
                                original: f.original,
                            },
                        });
                        key += 1;
                    }
                    match f.arrivals.get(f.next) {
                        Some(&(t, _)) => self.push(t, Ev::Flight(slot)),
                        None => {
                            self.flights[slot] = None;
                            self.free_flights.push(slot);
                        }
                    }
                }
            }
        }
        items
    }

    /// Keeps the earliest acknowledgement of message `m`.
    fn acked(&mut self, m: usize, at: u64) {
        let a = &mut self.messages[m].acked_at;
        *a = Some(a.map_or(at, |x| x.min(at)));
    }

    /// Applies what the member groups produced, in an order that does not depend on them.
    fn merge(&mut self, outcomes: Vec<Outcome>) -> Result<(), String> {
        let n = self.args.participants;
        let mut sends = Vec::new();
        let mut flights = Vec::new();
        let mut later = Vec::new();
        let mut records = Vec::new();
        for o in outcomes {
            if let Some(e) = o.error {
                return Err(e);
            }
            self.counters.add(&o.counters);
            sends.extend(o.sends);
            flights.extend(o.flights);
            later.extend(o.later);
            records.push(o.records);
        }
        sends.sort_unstable_by_key(|s| (s.at, s.sender, s.number));
        let mut numbered: HashMap<(usize, u64), usize> = HashMap::new();
        for s in sends {
            let m = self.messages.len();
            let mut delivered = vec![NEVER; n];
            delivered[s.sender] = stamp(s.at);
            let mut missed = vec![false; n];
            for q in s.missed {
                missed[q] = true;
            }
            self.delivered_pairs += 1;
            self.messages.push(MessageStats {
                sender: s.sender,
                sent_at: s.at,
                acked_at: None,
                delivered,
                missed,
                detected: vec![NEVER; n],
            });
            self.index.insert(s.id, m);
            numbered.insert((s.sender, s.number), m);
        }
        for r in records.into_iter().flatten() {
            match r {
                Record::Delivered(m, p, at) => {
                    let stats = &mut self.messages[m];
                    if stats.delivered[p] == NEVER {
                        stats.delivered[p] = stamp(at);
                        self.delivered_pairs += 1;
                    }
                    if stats.detected[p] == NEVER {
                        stats.detected[p] = stamp(at);
                    }
                }
                Record::Detected(m, p, at) => {
                    let d = &mut self.messages[m].detected[p];
                    if *d == NEVER {
                        *d = stamp(at);
                    }
                }
                Record::Acked(m, at) => self.acked(m, at),
                Record::AckedNew(sender, number, at) => {
                    if let Some(&m) = numbered.get(&(sender, number)) {
                        self.acked(m, at);
                    }
                }
                Record::Missed(m, p) => self.messages[m].missed[p] = true,
            }
        }
        // Queue order for what comes next: by time, then member and member counter.
        enum Next {
            Own(Own),
            Flight(Flight),
        }
        let mut next: Vec<(u64, usize, u64, Next)> = later
            .into_iter()
            .map(|(at, p, c, ev)| (at, p, c, Next::Own(ev)))
            .collect();
        for f in flights {
            let original = f.original.and_then(|k| numbered.get(&k).copied());
            let first = f.arrivals.first().map_or(f.at, |&(t, _)| t);
            next.push((
                first,
                f.member,
                f.counter,
                Next::Flight(Flight {
                    bytes: f.bytes,
                    arrivals: f.arrivals,
                    next: 0,
                    original,
                }),
            ));
        }
        next.sort_unstable_by_key(|&(at, p, c, _)| (at, p, c));
        for (at, p, _, ev) in next {
            match ev {
                Next::Own(own) => self.push(at, Ev::Member(p, own)),
                Next::Flight(f) => self.add_flight(f),
            }
        }
        Ok(())
    }

    fn run(&mut self, progress: &ProgressBar) -> Result<(), String> {
        let sample_every = 1_000u64.max((self.end - T0) / 400);
        let mut next_sample = T0;
        let mut last_progress = T0;
        // No copy arrives sooner than the smallest latency after it was sent: members cannot
        // affect one another within such a window, so groups of them run it in parallel.
        let window = self.args.latency_min.max(1);
        let chunk = self.args.participants.div_ceil(self.threads);
        while let Some(&Reverse((start, _, _))) = self.queue.peek() {
            if start > self.end {
                break;
            }
            while next_sample <= start {
                self.sample(next_sample);
                next_sample += sample_every;
            }
            if start - last_progress >= 1_000 {
                progress.set_position((start - T0) / 1_000);
                last_progress = start;
            }
            let window_end = (start + window).min(self.end + 1);
            let mut items = self.take_window(window_end, chunk);
            let ctx = Ctx {
                args: &self.args,
                config: &self.config,
                index: &self.index,
                stores: self.stores.as_ref(),
                window_end,
            };
            let work: usize = items.iter().map(Vec::len).sum();
            let outcomes: Vec<Outcome> = if self.threads == 1 {
                vec![Part::run(
                    &mut self.members,
                    0,
                    items.pop().unwrap_or_default(),
                    &ctx,
                )]
            } else if self.args.threads == 0 && work < PARALLEL_WORK {
                // Not worth a thread: the groups run one after the other (same result).
                self.members
                    .chunks_mut(chunk)
                    .zip(items)
                    .enumerate()
                    .map(|(i, (members, items))| Part::run(members, i * chunk, items, &ctx))
                    .collect()
            } else {
                std::thread::scope(|s| {
                    let mut groups = self.members.chunks_mut(chunk).zip(items).enumerate();
                    // The first group runs here, the others on their own threads.
                    let here = groups.next();
                    let handles: Vec<_> = groups
                        .map(|(i, (members, items))| {
                            let ctx = &ctx;
                            s.spawn(move || Part::run(members, i * chunk, items, ctx))
                        })
                        .collect();
                    let mut outcomes = Vec::with_capacity(handles.len() + 1);
                    if let Some((_, (members, items))) = here {
                        outcomes.push(Part::run(members, 0, items, &ctx));
                    }
                    for h in handles {
                        outcomes.push(h.join().unwrap_or_else(|_| Outcome {
                            error: Some("a simulation thread failed".into()),
                            ..Outcome::default()
                        }));
                    }
                    outcomes
                })
            };
            self.merge(outcomes)?;
        }
        self.sample(self.end);
        progress.finish_and_clear();
        Ok(())
    }

    fn sample(&mut self, at: u64) {
        let n = self.args.participants as u64;
        let open = self.messages.len() as u64 * n - self.delivered_pairs;
        self.samples.push((at - T0, self.delivered_pairs, open));
    }

    fn report(&self) -> Value {
        let n = self.args.participants;
        let s_ms = self.args.send_interval * 1000.0;
        let sent = self.messages.len();
        let pairs = sent * (n - 1);
        let delivered: usize = self
            .messages
            .iter()
            .map(|m| {
                m.delivered
                    .iter()
                    .enumerate()
                    .filter(|(q, d)| *q != m.sender && **d != NEVER)
                    .count()
            })
            .sum();
        let mut ack: Vec<f64> = Vec::new();
        let mut never_acked = 0usize;
        let mut detect: Vec<f64> = Vec::new();
        let mut missed_pairs = 0usize;
        let mut undetected = 0usize;
        let mut consistency: Vec<f64> = Vec::new();
        for m in &self.messages {
            match m.acked_at {
                Some(t) => ack.push((t - m.sent_at) as f64),
                None => never_acked += 1,
            }
            for q in 0..n {
                if m.missed[q] {
                    missed_pairs += 1;
                    match unstamp(m.detected[q]) {
                        Some(t) => detect.push((t - m.sent_at) as f64),
                        None => undetected += 1,
                    }
                }
            }
            if m.delivered.iter().all(|d| *d != NEVER) {
                let last = m
                    .delivered
                    .iter()
                    .filter_map(|d| unstamp(*d))
                    .max()
                    .unwrap_or(m.sent_at);
                consistency.push((last - m.sent_at) as f64);
            }
        }
        let stats = |v: &mut Vec<f64>, requirement: Option<f64>| -> Value {
            v.sort_by(f64::total_cmp);
            let within = requirement.map(|r| {
                let ok = v.iter().filter(|x| **x <= r * s_ms).count();
                ok as f64 / v.len().max(1) as f64
            });
            json!({
                "count": v.len(),
                "medianMs": percentile(v, 50.0),
                "p90Ms": percentile(v, 90.0),
                "p99Ms": percentile(v, 99.0),
                "medianS": percentile(v, 50.0).map(|x| x / s_ms),
                "p90S": percentile(v, 90.0).map(|x| x / s_ms),
                "p99S": percentile(v, 99.0).map(|x| x / s_ms),
                "requirementS": requirement,
                "fractionWithinRequirement": within,
            })
        };
        // Detection counts every missed pair; an undetected one never meets the requirement.
        let detection_within = {
            let ok = detect.iter().filter(|x| **x <= 3.0 * s_ms).count();
            ok as f64 / missed_pairs.max(1) as f64
        };
        let consistent_within = {
            let ok = consistency.iter().filter(|x| **x <= 6.0 * s_ms).count();
            ok as f64 / sent.max(1) as f64
        };
        json!({
            "parameters": {
                "participants": n,
                "sendIntervalS": self.args.send_interval,
                "durationS": self.args.duration,
                "messageLimit": self.args.messages,
                "tailS": self.args.tail,
                "loss": self.args.loss,
                "latencyMs": [self.args.latency_min, self.args.latency_max],
                "burstEveryS": self.args.burst_every,
                "churnOnlineS": self.args.churn_online,
                "repair": !self.args.no_repair,
                "profile": self.args.profile.name(),
                "repairTMinS": self.args.repair_t_min,
                "repairTMaxS": self.args.repair_t_max,
                "history": self.args.history,
                "seed": self.args.seed,
            },
            "messagesSent": sent,
            "deliveries": delivered,
            "expectedDeliveries": pairs,
            "completeness": delivered as f64 / pairs.max(1) as f64,
            "messagesEverywhere": consistency.len(),
            "acknowledgement": {
                "neverAcknowledged": never_acked,
                "latency": stats(&mut ack, Some(1.0)),
            },
            "missedOnFirstBroadcast": missed_pairs,
            "missingDetection": {
                "undetected": undetected,
                "latency": stats(&mut detect, Some(3.0)),
                "fractionDetectedWithinRequirement": detection_within,
            },
            "eventualConsistency": {
                "latency": stats(&mut consistency, Some(6.0)),
                "fractionConsistentWithinRequirement": consistent_within,
            },
            "wire": {
                "transmissions": self.counters.transmissions,
                "bytes": self.counters.bytes,
                "bytesPerDelivery": self.counters.bytes as f64 / (delivered + sent).max(1) as f64,
                "resends": self.counters.resends,
                "restarts": self.counters.restarts,
                "repairs": self.counters.repairs,
                "repairRequests": self.counters.repair_requests,
                "syncs": self.counters.syncs,
            },
        })
    }

    fn svg(&self) -> String {
        let (w, h, pad) = (800.0, 360.0, 50.0);
        let total = (self.messages.len() * self.args.participants).max(1) as f64;
        let t_max = (self.end - T0).max(1) as f64;
        let x = |t: u64| pad + (t as f64 / t_max) * (w - 2.0 * pad);
        let y = |v: f64| h - pad - v * (h - 2.0 * pad);
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            out,
            r#"<line x1="{pad}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{}" stroke="black"/>"#,
            h - pad,
            w - pad,
            h - pad,
            h - pad
        );
        let sent_total = self.messages.len().max(1) as f64;
        let mut delivered = String::new();
        let mut gaps = String::new();
        for &(t, d, open) in &self.samples {
            // Delivered fraction of everything sent so far; open gaps relative to all messages.
            let sent_so_far = self
                .messages
                .iter()
                .filter(|m| m.sent_at - T0 <= t)
                .count()
                .max(1) as f64;
            let frac = d as f64 / (sent_so_far * self.args.participants as f64);
            let _ = write!(delivered, "{:.1},{:.1} ", x(t), y(frac.min(1.0)));
            let _ = write!(
                gaps,
                "{:.1},{:.1} ",
                x(t),
                y((open as f64 / total).min(1.0))
            );
        }
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="seagreen" stroke-width="2" points="{delivered}"/>"#
        );
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="crimson" stroke-width="2" points="{gaps}"/>"#
        );
        let _ = writeln!(
            out,
            r#"<text x="{pad}" y="20">delivered fraction of messages sent so far (green); open gaps as a fraction of all (member, message) pairs (red); {} messages</text>"#,
            sent_total
        );
        let _ = writeln!(
            out,
            r#"<text x="{pad}" y="{}">0 s</text><text x="{}" y="{}" text-anchor="end">{:.0} s (virtual)</text><text x="{}" y="{}" text-anchor="end">1</text><text x="{}" y="{}" text-anchor="end">0</text>"#,
            h - pad + 16.0,
            w - pad,
            h - pad + 16.0,
            t_max / 1000.0,
            pad - 6.0,
            pad + 4.0,
            pad - 6.0,
            h - pad + 4.0
        );
        out.push_str("</svg>\n");
        out
    }
}

fn text_report(r: &Value) -> String {
    let mut s = String::new();
    let p = &r["parameters"];
    let f = |v: &Value| {
        v.as_f64()
            .map(|x| format!("{x:.2}"))
            .unwrap_or_else(|| "-".into())
    };
    let pct = |v: &Value| {
        v.as_f64()
            .map(|x| format!("{:.1} %", 100.0 * x))
            .unwrap_or_else(|| "-".into())
    };
    let _ = writeln!(
        s,
        "SDS simulation: {} participants, one message every {} s each for {} s (+{} s tail), loss {} %, latency {}–{} ms, repair {} (T_min {} s, T_max {} s), history {}, seed {}",
        p["participants"],
        p["sendIntervalS"],
        p["durationS"],
        p["tailS"],
        p["loss"].as_f64().unwrap_or(0.0) * 100.0,
        p["latencyMs"][0],
        p["latencyMs"][1],
        if p["repair"] == true { "on" } else { "off" },
        p["repairTMinS"],
        p["repairTMaxS"],
        p["history"],
        p["seed"]
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "  messages sent                 {}", r["messagesSent"]);
    let _ = writeln!(
        s,
        "  deliveries                    {} of {} ({})",
        r["deliveries"],
        r["expectedDeliveries"],
        pct(&r["completeness"])
    );
    let everywhere = r["messagesEverywhere"].as_f64().unwrap_or(0.0);
    let sent = r["messagesSent"].as_f64().unwrap_or(0.0).max(1.0);
    let _ = writeln!(
        s,
        "  messages every member has     {} ({:.1} %)",
        r["messagesEverywhere"],
        100.0 * everywhere / sent
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  requirement (S = {} s)                       median     p90      p99    (in multiples of S)   met by",
        p["sendIntervalS"]
    );
    let row = |name: &str, lat: &Value, met: &Value| {
        format!(
            "  {name:<43} {:>7}  {:>7}  {:>7}                          {}\n",
            f(&lat["medianS"]),
            f(&lat["p90S"]),
            f(&lat["p99S"]),
            pct(met)
        )
    };
    s.push_str(&row(
        "sender sees an acknowledgement within 1·S",
        &r["acknowledgement"]["latency"],
        &r["acknowledgement"]["latency"]["fractionWithinRequirement"],
    ));
    s.push_str(&row(
        "receiver detects a missed message within 3·S",
        &r["missingDetection"]["latency"],
        &r["missingDetection"]["fractionDetectedWithinRequirement"],
    ));
    s.push_str(&row(
        "every member has a message within 6·S",
        &r["eventualConsistency"]["latency"],
        &r["eventualConsistency"]["fractionConsistentWithinRequirement"],
    ));
    let _ = writeln!(s);
    let wire = &r["wire"];
    let _ = writeln!(
        s,
        "  on the wire: {} broadcasts, {:.1} MB, {:.0} bytes per delivery; {} resends, {} repair rebroadcasts, {} syncs, {} repair requests",
        wire["transmissions"],
        wire["bytes"].as_f64().unwrap_or(0.0) / 1e6,
        wire["bytesPerDelivery"].as_f64().unwrap_or(0.0),
        wire["resends"],
        wire["repairs"],
        wire["syncs"],
        wire["repairRequests"]
    );
    let _ = writeln!(
        s,
        "  copies lost on first broadcast: {}; never detected as missing: {}",
        r["missedOnFirstBroadcast"], r["missingDetection"]["undetected"]
    );
    s
}

pub(crate) fn run(args: SimArgs) -> CmdResult {
    let json_out = args.json;
    let plot = args.plot.clone();
    let quiet = args.quiet;
    let mut sim = Sim::new(args)?;
    let progress = if quiet || json_out {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new((sim.end - T0) / 1_000);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} virtual {pos}/{len} s [{bar:40}] {elapsed}")
        {
            bar.set_style(style);
        }
        bar
    };
    sim.run(&progress)?;
    let report = sim.report();
    if let Some(path) = plot {
        std::fs::write(&path, sim.svg())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if json_out {
        println!("{report}");
    } else {
        print!("{}", text_report(&report));
    }
    Ok(ExitCode::SUCCESS)
}
