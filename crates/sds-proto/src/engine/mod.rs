//! The SDS protocol engine: one [`Channel`] per channel id, a sans-IO state machine.
//!
//! Every input carries `now` (milliseconds since the Unix epoch) and nothing reads a clock. Each
//! input's effects are queued as data for the caller to drain, in this order of concern:
//!
//! 1. [`Channel::take_store_ops`]: the operation's changes to stored state — one batch, to be
//!    committed atomically first;
//! 2. [`Channel::poll_event`] and [`Channel::poll_transmit`]: what to announce and broadcast once
//!    the batch is durable;
//! 3. [`Channel::poll_timeout`]: when to call [`Channel::handle_timeout`] next.
//!
//! The same inputs in the same order give the same outputs: no iteration order of a hash map
//! ever decides an output's order.
//!
//! ```
//! use sds_proto::engine::{Channel, Config, Event};
//! use sds_proto::Bytes;
//!
//! let t0 = 1_700_000_000_000;
//! let mut alice = Channel::new("chat".into(), "alice".into(), Config::default(), t0).unwrap();
//! let mut bob = Channel::new("chat".into(), "bob".into(), Config::default(), t0).unwrap();
//! let wire = alice.wrap(Bytes::from_static(b"hi"), "m1".into(), t0).unwrap();
//! let got = bob.unwrap(wire, t0 + 5).unwrap();
//! assert_eq!(&got.content[..], b"hi");
//! assert!(matches!(bob.poll_event(), Some(Event::MessageReady { .. })));
//! ```

mod clock;
mod config;
mod incoming;
mod known;
mod log;
mod profile;
mod repair_guard;
mod timed;
mod types;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

pub use clock::LamportUnit;
use config::ms;
pub use config::{Config, ConfigError};
pub use types::{
    ChannelSnapshot, DropReason, EngineError, Event, IncomingEntry, IncomingRepairEntry, LogEntry,
    OutgoingEntry, OutgoingRepairEntry, ReceivedKind, SendFailure, StoreOp, Transmit, TransmitKind,
    Unwrapped,
};

use self::incoming::{Incoming, Waiting};
use self::known::{Known, KnownIds, SyncIds};
use self::log::Log;
pub use self::profile::{decode, encode, ephemeral_message, EphemeralMessage, Received};
use self::profile::{ChannelFilter, Hashes};
use self::repair_guard::RepairGuard;
use self::timed::TimedBuffer;
use crate::bloom::BloomFilter;
use crate::id::{ChannelId, MessageId, ParticipantId};
use crate::message::{HistoryEntry, SdsMessage};
use crate::wire::Profile;

/// Supplies the retrieval hint of one of our logged messages when it is cited (for example the
/// transport's hash of the message). Called only for entries that have no hint yet; a non-empty
/// answer is kept in the log and stored.
pub type HintProvider = Arc<dyn Fn(&MessageId) -> Option<Bytes> + Send + Sync>;

/// One of our messages awaiting acknowledgement, with what the engine needs beside it.
#[derive(Debug, Clone)]
struct OutSlot {
    entry: OutgoingEntry,
    hashes: Hashes,
    /// Received messages whose bloom filter held this one (counted once each).
    voters: Vec<MessageId>,
    due: u64,
}

/// One of our recent messages, checked against the bloom filters of later received messages
/// ([`Config::filter_resend_after`]).
#[derive(Debug, Clone)]
struct Watched {
    id: MessageId,
    hashes: Hashes,
    lamport: i64,
    bytes: Bytes,
    sent_at: u64,
    /// Earliest time of the next rebroadcast.
    next: u64,
    rebroadcasts: u32,
}

/// With [`Config::quiet_sync`], a member that sent nothing for this many sync intervals sends
/// the next sync anyway: its bloom filter is how others learn what it lacks.
const QUIET_SYNC_MAX_SKIPS: u32 = 3;

/// Lamport values at the top of the range that received messages can never move our clock into:
/// room for this many of our own sends.
const CLOCK_HEADROOM: i64 = 1 << 32;

/// Most lost-dependency declarations and expiries of waiting messages in one call of
/// [`Channel::handle_timeout`]; the rest are due at once ([`Channel::poll_timeout`]), in the
/// next call. Each call's events and store batch stay bounded however much is due.
const MAX_EXPIRIES_PER_TIMEOUT: usize = 1_000;

/// Times a waiting message's expiry is put off for a message it waits for that expires later.
const MAX_EXPIRY_POSTPONEMENTS: u32 = 4;

/// Most own messages watched at once; the oldest is dropped first.
const MAX_WATCHED: usize = 64;

/// Unacknowledged messages in send order, with their resend timers.
#[derive(Debug, Clone, Default)]
struct Outgoing {
    slots: BTreeMap<u64, OutSlot>,
    seq_of: HashMap<MessageId, u64>,
    timers: BTreeSet<(u64, u64)>,
    next_seq: u64,
}

impl Outgoing {
    fn len(&self) -> usize {
        self.slots.len()
    }

    fn contains(&self, id: &MessageId) -> bool {
        self.seq_of.contains_key(id)
    }

    fn push(&mut self, slot: OutSlot) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_of.insert(slot.entry.message_id.clone(), seq);
        self.timers.insert((slot.due, seq));
        self.slots.insert(seq, slot);
    }

    fn remove_seq(&mut self, seq: u64) -> Option<OutSlot> {
        let slot = self.slots.remove(&seq)?;
        self.seq_of.remove(&slot.entry.message_id);
        self.timers.remove(&(slot.due, seq));
        Some(slot)
    }

    fn reschedule(&mut self, seq: u64, due: u64) {
        if let Some(slot) = self.slots.get_mut(&seq) {
            self.timers.remove(&(slot.due, seq));
            slot.due = due;
            self.timers.insert((due, seq));
        }
    }
}

/// Hash maps keyed by ids from the network: foldhash is fast and randomly seeded, which keeps
/// colliding ids from being crafted in advance.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Deliveries waiting to happen within one operation, smallest (lamport, id) first.
type ReadyQueue = BinaryHeap<Reverse<(i64, MessageId)>>;

/// The state of one SDS channel for one participant.
pub struct Channel {
    channel_id: ChannelId,
    participant_id: ParticipantId,
    config: Config,
    lamport: i64,
    log: Log,
    bloom: ChannelFilter,
    known: KnownIds,
    /// Received sync ids and their senders (a cited sync is not waited for: SYNC-09).
    syncs: SyncIds,
    /// The highest lamport timestamp of a delivered message whose id was forgotten
    /// ([`Config::max_known_ids`]); `i64::MIN` while none was. A content message at or below it
    /// that we do not remember may be one delivered long ago: it is not delivered again.
    low_water: i64,
    /// The highest lamport timestamp of a delivered message that left the log; `i64::MIN`
    /// while none did. Stored ([`StoreOp::SaveLowWater`]): a restored channel remembers only
    /// the ids of its log, so it starts with this as its low-water mark, and a message
    /// delivered before the restart is not delivered again after it.
    evicted_mark: i64,
    outgoing: Outgoing,
    incoming: Incoming,
    /// Missing id → (deadline, entry as first cited), for the lost-dependency timeout.
    lost_deadline: HashMap<MessageId, (u64, u64, HistoryEntry)>,
    /// (deadline, sequence number) → missing id: integer keys keep the ordered set cheap.
    lost_timers: BTreeMap<(u64, u64), MessageId>,
    next_lost_seq: u64,
    /// Waiting messages whose missing sets shrank during the current operation (may repeat).
    shrunk_incoming: Vec<MessageId>,
    /// SDS-R requests we will send, by T_req (eligibility order and expiry).
    outgoing_repair: TimedBuffer<OutgoingRepairEntry>,
    /// SDS-R responses we may send, by T_resp.
    incoming_repair: TimedBuffer<IncomingRepairEntry>,
    /// SDS-R: what requests can still make us rebroadcast (cooldowns, bytes per window).
    repair_guard: RepairGuard,
    next_sync: Option<u64>,
    /// When we last received or sent anything on the channel (for [`Config::quiet_sync`]).
    last_traffic: Option<u64>,
    /// Periodic syncs skipped in a row since we last sent anything ([`Config::quiet_sync`]).
    skipped_syncs: u32,
    /// Own recent messages watched in received filters, oldest first.
    watched: VecDeque<Watched>,
    hint_provider: Option<HintProvider>,
    events: VecDeque<Event>,
    transmits: VecDeque<Transmit>,
    store_ops: Vec<StoreOp>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("channel_id", &self.channel_id)
            .field("participant_id", &self.participant_id)
            .field("lamport", &self.lamport)
            .field("log", &self.log.len())
            .field("outgoing", &self.outgoing.len())
            .field("incoming", &self.incoming.entries.len())
            .finish_non_exhaustive()
    }
}

