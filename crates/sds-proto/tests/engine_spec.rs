//! The engine on the spec wire profile (@waku/sds layout, murmur3 filter, SHA-256 SDS-R).

use bytes::Bytes;
use sds_proto::engine::{Channel, Config, EngineError, Event, ReceivedKind};
use sds_proto::repair::spec::t_req_offset;
use sds_proto::wire::spec::{self, MessageKind, SpecMessage};
use sds_proto::wire::{nim, Limits, Profile};
use sds_proto::{ChannelId, MessageId, ParticipantId};

#[path = "support/events.rs"]
mod events_support;
use events_support::{acked, ready};

const T0: u64 = 1_700_000_000_000;
const S: u64 = 1_000;

fn config() -> Config {
    Config::default().with_profile(Profile::Spec)
}

fn channel(name: &str) -> Channel {
    Channel::new("chan".into(), name.into(), config(), T0).unwrap()
}

fn events(ch: &mut Channel) -> Vec<Event> {
    let _ = ch.take_store_ops();
    std::iter::from_fn(|| ch.poll_event()).collect()
}

fn decode(bytes: &Bytes) -> SpecMessage {
    spec::decode(bytes, &Limits::default()).unwrap()
}

// WIRE-14, SYNC-03: what the engine sends is laid out as @waku/sds lays it out.
#[test]
fn sends_use_the_spec_layout() {
    let mut a = channel("alice");
    let m1 = a.wrap(Bytes::from_static(b"hi"), "m1".into(), T0).unwrap();
    let msg = decode(&m1);
    assert_eq!(msg.kind(), Some(MessageKind::Content));
    assert_eq!(msg.sender_id, ParticipantId::from("alice"));
    assert_eq!(msg.channel_id, ChannelId::from("chan"));
    assert_eq!(msg.content.as_deref(), Some(&b"hi"[..]));
    // Default filter: 10,000 ids at 0.001 = 2,344 big-endian words, as @waku/sds sends.
    assert_eq!(msg.bloom_filter.as_ref().map(Bytes::len), Some(18_752));
    assert!(nim::decode(&m1, &Limits::default()).is_err());

    let sync = a.sync_message(T0 + S).unwrap().unwrap();
    let msg = decode(&sync);
    assert_eq!(msg.kind(), Some(MessageKind::Sync));
    assert_eq!(msg.content, None, "a sync leaves field 20 out");
    assert_eq!(msg.causal_history.len(), 1);
    assert_eq!(msg.causal_history[0].message_id, MessageId::from("m1"));
    assert_eq!(
        msg.causal_history[0].sender_id,
        Some(ParticipantId::from("alice"))
    );
}

/// Alice and bob; alice has sent m1 ("one") at T0 and m2 ("two", citing m1) at T0 + S.
fn alice_sends_two() -> (Channel, Channel, Bytes, Bytes) {
    let mut a = channel("alice");
    let m1 = a.wrap(Bytes::from_static(b"one"), "m1".into(), T0).unwrap();
    let m2 = a
        .wrap(Bytes::from_static(b"two"), "m2".into(), T0 + S)
        .unwrap();
    (a, channel("bob"), m1, m2)
}

#[test]
fn out_of_order_delivery_and_acknowledgement() {
    let (mut a, mut b, m1, m2) = alice_sends_two();
    events(&mut a);

    let r = b.unwrap(m2, T0 + 2 * S).unwrap();
    assert_eq!(r.kind, ReceivedKind::Buffered);
    assert_eq!(r.missing_dependencies.len(), 1);
    assert_eq!(r.missing_dependencies[0].message_id, MessageId::from("m1"));
    assert!(ready(&events(&mut b)).is_empty());
    b.unwrap(m1, T0 + 3 * S).unwrap();
    assert_eq!(ready(&events(&mut b)), ["m1", "m2"]);
    assert!(b.filter_contains(b"m1") && b.filter_contains(b"m2"));

    // Bob's reply cites both: alice's buffer empties.
    let reply = b
        .wrap(Bytes::from_static(b"ok"), "b1".into(), T0 + 4 * S)
        .unwrap();
    a.unwrap(reply, T0 + 5 * S).unwrap();
    let mut got = acked(&events(&mut a));
    got.sort();
    assert_eq!(got, ["m1", "m2"]);
    assert_eq!(a.outgoing().count(), 0);
}

