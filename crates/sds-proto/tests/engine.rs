//! Behaviour of the sans-IO engine, item by item from the conformance checklist (ids in test
//! names). Times are milliseconds; T0 = 1 700 000 000 000.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sds_proto::bloom::BloomFilter;
use sds_proto::engine::{
    Channel, ChannelSnapshot, Config, DropReason, EngineError, Event, LamportUnit, ReceivedKind,
    SendFailure, StoreOp, Transmit, TransmitKind, Unwrapped,
};
use sds_proto::wire::{nim, DecodeError, LimitKind, Limits};
use sds_proto::{HistoryEntry, MessageId, SdsMessage};

#[path = "support/events.rs"]
mod events_support;
use events_support::{acked, ready};

const T0: u64 = 1_700_000_000_000;
const S: u64 = 1_000;
/// T0 on the clock of the default (nim-sds) profile, which counts seconds (LAMPORT-07).
const T0_S: i64 = (T0 / 1_000) as i64;

/// One endpoint: a channel plus everything it has emitted, drained after every input.
struct Node {
    ch: Channel,
    events: Vec<Event>,
    transmits: Vec<Transmit>,
    batches: Vec<Vec<StoreOp>>,
}

impl Node {
    fn new(name: &str, config: Config) -> Self {
        Node::at(name, config, T0)
    }

    fn at(name: &str, config: Config, now: u64) -> Self {
        Node {
            ch: Channel::new("c".into(), name.into(), config, now).unwrap(),
            events: Vec::new(),
            transmits: Vec::new(),
            batches: Vec::new(),
        }
    }

    fn drain(&mut self) {
        let ops = self.ch.take_store_ops();
        if !ops.is_empty() {
            self.batches.push(ops);
        }
        while let Some(e) = self.ch.poll_event() {
            self.events.push(e);
        }
        while let Some(t) = self.ch.poll_transmit() {
            self.transmits.push(t);
        }
    }

    fn wrap(&mut self, id: &str, now: u64) -> Bytes {
        let bytes = self
            .ch
            .wrap(Bytes::from(format!("content of {id}")), id.into(), now)
            .unwrap();
        self.drain();
        bytes
    }

    fn unwrap(&mut self, bytes: &Bytes, now: u64) -> Unwrapped {
        let r = self.ch.unwrap(bytes.clone(), now).unwrap();
        self.drain();
        r
    }

    fn tick(&mut self, now: u64) {
        self.ch.handle_timeout(now);
        self.drain();
    }

    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn log_ids(&self) -> Vec<String> {
        self.ch.log().map(|e| e.message_id.to_string()).collect()
    }

    fn outgoing_ids(&self) -> Vec<String> {
        self.ch
            .outgoing()
            .map(|e| e.message_id.to_string())
            .collect()
    }
}

/// A hand-made message on channel "c" from `sender`, citing `deps`.
fn message(id: &str, lamport: i64, deps: &[&str], sender: &str) -> SdsMessage {
    SdsMessage {
        message_id: id.into(),
        lamport_timestamp: lamport,
        causal_history: deps.iter().map(|d| HistoryEntry::new(*d)).collect(),
        channel_id: "c".into(),
        content: Bytes::from(format!("content of {id}")),
        sender_id: sender.into(),
        ..SdsMessage::default()
    }
}

fn bytes_of(msg: &SdsMessage) -> Bytes {
    Bytes::from(nim::encode(msg))
}

fn decode(bytes: &Bytes) -> SdsMessage {
    nim::decode(bytes, &Limits::default()).unwrap()
}

/// State that must not change when an input is refused.
fn fingerprint(ch: &Channel) -> (i64, ChannelSnapshot, Vec<u8>) {
    (
        ch.lamport(),
        ch.snapshot(),
        ch.bloom_filter().unwrap().bit_bytes().to_vec(),
    )
}

// ----- LAMPORT ---------------------------------------------------------------------------------

/// The default configuration with a clock counting milliseconds, as on the spec profile: the
/// millisecond examples of LAMPORT-01/02 apply to it as written.
fn ms_clock() -> Config {
    Config::default().with_lamport_unit(Some(LamportUnit::Milliseconds))
}

#[test]
fn lamport_01_new_channel_starts_at_now() {
    let n = Node::new("alice", ms_clock());
    assert_eq!(n.ch.lamport(), T0 as i64);
    let restored = Channel::restore(
        "c".into(),
        "a".into(),
        ms_clock(),
        ChannelSnapshot::default(),
        T0 + 7,
    )
    .unwrap();
    assert_eq!(restored.lamport(), (T0 + 7) as i64);
    // The nim-sds profile counts seconds (LAMPORT-07).
    assert_eq!(Node::new("alice", Config::default()).ch.lamport(), T0_S);
    let restored = Channel::restore(
        "c".into(),
        "a".into(),
        Config::default(),
        ChannelSnapshot::default(),
        T0 + 7 * S,
    )
    .unwrap();
    assert_eq!(restored.lamport(), T0_S + 7);
}

#[test]
fn lamport_02_send_is_max_of_now_and_next() {
    let mut a = Node::new("alice", ms_clock());
    assert_eq!(decode(&a.wrap("m1", T0)).lamport_timestamp, T0 as i64 + 1);
    assert_eq!(decode(&a.wrap("m2", T0)).lamport_timestamp, T0 as i64 + 2);
    assert_eq!(
        decode(&a.wrap("m3", T0 + 50)).lamport_timestamp,
        T0 as i64 + 50
    );
    // A wall clock 10 s behind the clock: L + 1.
    assert_eq!(
        decode(&a.wrap("m4", T0 - 10 * S)).lamport_timestamp,
        T0 as i64 + 51
    );
    // The same in seconds on the nim-sds profile.
    let mut a = Node::new("alice", Config::default());
    assert_eq!(decode(&a.wrap("m1", T0)).lamport_timestamp, T0_S + 1);
    assert_eq!(decode(&a.wrap("m2", T0 + 999)).lamport_timestamp, T0_S + 2);
    assert_eq!(
        decode(&a.wrap("m3", T0 + 50 * S)).lamport_timestamp,
        T0_S + 50
    );
    assert_eq!(
        decode(&a.wrap("m4", T0 - 10 * S)).lamport_timestamp,
        T0_S + 51
    );
}

#[test]
fn lamport_04_buffered_message_moves_the_clock_only_when_delivered() {
    let mut b = Node::new("bob", Config::default());
    let far = T0_S + 80_000;
    b.unwrap(&bytes_of(&message("m2", far + 1, &["m1"], "alice")), T0);
    assert_eq!(b.ch.lamport(), T0_S);
    b.unwrap(&bytes_of(&message("m1", far, &[], "alice")), T0);
    assert_eq!(b.ch.lamport(), far + 1);
}

#[test]
fn lamport_05_duplicates_echoes_and_syncs_leave_the_clock() {
    let mut a = Node::new("alice", Config::default());
    let mut b = Node::new("bob", Config::default());
    let m1 = a.wrap("m1", T0 + 10);
    b.unwrap(&m1, T0);
    let l = b.ch.lamport();
    b.unwrap(&m1, T0 + 20); // duplicate
    let sync = a.ch.sync_message(T0 + 500 * S).unwrap().unwrap();
    b.unwrap(&sync, T0 + 30);
    let own = b.wrap("b1", T0);
    let l_after_send = b.ch.lamport();
    assert_eq!(l_after_send, l + 1);
    b.unwrap(&own, T0 + 40); // own echo
    assert_eq!(b.ch.lamport(), l_after_send);
    // Sending a sync advances the clock like a content send.
    b.ch.sync_message(T0).unwrap().unwrap();
    assert_eq!(b.ch.lamport(), l_after_send + 1);
}

#[test]
fn lamport_06_resends_reuse_bytes_and_leave_the_clock() {
    let mut a = Node::new("alice", Config::default());
    let m1 = a.wrap("m1", T0);
    let l = a.ch.lamport();
    a.tick(T0 + 60 * S);
    assert_eq!(a.transmits.len(), 1);
    assert_eq!(a.transmits[0].bytes, m1);
    assert_eq!(a.transmits[0].kind, TransmitKind::Resend);
    assert_eq!(a.ch.lamport(), l);
}

#[test]
fn lamport_08_clock_overflow_is_a_typed_error() {
    let snapshot = ChannelSnapshot {
        lamport: Some(i64::MAX),
        ..ChannelSnapshot::default()
    };
    let mut ch = Channel::restore("c".into(), "a".into(), Config::default(), snapshot, T0).unwrap();
    let before = fingerprint(&ch);
    assert_eq!(
        ch.wrap(Bytes::from_static(b"x"), "m".into(), T0),
        Err(EngineError::ClockOverflow)
    );
    assert_eq!(fingerprint(&ch), before);
    assert!(ch.take_store_ops().is_empty());
}

// ----- SEND ------------------------------------------------------------------------------------

#[test]
fn send_01_empty_content_is_refused_without_effects() {
    let mut a = Node::new("alice", Config::default());
    assert_eq!(
        a.ch.wrap(Bytes::new(), "m".into(), T0 + 5),
        Err(EngineError::EmptyContent)
    );
    assert_eq!(a.ch.lamport(), T0_S);
    assert!(a.ch.take_store_ops().is_empty());
}

#[test]
fn send_02_content_size_limit() {
    let mut a = Node::new("alice", Config::default());
    let ok = Bytes::from(vec![7u8; 1_048_576]);
    let wire = a.ch.wrap(ok, "big".into(), T0).unwrap();
    // It also decodes on the receiving side with the default limits.
    let mut b = Node::new("bob", Config::default());
    assert_eq!(b.unwrap(&wire, T0).kind, ReceivedKind::Delivered);
    let before = fingerprint(&a.ch);
    let too_big = Bytes::from(vec![7u8; 1_048_577]);
    assert!(matches!(
        a.ch.wrap(too_big, "bigger".into(), T0),
        Err(EngineError::MessageTooLarge {
            size: 1_048_577,
            ..
        })
    ));
    assert_eq!(fingerprint(&a.ch), before);
}

#[test]
fn send_03_04_wrapped_message_fields_and_state_after() {
    let mut a = Node::new("alice", Config::default());
    a.wrap("m1", T0);
    a.wrap("m2", T0);
    let bytes = a.wrap("m3", T0 + 9 * S);
    let m = decode(&bytes);
    assert_eq!(m.message_id, "m3");
    assert_eq!(m.lamport_timestamp, T0_S + 9);
    let cited: Vec<String> = m
        .causal_history
        .iter()
        .map(|e| e.message_id.to_string())
        .collect();
    assert_eq!(cited, ["m1", "m2"]);
    assert_eq!(m.channel_id, "c");
    assert_eq!(&m.content[..], b"content of m3");
    assert_eq!(m.sender_id, "alice");
    // The filter is the one before m3 went in.
    let filter = BloomFilter::deserialize(&m.bloom_filter).unwrap();
    assert!(filter.contains(b"m1") && filter.contains(b"m2") && !filter.contains(b"m3"));
    // Afterwards m3 is in the log (with its bytes), the filter and the outgoing buffer.
    assert_eq!(a.log_ids(), ["m1", "m2", "m3"]);
    assert_eq!(a.ch.log_entry(&"m3".into()).unwrap().bytes, bytes);
    assert!(a.ch.filter_contains(b"m3"));
    let out = a.ch.outgoing().last().unwrap();
    assert_eq!((out.attempts, out.send_time), (0, T0 + 9 * S));
}