/// A copy of an entry that does not keep the message it was read from alive.
fn detached_entry(e: &HistoryEntry) -> HistoryEntry {
    HistoryEntry {
        message_id: e.message_id.detached(),
        retrieval_hint: Bytes::copy_from_slice(&e.retrieval_hint),
        sender_id: e.sender_id.detached(),
    }
}

/// Content we may send: not empty, within the content limit.
fn check_content(config: &Config, content: &Bytes) -> Result<(), EngineError> {
    if content.is_empty() {
        return Err(EngineError::EmptyContent);
    }
    let limit = config.limits.max_content_size;
    if content.len() > limit {
        return Err(EngineError::MessageTooLarge {
            size: content.len(),
            limit,
        });
    }
    Ok(())
}

/// An id we may send under: not empty, within the id limit.
fn check_id(config: &Config, id: &MessageId) -> Result<(), EngineError> {
    if id.is_empty() {
        return Err(EngineError::EmptyMessageId);
    }
    let limit = config.limits.max_id_len;
    if id.len() > limit {
        return Err(EngineError::IdTooLong {
            len: id.len(),
            limit,
        });
    }
    Ok(())
}

impl Channel {
    /// A new, empty channel. Its lamport clock starts at `now`, in the configured unit
    /// ([`Config::clock_unit`]).
    pub fn new(
        channel_id: ChannelId,
        participant_id: ParticipantId,
        config: Config,
        now: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let bloom = ChannelFilter::new(&config).map_err(|e| ConfigError(e.to_string()))?;
        Ok(Channel {
            channel_id,
            participant_id,
            lamport: config.clock_unit().clock(now),
            log: Log::new(config.max_message_history),
            bloom,
            known: KnownIds::new(config.max_known_ids),
            syncs: SyncIds::new(config.max_known_ids),
            low_water: i64::MIN,
            evicted_mark: i64::MIN,
            outgoing: Outgoing::default(),
            incoming: Incoming::default(),
            lost_deadline: HashMap::default(),
            lost_timers: BTreeMap::new(),
            next_lost_seq: 0,
            shrunk_incoming: Vec::new(),
            outgoing_repair: TimedBuffer::default(),
            incoming_repair: TimedBuffer::default(),
            repair_guard: RepairGuard::default(),
            next_sync: None,
            last_traffic: None,
            skipped_syncs: 0,
            watched: VecDeque::new(),
            hint_provider: None,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            store_ops: Vec::new(),
            config,
        })
    }

    /// Rebuilds a channel from stored state. The log is put in (lamport, id) order and trimmed
    /// to `max_message_history` by arrival (the trimmed entries come out as `RemoveLogEntry`
    /// ops; an id stored twice counts once, at its first arrival); the bloom
    /// filter is rebuilt from the log; timers are recomputed from the stored absolute times; a
    /// stored message whose dependencies are all met is delivered. Stored entries that do not
    /// decode are dropped (with their remove ops). State written with the other wire profile is
    /// refused with a `ConfigError` rather than dropped.
    pub fn restore(
        channel_id: ChannelId,
        participant_id: ParticipantId,
        config: Config,
        snapshot: ChannelSnapshot,
        now: u64,
    ) -> Result<Self, ConfigError> {
        // State written with the other wire profile would silently lose what no longer decodes:
        // refuse it instead. A few stored messages tell.
        let stored = snapshot
            .incoming
            .iter()
            .map(|e| &e.bytes)
            .chain(snapshot.log.iter().map(|e| &e.bytes))
            .filter(|b| !b.is_empty())
            .take(4);
        for bytes in stored {
            if profile::written_with_other_profile(&config, bytes) {
                return Err(ConfigError(format!(
                    "the stored state of this channel was written with another wire profile than {}",
                    config.profile.name()
                )));
            }
        }
        let mut ch = Channel::new(channel_id, participant_id, config, now)?;
        if let Some(l) = snapshot.lamport {
            ch.lamport = l;
        }
        // What left the log before is remembered by no id now: anything at or below the
        // highest of it may be a replay.
        if let Some(mark) = snapshot.low_water {
            ch.evicted_mark = mark;
            ch.low_water = mark;
        }
        // In arrival order, so the bound keeps the latest arrivals; entries of unknown arrival
        // (0) count as the earliest, in (lamport, id) order.
        let mut log = snapshot.log;
        log.sort_by(|a, b| {
            (a.arrival, a.lamport_timestamp, &a.message_id).cmp(&(
                b.arrival,
                b.lamport_timestamp,
                &b.message_id,
            ))
        });
        for entry in log {
            if entry.is_met_marker() {
                ch.remember(entry.message_id.clone(), Known::Met, 0);
                ch.filter_add(&entry.message_id);
                continue;
            }
            if ch.log.contains(&entry.message_id) {
                continue;
            }
            let (id, lamport) = (entry.message_id.clone(), entry.lamport_timestamp);
            for old in ch.log.insert(entry) {
                ch.left_log(old);
            }
            ch.remember(id, Known::Delivered, lamport);
        }
        let ids: Vec<MessageId> = ch.log.iter().map(|e| e.message_id.clone()).collect();
        for id in ids {
            ch.filter_add(&id);
        }

        for entry in snapshot.outgoing {
            if ch.outgoing.contains(&entry.message_id) {
                continue;
            }
            let hashes = ch.bloom.hashes(entry.message_id.as_bytes());
            let due = entry
                .send_time
                .saturating_add(ch.resend_delay(entry.possible_acks));
            ch.outgoing.push(OutSlot {
                entry,
                hashes,
                voters: Vec::new(),
                due,
            });
        }

        let mut ready = ReadyQueue::new();
        let mut incoming = snapshot.incoming;
        incoming.sort_by(|a, b| a.message_id.cmp(&b.message_id));
        for entry in incoming {
            if ch.incoming.entries.contains_key(&entry.message_id) {
                continue;
            }
            let decoded = match decode(&entry.bytes, &ch.config) {
                Ok(Received::Message(m)) => Some(m),
                _ => None,
            }
            .filter(|m| m.message_id == entry.message_id && !ch.is_duplicate(&m.message_id));
            let Some(msg) = decoded else {
                ch.store_ops.push(StoreOp::RemoveIncoming(entry.message_id));
                continue;
            };
            ch.filter_add(&msg.message_id);
            let missing = ch.missing_of(&msg);
            let lamport = msg.lamport_timestamp;
            let id = msg.message_id.clone();
            ch.track_lost(&missing, entry.received_at);
            let expires = ch.expiry_of(entry.received_at);
            ch.incoming.insert(Waiting::new(
                msg,
                entry.bytes,
                missing,
                entry.received_at,
                expires,
            ));
            if ch
                .incoming
                .entries
                .get(&id)
                .is_some_and(|w| w.missing.is_empty())
            {
                ready.push(Reverse((lamport, id)));
            }
        }
        for e in snapshot.outgoing_repair {
            ch.outgoing_repair.insert(e);
        }
        for e in snapshot.incoming_repair {
            ch.incoming_repair.insert(e);
        }
        ch.deliver_ready(ready);
        Ok(ch)
    }

    /// Sets (or clears) the retrieval-hint provider.
    pub fn set_hint_provider(&mut self, provider: Option<HintProvider>) {
        self.hint_provider = provider;
    }

    /// Starts (`Some(now)`) or stops (`None`) periodic sync messages: when started, the first is
    /// due one sync interval after `now`.
    pub fn set_sync_timer(&mut self, start: Option<u64>) {
        self.next_sync = start.map(|now| now.saturating_add(ms(self.config.sync_interval)));
    }

    /// Schedules the next periodic sync message at `at` exactly (`None` stops them); later ones
    /// follow every sync interval.
    pub fn schedule_sync_at(&mut self, at: Option<u64>) {
        self.next_sync = at;
    }

    // ----- sending -------------------------------------------------------------------------