// RECV-04 on the spec layout: copies of held messages, logged or waiting, are duplicates and
// our own come back as our own; a damaged copy is still refused.
#[test]
fn copies_of_held_messages_on_the_spec_layout() {
    let (mut a, mut b, m1, m2) = alice_sends_two();
    assert_eq!(
        a.unwrap(Bytes::copy_from_slice(&m1), T0 + S).unwrap().kind,
        ReceivedKind::Own
    );
    b.unwrap(m2.clone(), T0 + 2 * S).unwrap();
    let waiting = b.unwrap(Bytes::copy_from_slice(&m2), T0 + 3 * S).unwrap();
    assert_eq!(waiting.kind, ReceivedKind::Duplicate);
    assert_eq!(&waiting.content[..], b"two");
    assert_eq!(
        waiting.missing_dependencies[0].message_id,
        MessageId::from("m1")
    );
    b.unwrap(m1.clone(), T0 + 4 * S).unwrap();
    events(&mut b);
    let logged = b.unwrap(Bytes::copy_from_slice(&m1), T0 + 5 * S).unwrap();
    assert_eq!(logged.kind, ReceivedKind::Duplicate);
    assert_eq!(&logged.content[..], b"one");
    assert!(events(&mut b).is_empty());
    let mut broken = m1.to_vec();
    broken.truncate(broken.len() - 1);
    assert!(b.unwrap(Bytes::from(broken), T0 + 6 * S).is_err());
}

// BLOOM-12: acknowledgement through the murmur3 filter alone.
#[test]
fn possible_acks_come_from_the_spec_filter() {
    let config = config()
        .with_max_causal_history(1)
        .with_possible_ack_threshold(2);
    let mut a = Channel::new("chan".into(), "alice".into(), config.clone(), T0).unwrap();
    let mut b = Channel::new("chan".into(), "bob".into(), config.clone(), T0).unwrap();
    let mut c = Channel::new("chan".into(), "carol".into(), config, T0).unwrap();
    let m1 = a.wrap(Bytes::from_static(b"1"), "m1".into(), T0).unwrap();
    let m2 = a
        .wrap(Bytes::from_static(b"2"), "m2".into(), T0 + 1)
        .unwrap();
    events(&mut a);
    for ch in [&mut b, &mut c] {
        ch.unwrap(m1.clone(), T0 + S).unwrap();
        ch.unwrap(m2.clone(), T0 + S).unwrap();
    }
    // Each cites only m2 (history of one); m1 is in their filters.
    let b1 = b
        .wrap(Bytes::from_static(b"b"), "b1".into(), T0 + 2 * S)
        .unwrap();
    let c1 = c
        .wrap(Bytes::from_static(b"c"), "c1".into(), T0 + 2 * S)
        .unwrap();
    a.unwrap(b1, T0 + 3 * S).unwrap();
    let first = events(&mut a);
    assert_eq!(acked(&first), ["m2"]);
    assert!(first
        .iter()
        .any(|e| matches!(e, Event::PossiblyAcknowledged { message_id, .. } if message_id.as_bytes() == b"m1")));
    a.unwrap(c1, T0 + 4 * S).unwrap();
    assert_eq!(acked(&events(&mut a)), ["m1"]);
}