#[test]
fn send_03_causal_history_setting_zero_and_empty_sender() {
    let config = Config::default().with_max_causal_history(0);
    let mut a = Node {
        ch: Channel::new("c".into(), "".into(), config, T0).unwrap(),
        events: vec![],
        transmits: vec![],
        batches: vec![],
    };
    a.wrap("m1", T0);
    let m = decode(&a.wrap("m2", T0));
    assert!(m.causal_history.is_empty());
    assert!(m.sender_id.is_empty());
    // The nim-sds layout leaves field 7 out for an empty sender.
    assert!(!nim::encode(&m).windows(1).any(|w| w[0] == 0x3a));
}

#[test]
fn send_05_causal_entries_carry_senders() {
    let mut a = Node::new("alice", Config::default());
    let mut b = Node::new("bob", Config::default());
    let b1 = b.wrap("b1", T0);
    a.unwrap(&b1, T0);
    a.wrap("m1", T0);
    let m = decode(&a.wrap("m2", T0));
    let senders: Vec<(String, String)> = m
        .causal_history
        .iter()
        .map(|e| (e.message_id.to_string(), e.sender_id.to_string()))
        .collect();
    assert_eq!(
        senders,
        [
            ("b1".to_string(), "bob".to_string()),
            ("m1".to_string(), "alice".to_string())
        ]
    );
}

#[test]
fn send_06_hint_provider_fills_hints_once() {
    let mut a = Node::new("alice", Config::default());
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    a.ch.set_hint_provider(Some(Arc::new(move |id: &MessageId| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(Bytes::from(format!("hint:{id}")))
    })));
    a.wrap("msg1", T0);
    let m = decode(&a.wrap("msg2", T0));
    assert_eq!(&m.causal_history[0].retrieval_hint[..], b"hint:msg1");
    assert!(a.batches.last().unwrap().iter().any(
        |op| matches!(op, StoreOp::SetRetrievalHint { message_id, .. } if message_id == "msg1")
    ));
    // The hint is kept: citing msg1 again does not ask again.
    let before = calls.load(std::sync::atomic::Ordering::SeqCst);
    a.wrap("msg3", T0);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), before + 1); // only msg2
}

#[test]
fn send_09_log_eviction_in_the_same_batch() {
    let mut a = Node::new("alice", Config::default());
    for i in 0..1006 {
        a.wrap(&format!("msg{i}"), T0);
    }
    let log = a.log_ids();
    assert_eq!(log.len(), 1000);
    assert_eq!(log.first().unwrap(), "msg6");
    assert_eq!(log.last().unwrap(), "msg1005");
    let last = a.batches.last().unwrap();
    assert!(last
        .iter()
        .any(|op| matches!(op, StoreOp::RemoveLogEntry(id) if id == "msg5")));
    assert!(last
        .iter()
        .any(|op| matches!(op, StoreOp::AppendLogEntry(e) if e.message_id == "msg1005")));
    assert_eq!(a.batches.len(), 1006, "one batch per wrap");
}

#[test]
fn wrapping_an_id_twice_is_refused() {
    let mut a = Node::new("alice", Config::default());
    a.wrap("m1", T0);
    let before = fingerprint(&a.ch);
    assert_eq!(
        a.ch.wrap(Bytes::from_static(b"x"), "m1".into(), T0),
        Err(EngineError::DuplicateMessageId("m1".into()))
    );
    assert_eq!(fingerprint(&a.ch), before);
}

// ----- RECV ------------------------------------------------------------------------------------

#[test]
fn recv_01_delivery() {
    let mut a = Node::new("alice", Config::default());
    let mut b = Node::new("bob", Config::default());
    let m1 = a.wrap("m1", T0 + 100 * S);
    let r = b.unwrap(&m1, T0);
    assert_eq!(r.kind, ReceivedKind::Delivered);
    assert_eq!(&r.content[..], b"content of m1");
    assert!(r.missing_dependencies.is_empty());
    assert_eq!(r.channel_id, "c");
    assert_eq!(ready(&b.events), ["m1"]);
    assert_eq!(b.log_ids(), ["m1"]);
    assert!(b.ch.filter_contains(b"m1"));
    assert_eq!(b.ch.lamport(), T0_S + 100);
}

#[test]
fn recv_02_own_messages_are_ignored() {
    let mut a = Node::new("alice", Config::default());
    let m1 = a.wrap("m1", T0);
    let echo = bytes_of(&message("other", T0_S + 5, &[], "alice"));
    let before = fingerprint(&a.ch);
    let r = a.unwrap(&echo, T0);
    assert_eq!(r.kind, ReceivedKind::Own);
    assert_eq!(&r.content[..], b"content of other");
    assert!(r.missing_dependencies.is_empty());
    assert_eq!(fingerprint(&a.ch), before);
    let r = a.unwrap(&m1, T0);
    assert_eq!(r.kind, ReceivedKind::Own);
    assert!(a.events.is_empty());
}

#[test]
fn recv_04_duplicates_change_nothing() {
    let mut a = Node::new("alice", Config::default());
    let mut b = Node::new("bob", Config::default());
    let m1 = a.wrap("m1", T0);
    b.unwrap(&m1, T0);
    let before = fingerprint(&b.ch);
    let batches = b.batches.len();
    let r = b.unwrap(&m1, T0 + 5);
    assert_eq!(r.kind, ReceivedKind::Duplicate);
    assert_eq!(&r.content[..], b"content of m1");
    assert_eq!(ready(&b.events), ["m1"]);
    assert_eq!(fingerprint(&b.ch), before);
    assert_eq!(b.batches.len(), batches, "no store batch for a duplicate");
}

#[test]
fn recv_04_a_held_copy_is_recognised_by_its_bytes_not_its_id() {
    let mut a = Node::new("alice", Config::default());
    let mut b = Node::new("bob", Config::default());
    let m1 = a.wrap("m1", T0);
    b.unwrap(&m1, T0);
    let before = fingerprint(&b.ch);
    // Same id, other bytes: decoded in full — a broken body is an error, not a duplicate.
    let mut broken = m1.to_vec();
    broken.truncate(broken.len() - 3);
    let broken = Bytes::from(broken);
    assert!(b.ch.unwrap(broken, T0 + 1).is_err());
    let mut other = decode(&m1);
    other.content = Bytes::from_static(b"other content");
    // Same id, other content: a conflicting message, reported and dropped.
    let r = b.unwrap(&bytes_of(&other), T0 + 2);
    assert_eq!(r.kind, ReceivedKind::Conflict);
    assert_eq!(&r.content[..], b"other content");
    b.take_events();
    // The byte-identical copy in a fresh buffer answers like a decoded one.
    let r = b.unwrap(&Bytes::copy_from_slice(&m1), T0 + 3);
    assert_eq!(r.kind, ReceivedKind::Duplicate);
    assert_eq!(r.message_id.to_string(), "m1");
    assert_eq!(r.channel_id.to_string(), "c");
    assert_eq!(&r.content[..], b"content of m1");
    assert!(r.missing_dependencies.is_empty());
    assert_eq!(fingerprint(&b.ch), before);
    // Our own message coming back is our own, byte copy or not.
    assert_eq!(a.unwrap(&m1, T0 + 4).kind, ReceivedKind::Own);
    // A waiting message's copy still reports what it waits for.
    let m3 = bytes_of(&message("m3", T0_S + 9, &["m2"], "carol"));
    b.unwrap(&m3, T0 + 5);
    let r = b.unwrap(&m3, T0 + 6);
    assert_eq!(r.kind, ReceivedKind::Duplicate);
    let missing: Vec<String> = r
        .missing_dependencies
        .iter()
        .map(|e| e.message_id.to_string())
        .collect();
    assert_eq!(missing, ["m2"]);
}

#[test]
fn recv_04_duplicates_of_evicted_messages_are_still_caught() {
    let config = Config::default().with_max_message_history(3);
    let mut a = Node::new("alice", config.clone());
    let mut b = Node::new("bob", config);
    let wires: Vec<Bytes> = (0..6).map(|i| a.wrap(&format!("m{i}"), T0)).collect();
    for w in &wires {
        b.unwrap(w, T0);
    }
    assert_eq!(b.log_ids(), ["m3", "m4", "m5"]);
    assert_eq!(b.unwrap(&wires[0], T0).kind, ReceivedKind::Duplicate);
    assert_eq!(ready(&b.events).len(), 6);
}

#[test]
fn recv_05_duplicate_of_buffered_message_changes_nothing() {
    let mut b = Node::new("bob", Config::default());
    let m2 = bytes_of(&message("m2", 5, &["m1"], "alice"));
    b.unwrap(&m2, T0);
    let events = b.take_events();
    assert_eq!(events.len(), 1);
    let before = fingerprint(&b.ch);
    let timeout = b.ch.poll_timeout();
    let r = b.unwrap(&m2, T0 + 30 * S);
    assert_eq!(r.kind, ReceivedKind::Duplicate);
    assert_eq!(r.missing_dependencies.len(), 1);
    assert!(b.events.is_empty());
    assert_eq!(fingerprint(&b.ch), before);
    assert_eq!(b.ch.poll_timeout(), timeout);
}

#[test]
fn recv_07_missing_entries_keep_hint_and_sender() {
    let mut b = Node::new("bob", Config::default());
    let mut m = message("m", 5, &[], "alice");
    m.causal_history = vec![HistoryEntry {
        message_id: "another-missing".into(),
        retrieval_hint: Bytes::from_static(b"remote-hint"),
        sender_id: "carol".into(),
    }];
    let r = b.unwrap(&bytes_of(&m), T0);
    assert_eq!(r.kind, ReceivedKind::Buffered);
    assert_eq!(r.missing_dependencies, m.causal_history);
    assert_eq!(
        b.events,
        [Event::MissingDependencies {
            channel_id: "c".into(),
            message_id: "m".into(),
            missing: m.causal_history.clone(),
        }]
    );
}