    /// Wraps application content in an SDS message and returns the bytes to broadcast.
    ///
    /// The message gets the next lamport timestamp (`max(now, lamport + 1)`, `now` in the
    /// clock's unit), the newest
    /// `max_causal_history` log entries as causal history, the current bloom filter (before its
    /// own id is added) and the participant id as sender. Afterwards it is in the log, the bloom
    /// filter and the outgoing buffer.
    pub fn wrap(
        &mut self,
        content: Bytes,
        message_id: MessageId,
        now: u64,
    ) -> Result<Bytes, EngineError> {
        check_content(&self.config, &content)?;
        self.check_new_id(&message_id)?;
        let lamport = self.next_lamport(now)?;
        let bytes = self.compose(&message_id, lamport, content, now);
        self.append_log(LogEntry {
            message_id: message_id.clone(),
            lamport_timestamp: lamport,
            sender_id: self.participant_id.clone(),
            retrieval_hint: Bytes::new(),
            bytes: bytes.clone(),
            arrival: 0,
        });
        self.remember(message_id.clone(), Known::Delivered, lamport);
        self.filter_add(&message_id);
        if self.outgoing.len() >= self.config.max_outgoing_buffer {
            if let Some(&seq) = self.outgoing.slots.keys().next() {
                if let Some(old) = self.outgoing.remove_seq(seq) {
                    self.give_up(old.entry.message_id, SendFailure::BufferFull);
                }
            }
        }
        let entry = OutgoingEntry {
            message_id: message_id.clone(),
            bytes: bytes.clone(),
            send_time: now,
            attempts: 0,
            possible_acks: 0,
        };
        self.store_ops.push(StoreOp::SaveOutgoing(entry.clone()));
        let hashes = self.bloom.hashes(message_id.as_bytes());
        self.outgoing.push(OutSlot {
            entry,
            hashes,
            voters: Vec::new(),
            due: now.saturating_add(ms(self.config.resend_interval)),
        });
        if let Some(after) = self.config.filter_resend_after.map(ms) {
            if self.watched.len() == MAX_WATCHED {
                self.watched.pop_front();
            }
            self.watched.push_back(Watched {
                id: message_id,
                hashes,
                lamport,
                bytes: bytes.clone(),
                sent_at: now,
                next: now.saturating_add(after),
                rebroadcasts: 0,
            });
        }
        self.last_traffic = Some(now);
        self.skipped_syncs = 0;
        Ok(bytes)
    }

    /// Builds a sync message: empty content, a fresh id and lamport timestamp, causal history and
    /// bloom filter by the send rules, and eligible SDS-R repair requests. It is not logged,
    /// buffered or added to the filter. Returns `None` when the log is empty and no repair
    /// request is due (there is nothing to acknowledge or ask for).
    pub fn sync_message(&mut self, now: u64) -> Result<Option<Bytes>, EngineError> {
        Ok(self.build_sync(now)?.map(|(_, bytes)| bytes))
    }

    fn build_sync(&mut self, now: u64) -> Result<Option<(MessageId, Bytes)>, EngineError> {
        if self.log.is_empty() && !self.has_eligible_repair(now) {
            return Ok(None);
        }
        let lamport = self.next_lamport(now)?;
        let message_id = MessageId::from(format!("sync-{}-{lamport}", self.participant_id));
        let bytes = self.compose(&message_id, lamport, Bytes::new(), now);
        self.remember(message_id.clone(), Known::Sync, lamport);
        Ok(Some((message_id, bytes)))
    }

    // ----- receiving -----------------------------------------------------------------------

    /// Processes a received message.
    ///
    /// Returns its content and, when it must wait, its missing dependencies — also for a
    /// message that is buffered. Delivery is signalled by `MessageReady` events, always after the
    /// message's dependencies, and in (lamport, id) order among messages released together.
    /// On error nothing changed.
    pub fn unwrap(&mut self, bytes: Bytes, now: u64) -> Result<Unwrapped, EngineError> {
        if let Some(out) = self.copy_we_hold(&bytes) {
            self.last_traffic = Some(now);
            return Ok(out);
        }
        match decode(&bytes, &self.config)? {
            Received::Message(msg) => self.unwrap_message(msg, bytes, now),
            Received::Ephemeral(e) => self.unwrap_ephemeral(e),
        }
    }

    /// Announces a received ephemeral message (EPH-04): an `Ephemeral` event, nothing else —
    /// no buffer, log, filter, clock, acknowledgement or store change. Our own, echoed back, is
    /// ignored (no event; kind `Own`).
    pub fn unwrap_ephemeral(&mut self, e: EphemeralMessage) -> Result<Unwrapped, EngineError> {
        if e.channel_id != self.channel_id {
            return Err(EngineError::WrongChannel {
                expected: self.channel_id.clone(),
                got: e.channel_id,
            });
        }
        let (event, unwrapped) = e.announce(&self.participant_id);
        self.events.extend(event);
        Ok(unwrapped)
    }

    /// Builds an ephemeral message (spec profile only; EPH-01..03): not logged, buffered,
    /// filtered or stored, and the clock does not move.
    pub fn wrap_ephemeral(
        &self,
        content: Bytes,
        message_id: MessageId,
    ) -> Result<Bytes, EngineError> {
        ephemeral_message(
            &self.config,
            &self.channel_id,
            &self.participant_id,
            &message_id,
            content,
        )
    }

    /// [`unwrap`](Self::unwrap) for a message its caller already decoded from `bytes` (with
    /// this channel's limits), so routing by channel can look at the decoded message first.
    pub fn unwrap_message(
        &mut self,
        msg: SdsMessage,
        bytes: Bytes,
        now: u64,
    ) -> Result<Unwrapped, EngineError> {
        let out = self.receive(msg, bytes, now)?;
        self.last_traffic = Some(now);
        Ok(out)
    }

    fn receive(
        &mut self,
        msg: SdsMessage,
        bytes: Bytes,
        now: u64,
    ) -> Result<Unwrapped, EngineError> {
        if msg.channel_id != self.channel_id {
            return Err(EngineError::WrongChannel {
                expected: self.channel_id.clone(),
                got: msg.channel_id,
            });
        }
        self.check_lamport(msg.lamport_timestamp, now)?;
        let cited = msg.causal_history.iter().chain(&msg.repair_request);
        if msg.message_id.is_empty() || cited.clone().any(|e| e.message_id.is_empty()) {
            return Err(EngineError::EmptyMessageId);
        }
        if msg
            .causal_history
            .iter()
            .any(|e| e.message_id == msg.message_id)
        {
            return Err(EngineError::SelfCitation(msg.message_id));
        }
        if self.config.profile == Profile::Spec && !msg.bloom_filter.is_empty() {
            // A filter our side cannot read makes @waku/sds drop the message; we refuse it with a
            // reason, before anything changes.
            if let Err(e) = self.bloom.read(&msg.bloom_filter) {
                return Err(EngineError::InvalidBloomFilter(e));
            }
        }
        let result = |msg: &SdsMessage, missing, kind| Unwrapped {
            message_id: msg.message_id.clone(),
            content: msg.content.clone(),
            missing_dependencies: missing,
            channel_id: msg.channel_id.clone(),
            kind,
        };

        if !self.participant_id.is_empty() && msg.sender_id == self.participant_id {
            // Someone rebroadcast our message: no need for us to answer the request too.
            self.remove_incoming_repair(&msg.message_id);
            return Ok(result(&msg, Vec::new(), ReceivedKind::Own));
        }
        if msg.content.is_empty() {
            self.review_acks(&msg);
            self.watch_filter(&msg, now);
            self.handle_repair_requests(&msg, now);
            // The sync itself is not buffered, but what it cites and we lack is worth fetching
            // and repairing.
            let lacking = self.lacking(&self.missing_of(&msg));
            for e in &lacking {
                self.add_outgoing_repair(e, now);
            }
            if !lacking.is_empty() {
                self.events.push_back(Event::MissingMessages {
                    channel_id: self.channel_id.clone(),
                    cited_by: msg.message_id.clone(),
                    missing: lacking.clone(),
                });
            }
            if self.known.get(&msg.message_id).is_none() && !self.log.contains(&msg.message_id) {
                self.syncs.insert(&msg.message_id, &msg.sender_id);
            }
            return Ok(result(&msg, lacking, ReceivedKind::Sync));
        }
        if let Some(held) = self.held_content(&msg.message_id) {
            if held != msg.content {
                // Another message under an id we hold: someone equivocates. Nothing changes.
                self.events.push_back(Event::MessageConflict {
                    channel_id: self.channel_id.clone(),
                    message_id: msg.message_id.clone(),
                    sender_id: msg.sender_id.clone(),
                });
                return Ok(result(&msg, Vec::new(), ReceivedKind::Conflict));
            }
        }
        if self.is_duplicate(&msg.message_id) {
            // Someone else's copy arrived: cancel our request and our pending response.
            self.remove_outgoing_repair(&msg.message_id);
            self.remove_incoming_repair(&msg.message_id);
            let missing = self
                .incoming
                .entries
                .get(&msg.message_id)
                .map(|w| self.lacking(&w.missing))
                .unwrap_or_default();
            return Ok(result(&msg, missing, ReceivedKind::Duplicate));
        }

        if msg.lamport_timestamp <= self.low_water
            && !matches!(
                self.known.get(&msg.message_id),
                Some(Known::Lost | Known::Met)
            )
        {
            // Older than ids we have forgotten: it may be one of them again. Nothing changes.
            return Ok(result(&msg, Vec::new(), ReceivedKind::Stale));
        }

        let missing = self.missing_of(&msg);
        let charge = incoming::charge(bytes.len(), missing.len());
        if !missing.is_empty() && charge > self.config.max_incoming_buffer_bytes {
            // Larger than the whole buffer: nothing can make room for it.
            return Err(EngineError::IncomingBufferFull);
        }
        if !missing.is_empty() {
            self.make_room(charge);
        }

        self.review_acks(&msg);
        self.watch_filter(&msg, now);
        self.remove_outgoing_repair(&msg.message_id);
        self.remove_incoming_repair(&msg.message_id);
        self.handle_repair_requests(&msg, now);
        self.filter_add(&msg.message_id);
        for e in &missing {
            self.add_outgoing_repair(e, now);
        }
        if missing.is_empty() {
            let out = result(&msg, Vec::new(), ReceivedKind::Delivered);
            let mut ready = ReadyQueue::new();
            self.deliver(Waiting::new(msg, bytes, Vec::new(), now, None), &mut ready);
            self.deliver_ready(ready);
            Ok(out)
        } else {
            // It waits for all of `missing`, but what it waits for in our own incoming buffer
            // is not missing: only what we lack is reported.
            let lacking = self.lacking(&missing);
            let out = result(&msg, lacking.clone(), ReceivedKind::Buffered);
            self.track_lost(&missing, now);
            if !lacking.is_empty() {
                self.events.push_back(Event::MissingDependencies {
                    channel_id: self.channel_id.clone(),
                    message_id: msg.message_id.clone(),
                    missing: lacking,
                });
            }
            let waiting = Waiting::new(msg, bytes, missing, now, self.expiry_of(now));
            self.store_ops
                .push(StoreOp::SaveIncoming(waiting.to_entry()));
            self.incoming.insert(waiting);
            Ok(out)
        }
    }