// The reference throws on a short filter and drops the message silently; here it is a typed
// error and nothing changes.
#[test]
fn a_short_received_filter_is_refused_without_changes() {
    let mut a = channel("alice");
    let mut b = channel("bob");
    let m1 = a.wrap(Bytes::from_static(b"1"), "m1".into(), T0).unwrap();
    let mut msg = decode(&m1);
    msg.bloom_filter = Some(Bytes::from(vec![0u8; 16]));
    let short = Bytes::from(spec::encode(&msg));
    let before = b.snapshot();
    let err = b.unwrap(short, T0 + S).unwrap_err();
    assert!(matches!(err, EngineError::InvalidBloomFilter(_)), "{err}");
    assert_eq!(b.snapshot(), before);
    assert!(events(&mut b).is_empty());
    // Without field 12 the message is accepted (no ack review).
    msg.bloom_filter = None;
    b.unwrap(Bytes::from(spec::encode(&msg)), T0 + S).unwrap();
    assert_eq!(ready(&events(&mut b)), ["m1"]);
}

// EPH-01: the layout of @waku/sds's `ephemeral` vector, byte for byte; nothing changes.
#[test]
fn eph_01_ephemeral_send_matches_the_js_vector() {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/vectors/js-waku-sds/messages.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let case = v["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ephemeral")
        .unwrap();
    let input = &case["input"];
    let mut a = Channel::new(
        input["channelId"].as_str().unwrap().into(),
        input["senderId"].as_str().unwrap().into(),
        config(),
        T0,
    )
    .unwrap();
    let before = a.snapshot();
    let bytes = a
        .wrap_ephemeral(
            Bytes::from(hex::decode(input["content"].as_str().unwrap()).unwrap()),
            input["messageId"].as_str().unwrap().into(),
        )
        .unwrap();
    assert_eq!(hex::encode(&bytes), case["hex"].as_str().unwrap());
    assert_eq!(a.snapshot(), before);
    assert!(a.take_store_ops().is_empty());
    assert!(a.poll_event().is_none() && a.poll_transmit().is_none());
}

// EPH-02, EPH-03
#[test]
fn eph_02_03_empty_content_and_the_nim_profile_are_refused() {
    let a = channel("alice");
    assert_eq!(
        a.wrap_ephemeral(Bytes::new(), "e".into()),
        Err(EngineError::EmptyContent)
    );
    let nim_channel = Channel::new("chan".into(), "alice".into(), Config::default(), T0).unwrap();
    assert_eq!(
        nim_channel.wrap_ephemeral(Bytes::from_static(b"x"), "e".into()),
        Err(EngineError::EphemeralUnsupported)
    );
}

// EPH-04: delivered at once through an event; not buffered, logged or filtered, no ack review,
// clock unchanged, nothing stored.
#[test]
fn eph_04_received_ephemeral_is_announced_and_nothing_else() {
    let a = channel("alice");
    let mut b = channel("bob");
    // Bob has an unacknowledged message that the ephemeral must not touch.
    b.wrap(Bytes::from_static(b"mine"), "b1".into(), T0)
        .unwrap();
    events(&mut b);
    let before = b.snapshot();
    let bytes = a
        .wrap_ephemeral(Bytes::from_static(b"typing"), "e1".into())
        .unwrap();
    let r = b.unwrap(bytes, T0 + S).unwrap();
    assert_eq!(r.kind, ReceivedKind::Ephemeral);
    assert_eq!(&r.content[..], b"typing");
    assert!(b.take_store_ops().is_empty());
    let evs: Vec<Event> = std::iter::from_fn(|| b.poll_event()).collect();
    assert_eq!(
        evs,
        [Event::Ephemeral {
            channel_id: "chan".into(),
            message_id: "e1".into(),
            sender_id: "alice".into(),
            content: Bytes::from_static(b"typing"),
        }]
    );
    assert_eq!(b.snapshot(), before);
    assert!(!b.filter_contains(b"e1"));
}

