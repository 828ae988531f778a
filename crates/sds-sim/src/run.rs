//! The discrete-event loop: a global queue of member events and broadcasts in flight, run in
//! windows during which groups of members proceed in parallel.
//!
//! No copy arrives sooner than the smallest latency after it was sent, so within a window of
//! that length members cannot affect one another. Each window's events are handed to groups
//! of members (one per thread), and what the groups produce is merged in an order fixed by
//! (time, member, member's counter), never by thread: the report does not depend on the thread
//! count.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use sds_proto::engine::{Config, Event, ReceivedKind, TransmitKind};
use sds_proto::{Bytes, MessageId};

use crate::adversary::{Adversary, Shot};
use crate::clock::{stamp, NEVER, T0};
use crate::member::{member_rng, send_schedule, Member, Own, CHANNEL};
use crate::report::{Counters, MessageStats, Report, Sample, Timeline};
use crate::retrieval::{self, Retriever};
use crate::scenario::{Hostility, Role, Scenario};
use crate::store::Stores;
use crate::Error;

/// An entry of the global event queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// An event of one member.
    Member(usize, Own),
    /// The next deliveries of the broadcast in this flight slot.
    Flight(usize),
    /// The arrival of the retrieval request or answer in this slot.
    Direct(usize),
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

/// The SDS-R repair requests a message we sent carries.
fn repair_requests_in(bytes: &Bytes, config: &Config) -> u64 {
    match sds_proto::engine::decode(bytes, config) {
        Ok(sds_proto::engine::Received::Message(m)) => m.repair_request.len() as u64,
        _ => 0,
    }
}

/// A retrieval request or answer between two members.
enum Direct {
    /// Member `from` asks for these messages.
    Request { from: usize, ids: Vec<MessageId> },
    /// The bytes of messages asked for.
    Answer { messages: Vec<Bytes> },
}

/// Work for one member within a window.
enum Work {
    Deliver {
        bytes: Bytes,
        original: Option<usize>,
    },
    Own(Own),
    Direct(Direct),
}

struct Item {
    at: u64,
    key: u64,
    member: usize,
    work: Work,
}

/// A retrieval request or answer sent during a window.
struct NewDirect {
    /// When it arrives.
    at: u64,
    /// Its sender, and the sender's counter.
    member: usize,
    counter: u64,
    to: usize,
    direct: Direct,
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
    directs: Vec<NewDirect>,
    sends: Vec<NewMessage>,
    records: Vec<Record>,
    counters: Counters,
    error: Option<Error>,
}