    /// A copy of a message we hold — logged or waiting — byte for byte: its decoding is known
    /// and it is handled as the duplicate (or our own echo) it is, without decoding it again.
    /// Rebroadcasts make such copies the most common input in a large group.
    fn copy_we_hold(&mut self, bytes: &Bytes) -> Option<Unwrapped> {
        let same = |held: &Bytes| {
            // The same buffer (a local rebroadcast) needs no comparison.
            (held.as_ptr() == bytes.as_ptr() && held.len() == bytes.len()) || held == bytes
        };
        let (id, content) = profile::peek_id_content(self.config.profile, bytes)?;
        let id = MessageId::from_bytes(bytes.slice_ref(id));
        let ours = |sender: &ParticipantId| {
            !self.participant_id.is_empty() && *sender == self.participant_id
        };
        let (own, missing) = if let Some(e) = self.log.get(&id) {
            if e.is_met_marker() || !same(&e.bytes) {
                return None;
            }
            (ours(&e.sender_id), Vec::new())
        } else {
            let w = self.incoming.entries.get(&id)?;
            if !same(&w.bytes) {
                return None;
            }
            (ours(&w.sender_id), self.lacking(&w.missing))
        };
        let kind = if own {
            ReceivedKind::Own
        } else {
            self.remove_outgoing_repair(&id);
            ReceivedKind::Duplicate
        };
        self.remove_incoming_repair(&id);
        Some(Unwrapped {
            message_id: id,
            content: bytes.slice_ref(content),
            missing_dependencies: missing,
            channel_id: self.channel_id.clone(),
            kind,
        })
    }

    /// Treats `ids` as delivered for dependency purposes (the application retrieved them by
    /// other means): messages waiting only for them are delivered. The ids join the bloom filter
    /// but are not announced, logged or cited.
    pub fn mark_dependencies_met(&mut self, ids: &[MessageId], _now: u64) {
        let mut ready = ReadyQueue::new();
        for id in ids {
            if id.is_empty() {
                continue;
            }
            self.remove_outgoing_repair(id);
            self.remove_incoming_repair(id);
            if self.log.contains(id) {
                continue;
            }
            if matches!(self.known.get(id), Some(Known::Delivered | Known::Met)) {
                continue;
            }
            self.remember(id.clone(), Known::Met, 0);
            self.store_ops
                .push(StoreOp::AppendLogEntry(LogEntry::met_marker(id.detached())));
            self.filter_add(id);
            self.release(id, &mut ready);
        }
        self.deliver_ready(ready);
    }