#[test]
fn recv_09_acknowledgements_come_before_deliveries() {
    // basic_out_of_order: alice receives bob's b1 citing a1, a2, a3.
    let mut a = Node::new("alice", Config::default());
    let mut b = Node::new("bob", Config::default());
    let wires: Vec<Bytes> = ["a1", "a2", "a3"].iter().map(|id| a.wrap(id, T0)).collect();
    for i in [2, 0, 1, 1] {
        b.unwrap(&wires[i], T0);
    }
    let b1 = b.wrap("b1", T0);
    a.unwrap(&b1, T0);
    let kinds: Vec<String> = a
        .events
        .iter()
        .map(|e| match e {
            Event::Acknowledged { message_id, .. } => format!("ack {message_id}"),
            Event::MessageReady { message_id, .. } => format!("ready {message_id}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["ack a1", "ack a2", "ack a3", "ready b1"]);
}

// ----- DEP -------------------------------------------------------------------------------------

#[test]
fn dep_01_buffered_messages_report_missing_dependencies() {
    let mut b = Node::new("bob", Config::default());
    let r3 = b.unwrap(&bytes_of(&message("msg3", 3, &["msg1", "msg2"], "a")), T0);
    assert_eq!(r3.kind, ReceivedKind::Buffered);
    assert_eq!(&r3.content[..], b"content of msg3");
    b.unwrap(&bytes_of(&message("msg2", 2, &["msg1"], "a")), T0);
    let missing: Vec<(String, Vec<String>)> = b
        .events
        .iter()
        .map(|e| match e {
            Event::MissingDependencies {
                message_id,
                missing,
                ..
            } => (
                message_id.to_string(),
                missing.iter().map(|m| m.message_id.to_string()).collect(),
            ),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        missing,
        [
            (
                "msg3".to_string(),
                vec!["msg1".to_string(), "msg2".to_string()]
            ),
            ("msg2".to_string(), vec!["msg1".to_string()])
        ]
    );
}

/// (message id, missing ids) of each `MissingDependencies` event, in order.
fn missing_reports(events: &[Event]) -> Vec<(String, Vec<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MissingDependencies {
                message_id,
                missing,
                ..
            } => Some((
                message_id.to_string(),
                missing.iter().map(|m| m.message_id.to_string()).collect(),
            )),
            _ => None,
        })
        .collect()
}

fn ids(entries: &[HistoryEntry]) -> Vec<String> {
    entries.iter().map(|e| e.message_id.to_string()).collect()
}

// DEP-01, RECV-07: a dependency that waits in our own incoming buffer is not missing — we hold
// it; only what we lack is reported (what the application would fetch), as the repair buffer
// asks only for what we lack.
#[test]
fn dep_01_a_dependency_waiting_in_our_buffer_is_not_reported_missing() {
    let mut b = Node::new("bob", Config::default());
    let m2 = bytes_of(&message("m2", 2, &["m1"], "a"));
    b.unwrap(&m2, T0);
    let m3 = bytes_of(&message("m3", 3, &["m1", "m2"], "a"));
    let r = b.unwrap(&m3, T0);
    assert_eq!(r.kind, ReceivedKind::Buffered);
    assert_eq!(ids(&r.missing_dependencies), ["m1"]);
    assert_eq!(
        missing_reports(&b.take_events()),
        [
            ("m2".to_string(), vec!["m1".to_string()]),
            ("m3".to_string(), vec!["m1".to_string()])
        ]
    );
    // A copy of m3 says the same.
    assert_eq!(ids(&b.unwrap(&m3, T0).missing_dependencies), ["m1"]);
    // Also one whose bytes differ (decoded again).
    let copy = bytes_of(&SdsMessage {
        sender_id: "other copy".into(),
        ..decode(&m3)
    });
    assert_eq!(ids(&b.unwrap(&copy, T0).missing_dependencies), ["m1"]);
    // Other content under its id is a conflict, not a copy.
    let conflict = bytes_of(&SdsMessage {
        content: Bytes::from_static(b"another message"),
        ..decode(&m3)
    });
    assert_eq!(b.unwrap(&conflict, T0).kind, ReceivedKind::Conflict);
    b.take_events();
    // A message that waits only for messages we hold lacks nothing: no report, but it waits.
    let r = b.unwrap(&bytes_of(&message("m4", 4, &["m3"], "a")), T0);
    assert_eq!(r.kind, ReceivedKind::Buffered);
    assert!(r.missing_dependencies.is_empty());
    assert!(missing_reports(&b.take_events()).is_empty());
    assert_eq!(b.ch.incoming().len(), 3);
    // m1 releases everything, in causal order.
    b.unwrap(&bytes_of(&message("m1", 1, &[], "a")), T0);
    assert_eq!(ready(&b.take_events()), ["m1", "m2", "m3", "m4"]);
    assert!(b.ch.incoming().is_empty());
}

#[test]
fn dep_02_the_filter_never_satisfies_a_dependency() {
    let mut b = Node::new("bob", Config::default());
    // msg1 reaches bob's filter (received ids join it even while buffered) but is not delivered.
    b.unwrap(&bytes_of(&message("msg1", 1, &["msg0"], "x")), T0);
    assert!(b.ch.filter_contains(b"msg1"));
    let r = b.unwrap(&bytes_of(&message("msg2", 2, &["msg1"], "x")), T0);
    assert_eq!(r.kind, ReceivedKind::Buffered);
    // msg2 waits for msg1 (which we hold, so it is not reported missing: it waits itself).
    let waiting = b.ch.incoming();
    let msg2 = waiting.iter().find(|e| e.message_id == "msg2").unwrap();
    assert_eq!(ids(&msg2.missing), ["msg1"]);
    assert!(ready(&b.events).is_empty());
}

#[test]
fn dep_03_dependencies_are_announced_before_dependents() {
    let mut a = Node::new("alice", Config::default());
    let mut b = Node::new("bob", Config::default());
    let w: Vec<Bytes> = ["a1", "a2", "a3"].iter().map(|id| a.wrap(id, T0)).collect();
    b.unwrap(&w[2], T0);
    b.unwrap(&w[0], T0);
    assert_eq!(ready(&b.events), ["a1"]);
    b.unwrap(&w[1], T0);
    assert_eq!(ready(&b.events), ["a1", "a2", "a3"]);
}

#[test]
fn dep_05_log_is_ordered_by_lamport_then_id() {
    let mut b = Node::new("bob", Config::default());
    b.unwrap(&bytes_of(&message("b", 20, &[], "x")), T0);
    b.unwrap(&bytes_of(&message("a", 10, &[], "x")), T0);
    assert_eq!(b.log_ids(), ["a", "b"]);
    b.unwrap(&bytes_of(&message("d", 30, &[], "x")), T0);
    b.unwrap(&bytes_of(&message("c", 30, &[], "x")), T0);
    assert_eq!(b.log_ids(), ["a", "b", "c", "d"]);
    let m = decode(&b.wrap("e", T0));
    let cited: Vec<String> = m
        .causal_history
        .iter()
        .map(|e| e.message_id.to_string())
        .collect();
    assert_eq!(cited, ["a", "b", "c", "d"]);
}

#[test]
fn dep_07_long_chain_in_reverse_is_delivered_in_order() {
    let config = Config::default()
        .with_max_message_history(2_000)
        .with_max_known_ids(4_000);
    let mut a = Node::new("alice", config.clone());
    let wires: Vec<Bytes> = (0..2000).map(|i| a.wrap(&format!("m{i}"), T0)).collect();
    let mut b = Node::new("bob", config);
    for w in wires.iter().rev() {
        b.unwrap(w, T0);
    }
    let expected: Vec<String> = (0..2000).map(|i| format!("m{i}")).collect();
    assert_eq!(ready(&b.events), expected);
    assert!(b.ch.incoming().is_empty());
}

#[test]
fn dep_08_deliveries_shrink_missing_sets_in_the_same_batch() {
    let mut b = Node::new("bob", Config::default());
    b.unwrap(&bytes_of(&message("c", 3, &["a", "b"], "x")), T0);
    let batches = b.batches.len();
    b.unwrap(&bytes_of(&message("a", 1, &[], "x")), T0);
    assert_eq!(b.batches.len(), batches + 1);
    let batch = b.batches.last().unwrap();
    assert!(batch.iter().any(|op| matches!(op,
        StoreOp::SaveIncoming(e) if e.message_id == "c" && e.missing.len() == 1)));
    // A timer tick re-reports nothing.
    b.take_events();
    b.tick(T0 + 30 * S);
    assert!(b.events.is_empty());
}

// ----- ACK -------------------------------------------------------------------------------------

#[test]
fn ack_01_causal_history_acknowledges_in_buffer_order() {
    let mut a = Node::new("alice", Config::default());
    for i in 0..6 {
        a.wrap(&format!("msg{i}"), T0);
    }
    let reply = bytes_of(&message("r", 1, &["msg4", "msg0", "msg2"], "bob"));
    a.unwrap(&reply, T0);
    assert_eq!(acked(&a.events), ["msg0", "msg2", "msg4"]);
    assert_eq!(a.outgoing_ids(), ["msg1", "msg3", "msg5"]);
}

fn with_filter(mut m: SdsMessage, ids: &[&str]) -> SdsMessage {
    let mut f = BloomFilter::new(10_000, 0.001).unwrap();
    for id in ids {
        f.insert(id.as_bytes());
    }
    m.bloom_filter = Bytes::from(f.serialize());
    m
}

#[test]
fn ack_02_03_bloom_hits_count_up_to_the_threshold() {
    let mut a = Node::new("alice", Config::default());
    a.wrap("msg1", T0);
    a.unwrap(
        &bytes_of(&with_filter(message("r1", 1, &[], "bob"), &["msg1"])),
        T0,
    );
    assert_eq!(
        a.take_events()[0],
        Event::PossiblyAcknowledged {
            channel_id: "c".into(),
            message_id: "msg1".into(),
            count: 1
        }
    );
    assert_eq!(a.outgoing_ids(), ["msg1"]);
    a.unwrap(
        &bytes_of(&with_filter(message("r2", 1, &[], "carol"), &["msg1"])),
        T0,
    );
    assert_eq!(acked(&a.events), ["msg1"]);
    assert!(a.outgoing_ids().is_empty());
}

#[test]
fn ack_04_threshold_is_configurable() {
    for (threshold, acks_after) in [(1u32, 1usize), (3, 3)] {
        let config = Config::default().with_possible_ack_threshold(threshold);
        let mut a = Node::new("alice", config);
        a.wrap("msg1", T0);
        for i in 0..acks_after {
            assert!(acked(&a.events).is_empty());
            let m = with_filter(message(&format!("r{i}"), 1, &[], "bob"), &["msg1"]);
            a.unwrap(&bytes_of(&m), T0);
        }
        assert_eq!(acked(&a.events), ["msg1"], "threshold {threshold}");
        let counts: Vec<u32> = a
            .events
            .iter()
            .filter_map(|e| match e {
                Event::PossiblyAcknowledged { count, .. } => Some(*count),
                _ => None,
            })
            .collect();
        assert_eq!(counts, (1..threshold).collect::<Vec<_>>());
    }
}

#[test]
fn ack_05_the_same_message_twice_is_one_hit() {
    let mut a = Node::new("alice", Config::default());
    a.wrap("msg1", T0);
    let r1 = bytes_of(&with_filter(message("r1", 1, &["zzz"], "bob"), &["msg1"]));
    a.unwrap(&r1, T0);
    a.unwrap(&r1, T0);
    // Even a sync that reuses an id counts once.
    let s = bytes_of(&with_filter(
        SdsMessage {
            content: Bytes::new(),
            ..message("s1", 1, &[], "bob")
        },
        &["msg1"],
    ));
    a.unwrap(&s, T0);
    a.unwrap(&s, T0);
    assert_eq!(acked(&a.events), ["msg1"]);
    let hits = a
        .events
        .iter()
        .filter(|e| matches!(e, Event::PossiblyAcknowledged { .. }))
        .count();
    assert_eq!(hits, 1);
}

#[test]
fn ack_07_only_outstanding_ids_are_hit() {
    let mut a = Node::new("alice", Config::default());
    a.wrap("msg1", T0);
    a.wrap("msg2", T0);
    let mut ids: Vec<String> = (0..100).map(|i| format!("noise-{i}")).collect();
    ids.push("msg1".into());
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    a.unwrap(
        &bytes_of(&with_filter(message("r", 1, &[], "bob"), &refs)),
        T0,
    );
    a.events
        .retain(|e| !matches!(e, Event::MessageReady { .. }));
    assert_eq!(
        a.events,
        [Event::PossiblyAcknowledged {
            channel_id: "c".into(),
            message_id: "msg1".into(),
            count: 1
        }]
    );
}

#[test]
fn ack_08_invalid_filter_is_reported_and_the_message_still_processed() {
    let mut a = Node::new("alice", Config::default());
    a.wrap("msg1", T0);
    let mut m = message("r", 1, &["msg1"], "bob");
    // mBits = 0: nim-sds divides by zero on this.
    let mut bad = Vec::new();
    bad.extend_from_slice(&[0x0a, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]);
    bad.extend_from_slice(&[0x10, 0x0a, 0x18, 0xe8, 0x07, 0x20, 0x07, 0x28, 0x00]);
    m.bloom_filter = Bytes::from(bad);
    let r = a.unwrap(&bytes_of(&m), T0);
    assert_eq!(r.kind, ReceivedKind::Delivered);
    assert!(matches!(a.events[0], Event::InvalidBloomFilter { .. }));
    assert_eq!(acked(&a.events), ["msg1"], "causal acks still apply");
    assert_eq!(ready(&a.events), ["r"]);
}

// ----- RESEND ----------------------------------------------------------------------------------

#[test]
fn resend_01_02_schedule_and_send_failed() {
    let mut a = Node::new("alice", Config::default());
    let m1 = a.wrap("m1", T0);
    a.tick(T0 + 60 * S - 1);
    assert!(a.transmits.is_empty());
    for k in 1..=5u64 {
        assert_eq!(a.ch.poll_timeout(), Some(T0 + 60 * S * k));
        a.tick(T0 + 60 * S * k);
        assert_eq!(a.transmits.len() as u64, k);
        assert_eq!(a.transmits.last().unwrap().bytes, m1);
        let e = a.ch.outgoing().next().unwrap();
        assert_eq!((e.attempts as u64, e.send_time), (k, T0 + 60 * S * k));
    }
    a.tick(T0 + 360 * S);
    assert_eq!(a.transmits.len(), 5);
    assert_eq!(
        a.events,
        [Event::SendFailed {
            channel_id: "c".into(),
            message_id: "m1".into(),
            reason: SendFailure::RetriesExhausted
        }]
    );
    assert!(a.outgoing_ids().is_empty());
    assert!(a
        .batches
        .last()
        .unwrap()
        .contains(&StoreOp::RemoveOutgoing("m1".into())));
}

#[test]
fn resend_03_nim_scenario_spec_correct() {
    let config = Config::default()
        .with_resend_interval(Duration::from_millis(100))
        .with_max_resend_attempts(3)
        .with_bloom_capacity(2);
    let mut a = Node::new("alice", config);
    a.wrap("msg1", T0);
    for t in (0..=500).step_by(50) {
        a.tick(T0 + t);
    }
    a.wrap("msg2", T0 + 500);
    a.wrap("msg3", T0 + 500);
    let failed: Vec<&Event> = a
        .events
        .iter()
        .filter(|e| matches!(e, Event::SendFailed { .. }))
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(acked(&a.events).is_empty());
    assert_eq!(a.outgoing_ids(), ["msg2", "msg3"]);
    assert_eq!(a.ch.outgoing().next().unwrap().attempts, 0);
    assert!(a.ch.filter_contains(b"msg3"));
    assert!(!a.ch.filter_contains(b"msg1"));
}

#[test]
fn resend_04_possibly_acknowledged_use_their_own_interval_and_go_second() {
    let config = Config::default()
        .with_resend_interval(Duration::from_millis(60 * S))
        .with_possibly_acked_resend_interval(Duration::from_millis(60 * S));
    let mut a = Node::new("alice", config);
    a.wrap("p", T0);
    a.wrap("u", T0);
    a.unwrap(
        &bytes_of(&with_filter(message("r", 1, &[], "bob"), &["p"])),
        T0,
    );
    a.tick(T0 + 60 * S);
    let order: Vec<String> = a
        .transmits
        .iter()
        .map(|t| t.message_id.to_string())
        .collect();
    assert_eq!(order, ["u", "p"]);

    let config = Config::default(); // possibly-acked interval 120 s
    let mut a = Node::new("alice", config);
    a.wrap("p", T0);
    a.unwrap(
        &bytes_of(&with_filter(message("r", 1, &[], "bob"), &["p"])),
        T0,
    );
    a.tick(T0 + 60 * S);
    assert!(a.transmits.is_empty());
    a.tick(T0 + 120 * S);
    assert_eq!(a.transmits.len(), 1);
}

#[test]
fn resend_05_06_ack_stops_resends_and_resends_change_no_state() {
    let mut a = Node::new("alice", Config::default());
    a.wrap("m1", T0);
    a.tick(T0 + 60 * S);
    let batch = a.batches.last().unwrap().clone();
    assert_eq!(batch.len(), 1);
    assert!(matches!(&batch[0], StoreOp::SaveOutgoing(e) if e.attempts == 1));
    assert_eq!(a.log_ids(), ["m1"]);
    a.unwrap(&bytes_of(&message("r", 1, &["m1"], "bob")), T0 + 61 * S);
    assert_eq!(acked(&a.events), ["m1"]);
    a.tick(T0 + 500 * S);
    assert_eq!(a.transmits.len(), 1);
    // An ack after the give-up: no event.
    let mut a = Node::new("alice", Config::default().with_max_resend_attempts(0));
    a.wrap("m1", T0);
    a.tick(T0 + 60 * S);
    a.take_events();
    a.unwrap(&bytes_of(&message("r", 1, &["m1"], "bob")), T0 + 61 * S);
    assert!(acked(&a.events).is_empty());
}

#[test]
fn resend_08_zero_attempts_fail_at_first_due_time() {
    let mut a = Node::new("alice", Config::default().with_max_resend_attempts(0));
    a.wrap("m1", T0);
    a.tick(T0 + 60 * S);
    assert!(a.transmits.is_empty());
    assert!(matches!(a.events[0], Event::SendFailed { .. }));
}

#[test]
fn resend_09_next_deadline_and_early_ticks() {
    let mut a = Node::new("alice", Config::default());
    assert_eq!(a.ch.poll_timeout(), None);
    a.wrap("m1", T0);
    a.ch.set_sync_timer(Some(T0));
    assert_eq!(a.ch.poll_timeout(), Some(T0 + 30 * S));
    a.tick(T0 + 29 * S);
    assert!(a.transmits.is_empty() && a.events.is_empty() && a.batches.len() == 1);
}

// ----- SYNC ------------------------------------------------------------------------------------

#[test]
fn sync_01_02_04_05_sync_messages() {
    let mut a = Node::new("alice", Config::default());
    assert_eq!(a.ch.sync_message(T0).unwrap(), None, "empty log: no sync");
    a.wrap("m1", T0);
    let before_out = a.outgoing_ids();
    let s1 = decode(&a.ch.sync_message(T0).unwrap().unwrap());
    let s2 = decode(&a.ch.sync_message(T0).unwrap().unwrap());
    assert!(s1.content.is_empty());
    assert_ne!(s1.message_id, s2.message_id);
    assert_eq!(s1.lamport_timestamp, T0_S + 2);
    assert_eq!(s1.causal_history[0].message_id, "m1");
    assert_eq!(s1.sender_id, "alice");
    assert_eq!(a.outgoing_ids(), before_out);
    assert_eq!(a.log_ids(), ["m1"]);
    assert!(!a.ch.filter_contains(s1.message_id.as_bytes()));
    let next = decode(&a.wrap("m2", T0));
    assert!(next.causal_history.iter().all(|e| e.message_id == "m1"));
    // The nim-sds layout writes an empty field 5.
    assert!(nim::encode(&s1).windows(2).any(|w| w == [0x2a, 0x00]));
}

#[test]
fn sync_06_received_sync_only_reviews_acks() {
    let mut a = Node::new("alice", Config::default());
    let mut b = Node::new("bob", Config::default());
    let w: Vec<Bytes> = ["a1", "a2", "a3"].iter().map(|id| a.wrap(id, T0)).collect();
    for x in &w {
        b.unwrap(x, T0);
    }
    let sync = b.ch.sync_message(T0 + 1).unwrap().unwrap();
    let before = (
        a.ch.lamport(),
        a.log_ids(),
        a.ch.bloom_filter().unwrap().bit_bytes().to_vec(),
    );
    let r = a.unwrap(&sync, T0 + 2);
    assert_eq!(r.kind, ReceivedKind::Sync);
    assert_eq!(acked(&a.events), ["a1", "a2", "a3"]);
    assert!(ready(&a.events).is_empty());
    assert_eq!(
        (
            a.ch.lamport(),
            a.log_ids(),
            a.ch.bloom_filter().unwrap().bit_bytes().to_vec()
        ),
        before
    );
    assert!(a.ch.incoming().is_empty());
}

// SYNC-06: a received sync is not buffered, but what it cites and we lack is reported — the
// application fetches it as it does the dependencies of a content message — and requested.
#[test]
fn sync_06_what_a_received_sync_cites_and_we_lack_is_reported() {
    let mut a = Node::new("alice", Config::default());
    let mut b = Node::new("bob", Config::default());
    a.wrap("a1", T0);
    let a2 = a.wrap("a2", T0);
    let a3 = a.wrap("a3", T0);
    // bob holds a2 (waiting for a1) and a3 (waiting for a1, a2), and lacks a1.
    b.unwrap(&a3, T0);
    b.unwrap(&a2, T0);
    b.take_events();
    let sync_bytes = a.ch.sync_message(T0 + 1).unwrap().unwrap();
    let sync_id = decode(&sync_bytes).message_id;
    let batches = b.batches.len();
    let r = b.unwrap(&sync_bytes, T0 + 2);
    assert_eq!(r.kind, ReceivedKind::Sync);
    assert_eq!(ids(&r.missing_dependencies), ["a1"]);
    assert_eq!(r.missing_dependencies[0].sender_id, "alice");
    let events = b.take_events();
    assert_eq!(events.len(), 1, "{events:?}");
    match &events[0] {
        Event::MissingMessages {
            channel_id,
            cited_by,
            missing,
        } => {
            assert_eq!(channel_id, "c");
            assert_eq!(cited_by, &sync_id);
            assert_eq!(ids(missing), ["a1"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        b.batches.len(),
        batches,
        "nothing new to store: a1 was already requested"
    );
    assert!(b
        .ch
        .outgoing_repair()
        .iter()
        .any(|e| e.entry.message_id == "a1"));
    // Once bob has everything, a sync citing it reports nothing.
    b.unwrap(&bytes_of(&decode(&a.wrap("a4", T0 + 3))), T0 + 3);
    let a1 = a.ch.log_entry(&"a1".into()).unwrap().bytes.clone();
    b.unwrap(&a1, T0 + 4);
    b.take_events();
    let r = b.unwrap(&a.ch.sync_message(T0 + 5).unwrap().unwrap(), T0 + 6);
    assert!(r.missing_dependencies.is_empty());
    assert!(b.take_events().is_empty());
}

#[test]
fn sync_08_periodic_sync_timer() {
    let mut a = Node::new(
        "alice",
        Config::default().with_sync_interval(Duration::from_millis(250)),
    );
    a.wrap("m1", T0);
    a.ch.set_sync_timer(Some(T0));
    a.tick(T0 + 249);
    assert!(a.transmits.is_empty());
    a.tick(T0 + 250);
    a.tick(T0 + 500);
    let syncs: Vec<&Transmit> = a
        .transmits
        .iter()
        .filter(|t| t.kind == TransmitKind::Sync)
        .collect();
    assert_eq!(syncs.len(), 2);
    assert_eq!(a.ch.poll_timeout(), Some(T0 + 750));
    a.ch.set_sync_timer(None);
    a.tick(T0 + 10_000);
    assert_eq!(
        a.transmits
            .iter()
            .filter(|t| t.kind == TransmitKind::Sync)
            .count(),
        2
    );
}

fn syncs(n: &Node) -> usize {
    n.transmits
        .iter()
        .filter(|t| t.kind == TransmitKind::Sync)
        .count()
}

#[test]
fn sync_quiet_sync_waits_for_a_quiet_interval() {
    let config = Config::default()
        .with_sync_interval(Duration::from_millis(250))
        .with_quiet_sync(true);
    let mut a = Node::new("alice", config.clone());
    let mut b = Node::new("bob", config);
    a.wrap("m1", T0);
    a.ch.set_sync_timer(Some(T0 - 250));
    // alice's own send counts as traffic.
    a.tick(T0 + 100);
    assert_eq!(syncs(&a), 0);
    let b1 = b.wrap("b1", T0 + 200);
    a.unwrap(&b1, T0 + 300);
    a.tick(T0 + 350);
    assert_eq!(syncs(&a), 0, "heard bob 50 ms ago");
    a.tick(T0 + 600);
    assert_eq!(syncs(&a), 1, "quiet since T0 + 300");
    // Its own sync is traffic too, but one interval later the channel is quiet again.
    a.tick(T0 + 850);
    assert_eq!(syncs(&a), 2);
    // However busy the channel, a member silent for three intervals sends the fourth sync.
    for k in 1..=4 {
        let t = T0 + 850 + k * 250;
        let bk = b.wrap(&format!("b{}", k + 1), t - 10);
        a.unwrap(&bk, t - 5);
        a.tick(t);
    }
    assert_eq!(syncs(&a), 3, "skipped three, sent the fourth");

    // Without the option every sync goes out however busy the channel is.
    let mut c = Node::new(
        "carol",
        Config::default().with_sync_interval(Duration::from_millis(250)),
    );
    c.wrap("c1", T0);
    c.ch.set_sync_timer(Some(T0 - 250));
    c.unwrap(&b1, T0 + 1);
    c.tick(T0 + 2);
    assert_eq!(syncs(&c), 1);
}

#[test]
fn sync_quiet_sync_still_sends_a_due_repair_request() {
    let mut a = Node::new(
        "alice",
        Config::default()
            .with_sync_interval(Duration::from_millis(250))
            .with_quiet_sync(true)
            .with_repair_t_min(Duration::from_millis(1))
            .with_repair_t_max(Duration::from_millis(1_000)),
    );
    a.wrap("m1", T0);
    // bob's message cites one alice never got: a repair request becomes due at T_req.
    let b2 = bytes_of(&message("b2", T0_S + 5, &["b1"], "bob"));
    a.unwrap(&b2, T0 + 5);
    let t_req = a.ch.outgoing_repair()[0].t_req;
    a.ch.schedule_sync_at(Some(t_req));
    let b3 = bytes_of(&message("b3", T0_S + 6, &[], "bob"));
    a.unwrap(&b3, t_req);
    a.tick(t_req);
    assert_eq!(syncs(&a), 1, "busy, but a repair request is due");
    let sync = a
        .transmits
        .iter()
        .find(|t| t.kind == TransmitKind::Sync)
        .unwrap();
    let requested: Vec<String> = decode(&sync.bytes)
        .repair_request
        .iter()
        .map(|e| e.message_id.to_string())
        .collect();
    assert_eq!(requested, ["b1"]);
    // Once the request went out, the next busy interval stays silent.
    a.unwrap(&b3, t_req + 200);
    a.tick(t_req + 250);
    assert_eq!(syncs(&a), 1);
}

fn resends_of(n: &Node, id: &str) -> Vec<Bytes> {
    n.transmits
        .iter()
        .filter(|t| t.kind == TransmitKind::Resend && t.message_id.as_str() == Some(id))
        .map(|t| t.bytes.clone())
        .collect()
}

#[test]
fn filter_resend_reaches_a_member_whose_filter_lacks_a_message() {
    let config = Config::default()
        .with_filter_resend_after(Some(Duration::from_millis(1_000)))
        .with_max_resend_attempts(2);
    let mut a = Node::new("alice", config.clone());
    let mut b = Node::new("bob", config.clone());
    let mut c = Node::new("carol", config);
    let m1 = a.wrap("m1", T0);
    // carol got m1, bob lost it.
    c.unwrap(&m1, T0 + 100);
    let c1 = c.wrap("c1", T0 + 1_500);
    a.unwrap(&c1, T0 + 1_600);
    assert!(resends_of(&a, "m1").is_empty(), "carol's filter holds m1");
    // bob's first message was sent too soon after m1 to tell anything.
    let b1 = b.wrap("b1", T0 + 500);
    a.unwrap(&b1, T0 + 1_700);
    assert!(
        resends_of(&a, "m1").is_empty(),
        "bob could not have had m1 yet"
    );
    let b2 = b.wrap("b2", T0 + 2_000);
    a.unwrap(&b2, T0 + 2_100);
    let once = resends_of(&a, "m1");
    assert_eq!(once.len(), 1);
    assert_eq!(once[0], m1, "the original bytes");
    // Another sign within the interval does not repeat it; one after the interval does.
    let b3 = b.wrap("b3", T0 + 2_500);
    a.unwrap(&b3, T0 + 2_600);
    assert_eq!(resends_of(&a, "m1").len(), 1);
    let b4 = b.wrap("b4", T0 + 3_500);
    a.unwrap(&b4, T0 + 3_600);
    assert_eq!(resends_of(&a, "m1").len(), 2);
    // max_resend_attempts (2) reached: no more.
    let b5 = b.wrap("b5", T0 + 5_000);
    a.unwrap(&b5, T0 + 5_100);
    assert_eq!(resends_of(&a, "m1").len(), 2);
    // The rebroadcast lets bob deliver m1: his later messages no longer trigger anything.
    assert_eq!(b.unwrap(&m1, T0 + 5_200).kind, ReceivedKind::Delivered);
    // carol's citation acknowledged m1 long before: an acknowledgement says someone has a
    // message, the filters tell who has not.
    assert!(acked(&a.events).contains(&"m1".to_string()));
    assert_eq!(a.ch.outgoing().count(), 0);
}

#[test]
fn filter_resend_is_off_by_default_and_forgets_old_messages() {
    let mut a = Node::new("alice", Config::default());
    let mut b = Node::new("bob", Config::default());
    a.wrap("m1", T0);
    let b1 = b.wrap("b1", T0 + 5_000);
    a.unwrap(&b1, T0 + 5_100);
    assert!(a.transmits.is_empty());

    // Watched for the longer of T_max and five quiet-sync gaps (4 sync intervals each).
    let config = Config::default()
        .with_filter_resend_after(Some(Duration::from_millis(1_000)))
        .with_repair_t_max(Duration::from_millis(10_000))
        .with_sync_interval(Duration::from_millis(250));
    let mut a = Node::new("alice", config.clone());
    let mut b = Node::new("bob", config);
    a.wrap("m1", T0);
    // Past SDS-R's T_max the message is no longer watched.
    let b1 = b.wrap("b1", T0 + 10_001);
    a.unwrap(&b1, T0 + 10_002);
    assert!(resends_of(&a, "m1").is_empty());
}

#[test]
fn sync_09_a_cited_sync_id_is_not_waited_for() {
    let mut a = Node::new("alice", Config::default());
    let mut n = Node::new("nim", Config::default());
    let m1 = a.wrap("m1", T0);
    n.unwrap(&m1, T0);
    let sync = a.ch.sync_message(T0).unwrap().unwrap();
    let sync_id = decode(&sync).message_id;
    // A nim-sds peer logs the sync like any message and cites it later.
    let later = bytes_of(&message(
        "n1",
        T0_S + 9,
        &["m1", &sync_id.to_string()],
        "nim",
    ));
    let r = a.unwrap(&later, T0);
    assert_eq!(r.kind, ReceivedKind::Delivered);
}

// ----- LOST ------------------------------------------------------------------------------------

fn lost_config() -> Config {
    Config::default().with_lost_dependency_timeout(Some(Duration::from_millis(60 * S)))
}

#[test]
fn lost_01_02_03_lost_dependencies_are_reported_once_and_dependents_delivered() {
    let mut b = Node::new("bob", lost_config());
    let mut m2 = message("m2", 2, &[], "alice");
    m2.causal_history = vec![HistoryEntry {
        message_id: "m1".into(),
        retrieval_hint: Bytes::from_static(b"h1"),
        sender_id: "alice".into(),
    }];
    b.unwrap(&bytes_of(&m2), T0);
    b.unwrap(
        &bytes_of(&message("m3", 3, &["m1", "m2"], "alice")),
        T0 + 10 * S,
    );
    b.take_events();
    b.tick(T0 + 30 * S);
    assert!(b.events.is_empty());
    assert_eq!(b.ch.poll_timeout(), Some(T0 + 60 * S));
    b.tick(T0 + 60 * S);
    assert_eq!(
        b.events[0],
        Event::IrretrievablyLost {
            channel_id: "c".into(),
            entry: m2.causal_history[0].clone()
        }
    );
    let lost = b
        .events
        .iter()
        .filter(|e| matches!(e, Event::IrretrievablyLost { .. }))
        .count();
    assert_eq!(lost, 1);
    assert_eq!(ready(&b.events), ["m2", "m3"]);
}

#[test]
fn lost_05_a_lost_message_arriving_later_is_delivered_once() {
    let mut b = Node::new("bob", lost_config());
    b.unwrap(&bytes_of(&message("m2", 20, &["m1"], "a")), T0);
    b.tick(T0 + 60 * S);
    b.unwrap(&bytes_of(&message("m1", 10, &[], "a")), T0 + 61 * S);
    assert_eq!(ready(&b.events), ["m2", "m1"]);
    assert_eq!(b.log_ids(), ["m1", "m2"]);
    b.unwrap(&bytes_of(&message("m1", 10, &[], "a")), T0 + 62 * S);
    assert_eq!(ready(&b.events).len(), 2);
}

#[test]
fn lost_06_without_timeout_nothing_is_lost() {
    let mut b = Node::new("bob", Config::default().with_lost_dependency_timeout(None));
    b.unwrap(&bytes_of(&message("m2", 20, &["m1"], "a")), T0);
    b.tick(T0 + 1_000_000 * S);
    assert!(ready(&b.events).is_empty());
    assert_eq!(b.ch.incoming().len(), 1);
    assert!(!b
        .events
        .iter()
        .any(|e| matches!(e, Event::IrretrievablyLost { .. })));
    // What remains scheduled is SDS-R asking for m1 again, as long as m2 waits for it.
    let asks: Vec<String> =
        b.ch.outgoing_repair()
            .iter()
            .map(|e| e.entry.message_id.to_string())
            .collect();
    assert_eq!(asks, ["m1"]);
}

// ----- MDM -------------------------------------------------------------------------------------

#[test]
fn mdm_01_04_07_marking_met_releases_waiters_without_announcing() {
    let mut b = Node::new("bob", Config::default());
    b.unwrap(&bytes_of(&message("msg3", 3, &["msg1", "msg2"], "a")), T0);
    b.unwrap(&bytes_of(&message("msg2", 2, &["msg1"], "a")), T0);
    b.take_events();
    let batches = b.batches.len();
    b.ch.mark_dependencies_met(&["msg1".into()], T0);
    b.drain();
    assert_eq!(b.batches.len(), batches + 1, "one batch");
    assert_eq!(ready(&b.events), ["msg2", "msg3"]);
    assert!(b
        .events
        .iter()
        .all(|e| matches!(e, Event::MessageReady { .. })));
    assert!(b.ch.incoming().is_empty());
    assert!(b.ch.filter_contains(b"msg1"));
    // Stays met; never cited.
    let r = b.unwrap(&bytes_of(&message("msg4", 4, &["msg1"], "a")), T0);
    assert_eq!(r.kind, ReceivedKind::Delivered);
    let m = decode(&b.wrap("mine", T0));
    assert!(m.causal_history.iter().all(|e| e.message_id != "msg1"));
    // Marking ids nobody waits for: no event.
    b.take_events();
    b.ch.mark_dependencies_met(&["nobody".into()], T0);
    b.drain();
    assert!(b.events.is_empty());
}

// MDM-04, PERSIST-15: marks are channel state: the snapshot carries them (as the store does,
// as marker entries), so a channel restored from it still counts them as met.
#[test]
fn mdm_04_a_channel_restored_from_its_snapshot_keeps_its_marks() {
    let mut b = Node::new("bob", Config::default());
    b.unwrap(&bytes_of(&message("m0", 1, &[], "a")), T0);
    b.ch.mark_dependencies_met(&["msg1".into()], T0);
    b.drain();
    let snap = b.ch.snapshot();
    let markers: Vec<&sds_proto::engine::LogEntry> =
        snap.log.iter().filter(|e| e.is_met_marker()).collect();
    assert_eq!(markers.len(), 1);
    assert_eq!(
        markers[0],
        &sds_proto::engine::LogEntry::met_marker("msg1".into())
    );
    let mut r = Channel::restore("c".into(), "bob".into(), Config::default(), snap, T0).unwrap();
    assert!(r.take_store_ops().is_empty());
    let got = r
        .unwrap(bytes_of(&message("msg2", 2, &["msg1"], "a")), T0)
        .unwrap();
    assert_eq!(got.kind, ReceivedKind::Delivered);
    // The marker is not part of the log proper.
    let log: Vec<String> = r.log().map(|e| e.message_id.to_string()).collect();
    assert_eq!(log, ["m0", "msg2"]);
    assert_eq!(r.log_len(), 2);
}

#[test]
fn mdm_02_marked_ids_join_only_their_channel() {
    let mut c1 = Channel::new("channel1".into(), "b".into(), Config::default(), T0).unwrap();
    let c2 = Channel::new("channel2".into(), "b".into(), Config::default(), T0).unwrap();
    c1.mark_dependencies_met(&["dep1".into(), "dep2".into(), "dep3".into()], T0);
    for d in ["dep1", "dep2", "dep3"] {
        assert!(c1.filter_contains(d.as_bytes()));
        assert!(!c2.filter_contains(d.as_bytes()));
    }
}

// ----- restore (PERSIST, engine side) ----------------------------------------------------------

#[test]
fn persist_03_05_06_restore_rebuilds_state() {
    let config = Config::default().with_max_message_history(3);
    let mut b = Node::new("bob", config.clone());
    for (i, id) in ["m1", "m2", "m3", "m4", "m5"].iter().enumerate() {
        b.unwrap(&bytes_of(&message(id, i as i64 + 1, &[], "a")), T0);
    }
    b.unwrap(&bytes_of(&message("c", 30, &["bb"], "a")), T0);
    b.unwrap(&bytes_of(&message("bb", 20, &["aa"], "a")), T0);
    let mut snap = b.ch.snapshot();
    // A backend may return the log in any order and untrimmed.
    snap.log.reverse();
    snap.log.insert(
        0,
        sds_proto::engine::LogEntry {
            message_id: "m0".into(),
            lamport_timestamp: 0,
            sender_id: "a".into(),
            retrieval_hint: Bytes::new(),
            bytes: bytes_of(&message("m0", 0, &[], "a")),
            arrival: 0,
        },
    );
    let mut r = Channel::restore("c".into(), "bob".into(), config, snap, T0 + 5).unwrap();
    let log: Vec<String> = r.log().map(|e| e.message_id.to_string()).collect();
    assert_eq!(log, ["m3", "m4", "m5"]);
    assert!(r
        .take_store_ops()
        .contains(&StoreOp::RemoveLogEntry("m0".into())));
    for id in ["m3", "m4", "m5"] {
        assert!(r.filter_contains(id.as_bytes()));
    }
    assert_eq!(r.incoming().len(), 2);
    r.unwrap(bytes_of(&message("aa", 10, &[], "a")), T0 + 6)
        .unwrap();
    let mut delivered = Vec::new();
    while let Some(e) = r.poll_event() {
        if let Event::MessageReady { message_id, .. } = e {
            delivered.push(message_id.to_string());
        }
    }
    assert_eq!(delivered, ["aa", "bb", "c"]);
    assert!(r.incoming().is_empty());
}

#[test]
fn restore_keeps_outgoing_timers_from_stored_times() {
    let mut a = Node::new("alice", Config::default());
    let m1 = a.wrap("m1", T0);
    let snap = a.ch.snapshot();
    let mut r = Channel::restore(
        "c".into(),
        "alice".into(),
        Config::default(),
        snap,
        T0 + 10 * S,
    )
    .unwrap();
    assert_eq!(r.poll_timeout(), Some(T0 + 60 * S));
    r.handle_timeout(T0 + 60 * S);
    assert_eq!(r.poll_transmit().unwrap().bytes, m1);
}

// ----- HOSTILE ---------------------------------------------------------------------------------

#[test]
fn hostile_07_08_10_invalid_messages_are_typed_errors_with_no_effect() {
    let mut b = Node::new("bob", Config::default());
    b.unwrap(&bytes_of(&message("ok", 1, &[], "a")), T0);
    let before = fingerprint(&b.ch);
    let many: Vec<String> = (0..513).map(|i| format!("d{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    type ErrorCheck = fn(&EngineError) -> bool;
    let cases: Vec<(Bytes, ErrorCheck)> = vec![
        (bytes_of(&message("h", 1, &refs, "a")), |e| {
            matches!(
                e,
                EngineError::Decode(DecodeError::LimitExceeded {
                    kind: LimitKind::CausalHistory,
                    ..
                })
            )
        }),
        (bytes_of(&message("", 1, &[], "a")), |e| {
            matches!(e, EngineError::EmptyMessageId)
        }),
        (bytes_of(&message("x", 1, &[""], "a")), |e| {
            matches!(e, EngineError::EmptyMessageId)
        }),
        (bytes_of(&message("self", 1, &["self"], "a")), |e| {
            matches!(e, EngineError::SelfCitation(_))
        }),
        (
            bytes_of(&SdsMessage {
                channel_id: "other".into(),
                ..message("w", 1, &[], "a")
            }),
            |e| matches!(e, EngineError::WrongChannel { .. }),
        ),
        (Bytes::from_static(&[0x0a]), |e| {
            matches!(e, EngineError::Decode(_))
        }),
        (Bytes::from(hex_lamport_2pow63()), |e| {
            matches!(e, EngineError::Decode(DecodeError::LamportOutOfRange(_)))
        }),
    ];
    for (bytes, check) in cases {
        let err = b.ch.unwrap(bytes, T0).unwrap_err();
        assert!(check(&err), "{err:?}");
        assert_eq!(fingerprint(&b.ch), before);
        assert!(b.ch.take_store_ops().is_empty());
        assert!(b.ch.poll_event().is_none());
    }
}

fn hex_lamport_2pow63() -> Vec<u8> {
    vec![
        0x0a, 0x01, 0x6d, 0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x22,
        0x01, 0x63, 0x2a, 0x01, 0x78,
    ]
}

#[test]
fn hostile_10_dependency_cycle_is_never_delivered_and_never_loops() {
    let mut b = Node::new("bob", lost_config());
    b.unwrap(&bytes_of(&message("a", 1, &["b"], "x")), T0);
    b.unwrap(&bytes_of(&message("b", 2, &["a"], "x")), T0);
    b.tick(T0 + 120 * S);
    assert!(ready(&b.events).is_empty());
    b.tick(T0 + 1_000 * S);
    assert!(ready(&b.events).is_empty());
    assert_eq!(b.ch.poll_timeout(), None);
}

#[test]
fn hostile_12_incoming_buffer_cap() {
    let mut b = Node::new(
        "bob",
        Config::default()
            .with_max_incoming_buffer(2)
            .with_max_incoming_buffer_bytes(4_096),
    );
    b.unwrap(&bytes_of(&message("w1", 1, &["x"], "a")), T0);
    b.unwrap(&bytes_of(&message("w2", 1, &["x"], "a")), T0);
    b.take_events();
    // Full: the oldest message of the sender holding the most bytes gives way.
    let r = b.unwrap(&bytes_of(&message("w3", 1, &["x"], "a")), T0);
    assert_eq!(r.kind, ReceivedKind::Buffered);
    assert_eq!(dropped(&b.take_events(), DropReason::Evicted), ["w1"]);
    let r = b.unwrap(&bytes_of(&message("h1", 1, &["x"], "honest")), T0);
    assert_eq!(r.kind, ReceivedKind::Buffered);
    assert_eq!(dropped(&b.take_events(), DropReason::Evicted), ["w2"]);
    let ids: Vec<String> =
        b.ch.incoming()
            .iter()
            .map(|e| e.message_id.to_string())
            .collect();
    assert_eq!(ids, ["h1", "w3"]);
    assert!(b
        .batches
        .last()
        .unwrap()
        .contains(&StoreOp::RemoveIncoming("w2".into())));
    // A message larger than the whole byte bound is refused, state unchanged.
    let before = fingerprint(&b.ch);
    let mut big = message("big", 1, &["x"], "a");
    big.content = Bytes::from(vec![b'x'; 5_000]);
    assert_eq!(
        b.ch.unwrap(bytes_of(&big), T0),
        Err(EngineError::IncomingBufferFull)
    );
    assert_eq!(fingerprint(&b.ch), before);
    // A message that needs no buffering is still accepted.
    assert_eq!(
        b.unwrap(&bytes_of(&message("free", 1, &[], "a")), T0).kind,
        ReceivedKind::Delivered
    );
}

#[test]
fn outgoing_buffer_cap_gives_up_the_oldest() {
    let mut a = Node::new("alice", Config::default().with_max_outgoing_buffer(2));
    for id in ["m1", "m2", "m3"] {
        a.wrap(id, T0);
    }
    assert_eq!(a.outgoing_ids(), ["m2", "m3"]);
    assert_eq!(
        a.events,
        [Event::SendFailed {
            channel_id: "c".into(),
            message_id: "m1".into(),
            reason: SendFailure::BufferFull
        }]
    );
}

#[test]
fn multi_09_invalid_config_is_refused() {
    let bad = [
        Config::default().with_bloom_capacity(0),
        Config::default().with_bloom_error_rate(1.0),
        Config::default().with_resend_interval(Duration::from_millis(0)),
        Config::default().with_sync_interval(Duration::from_millis(0)),
        Config::default().with_max_message_history(0),
        // A filter that cannot be built: refused by validate, not at every channel's creation.
        Config::default().with_bloom_capacity(i64::MAX),
    ];
    for config in bad {
        assert!(config.validate().is_err(), "{config:?}");
        assert!(Channel::new("c".into(), "a".into(), config, T0).is_err());
    }
}

#[test]
fn same_inputs_give_same_outputs() {
    let run = || {
        let mut a = Node::new("alice", lost_config());
        let mut b = Node::new("bob", lost_config());
        let w: Vec<Bytes> = (0..30).map(|i| a.wrap(&format!("m{i}"), T0 + i)).collect();
        for i in [5, 3, 29, 0, 1, 2, 4, 7, 6, 8, 9, 10] {
            b.unwrap(&w[i], T0 + 100);
        }
        b.tick(T0 + 70 * S);
        let reply = b.wrap("r", T0 + 71 * S);
        a.unwrap(&reply, T0 + 72 * S);
        a.tick(T0 + 200 * S);
        (a.events, a.transmits, a.batches, b.events, b.batches)
    };
    assert_eq!(format!("{:?}", run()), format!("{:?}", run()));
}

// ----- Hostile group members -------------------------------------------------------------------

#[test]
fn hostile_clock_drag_a_far_future_lamport_is_refused() {
    let mut b = Node::new("bob", Config::default());
    b.unwrap(&bytes_of(&message("ok", T0_S, &[], "a")), T0);
    let before = fingerprint(&b.ch);
    // i64::MAX, i64::MAX - k and a lamport years ahead are refused with state unchanged.
    for (i, lamport) in [i64::MAX, i64::MAX - 5, T0_S + 3 * 365 * 86_400]
        .into_iter()
        .enumerate()
    {
        let content = bytes_of(&message(&format!("far{i}"), lamport, &["ok"], "a"));
        let mut sync = message(&format!("farsync{i}"), lamport, &["ok"], "a");
        sync.content = Bytes::new();
        for bytes in [content, bytes_of(&sync)] {
            let err = b.ch.unwrap(bytes, T0).unwrap_err();
            assert!(
                matches!(err, EngineError::LamportTooFarAhead { lamport: l, .. } if l == lamport),
                "{err:?}"
            );
            assert_eq!(fingerprint(&b.ch), before);
            assert!(b.ch.take_store_ops().is_empty());
            assert!(b.ch.poll_event().is_none());
        }
    }
    // Within the bound (a day by default) the clock follows, and sends still work.
    let ahead = T0_S + 86_400;
    assert_eq!(
        b.unwrap(&bytes_of(&message("near", ahead, &["ok"], "a")), T0)
            .kind,
        ReceivedKind::Delivered
    );
    assert_eq!(b.ch.lamport(), ahead);
    assert_eq!(decode(&b.wrap("b1", T0)).lamport_timestamp, ahead + 1);
    assert!(b.ch.sync_message(T0).unwrap().is_some());
    // The bound is a setting, in milliseconds, compared in the clock's unit.
    let mut tight = Node::new(
        "carol",
        Config::default().with_max_clock_lead(Duration::from_millis(10 * S)),
    );
    assert!(tight
        .ch
        .unwrap(bytes_of(&message("x", T0_S + 11, &[], "a")), T0)
        .is_err());
    assert_eq!(
        tight
            .unwrap(&bytes_of(&message("y", T0_S + 10, &[], "a")), T0)
            .kind,
        ReceivedKind::Delivered
    );
    assert!(Config::default()
        .with_max_clock_lead(Duration::from_millis(0))
        .validate()
        .is_err());
}

fn sync_of(id: &str, lamport: i64, sender: &str) -> Bytes {
    let mut m = message(id, lamport, &[], sender);
    m.content = Bytes::new();
    bytes_of(&m)
}

#[test]
fn hostile_a_sync_cannot_stand_in_for_someone_elses_message() {
    let mut b = Node::new("bob", Config::default());
    // Mallory sends a sync carrying the id of alice's a1, which bob has not received.
    assert_eq!(
        b.unwrap(&sync_of("a1", T0_S, "mallory"), T0).kind,
        ReceivedKind::Sync
    );
    // a2 cites a1 as alice's: the sync does not satisfy it.
    let mut a2 = message("a2", T0_S + 2, &[], "alice");
    a2.causal_history = vec![HistoryEntry {
        message_id: "a1".into(),
        retrieval_hint: Bytes::new(),
        sender_id: "alice".into(),
    }];
    assert_eq!(b.unwrap(&bytes_of(&a2), T0).kind, ReceivedKind::Buffered);
    // The real a1 still takes its place, before a2.
    assert_eq!(
        b.unwrap(&bytes_of(&message("a1", T0_S + 1, &[], "alice")), T0)
            .kind,
        ReceivedKind::Delivered
    );
    assert_eq!(ready(&b.events), ["a1", "a2"]);
    // A cited entry naming the sync's own sender is satisfied by it (SYNC-09 with a third
    // member's sync): carol's sync, cited as carol's by a nim-sds member.
    b.unwrap(&sync_of("sync-carol-1", T0_S + 3, "carol"), T0);
    let mut n1 = message("n1", T0_S + 4, &[], "nim");
    n1.causal_history = vec![HistoryEntry {
        message_id: "sync-carol-1".into(),
        retrieval_hint: Bytes::new(),
        sender_id: "carol".into(),
    }];
    assert_eq!(b.unwrap(&bytes_of(&n1), T0).kind, ReceivedKind::Delivered);
    // An entry with no sender is not satisfied by someone else's sync.
    b.unwrap(&sync_of("x1", T0_S + 5, "mallory"), T0);
    assert_eq!(
        b.unwrap(&bytes_of(&message("x2", T0_S + 6, &["x1"], "eve")), T0)
            .kind,
        ReceivedKind::Buffered
    );
}

#[test]
fn hostile_flooding_does_not_make_a_delivered_message_new_again() {
    let mut b = Node::new("bob", Config::default());
    let old = bytes_of(&message("old", T0_S, &[], "alice"));
    assert_eq!(b.unwrap(&old, T0).kind, ReceivedKind::Delivered);
    // Another copy with other bytes (a cited entry added) is still the same message.
    let mut old2 = message("old", T0_S, &[], "alice");
    old2.causal_history = vec![HistoryEntry::new("zz")];
    let old2 = bytes_of(&old2);
    for i in 0..1_000 {
        b.unwrap(
            &bytes_of(&message(&format!("junk{i}"), T0_S + 1, &[], "mallory")),
            T0,
        );
    }
    for i in 0..10_000 {
        b.unwrap(&sync_of(&format!("s{i}"), T0_S + 1, "mallory"), T0);
    }
    b.take_events();
    for copy in [&old, &old2] {
        let r = b.unwrap(copy, T0);
        assert_eq!(r.kind, ReceivedKind::Duplicate);
    }
    // Even when so many content messages follow that the id itself is forgotten, a message at
    // or below the lamport of what was forgotten is not delivered again.
    for i in 0..10_500 {
        b.unwrap(
            &bytes_of(&message(&format!("more{i}"), T0_S + 2, &[], "mallory")),
            T0,
        );
    }
    b.take_events();
    for copy in [&old, &old2] {
        let r = b.unwrap(copy, T0);
        assert_eq!(r.kind, ReceivedKind::Stale);
    }
    assert!(ready(&b.events).is_empty());
    // Newer messages are still delivered.
    assert_eq!(
        b.unwrap(&bytes_of(&message("new", T0_S + 3, &[], "alice")), T0)
            .kind,
        ReceivedKind::Delivered
    );
}

/// A restored channel remembers only the ids of its log: the low-water mark it restores from
/// the store keeps a message delivered before the restart from being delivered again after it.
#[test]
fn a_message_delivered_before_a_restart_is_not_delivered_again_after_it() {
    let config = Config::default().with_max_message_history(10);
    let mut b = Node::new("bob", config.clone());
    let old = bytes_of(&message("old", T0_S, &[], "alice"));
    assert_eq!(b.unwrap(&old, T0).kind, ReceivedKind::Delivered);
    for i in 0..20 {
        b.unwrap(
            &bytes_of(&message(&format!("m{i}"), T0_S + 1 + i, &[], "alice")),
            T0,
        );
    }
    // Still remembered beyond the log while running.
    assert_eq!(b.unwrap(&old, T0).kind, ReceivedKind::Duplicate);
    let lows: Vec<i64> = (b.batches.iter().flatten())
        .filter_map(|op| match op {
            StoreOp::SaveLowWater(l) => Some(*l),
            _ => None,
        })
        .collect();
    assert_eq!(
        lows.last(),
        Some(&(T0_S + 10)),
        "the 11 oldest left the log"
    );
    let snapshot = b.ch.snapshot();
    assert_eq!(snapshot.low_water, Some(T0_S + 10));
    let restored = Channel::restore("c".into(), "bob".into(), config, snapshot, T0).unwrap();
    let mut b = Node {
        ch: restored,
        events: Vec::new(),
        transmits: Vec::new(),
        batches: Vec::new(),
    };
    assert_eq!(b.unwrap(&old, T0).kind, ReceivedKind::Stale);
    assert!(ready(&b.events).is_empty());
    // What the log still holds is a duplicate, and new messages are delivered.
    let kept = bytes_of(&message("m19", T0_S + 20, &[], "alice"));
    assert_eq!(b.unwrap(&kept, T0).kind, ReceivedKind::Duplicate);
    let new = bytes_of(&message("new", T0_S + 21, &[], "alice"));
    assert_eq!(b.unwrap(&new, T0).kind, ReceivedKind::Delivered);
}

#[test]
fn hostile_same_id_different_content_is_reported() {
    let mut b = Node::new("bob", Config::default());
    let m = message("m1", T0_S, &[], "alice");
    b.unwrap(&bytes_of(&m), T0);
    b.take_events();
    let mut forged = m.clone();
    forged.content = Bytes::from_static(b"something else");
    let before = fingerprint(&b.ch);
    let r = b.unwrap(&bytes_of(&forged), T0);
    assert_eq!(r.kind, ReceivedKind::Conflict);
    assert_eq!(
        b.events,
        [Event::MessageConflict {
            channel_id: "c".into(),
            message_id: "m1".into(),
            sender_id: "alice".into(),
        }]
    );
    assert_eq!(fingerprint(&b.ch), before);
    // The same for a buffered message; an identical copy is still a plain duplicate.
    let w = message("w1", T0_S, &["gone"], "alice");
    b.unwrap(&bytes_of(&w), T0);
    b.take_events();
    let mut forged = w.clone();
    forged.content = Bytes::from_static(b"other");
    forged.causal_history.clear();
    assert_eq!(
        b.unwrap(&bytes_of(&forged), T0).kind,
        ReceivedKind::Conflict
    );
    assert_eq!(b.unwrap(&bytes_of(&m), T0).kind, ReceivedKind::Duplicate);
}

fn dropped(events: &[Event], why: DropReason) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Dropped {
                message_id, reason, ..
            } if *reason == why => Some(message_id.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn hostile_dependency_cycles_expire_and_do_not_fill_the_buffer() {
    let config = lost_config().with_max_incoming_buffer(1_000);
    let mut b = Node::new("bob", config);
    // 500 pairs citing each other fill the buffer.
    for i in 0..500 {
        let (x, y) = (format!("x{i}"), format!("y{i}"));
        b.unwrap(&bytes_of(&message(&x, T0_S, &[&y], "mallory")), T0);
        b.unwrap(&bytes_of(&message(&y, T0_S, &[&x], "mallory")), T0);
    }
    assert_eq!(b.ch.incoming_len(), 1_000);
    // An honest message with a missing dependency still gets in: mallory's oldest gives way.
    let r = b.unwrap(&bytes_of(&message("h2", T0_S, &["h1"], "alice")), T0 + S);
    assert_eq!(r.kind, ReceivedKind::Buffered);
    assert_eq!(dropped(&b.events, DropReason::Evicted), ["x0"]);
    assert_eq!(b.ch.incoming_len(), 1_000);
    b.take_events();
    // At the lost timeout the cycles expire: dropped, never delivered; h1 is declared lost and
    // h2 delivered; at most 1 000 expiries per call.
    let mut calls = 0;
    while let Some(t) = b.ch.poll_timeout().filter(|t| *t <= T0 + 61 * S) {
        let before = b.events.len();
        b.tick(t.max(T0 + 61 * S));
        assert!(b.events.len() - before <= 1_100);
        calls += 1;
        assert!(calls < 10);
    }
    // y0's dependency x0 gave way to h2 and is declared lost like any message we lack.
    let mut delivered = ready(&b.events);
    delivered.sort();
    assert_eq!(delivered, ["h2", "y0"]);
    assert_eq!(dropped(&b.events, DropReason::Expired).len(), 998);
    assert_eq!(b.ch.incoming_len(), 0);
    assert!(b.ch.poll_timeout().is_none_or(|t| t > T0 + 61 * S));
}

#[test]
fn hostile_waiting_index_bytes_count_against_the_buffer() {
    let config = lost_config().with_max_incoming_buffer_bytes(1024 * 1024);
    let mut b = Node::new("bob", config);
    // Each message cites 512 dependencies nobody has: a few KB on the wire, far more in indexes.
    for m in 0..100 {
        let deps: Vec<String> = (0..512).map(|d| format!("d{m}-{d}")).collect();
        let refs: Vec<&str> = deps.iter().map(String::as_str).collect();
        let bytes = bytes_of(&message(&format!("m{m}"), T0_S, &refs, "mallory"));
        assert!(bytes.len() < 8 * 1024);
        b.unwrap(&bytes, T0);
    }
    assert!(b.ch.incoming_len() <= 8, "{}", b.ch.incoming_len());
    // The lost-dependency timers of dropped messages went with them.
    b.take_events();
    b.tick(T0 + 60 * S);
    let lost = b
        .events
        .iter()
        .filter(|e| matches!(e, Event::IrretrievablyLost { .. }))
        .count();
    assert!(lost <= 1_000, "{lost}");
}

#[test]
fn hostile_expiry_waits_for_a_held_dependency_that_can_still_complete() {
    let mut b = Node::new("bob", lost_config());
    // d cites h; h arrives later and waits for l, which is declared lost 60 s after h arrived.
    b.unwrap(&bytes_of(&message("d", T0_S + 3, &["h"], "alice")), T0);
    b.unwrap(
        &bytes_of(&message("h", T0_S + 2, &["l"], "alice")),
        T0 + 30 * S,
    );
    b.tick(T0 + 60 * S);
    assert!(ready(&b.events).is_empty());
    assert!(dropped(&b.events, DropReason::Expired).is_empty());
    b.tick(T0 + 90 * S);
    assert_eq!(ready(&b.events), ["h", "d"]);
    assert!(dropped(&b.events, DropReason::Expired).is_empty());
    assert_eq!(b.ch.incoming_len(), 0);
}

#[test]
fn held_bytes_count_waiting_messages_and_repair_entries_and_shedding_releases_them() {
    let mut b = Node::new("bob", lost_config());
    assert_eq!(b.ch.held_bytes(), 0);
    // Two waiting messages of mallory's and one of alice's, each citing one missing message.
    let mut charged = 0;
    for (id, sender) in [("m1", "mallory"), ("m2", "mallory"), ("a1", "alice")] {
        let bytes = bytes_of(&message(id, T0_S, &[&format!("{id}-dep")], sender));
        charged += bytes.len() + 1_024;
        assert_eq!(b.unwrap(&bytes, T0).kind, ReceivedKind::Buffered);
    }
    // The waiting messages as charged against the buffer's bound, and one SDS-R request per
    // missing message (bob has a participant id), each at least its id and overhead.
    assert_eq!(b.ch.outgoing_repair().len(), 3);
    let held = b.ch.held_bytes();
    assert!(held >= charged + 3 * 256, "{held} vs {charged}");
    assert!(held <= charged + 3 * 512, "{held} vs {charged}");
    // Shedding to a target takes mallory's oldest first, then the next heaviest.
    b.take_events();
    let released = b.ch.shed_held(held - 1);
    b.drain();
    assert!(released >= 1);
    assert_eq!(dropped(&b.events, DropReason::Evicted), ["m1"]);
    assert!(b.ch.held_bytes() < held);
    assert!(b
        .batches
        .last()
        .unwrap()
        .contains(&StoreOp::RemoveIncoming("m1".into())));
    // Down to nothing: every waiting message, then every repair entry.
    b.ch.shed_held(0);
    b.drain();
    assert_eq!(b.ch.held_bytes(), 0);
    assert_eq!(b.ch.incoming_len(), 0);
    assert!(b.ch.outgoing_repair().is_empty());
    assert_eq!(dropped(&b.events, DropReason::Evicted), ["m1", "m2", "a1"]);
}

#[test]
fn messages_encoded_outside_a_channel_decode_as_written_in_both_profiles() {
    use sds_proto::engine::{decode, encode, Received};
    use sds_proto::wire::Profile;
    let mut msg = message("m", T0_S, &["d1", "d2"], "mallory");
    msg.repair_request = vec![HistoryEntry {
        sender_id: "alice".into(),
        ..HistoryEntry::new("r")
    }];
    for profile in [Profile::NimSds, Profile::Spec] {
        let config = Config::default().with_profile(profile);
        for content in [Bytes::from_static(b"x"), Bytes::new()] {
            let m = SdsMessage {
                content,
                ..msg.clone()
            };
            match decode(&encode(&m, profile), &config).unwrap() {
                Received::Message(got) => assert_eq!(got, m),
                other => panic!("{other:?}"),
            }
        }
    }
    // A received channel takes it like any message.
    msg.content = Bytes::from_static(b"x");
    let mut b = Node::new("bob", Config::default());
    let r = b.unwrap(&encode(&msg, Profile::NimSds), T0);
    assert_eq!(r.kind, ReceivedKind::Buffered);
}