/// Read-only during a window.
struct Ctx<'a> {
    scenario: &'a Scenario,
    config: &'a Config,
    index: &'a HashMap<MessageId, usize>,
    stores: Option<&'a Stores>,
    window_end: u64,
    /// When the sending period ends (attacks end with it).
    end_of_sends: u64,
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
    /// A retrieval answer is being taken in: the deliveries it sets off are counted.
    answering: bool,
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
            answering: false,
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

    fn step(&mut self, p: usize, t: u64, work: Work) -> Result<(), Error> {
        let scenario = self.ctx.scenario;
        match work {
            Work::Deliver { bytes, original } => {
                let m = self.member(p);
                if m.idle {
                    if let Some(a) = m.adversary.as_mut() {
                        a.observe(&bytes);
                    }
                    return Ok(());
                }
                if !m.online {
                    if let Some(m) = original {
                        self.out.records.push(Record::Missed(m, p));
                    }
                    return Ok(());
                }
                self.receive(p, bytes, t);
                self.drain(p, t)
            }
            Work::Direct(Direct::Request { from, ids }) => {
                self.serve(p, from, ids, t);
                Ok(())
            }
            Work::Direct(Direct::Answer { messages }) => {
                let m = self.member(p);
                if m.idle || !m.online {
                    return Ok(()); // lost on an absent member
                }
                for bytes in messages {
                    if let Some(ReceivedKind::Delivered | ReceivedKind::Buffered) =
                        self.receive(p, bytes, t)
                    {
                        self.out.counters.retrieval.retrieved += 1;
                    }
                }
                self.answering = true;
                let drained = self.drain(p, t);
                self.answering = false;
                drained
            }
            Work::Own(Own::Retrieve) => {
                self.retrieve(p, t);
                Ok(())
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
                if let Some(w) = m.watch.as_mut() {
                    w.sent(&id);
                }
                let content = Bytes::from(format!("message {number} from p{p:04}"));
                let bytes =
                    m.ch.wrap(content, id.clone(), t)
                        .map_err(|e| Error::Failed(format!("p{p:04} cannot send: {e}")))?;
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
                let back = (m.rng.exp(scenario.churn_offline) * 1000.0) as u64;
                self.schedule(p, t + back.max(1), Own::Online);
                Ok(())
            }
            Work::Own(Own::Online) => {
                let m = self.member(p);
                m.online = true;
                m.ch.handle_timeout(t);
                let stay = (m.rng.exp(scenario.churn_online) * 1000.0) as u64;
                self.drain(p, t)?;
                self.schedule(p, t + stay.max(1), Own::Offline);
                Ok(())
            }
            Work::Own(Own::Attack) => {
                let end = self.ctx.end_of_sends;
                let Some(a) = self.member(p).adversary.as_mut() else {
                    return Ok(());
                };
                let shots = a.attack(t);
                let next = a.next_attack(t).filter(|&next| next < end);
                for shot in shots {
                    self.hostile_broadcast(p, shot, t);
                }
                if let Some(next) = next {
                    self.schedule(p, next, Own::Attack);
                }
                Ok(())
            }
            Work::Own(Own::Restart) => {
                self.restart(p, t)?;
                let m = self.member(p);
                let next = (m.rng.exp(scenario.restart_rate) * 1000.0) as u64;
                self.schedule(p, t + next.max(1), Own::Restart);
                Ok(())
            }
        }
    }

    /// Member `p` (online, taking part) receives a copy at `t`; the kind of reception, if the
    /// engine took it in at all.
    fn receive(&mut self, p: usize, bytes: Bytes, t: u64) -> Option<ReceivedKind> {
        // Every copy on this network is well formed; one the engine refuses (for example a
        // full incoming buffer) is simply dropped, as a real peer would.
        let m = self.member(p);
        let got = m.ch.unwrap(bytes, t);
        if let Some(w) = m.watch.as_mut() {
            w.received(&got, m.ch.held_bytes());
        }
        let r = got.ok()?;
        if let Some(rt) = m.retriever.as_mut() {
            rt.done(&r.message_id);
        }
        // A copy that must wait is in the member's hands: no longer to be detected.
        if r.kind == ReceivedKind::Buffered {
            if let Some(&i) = self.ctx.index.get(&r.message_id) {
                self.out.records.push(Record::Detected(i, p, t));
            }
        }
        Some(r.kind)
    }

    /// Member `p`'s retrieval round at `t`: the ids due go to random other members, at most
    /// the settings' number per request.
    fn retrieve(&mut self, p: usize, t: u64) {
        let ctx = self.ctx;
        let Some(settings) = ctx.scenario.retrieval.as_ref() else {
            return;
        };
        let n = ctx.scenario.participants;
        let m = &mut self.members[p - self.first];
        let Some(r) = m.retriever.as_mut() else {
            return;
        };
        if r.round_at != Some(t) {
            return; // superseded by an earlier one
        }
        r.round_at = None;
        if !m.online {
            r.postpone(t, settings);
        } else {
            let ch = &m.ch;
            let c = &mut self.out.counters.retrieval;
            let due = r.take_due(
                t,
                settings,
                |id| ch.log_entry(id).is_some(),
                &mut c.given_up,
            );
            for ids in due.chunks(settings.max_ids_per_request) {
                let to = retrieval::pick_peer(&mut r.rng, p, n);
                c.request(ids);
                let Some(at) = ctx.scenario.network.unicast(&mut r.rng, t) else {
                    continue; // lost: asked again after the retry interval
                };
                let counter = m.counter;
                m.counter += 1;
                self.out.directs.push(NewDirect {
                    at,
                    member: p,
                    counter,
                    to,
                    direct: Direct::Request {
                        from: p,
                        ids: ids.to_vec(),
                    },
                });
            }
        }
        self.schedule_retrieve(p);
    }

    /// Member `q` answers `from`'s request for `ids` at `t` from its log, if it takes part and
    /// is online.
    fn serve(&mut self, q: usize, from: usize, ids: Vec<MessageId>, t: u64) {
        let ctx = self.ctx;
        let Some(settings) = ctx.scenario.retrieval.as_ref() else {
            return;
        };
        let m = &mut self.members[q - self.first];
        if m.idle || !m.online {
            return;
        }
        let Some(r) = m.retriever.as_mut() else {
            return;
        };
        let messages = retrieval::answer(&m.ch, &ids, settings.max_answer_bytes);
        self.out.counters.retrieval.answer(&messages);
        let Some(at) = ctx.scenario.network.unicast(&mut r.rng, t) else {
            return;
        };
        let counter = m.counter;
        m.counter += 1;
        self.out.directs.push(NewDirect {
            at,
            member: q,
            counter,
            to: from,
            direct: Direct::Answer { messages },
        });
    }

    /// Makes sure a retrieval round is queued no later than member `p`'s next due id.
    fn schedule_retrieve(&mut self, p: usize) {
        let Some(r) = self.member(p).retriever.as_mut() else {
            return;
        };
        let Some(at) = r.next_round() else {
            return;
        };
        if r.round_at.is_none_or(|s| at < s) {
            r.round_at = Some(at);
            self.schedule(p, at, Own::Retrieve);
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
        self.launch(from, bytes.clone(), now, original, |_| true)
    }

    /// Broadcasts an attacking member's crafted bytes to their audience, each copy lost
    /// independently.
    fn hostile_broadcast(&mut self, from: usize, shot: Shot, now: u64) {
        let c = &mut self.out.counters;
        c.hostile_broadcasts += 1;
        c.hostile_bytes += shot.bytes.len() as u64;
        let to = shot.to;
        self.launch(from, shot.bytes, now, None, |r| to.includes(r));
    }

    /// Puts a broadcast on the bus: counted, each copy lost independently, arriving only at
    /// the receivers `audience` keeps; returns the receivers that lost it.
    fn launch(
        &mut self,
        from: usize,
        bytes: Bytes,
        now: u64,
        original: Option<u64>,
        audience: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        self.out.counters.transmissions += 1;
        self.out.counters.bytes += bytes.len() as u64;
        let scenario = self.ctx.scenario;
        let m = self.member(from);
        let (mut arrivals, lost) =
            scenario
                .network
                .broadcast(&mut m.rng, from, scenario.participants, now);
        arrivals.retain(|&(_, to)| audience(to));
        let counter = m.counter;
        m.counter += 1;
        self.out.flights.push(NewFlight {
            at: now,
            member: from,
            counter,
            bytes,
            arrivals,
            original: original.map(|k| (from, k)),
        });
        lost
    }

    /// Drains one member's outputs after an input at `now`: its store batch is committed first.
    fn drain(&mut self, p: usize, now: u64) -> Result<(), Error> {
        let ctx = self.ctx;
        let m = &mut self.members[p - self.first];
        let ops = m.ch.take_store_ops();
        if let Some(st) = ctx.stores {
            if !ops.is_empty() {
                st.apply(p, m.ch.channel_id(), &ops)?;
            }
        }
        while let Some(e) = m.ch.poll_event() {
            if let Some(w) = m.watch.as_mut() {
                let honest = match &e {
                    Event::MessageReady { message_id, .. } => ctx.index.contains_key(message_id),
                    _ => true,
                };
                w.event(&e, &m.ch, ctx.config, honest);
            }
            let record = match e {
                Event::MessageReady { message_id, .. } => {
                    if let Some(r) = m.retriever.as_mut() {
                        r.done(&message_id);
                    }
                    let i = ctx.index.get(&message_id);
                    if self.answering && i.is_some() {
                        self.out.counters.retrieval.deliveries += 1;
                    }
                    i.map(|&i| Record::Delivered(i, p, now))
                }
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
                    for e in &missing {
                        if let Some(&i) = ctx.index.get(&e.message_id) {
                            self.out.records.push(Record::Detected(i, p, now));
                        }
                    }
                    if let (Some(r), Some(settings)) =
                        (m.retriever.as_mut(), ctx.scenario.retrieval.as_ref())
                    {
                        // Asked one latency later: a copy on its way may still come.
                        let due = now + ctx.scenario.network.latency(&mut r.rng);
                        let c = &mut self.out.counters.retrieval;
                        for e in &missing {
                            match r.missing(&e.message_id, due, settings) {
                                Some(true) => c.tracked += 1,
                                Some(false) => {}
                                None => c.not_tracked += 1,
                            }
                        }
                    }
                    None
                }
                Event::IrretrievablyLost { entry, .. } => {
                    if let Some(r) = m.retriever.as_mut() {
                        r.done(&entry.message_id);
                    }
                    self.out.counters.irretrievably_lost += 1;
                    None
                }
                _ => None,
            };
            self.out.records.extend(record);
        }
        let mut transmits = Vec::new();
        while let Some(t) = m.ch.poll_transmit() {
            if let Some(w) = m.watch.as_mut() {
                if matches!(t.kind, TransmitKind::Resend | TransmitKind::Repair) {
                    w.rebroadcast(t.bytes.len());
                }
            }
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
                // Broadcast like the rest; the report has no counter for it.
                _ => {}
            }
            self.broadcast(p, &t.bytes, now, None);
        }
        self.schedule_timer(p, now);
        self.schedule_retrieve(p);
        Ok(())
    }

    /// Restarts a member from its store: everything in memory is dropped and rebuilt.
    fn restart(&mut self, p: usize, now: u64) -> Result<(), Error> {
        let Some(st) = self.ctx.stores else {
            return Ok(());
        };
        let config = self.ctx.config.clone();
        let sync_interval = config.sync_interval.as_millis() as u64;
        let m = self.member(p);
        let mut ch = st.restore(p, &m.ch, config, now)?;
        ch.schedule_sync_at(Some(now + m.rng.range(0, sync_interval)));
        m.ch = ch;
        // What it was asking for was in the memory it lost.
        if let Some(r) = m.retriever.as_mut() {
            r.clear();
        }
        self.out.counters.restarts += 1;
        self.drain(p, now)
    }
}