    // ----- timers --------------------------------------------------------------------------

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) has work to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        [
            self.outgoing.timers.first().map(|&(due, _)| due),
            self.lost_timers.first_key_value().map(|(&(due, _), _)| due),
            self.incoming
                .expiry
                .first_key_value()
                .map(|(&(due, _), _)| due),
            self.next_sync,
            self.incoming_repair.first().map(|(t, _)| t),
            self.outgoing_repair
                .first()
                .map(|(t, _)| self.repair_expiry(t)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Does whatever is due at `now`: resends (unacknowledged before possibly-acknowledged),
    /// give-ups, lost-dependency timeouts, SDS-R rebroadcasts and expiry of old requests, and
    /// the periodic sync message.
    pub fn handle_timeout(&mut self, now: u64) {
        let transmits_before = self.transmits.len();
        let due: Vec<u64> = self
            .outgoing
            .timers
            .range(..=(now, u64::MAX))
            .map(|&(_, seq)| seq)
            .collect();
        let (unacked, possibly): (Vec<u64>, Vec<u64>) = due.into_iter().partition(|seq| {
            self.outgoing
                .slots
                .get(seq)
                .is_some_and(|s| s.entry.possible_acks == 0)
        });
        for seq in unacked.into_iter().chain(possibly) {
            self.resend_or_give_up(seq, now);
        }

        let mut budget = MAX_EXPIRIES_PER_TIMEOUT;
        let mut ready = ReadyQueue::new();
        while let Some((&(deadline, seq), _)) = self.lost_timers.first_key_value() {
            if deadline > now || budget == 0 {
                break;
            }
            budget -= 1;
            let Some(id) = self.lost_timers.remove(&(deadline, seq)) else {
                break;
            };
            let Some((_, _, entry)) = self.lost_deadline.remove(&id) else {
                continue;
            };
            // Only an id we do not have at all is lost. One that sits in our own incoming
            // buffer is waiting itself (for example in a fabricated dependency cycle) and must
            // not be delivered around: the waiting messages' own expiry deals with it.
            if self.incoming.waiters.contains_key(&id)
                && !self.satisfied(&entry)
                && !self.incoming.entries.contains_key(&id)
            {
                self.declare_lost(entry, &mut ready);
            }
        }
        self.deliver_ready(ready);
        self.expire_waiting(now, &mut budget);

        while let Some((t_resp, id)) = self.incoming_repair.first() {
            if t_resp > now {
                break;
            }
            if let Some(e) = self.incoming_repair.remove(&id) {
                self.store_ops
                    .push(StoreOp::RemoveIncomingRepair(id.clone()));
                let (window, budget) = (ms(self.config.repair_t_max), self.config.max_repair_bytes);
                if !self
                    .repair_guard
                    .take_budget(e.bytes.len(), now, window, budget)
                {
                    continue;
                }
                let keep = self.config.max_message_history;
                self.repair_guard
                    .sent(id.clone(), now, self.repair_cooldown(), keep);
                self.events.push_back(Event::RepairReady {
                    channel_id: self.channel_id.clone(),
                    message_id: id.clone(),
                    bytes: e.bytes.clone(),
                });
                self.transmits.push_back(Transmit {
                    channel_id: self.channel_id.clone(),
                    message_id: id,
                    bytes: e.bytes,
                    kind: TransmitKind::Repair,
                });
            }
        }
        while let Some((t_req, id)) = self.outgoing_repair.first() {
            if self.repair_expiry(t_req) > now {
                break;
            }
            self.requeue_or_drop_repair(&id, now, false);
        }

        if self.transmits.len() > transmits_before {
            self.last_traffic = Some(now);
        }
        if self.next_sync.is_some_and(|t| t <= now) {
            self.next_sync = Some(now.saturating_add(ms(self.config.sync_interval)));
            let heard_lately = self
                .last_traffic
                .is_some_and(|t| now < t.saturating_add(ms(self.config.sync_interval)));
            let send = !(self.config.quiet_sync && heard_lately)
                || self.has_eligible_repair(now)
                || self.skipped_syncs >= QUIET_SYNC_MAX_SKIPS;
            if send {
                self.skipped_syncs = 0;
            } else {
                self.skipped_syncs += 1;
            }
            // A sync that cannot be built (empty log, exhausted clock) is simply skipped.
            if let Some(Ok(Some((message_id, bytes)))) = send.then(|| self.build_sync(now)) {
                self.transmits.push_back(Transmit {
                    channel_id: self.channel_id.clone(),
                    message_id,
                    bytes,
                    kind: TransmitKind::Sync,
                });
                self.last_traffic = Some(now);
            }
        }
    }

    // ----- outputs -------------------------------------------------------------------------

    /// The next event, in the order they happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next bytes to broadcast (resends and periodic syncs; `wrap` returns its own bytes).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The store operations of everything since the last call, in order: commit them as one
    /// batch before publishing the events and transmissions of the same inputs.
    pub fn take_store_ops(&mut self) -> Vec<StoreOp> {
        std::mem::take(&mut self.store_ops)
    }

    // ----- getters -------------------------------------------------------------------------

    /// The channel id.
    pub fn channel_id(&self) -> &ChannelId {
        &self.channel_id
    }

    /// Our participant id.
    pub fn participant_id(&self) -> &ParticipantId {
        &self.participant_id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The lamport clock.
    pub fn lamport(&self) -> i64 {
        self.lamport
    }

    /// The local log, oldest first in (lamport, id) order.
    pub fn log(&self) -> impl DoubleEndedIterator<Item = &LogEntry> {
        self.log.iter()
    }

    /// A logged message.
    pub fn log_entry(&self, id: &MessageId) -> Option<&LogEntry> {
        self.log.get(id)
    }

    /// Number of entries in the log.
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Number of messages waiting for dependencies.
    pub fn incoming_len(&self) -> usize {
        self.incoming.entries.len()
    }

    /// Number of unacknowledged outgoing messages.
    pub fn outgoing_len(&self) -> usize {
        self.outgoing.slots.len()
    }

    /// Unacknowledged outgoing messages, in send order.
    pub fn outgoing(&self) -> impl Iterator<Item = &OutgoingEntry> {
        self.outgoing.slots.values().map(|s| &s.entry)
    }

    /// Messages waiting for dependencies, sorted by id.
    pub fn incoming(&self) -> Vec<IncomingEntry> {
        let mut v: Vec<IncomingEntry> = self
            .incoming
            .entries
            .values()
            .map(Waiting::to_entry)
            .collect();
        v.sort_by(|a, b| a.message_id.cmp(&b.message_id));
        v
    }

    /// SDS-R: missing messages we will ask for, by T_req.
    pub fn outgoing_repair(&self) -> Vec<OutgoingRepairEntry> {
        self.outgoing_repair.iter().cloned().collect()
    }

    /// SDS-R: requested messages we may rebroadcast, by T_resp.
    pub fn incoming_repair(&self) -> Vec<IncomingRepairEntry> {
        self.incoming_repair.iter().cloned().collect()
    }

    /// Bytes held on behalf of remote members: the messages waiting for dependencies as they
    /// are charged against [`Config::max_incoming_buffer_bytes`] (their bytes and 1 KiB per
    /// dependency, for the indexes and timers it makes us keep), and the SDS-R entries with
    /// their indexes (the bytes of a message to rebroadcast are those of our log, bounded by
    /// count, and are not counted again). What [`shed_held`](Self::shed_held) can release.
    pub fn held_bytes(&self) -> usize {
        self.incoming
            .bytes
            .saturating_add(self.incoming_repair.held())
            .saturating_add(self.outgoing_repair.held())
    }

    /// Releases what remote members make us hold until [`held_bytes`](Self::held_bytes) is at
    /// most `target` (for a budget shared by several channels): the oldest waiting message of
    /// the sender holding the most bytes goes first (a `Dropped` event, reason `Evicted`), as
    /// when the incoming buffer is full; then the SDS-R responses and requests due last.
    /// Returns the bytes released.
    pub fn shed_held(&mut self, target: usize) -> usize {
        let before = self.held_bytes();
        while self.held_bytes() > target {
            if let Some(id) = self.incoming.eviction_candidate() {
                if self.incoming.entries.contains_key(&id) {
                    self.drop_waiting(&id, DropReason::Evicted);
                    continue;
                }
            }
            if let Some((_, id)) = self.incoming_repair.last() {
                self.remove_incoming_repair(&id);
            } else if let Some((_, id)) = self.outgoing_repair.last() {
                self.remove_outgoing_repair(&id);
            } else {
                break;
            }
        }
        before.saturating_sub(self.held_bytes())
    }

    /// The bloom filter of sent, received and marked-met ids, on the nim-sds profile (`None` on
    /// the spec profile; see [`filter_contains`](Self::filter_contains)).
    pub fn bloom_filter(&self) -> Option<&BloomFilter> {
        self.bloom.nim()
    }

    /// Whether the channel's bloom filter may hold `id`, on either profile.
    pub fn filter_contains(&self, id: &[u8]) -> bool {
        self.bloom.contains(id)
    }

    /// The whole channel state in stored form: what the store holds after every batch was
    /// applied, and what [`restore`](Self::restore) rebuilds the channel from. Ids marked met
    /// are in the log as [`met_marker`](LogEntry::met_marker) entries, as they are stored; the
    /// log is in (lamport, id) order.
    pub fn snapshot(&self) -> ChannelSnapshot {
        let mut log: Vec<LogEntry> = self
            .known
            .with_status(Known::Met)
            .map(|id| LogEntry::met_marker(id.clone()))
            .chain(self.log.iter().cloned())
            .collect();
        log.sort_by(|a, b| {
            (a.lamport_timestamp, &a.message_id).cmp(&(b.lamport_timestamp, &b.message_id))
        });
        ChannelSnapshot {
            lamport: Some(self.lamport),
            low_water: (self.evicted_mark != i64::MIN).then_some(self.evicted_mark),
            log,
            outgoing: self.outgoing().cloned().collect(),
            incoming: self.incoming(),
            outgoing_repair: self.outgoing_repair(),
            incoming_repair: self.incoming_repair(),
        }
    }

    // ----- internals -----------------------------------------------------------------------

    /// Builds and encodes one of our messages at `lamport` (which must come from
    /// `next_lamport`): causal history per the send rules (keeping newly provided hints),
    /// eligible repair requests, the current bloom filter; then advances the clock.
    fn compose(&mut self, message_id: &MessageId, lamport: i64, content: Bytes, now: u64) -> Bytes {
        let (causal_history, hints) = self.causal_history();
        let msg = SdsMessage {
            message_id: message_id.clone(),
            lamport_timestamp: lamport,
            causal_history,
            channel_id: self.channel_id.clone(),
            content,
            bloom_filter: Bytes::new(),
            sender_id: self.participant_id.clone(),
            repair_request: self.take_repair_requests(now),
        };
        let bytes = self.bloom.encode(&msg);
        self.apply_hints(hints);
        self.set_lamport(lamport);
        bytes
    }

    fn check_new_id(&self, id: &MessageId) -> Result<(), EngineError> {
        check_id(&self.config, id)?;
        if self.outgoing.contains(id) || self.is_duplicate(id) {
            return Err(EngineError::DuplicateMessageId(id.clone()));
        }
        Ok(())
    }

    /// Refuses a received lamport timestamp beyond [`Config::max_clock_lead`] ahead of the wall
    /// clock, unless our own clock is already past it (then it cannot move the clock). The limit
    /// never comes within [`CLOCK_HEADROOM`] of the end of the range, so a clock that follows
    /// received messages always leaves room for our own sends.
    fn check_lamport(&self, lamport: i64, now: u64) -> Result<(), EngineError> {
        let unit = self.config.clock_unit();
        let limit = unit
            .clock(now)
            .saturating_add(unit.duration(ms(self.config.max_clock_lead)))
            .min(i64::MAX - CLOCK_HEADROOM)
            .max(self.lamport);
        if lamport > limit {
            return Err(EngineError::LamportTooFarAhead { lamport, limit });
        }
        Ok(())
    }

    fn next_lamport(&self, now: u64) -> Result<i64, EngineError> {
        let next = self
            .lamport
            .checked_add(1)
            .ok_or(EngineError::ClockOverflow)?;
        Ok(next.max(self.config.clock_unit().clock(now)))
    }

    fn set_lamport(&mut self, lamport: i64) {
        if lamport != self.lamport {
            self.lamport = lamport;
            self.store_ops.push(StoreOp::SaveLamport(lamport));
        }
    }

    /// The causal history for a new message, and the hints newly obtained from the provider.
    fn causal_history(&self) -> (Vec<HistoryEntry>, Vec<(MessageId, Bytes)>) {
        let mut hints = Vec::new();
        let mut history: Vec<HistoryEntry> = self
            .log
            .newest(self.config.max_causal_history)
            .map(|e| {
                let mut hint = e.retrieval_hint.clone();
                if hint.is_empty() {
                    if let Some(h) = self.hint_provider.as_ref().and_then(|p| p(&e.message_id)) {
                        if !h.is_empty() {
                            hints.push((e.message_id.clone(), h.clone()));
                            hint = h;
                        }
                    }
                }
                HistoryEntry {
                    message_id: e.message_id.clone(),
                    retrieval_hint: hint,
                    sender_id: e.sender_id.clone(),
                }
            })
            .collect();
        history.reverse();
        hints.reverse();
        (history, hints)
    }

    fn apply_hints(&mut self, hints: Vec<(MessageId, Bytes)>) {
        for (id, hint) in hints {
            if let Some(e) = self.log.get_mut(&id) {
                e.retrieval_hint = hint.clone();
                self.store_ops.push(StoreOp::SetRetrievalHint {
                    message_id: id,
                    hint,
                });
            }
        }
    }

    /// Logs a message as the latest arrival; the earliest arrivals beyond the bound leave.
    /// Returns its arrival number.
    fn append_log(&mut self, mut entry: LogEntry) -> u64 {
        entry.arrival = self.log.next_arrival();
        let arrival = entry.arrival;
        self.store_ops.push(StoreOp::AppendLogEntry(entry.clone()));
        for old in self.log.insert(entry) {
            self.left_log(old);
        }
        arrival
    }

    /// A delivered entry fell out of the bounded log: the store drops it (or keeps it as
    /// history) and raises the mark a restore starts its low-water mark from.
    fn left_log(&mut self, old: LogEntry) {
        if old.lamport_timestamp > self.evicted_mark {
            self.evicted_mark = old.lamport_timestamp;
            self.store_ops
                .push(StoreOp::SaveLowWater(old.lamport_timestamp));
        }
        self.store_ops.push(StoreOp::RemoveLogEntry(old.message_id));
    }

    /// Whether a cited dependency is met: delivered, marked met, declared lost, one of our own
    /// syncs, or a received sync of the sender the entry names.
    fn satisfied(&self, e: &HistoryEntry) -> bool {
        let id = &e.message_id;
        self.log.contains(id)
            || self.known.get(id).is_some()
            || self.syncs.satisfies(id, &e.sender_id)
    }

    /// Whether a content message with this id was already delivered or is buffered.
    fn is_duplicate(&self, id: &MessageId) -> bool {
        self.log.contains(id)
            || self.known.get(id) == Some(Known::Delivered)
            || self.incoming.entries.contains_key(id)
    }

    /// The content of a message we hold under `id` (logged or waiting), to tell a copy from a
    /// conflicting message with the same id.
    fn held_content(&self, id: &MessageId) -> Option<Bytes> {
        if let Some(e) = self.log.get(id) {
            if e.is_met_marker() {
                return None;
            }
            let (_, content) = profile::peek_id_content(self.config.profile, &e.bytes)?;
            return Some(e.bytes.slice_ref(content));
        }
        self.incoming.entries.get(id).map(|w| w.content.clone())
    }

    /// The cited entries of `msg` that are not met, in causal-history order, once each.
    fn missing_of(&self, msg: &SdsMessage) -> Vec<HistoryEntry> {
        let history = &msg.causal_history;
        let mut missing: Vec<HistoryEntry> = Vec::new();
        // Long histories are de-duplicated through a set: linear work per cited entry.
        let mut seen: Option<std::collections::HashSet<&MessageId, foldhash::fast::RandomState>> =
            (history.len() > 16).then(Default::default);
        for e in history {
            if self.satisfied(e) {
                continue;
            }
            let new = match &mut seen {
                Some(seen) => seen.insert(&e.message_id),
                None => !missing.iter().any(|m| m.message_id == e.message_id),
            };
            if new {
                if missing.is_empty() {
                    // Reserve once: most often either nothing or everything is missing.
                    missing.reserve_exact(history.len());
                }
                missing.push(e.clone());
            }
        }
        missing
    }

    /// The entries of a waiting message's missing set that we lack: not those waiting in our
    /// own incoming buffer (we hold them; they wait for something themselves, which was
    /// reported for them).
    fn lacking(&self, missing: &[HistoryEntry]) -> Vec<HistoryEntry> {
        missing
            .iter()
            .filter(|e| !self.incoming.entries.contains_key(&e.message_id))
            .cloned()
            .collect()
    }

    fn track_lost(&mut self, missing: &[HistoryEntry], now: u64) {
        let Some(timeout) = self.config.lost_dependency_timeout.map(ms) else {
            return;
        };
        for e in missing {
            if !self.lost_deadline.contains_key(&e.message_id) {
                let deadline = now.saturating_add(timeout);
                let seq = self.next_lost_seq;
                self.next_lost_seq += 1;
                // Kept apart from the message that cited it: do not pin its buffer.
                let e = detached_entry(e);
                self.lost_timers
                    .insert((deadline, seq), e.message_id.clone());
                self.lost_deadline
                    .insert(e.message_id.clone(), (deadline, seq, e));
            }
        }
    }

    /// When a message buffered at `received_at` has waited the lost-dependency timeout.
    fn expiry_of(&self, received_at: u64) -> Option<u64> {
        self.config
            .lost_dependency_timeout
            .map(ms)
            .map(|t| received_at.saturating_add(t))
    }

    /// Declares a missing dependency irretrievably lost: what waits for it no longer does.
    fn declare_lost(&mut self, entry: HistoryEntry, ready: &mut ReadyQueue) {
        let id = entry.message_id.clone();
        self.remember(id.clone(), Known::Lost, 0);
        self.remove_outgoing_repair(&id);
        self.events.push_back(Event::IrretrievablyLost {
            channel_id: self.channel_id.clone(),
            entry,
        });
        self.release(&id, ready);
    }

    /// Makes room in the incoming buffer for a message charged `charge` bytes (which fits in
    /// an empty buffer): the oldest messages of the sender holding the most bytes give way, so
    /// a member flooding the buffer displaces its own messages rather than everyone else's.
    fn make_room(&mut self, charge: usize) {
        while self.incoming.entries.len() >= self.config.max_incoming_buffer
            || self.incoming.bytes.saturating_add(charge) > self.config.max_incoming_buffer_bytes
        {
            let Some(id) = self.incoming.eviction_candidate() else {
                break;
            };
            if !self.incoming.entries.contains_key(&id) {
                // Cannot happen (the indexes follow the entries); never loop on it.
                break;
            }
            self.drop_waiting(&id, DropReason::Evicted);
        }
    }

    /// Removes a waiting message without delivering it, with its store op and a `Dropped`
    /// event; the dependencies only it waited for are no longer tracked. Returns the messages
    /// that waited for it.
    fn drop_waiting(&mut self, id: &MessageId, reason: DropReason) -> Vec<MessageId> {
        let Some(w) = self.incoming.remove(id) else {
            return Vec::new();
        };
        self.incoming.unlink(&w);
        for dep in &w.missing {
            if !self.incoming.waiters.contains_key(&dep.message_id) {
                if let Some((deadline, seq, _)) = self.lost_deadline.remove(&dep.message_id) {
                    self.lost_timers.remove(&(deadline, seq));
                }
            }
        }
        self.store_ops.push(StoreOp::RemoveIncoming(id.clone()));
        self.events.push_back(Event::Dropped {
            channel_id: self.channel_id.clone(),
            message_id: id.clone(),
            reason,
        });
        self.incoming.waiters.get(id).cloned().unwrap_or_default()
    }

    /// Deals with waiting messages that have waited the lost-dependency timeout, at most
    /// `budget` of them. A dependency we lack is declared lost (the lost-dependency rule; its
    /// timer may have been skipped while it waited in our own buffer); one we hold that expires
    /// later puts the expiry off (a few times at most); otherwise the message cannot complete
    /// — it waits for messages that wait themselves, as in a fabricated cycle — and is dropped,
    /// and so, at once, is whatever waits for it.
    fn expire_waiting(&mut self, now: u64, budget: &mut usize) {
        let mut ready = ReadyQueue::new();
        while let Some((&(t, seq), id)) = self.incoming.expiry.first_key_value() {
            if t > now || *budget == 0 {
                break;
            }
            *budget -= 1;
            let id = id.clone();
            let Some(w) = self.incoming.entries.get(&id) else {
                self.incoming.expiry.remove(&(t, seq));
                continue;
            };
            let (lacking, held): (Vec<HistoryEntry>, Vec<HistoryEntry>) = w
                .missing
                .iter()
                .cloned()
                .partition(|e| !self.incoming.entries.contains_key(&e.message_id));
            let (postponed, doomed) = (w.postponed, w.doomed);
            if doomed {
                self.drop_expired(&id, now);
                continue;
            }
            for e in lacking {
                self.declare_lost(e, &mut ready);
            }
            if held.is_empty() {
                // Released: delivered below.
                self.incoming.expiry.remove(&(t, seq));
                continue;
            }
            let later = held
                .iter()
                .filter_map(|e| self.incoming.entries.get(&e.message_id)?.expires)
                .filter(|&x| x > now)
                .max();
            match later {
                Some(later) if postponed < MAX_EXPIRY_POSTPONEMENTS => {
                    self.incoming.set_expiry(&id, later);
                    if let Some(w) = self.incoming.entries.get_mut(&id) {
                        w.postponed += 1;
                    }
                }
                _ => self.drop_expired(&id, now),
            }
        }
        self.deliver_ready(ready);
    }

    /// Drops a waiting message that cannot complete; what waits for it cannot either and is
    /// due to be dropped at once.
    fn drop_expired(&mut self, id: &MessageId, now: u64) {
        for waiter in self.drop_waiting(id, DropReason::Expired) {
            if let Some(w) = self.incoming.entries.get_mut(&waiter) {
                w.doomed = true;
            }
            self.incoming.set_expiry(&waiter, now);
        }
    }

    /// Delivers a message whose dependencies are met: log, clock, event; queues what it releases.
    fn deliver(&mut self, w: Waiting, ready: &mut ReadyQueue) {
        if w.lamport > self.lamport {
            self.set_lamport(w.lamport);
        }
        let id = w.message_id;
        let sequence = self.append_log(LogEntry {
            message_id: id.clone(),
            lamport_timestamp: w.lamport,
            sender_id: w.sender_id,
            retrieval_hint: Bytes::new(),
            bytes: w.bytes,
            arrival: 0,
        });
        self.remember(id.clone(), Known::Delivered, w.lamport);
        self.events.push_back(Event::MessageReady {
            channel_id: self.channel_id.clone(),
            message_id: id.clone(),
            content: w.content,
            sequence,
        });
        self.release(&id, ready);
    }

    /// Records what is known about an id. A marked-met id is stored as a marker log entry (see
    /// [`LogEntry::is_met_marker`]); when the bounded memory forgets one, so does the store.
    /// A delivered id that is forgotten raises the low-water mark below which unknown content
    /// is not delivered (it may be a replay).
    fn remember(&mut self, id: MessageId, known: Known, lamport: i64) {
        match self.known.set(id, known, lamport) {
            Some((old, Known::Met, _)) => self.store_ops.push(StoreOp::RemoveLogEntry(old)),
            Some((_, Known::Delivered, l)) => self.low_water = self.low_water.max(l),
            _ => {}
        }
    }

    /// Adds an id to the bloom filter, which remembers ids far longer than their messages.
    fn filter_add(&mut self, id: &MessageId) {
        self.bloom.add(id.detached());
    }

    /// `id` is now met: waiting messages drop it from their missing sets; those left with none
    /// are queued for delivery.
    fn release(&mut self, id: &MessageId, ready: &mut ReadyQueue) {
        if let Some((deadline, seq, _)) = self.lost_deadline.remove(id) {
            self.lost_timers.remove(&(deadline, seq));
        }
        let Some(waiters) = self.incoming.waiters.remove(id) else {
            return;
        };
        for w in waiters {
            if let Some(entry) = self.incoming.entries.get_mut(&w) {
                entry.missing.retain(|e| &e.message_id != id);
                if entry.missing.is_empty() {
                    ready.push(Reverse((entry.lamport, w)));
                } else {
                    // Saved once at the end of the operation, however often it shrinks.
                    self.shrunk_incoming.push(w);
                }
            }
        }
    }

    /// Delivers queued messages smallest (lamport, id) first, including those they release;
    /// then stores the new missing sets of messages that still wait.
    fn deliver_ready(&mut self, mut ready: ReadyQueue) {
        while let Some(Reverse((_, id))) = ready.pop() {
            if let Some(w) = self.incoming.remove(&id) {
                self.store_ops.push(StoreOp::RemoveIncoming(id));
                self.deliver(w, &mut ready);
            }
        }
        let mut shrunk = std::mem::take(&mut self.shrunk_incoming);
        shrunk.sort_unstable();
        shrunk.dedup();
        for id in shrunk {
            if let Some(w) = self.incoming.entries.get(&id) {
                self.store_ops.push(StoreOp::SaveIncoming(w.to_entry()));
            }
        }
    }

    // ----- SDS-R ---------------------------------------------------------------------------

    /// SDS-R works only with a participant id: responders and groups are derived from it.
    fn repair_cooldown(&self) -> u64 {
        self.config
            .repair_cooldown
            .map(ms)
            .unwrap_or(ms(self.config.repair_t_max))
    }

    fn repair_enabled(&self) -> bool {
        !self.participant_id.is_empty()
    }

    /// When an outgoing repair entry with this T_req is dropped: once now − T_req > T_max.
    fn repair_expiry(&self, t_req: u64) -> u64 {
        t_req
            .saturating_add(ms(self.config.repair_t_max))
            .saturating_add(1)
    }

    fn has_eligible_repair(&self, now: u64) -> bool {
        self.repair_enabled() && self.outgoing_repair.first().is_some_and(|(t, _)| t <= now)
    }

    /// A missing dependency enters the outgoing repair buffer (once: seeing it missing again does
    /// not move its T_req; never for a message we hold in the incoming buffer). When the buffer is full the entry due last gives way, or the new one
    /// is not added if it would be due last.
    fn add_outgoing_repair(&mut self, entry: &HistoryEntry, now: u64) {
        let id = &entry.message_id;
        // A message sitting in our own incoming buffer is not missing: we hold it.
        if !self.repair_enabled()
            || self.outgoing_repair.contains(id)
            || self.incoming.entries.contains_key(id)
        {
            return;
        }
        let t_req = self.t_req(id, now);
        if self
            .outgoing_repair
            .would_refuse(t_req, self.config.max_repair_buffer)
        {
            return;
        }
        let entry = OutgoingRepairEntry {
            entry: detached_entry(entry),
            t_req,
            retries: 0,
        };
        self.outgoing_repair.insert_stored(
            entry,
            self.config.max_repair_buffer,
            &mut self.store_ops,
        );
    }

    fn t_req(&self, id: &MessageId, now: u64) -> u64 {
        now.saturating_add(self.t_req_offset(id))
    }

    /// SDS-R's T_req offset of `id` for us, between T_min and T_max.
    fn t_req_offset(&self, id: &MessageId) -> u64 {
        profile::t_req_offset(
            self.config.profile,
            self.participant_id.as_bytes(),
            id.as_bytes(),
            ms(self.config.repair_t_min),
            ms(self.config.repair_t_max),
        )
    }

    /// An outgoing repair entry has been used (attached to one of our sends: `asked`),
    /// answered for by someone else's request, or has expired. If messages in our incoming
    /// buffer still wait for it, it stays, due again after [`retry_delay`](Self::retry_delay) —
    /// a lost request or response is retried; otherwise it goes. Only our own requests make the
    /// next wait longer: someone else's request cost us nothing, and many members missing the
    /// same message would otherwise push each other's waits to the cap at once.
    fn requeue_or_drop_repair(&mut self, id: &MessageId, now: u64, asked: bool) {
        if !self.incoming.waiters.contains_key(id) {
            self.remove_outgoing_repair(id);
            return;
        }
        let Some(retries) = self
            .outgoing_repair
            .get(id)
            .map(|e| e.retries.saturating_add(u32::from(asked)))
        else {
            return;
        };
        let t_req = now.saturating_add(self.retry_delay(id, retries));
        if let Some(e) = self
            .outgoing_repair
            .reschedule(id, t_req, |e| e.retries = retries)
        {
            let saved = e.clone();
            self.store_ops.push(StoreOp::SaveOutgoingRepair(saved));
        }
    }

    /// The wait before asking again for `id` after `retries` of our requests: its T_req offset
    /// after the first, doubled with each later one, at most T_max (or the offset itself if
    /// that is longer). Retrying repairs a lost request or a lost answer, and the first retry
    /// comes as soon as before; backing off keeps a gap nobody can fill from costing a request
    /// on every send.
    fn retry_delay(&self, id: &MessageId, retries: u32) -> u64 {
        let offset = self.t_req_offset(id);
        let cap = ms(self.config.repair_t_max).max(offset);
        let factor = 1u64
            .checked_shl(retries.saturating_sub(1))
            .unwrap_or(u64::MAX);
        offset.saturating_mul(factor).min(cap)
    }

    fn remove_outgoing_repair(&mut self, id: &MessageId) {
        self.outgoing_repair.remove_stored(id, &mut self.store_ops);
    }

    fn remove_incoming_repair(&mut self, id: &MessageId) {
        self.incoming_repair.remove_stored(id, &mut self.store_ops);
    }

    /// Takes the eligible outgoing repair entries (T_req ≤ now), lowest T_req first, at most
    /// `max_repair_requests`, for a message about to be sent.
    fn take_repair_requests(&mut self, now: u64) -> Vec<HistoryEntry> {
        if !self.repair_enabled() {
            return Vec::new();
        }
        let due = self
            .outgoing_repair
            .due_ids(now, self.config.max_repair_requests);
        let mut requests = Vec::with_capacity(due.len());
        for id in due {
            if let Some(e) = self.outgoing_repair.get(&id) {
                requests.push(e.entry.clone());
            }
            self.requeue_or_drop_repair(&id, now, true);
        }
        requests
    }

    /// Handles a received message's repair requests: each requested id leaves our outgoing
    /// repair buffer (someone asked already; if we still wait for it, it is due again after our
    /// current wait, which someone else's request does not lengthen); one we have in our log,
    /// and whose response group we are in, is scheduled for rebroadcast at now + T_resp.
    fn handle_repair_requests(&mut self, msg: &SdsMessage, now: u64) {
        let cooldown = self.repair_cooldown();
        // A request names at most as many ids as we would ask for ourselves; more are ignored.
        for r in msg
            .repair_request
            .iter()
            .take(self.config.max_repair_requests)
        {
            if self.outgoing_repair.contains(&r.message_id) {
                self.requeue_or_drop_repair(&r.message_id, now, false);
            }
            if !self.repair_enabled()
                || r.sender_id.is_empty()
                || self.incoming_repair.contains(&r.message_id)
                || !self.repair_guard.may_schedule(&r.message_id, now, cooldown)
            {
                continue;
            }
            let Some(logged) = self.log.get(&r.message_id) else {
                continue;
            };
            // The response time is derived from the original sender: a request naming another
            // sender (which would let the requester choose who answers first) is ignored.
            if logged.sender_id != r.sender_id {
                continue;
            }
            let (p, s, m) = (
                self.participant_id.as_bytes(),
                r.sender_id.as_bytes(),
                r.message_id.as_bytes(),
            );
            let profile = self.config.profile;
            if !profile::in_response_group(profile, p, s, m, self.config.num_response_groups) {
                continue;
            }
            let offset = profile::t_resp_offset(profile, p, s, m, ms(self.config.repair_t_max));
            let t_resp = now.saturating_add(offset);
            let entry = IncomingRepairEntry {
                entry: detached_entry(r),
                bytes: logged.bytes.clone(),
                t_resp,
            };
            self.incoming_repair.insert_stored(
                entry,
                self.config.max_repair_buffer,
                &mut self.store_ops,
            );
        }
    }

    fn resend_delay(&self, possible_acks: u32) -> u64 {
        if possible_acks == 0 {
            ms(self.config.resend_interval)
        } else {
            ms(self.config.possibly_acked_resend_interval)
        }
    }

    fn give_up(&mut self, message_id: MessageId, reason: SendFailure) {
        self.store_ops
            .push(StoreOp::RemoveOutgoing(message_id.clone()));
        self.events.push_back(Event::SendFailed {
            channel_id: self.channel_id.clone(),
            message_id,
            reason,
        });
    }

    fn resend_or_give_up(&mut self, seq: u64, now: u64) {
        let max = self.config.max_resend_attempts;
        let Some(slot) = self.outgoing.slots.get_mut(&seq) else {
            return;
        };
        if slot.entry.attempts >= max {
            if let Some(old) = self.outgoing.remove_seq(seq) {
                self.give_up(old.entry.message_id, SendFailure::RetriesExhausted);
            }
            return;
        }
        slot.entry.attempts += 1;
        slot.entry.send_time = now;
        let entry = slot.entry.clone();
        let due = now.saturating_add(self.resend_delay(entry.possible_acks));
        self.outgoing.reschedule(seq, due);
        self.transmits.push_back(Transmit {
            channel_id: self.channel_id.clone(),
            message_id: entry.message_id.clone(),
            bytes: entry.bytes.clone(),
            kind: TransmitKind::Resend,
        });
        self.store_ops.push(StoreOp::SaveOutgoing(entry));
    }

    /// Checks our recent messages against the bloom filter of a later message from another
    /// member ([`Config::filter_resend_after`]): one that is missing from it is rebroadcast, at
    /// most once per interval and `max_resend_attempts` times. A message is watched for SDS-R's
    /// T_max or five of the longest gaps between a quiet member's syncs, whichever is longer,
    /// so that every member's filter is seen several times.
    fn watch_filter(&mut self, msg: &SdsMessage, now: u64) {
        let Some(after) = self.config.filter_resend_after.map(ms) else {
            return;
        };
        let quiet_gap =
            u64::from(QUIET_SYNC_MAX_SKIPS + 1).saturating_mul(ms(self.config.sync_interval));
        let horizon = ms(self.config.repair_t_max)
            .max(after)
            .max(quiet_gap.saturating_mul(5));
        while self
            .watched
            .front()
            .is_some_and(|w| now.saturating_sub(w.sent_at) > horizon)
        {
            self.watched.pop_front();
        }
        if self.watched.is_empty() || msg.bloom_filter.is_empty() {
            return;
        }
        // An unreadable filter is reported by the acknowledgement review.
        let Ok(view) = self.bloom.read(&msg.bloom_filter) else {
            return;
        };
        let max = self.config.max_resend_attempts;
        // Lamports count in the clock's unit, not necessarily milliseconds.
        let after_lamport = self.config.clock_unit().duration(after);
        for w in &mut self.watched {
            // The member must have had time to receive it before sending this message.
            if w.next > now
                || w.rebroadcasts >= max
                || msg.lamport_timestamp < w.lamport.saturating_add(after_lamport)
                || view.contains_hashes(w.hashes)
            {
                continue;
            }
            w.rebroadcasts += 1;
            w.next = now.saturating_add(after);
            self.transmits.push_back(Transmit {
                channel_id: self.channel_id.clone(),
                message_id: w.id.clone(),
                bytes: w.bytes.clone(),
                kind: TransmitKind::Resend,
            });
        }
    }

    /// Reviews our outgoing buffer against a received message's causal history (acknowledged)
    /// and bloom filter (possibly acknowledged, acknowledged at the threshold). Events come in
    /// outgoing-buffer order.
    fn review_acks(&mut self, msg: &SdsMessage) {
        if self.outgoing.len() == 0 {
            return;
        }
        let view = if msg.bloom_filter.is_empty() {
            None
        } else {
            match self.bloom.read(&msg.bloom_filter) {
                Ok(v) => Some(v),
                Err(error) => {
                    self.events.push_back(Event::InvalidBloomFilter {
                        channel_id: self.channel_id.clone(),
                        message_id: msg.message_id.clone(),
                        error,
                    });
                    None
                }
            }
        };
        enum Verdict {
            Acked,
            Possibly,
        }
        // The causal history by index lookups: one probe per cited entry, whatever the size of
        // the outgoing buffer.
        let mut cited: Vec<u64> = msg
            .causal_history
            .iter()
            .filter_map(|e| self.outgoing.seq_of.get(&e.message_id).copied())
            .collect();
        cited.sort_unstable();
        cited.dedup();
        let mut verdicts: Vec<(u64, Verdict)> = Vec::new();
        match &view {
            Some(view) => {
                for (&seq, slot) in &self.outgoing.slots {
                    if cited.binary_search(&seq).is_ok() {
                        verdicts.push((seq, Verdict::Acked));
                    } else if view.contains_hashes(slot.hashes)
                        && !slot.voters.contains(&msg.message_id)
                    {
                        verdicts.push((seq, Verdict::Possibly));
                    }
                }
            }
            None => verdicts.extend(cited.into_iter().map(|seq| (seq, Verdict::Acked))),
        }
        let threshold = self.config.possible_ack_threshold;
        for (seq, verdict) in verdicts {
            let acked = match verdict {
                Verdict::Acked => true,
                Verdict::Possibly => {
                    let Some(slot) = self.outgoing.slots.get_mut(&seq) else {
                        continue;
                    };
                    // Kept until the message is acknowledged: do not pin the received buffer.
                    slot.voters.push(msg.message_id.detached());
                    slot.entry.possible_acks += 1;
                    slot.entry.possible_acks >= threshold
                }
            };
            if acked {
                if let Some(old) = self.outgoing.remove_seq(seq) {
                    self.store_ops
                        .push(StoreOp::RemoveOutgoing(old.entry.message_id.clone()));
                    self.events.push_back(Event::Acknowledged {
                        channel_id: self.channel_id.clone(),
                        message_id: old.entry.message_id,
                    });
                }
            } else if let Some(slot) = self.outgoing.slots.get(&seq) {
                let entry = slot.entry.clone();
                let due = entry
                    .send_time
                    .saturating_add(ms(self.config.possibly_acked_resend_interval));
                self.outgoing.reschedule(seq, due);
                self.events.push_back(Event::PossiblyAcknowledged {
                    channel_id: self.channel_id.clone(),
                    message_id: entry.message_id.clone(),
                    count: entry.possible_acks,
                });
                self.store_ops.push(StoreOp::SaveOutgoing(entry));
            }
        }
    }
}