// RECV-02, EPH-04: our own ephemeral message echoed back by the network is ignored, like our
// own content messages: no event, nothing changes; the receive result says it is ours.
#[test]
fn eph_04_our_own_ephemeral_echo_is_ignored() {
    let mut a = channel("alice");
    let before = a.snapshot();
    let bytes = a
        .wrap_ephemeral(Bytes::from_static(b"typing"), "e1".into())
        .unwrap();
    let r = a.unwrap(bytes.clone(), T0 + S).unwrap();
    assert_eq!(r.kind, ReceivedKind::Own);
    assert_eq!(&r.content[..], b"typing");
    assert!(a.poll_event().is_none());
    assert!(a.take_store_ops().is_empty());
    assert_eq!(a.snapshot(), before);
    // Without a participant id nothing is recognisable as ours: it is announced.
    let mut anonymous = channel("");
    let anonymous_bytes = anonymous
        .wrap_ephemeral(Bytes::from_static(b"typing"), "e2".into())
        .unwrap();
    let r = anonymous.unwrap(anonymous_bytes, T0 + S).unwrap();
    assert_eq!(r.kind, ReceivedKind::Ephemeral);
    assert!(matches!(
        anonymous.poll_event(),
        Some(Event::Ephemeral { .. })
    ));
}

#[test]
fn classless_and_foreign_layout_messages_are_typed_errors() {
    let mut b = channel("bob");
    let nothing = SpecMessage {
        sender_id: "alice".into(),
        message_id: "e1".into(),
        channel_id: "chan".into(),
        ..SpecMessage::default()
    };
    let before = b.snapshot();
    let err = b
        .unwrap(Bytes::from(spec::encode(&nothing)), T0)
        .unwrap_err();
    assert!(matches!(err, EngineError::NotAnSdsMessage), "{err}");
    let nim_bytes = Bytes::from(nim::encode(&sds_proto::SdsMessage {
        message_id: "x".into(),
        lamport_timestamp: 1,
        channel_id: "chan".into(),
        content: Bytes::from_static(b"c"),
        ..Default::default()
    }));
    assert!(b.unwrap(nim_bytes, T0).is_err());
    assert_eq!(b.snapshot(), before);
}

// REPAIR-04 in the engine: requests are timed with the SHA-256 arithmetic.
#[test]
fn repair_requests_use_the_spec_arithmetic() {
    let mut a = channel("alice");
    let mut b = channel("bob");
    a.wrap(Bytes::from_static(b"1"), "m1".into(), T0).unwrap();
    let m2 = a
        .wrap(Bytes::from_static(b"2"), "m2".into(), T0 + 1)
        .unwrap();
    b.unwrap(m2, T0 + S).unwrap();
    let requests = b.outgoing_repair();
    assert_eq!(requests.len(), 1);
    let c = config();
    let expected = T0
        + S
        + t_req_offset(
            b"bob",
            b"m1",
            c.repair_t_min.as_millis() as u64,
            c.repair_t_max.as_millis() as u64,
        );
    assert_eq!(requests[0].t_req, expected);
    let nim_offset = sds_proto::repair::t_req_offset(
        b"bob",
        b"m1",
        c.repair_t_min.as_millis() as i64,
        c.repair_t_max.as_millis() as i64,
    );
    assert_ne!(
        expected,
        T0 + S + nim_offset as u64,
        "the profiles' arithmetic differs here"
    );
}

// State written with one profile is refused by the other instead of being half dropped.
#[test]
fn restoring_state_of_the_other_profile_is_refused() {
    for (written, read) in [
        (Profile::NimSds, Profile::Spec),
        (Profile::Spec, Profile::NimSds),
    ] {
        let with = |profile| Config::default().with_profile(profile);
        let mut a = Channel::new("chan".into(), "alice".into(), with(written), T0).unwrap();
        let mut b = Channel::new("chan".into(), "bob".into(), with(written), T0).unwrap();
        a.wrap(Bytes::from_static(b"1"), "m1".into(), T0).unwrap();
        let m2 = a
            .wrap(Bytes::from_static(b"2"), "m2".into(), T0 + 1)
            .unwrap();
        b.unwrap(m2, T0 + S).unwrap(); // buffered, waiting for m1
        for snapshot in [a.snapshot(), b.snapshot()] {
            let same = Channel::restore(
                "chan".into(),
                "x".into(),
                with(written),
                snapshot.clone(),
                T0,
            );
            assert!(same.is_ok());
            let err =
                Channel::restore("chan".into(), "x".into(), with(read), snapshot, T0).unwrap_err();
            assert!(err.0.contains("wire profile"), "{err}");
        }
    }
}