/// A run in progress.
pub(crate) struct Sim {
    /// The scenario, its history resolved.
    scenario: Scenario,
    members: Vec<Member>,
    threads: usize,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    next_event: u64,
    flights: Vec<Option<Flight>>,
    free_flights: Vec<usize>,
    /// Retrieval requests and answers on their way, by slot.
    directs: Vec<Option<(usize, Direct)>>,
    free_directs: Vec<usize>,
    messages: Vec<MessageStats>,
    index: HashMap<MessageId, usize>,
    counters: Counters,
    /// (virtual ms, delivered pairs, open gaps) samples for the timeline.
    samples: Vec<(u64, u64, u64)>,
    delivered_pairs: u64,
    end: u64,
    end_of_sends: u64,
    config: Config,
    stores: Option<Stores>,
}

impl Sim {
    pub(crate) fn new(scenario: &Scenario) -> Result<Self, Error> {
        scenario.check()?;
        let config = scenario.config();
        let end_of_sends = T0 + (scenario.duration * 1000.0) as u64;
        let end = end_of_sends + (scenario.tail * 1000.0) as u64;
        let sends = send_schedule(
            scenario.participants,
            scenario.send_interval,
            scenario.seed,
            end_of_sends,
            scenario.messages,
        );
        let mut members = Vec::with_capacity(scenario.participants);
        for (p, sends) in sends.into_iter().enumerate() {
            members.push(Member::new(
                p,
                sends,
                &config,
                scenario.seed,
                scenario.repair,
            )?);
        }
        // Repair requests name the first honest member as sender when they pick one.
        let target = (0..scenario.participants)
            .find(|&p| scenario.role(p) == Role::Honest)
            .unwrap_or(0);
        let watched = scenario.hostile_members() > 0;
        for (p, m) in members.iter_mut().enumerate() {
            match scenario.role(p) {
                Role::Hostile(h) if h != Hostility::Conforming => {
                    m.idle = true;
                    m.sends.clear();
                    if h.attacks() {
                        m.adversary = Some(Box::new(Adversary::new(
                            h,
                            p,
                            &config,
                            CHANNEL.into(),
                            format!("p{target:04}").into(),
                            &scenario.attack,
                            member_rng(scenario.seed, p, 2),
                        )));
                    }
                }
                Role::Honest if watched => m.watch = Some(Box::default()),
                _ => {}
            }
            if scenario.retrieval.is_some() && !m.idle {
                m.retriever = Some(Box::new(Retriever::new(member_rng(scenario.seed, p, 3))));
            }
        }
        let stores = match &scenario.store {
            None => None,
            Some(dir) => Some(Stores::open(dir, scenario.participants)?),
        };
        let threads = scenario.thread_count();
        let mut scenario = scenario.clone();
        scenario.history = scenario.resolved_history();
        let mut sim = Sim {
            scenario,
            members,
            threads,
            queue: BinaryHeap::new(),
            next_event: 0,
            flights: Vec::new(),
            free_flights: Vec::new(),
            directs: Vec::new(),
            free_directs: Vec::new(),
            messages: Vec::new(),
            index: HashMap::new(),
            counters: Counters::default(),
            samples: Vec::new(),
            delivered_pairs: 0,
            end,
            end_of_sends,
            config,
            stores,
        };
        for p in 0..sim.scenario.participants {
            if let Some(a) = sim.members[p].adversary.as_mut() {
                let at = a.first_attack(T0);
                if at < end_of_sends {
                    sim.push(at, Ev::Member(p, Own::Attack));
                }
            }
            if sim.members[p].idle {
                continue;
            }
            if let Some(&first) = sim.members[p].sends.last() {
                sim.push(first, Ev::Member(p, Own::Send));
            }
            if let Some(t) = sim.members[p].ch.poll_timeout() {
                sim.members[p].timer_at = Some(t);
                sim.push(t, Ev::Member(p, Own::Timer));
            }
            if sim.scenario.restart_rate > 0.0 {
                let at = (sim.members[p].rng.exp(sim.scenario.restart_rate) * 1000.0) as u64;
                sim.push(T0 + at, Ev::Member(p, Own::Restart));
            }
            if sim.scenario.churn_online > 0.0 {
                let at = (sim.members[p].rng.exp(sim.scenario.churn_online) * 1000.0) as u64;
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

    fn add_direct(&mut self, at: u64, to: usize, direct: Direct) {
        let slot = match self.free_directs.pop() {
            Some(i) => {
                self.directs[i] = Some((to, direct));
                i
            }
            None => {
                self.directs.push(Some((to, direct)));
                self.directs.len() - 1
            }
        };
        self.push(at, Ev::Direct(slot));
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
                Ev::Direct(slot) => {
                    let Some((to, direct)) = self.directs.get_mut(slot).and_then(Option::take)
                    else {
                        continue;
                    };
                    self.free_directs.push(slot);
                    items[to / chunk].push(Item {
                        at,
                        key,
                        member: to,
                        work: Work::Direct(direct),
                    });
                    key += 1;
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
    fn merge(&mut self, outcomes: Vec<Outcome>) -> Result<(), Error> {
        let n = self.scenario.participants;
        let mut sends = Vec::new();
        let mut flights = Vec::new();
        let mut directs = Vec::new();
        let mut later = Vec::new();
        let mut records = Vec::new();
        for o in outcomes {
            if let Some(e) = o.error {
                return Err(e);
            }
            self.counters.add(&o.counters);
            sends.extend(o.sends);
            flights.extend(o.flights);
            directs.extend(o.directs);
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
            Direct(usize, Direct),
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
        for d in directs {
            next.push((d.at, d.member, d.counter, Next::Direct(d.to, d.direct)));
        }
        next.sort_unstable_by_key(|&(at, p, c, _)| (at, p, c));
        for (at, p, _, ev) in next {
            match ev {
                Next::Own(own) => self.push(at, Ev::Member(p, own)),
                Next::Flight(f) => self.add_flight(f),
                Next::Direct(to, direct) => self.add_direct(at, to, direct),
            }
        }
        Ok(())
    }

    /// Runs to the end, telling `progress` the virtual second reached now and then.
    pub(crate) fn run(&mut self, progress: &mut dyn FnMut(u64)) -> Result<(), Error> {
        let sample_every = 1_000u64.max((self.end - T0) / 400);
        let mut next_sample = T0;
        let mut last_progress = T0;
        let window = self.scenario.network.latency_min.max(1);
        let chunk = self.scenario.participants.div_ceil(self.threads);
        while let Some(&Reverse((start, _, _))) = self.queue.peek() {
            if start > self.end {
                break;
            }
            while next_sample <= start {
                self.sample(next_sample);
                next_sample += sample_every;
            }
            if start - last_progress >= 1_000 {
                progress((start - T0) / 1_000);
                last_progress = start;
            }
            let window_end = (start + window).min(self.end + 1);
            let mut items = self.take_window(window_end, chunk);
            let ctx = Ctx {
                scenario: &self.scenario,
                config: &self.config,
                index: &self.index,
                stores: self.stores.as_ref(),
                window_end,
                end_of_sends: self.end_of_sends,
            };
            let work: usize = items.iter().map(Vec::len).sum();
            let outcomes: Vec<Outcome> = if self.threads == 1 {
                vec![Part::run(
                    &mut self.members,
                    0,
                    items.pop().unwrap_or_default(),
                    &ctx,
                )]
            } else if self.scenario.threads == 0 && work < PARALLEL_WORK {
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
                            error: Some(Error::Failed("a simulation thread failed".into())),
                            ..Outcome::default()
                        }));
                    }
                    outcomes
                })
            };
            self.merge(outcomes)?;
        }
        self.sample(self.end);
        Ok(())
    }

    fn sample(&mut self, at: u64) {
        let n = self.scenario.participants as u64;
        let open = self.messages.len() as u64 * n - self.delivered_pairs;
        self.samples.push((at - T0, self.delivered_pairs, open));
    }

    /// The report of the finished run.
    pub(crate) fn report(&self) -> Report {
        let samples = self
            .samples
            .iter()
            .map(|&(at_ms, delivered_pairs, open_gaps)| Sample {
                at_ms,
                delivered_pairs,
                open_gaps,
                sent_so_far: self
                    .messages
                    .iter()
                    .filter(|m| m.sent_at - T0 <= at_ms)
                    .count(),
            })
            .collect();
        let timeline = Timeline {
            span_ms: self.end - T0,
            samples,
        };
        let effects = (self.scenario.hostile_members() > 0)
            .then(|| crate::watch::effects(&self.members, &self.counters, self.end, &self.config));
        Report::new(
            &self.scenario,
            &self.messages,
            &self.counters,
            timeline,
            effects,
        )
    }
}
