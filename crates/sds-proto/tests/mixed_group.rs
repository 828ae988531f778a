//! A group mixing nim-sds members with ours (LAMPORT-07). nim-sds's clock counts seconds
//! (`max(now in seconds, L) + 1`), so its messages are built here by hand with second-scale
//! lamports, as a nim-sds member that has not yet received any of our messages would send them.
//! Times handed to the engine are milliseconds; T0 = 1 700 000 000 000.

use bytes::Bytes;
use sds_proto::engine::{
    Channel, ChannelSnapshot, Config, Event, LamportUnit, LogEntry, ReceivedKind, StoreOp,
    TransmitKind,
};
use sds_proto::wire::{nim, Limits, Profile};
use sds_proto::{HistoryEntry, SdsMessage};

const T0: u64 = 1_700_000_000_000;
const S: u64 = 1_000;
/// T0 in seconds: where a nim-sds member's clock stands at T0.
const T0_S: i64 = (T0 / 1_000) as i64;

/// A message of nim-sds member `sender` at second-scale `lamport`, citing `deps`.
fn nim_message(id: &str, lamport: i64, deps: &[String], sender: &str) -> Bytes {
    Bytes::from(nim::encode(&SdsMessage {
        message_id: id.into(),
        lamport_timestamp: lamport,
        causal_history: deps
            .iter()
            .map(|d| HistoryEntry {
                sender_id: sender.into(),
                ..HistoryEntry::new(d.as_str())
            })
            .collect(),
        channel_id: "c".into(),
        content: Bytes::from(format!("content of {id}")),
        sender_id: sender.into(),
        ..SdsMessage::default()
    }))
}

fn decode(bytes: &Bytes) -> SdsMessage {
    nim::decode(bytes, &Limits::default()).unwrap()
}

fn log_ids(ch: &Channel) -> Vec<String> {
    ch.log().map(|e| e.message_id.to_string()).collect()
}

fn drain_events(ch: &mut Channel) -> Vec<Event> {
    ch.take_store_ops();
    std::iter::from_fn(|| ch.poll_event()).collect()
}

fn wrap(ch: &mut Channel, id: &str, now: u64) -> Bytes {
    let bytes = ch
        .wrap(Bytes::from(format!("content of {id}")), id.into(), now)
        .unwrap();
    ch.take_store_ops();
    bytes
}

#[test]
fn lamport_07_the_nim_sds_profile_counts_seconds_and_the_spec_profile_milliseconds() {
    assert_eq!(Config::default().profile, Profile::NimSds);
    assert_eq!(Config::default().clock_unit(), LamportUnit::Seconds);
    let spec = Config::default().with_profile(Profile::Spec);
    assert_eq!(spec.clock_unit(), LamportUnit::Milliseconds);
    // An explicit unit wins over the profile's.
    let nim_in_ms = Config::default().with_lamport_unit(Some(LamportUnit::Milliseconds));
    assert_eq!(nim_in_ms.clock_unit(), LamportUnit::Milliseconds);

    let mut rob = Channel::new("c".into(), "rob".into(), Config::default(), T0 + 999).unwrap();
    assert_eq!(rob.lamport(), T0_S);
    // max(now, L + 1) in seconds.
    assert_eq!(
        decode(&wrap(&mut rob, "r0", T0)).lamport_timestamp,
        T0_S + 1
    );
    assert_eq!(
        decode(&wrap(&mut rob, "r1", T0)).lamport_timestamp,
        T0_S + 2
    );
    assert_eq!(
        decode(&wrap(&mut rob, "r2", T0 + 50 * S)).lamport_timestamp,
        T0_S + 50
    );
    let mut spec_rob = Channel::new("c".into(), "rob".into(), spec, T0).unwrap();
    assert_eq!(spec_rob.lamport(), T0 as i64);
    let sent = spec_rob
        .wrap(Bytes::from_static(b"x"), "s0".into(), T0 + 5)
        .unwrap();
    let got = sds_proto::wire::spec::decode(&sent, &Limits::default()).unwrap();
    assert_eq!(got.lamport_timestamp, Some(T0 + 5));
}

/// Rob (ours) wraps r0..r4 that nina (nim-sds) never gets; nina wraps n0..n11 and rob delivers
/// them. Rob's reply must cite nina's newest messages, which she has, not his own that she
/// lacks: on one scale, her later messages sort after his earlier ones.
#[test]
fn lamport_07_a_reply_to_a_nim_sds_member_cites_what_she_has() {
    let mut rob = Channel::new("c".into(), "rob".into(), Config::default(), T0).unwrap();
    for i in 0..5 {
        wrap(&mut rob, &format!("r{i}"), T0 + i * S);
    }
    let mut nina_log: Vec<String> = Vec::new();
    for i in 0..12u64 {
        let id = format!("n{i}");
        // nina started at T0 like rob; she sends one message a second from T0 + 10 s.
        let deps: Vec<String> = nina_log.iter().rev().take(10).rev().cloned().collect();
        let bytes = nim_message(&id, T0_S + 10 + i as i64, &deps, "nina");
        let got = rob.unwrap(bytes, T0 + (10 + i) * S).unwrap();
        assert_eq!(got.kind, ReceivedKind::Delivered, "{id}");
        nina_log.push(id);
    }
    let reply = decode(&wrap(&mut rob, "reply", T0 + 30 * S));
    let cited: Vec<String> = reply
        .causal_history
        .iter()
        .map(|e| e.message_id.to_string())
        .collect();
    let expected: Vec<String> = (2..12).map(|i| format!("n{i}")).collect();
    assert_eq!(cited, expected, "everything cited is something nina has");
    assert_eq!(reply.lamport_timestamp, T0_S + 30, "second-scale lamport");
}

/// With a log of 20 holding r0..r19, nina's second-scale n0 and n1 sort below everything rob
/// holds; they stay in the log until 20 later entries have arrived, so rob can still answer a
/// repair request for n0.
#[test]
fn lamport_07_a_delivered_message_is_not_evicted_for_its_low_lamport() {
    // The worst case: rob's own entries at millisecond scale (say, a store written by an older
    // version), nina's at second scale.
    let config = Config::default()
        .with_max_message_history(20)
        .with_lamport_unit(Some(LamportUnit::Milliseconds));
    let mut rob = Channel::new("c".into(), "rob".into(), config.clone(), T0).unwrap();
    for i in 0..20 {
        wrap(&mut rob, &format!("r{i}"), T0);
    }
    let n0 = nim_message("n0", T0_S + 1, &[], "nina");
    let n1 = nim_message("n1", T0_S + 2, &["n0".to_string()], "nina");
    assert_eq!(
        rob.unwrap(n0.clone(), T0 + S).unwrap().kind,
        ReceivedKind::Delivered
    );
    let ops = {
        rob.unwrap(n1, T0 + 2 * S).unwrap();
        rob.take_store_ops()
    };
    let ids = log_ids(&rob);
    assert!(
        ids.contains(&"n0".to_string()) && ids.contains(&"n1".to_string()),
        "{ids:?}"
    );
    assert!(!ids.contains(&"r0".to_string()) && !ids.contains(&"r1".to_string()));
    assert!(ops.contains(&StoreOp::RemoveLogEntry("r1".into())));
    // The log keeps its (lamport, id) order.
    assert_eq!(ids[..2], ["n0".to_string(), "n1".to_string()]);

    // nora, another nim-sds member, asks for n0: rob answers.
    let ask = Bytes::from(nim::encode(&SdsMessage {
        message_id: "ask".into(),
        lamport_timestamp: T0_S + 3,
        channel_id: "c".into(),
        content: Bytes::from_static(b"?"),
        sender_id: "nora".into(),
        repair_request: vec![HistoryEntry {
            sender_id: "nina".into(),
            ..HistoryEntry::new("n0")
        }],
        ..SdsMessage::default()
    }));
    rob.unwrap(ask, T0 + 3 * S).unwrap();
    let pending = rob.incoming_repair();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].entry.message_id, "n0");
    rob.handle_timeout(pending[0].t_resp);
    let repairs: Vec<_> = std::iter::from_fn(|| rob.poll_transmit())
        .filter(|t| t.kind == TransmitKind::Repair)
        .collect();
    assert_eq!(repairs.len(), 1);
    assert_eq!(repairs[0].message_id, "n0");
    assert!(repairs[0].bytes == n0, "the original bytes");
    drain_events(&mut rob);

    // n0 leaves only after 20 later entries: n1, ask and 17 more…
    for i in 20..37 {
        wrap(&mut rob, &format!("r{i}"), T0 + 4 * S);
    }
    assert!(log_ids(&rob).contains(&"n0".to_string()));
    // …and the 18th.
    wrap(&mut rob, "r37", T0 + 4 * S);
    assert!(!log_ids(&rob).contains(&"n0".to_string()));
    assert!(log_ids(&rob).contains(&"n1".to_string()));
}

/// Eviction by arrival survives a restart: the snapshot carries the arrival order.
#[test]
fn lamport_07_a_restored_channel_evicts_by_arrival_too() {
    let config = Config::default()
        .with_max_message_history(4)
        .with_lamport_unit(Some(LamportUnit::Milliseconds));
    let mut rob = Channel::new("c".into(), "rob".into(), config.clone(), T0).unwrap();
    for i in 0..3 {
        wrap(&mut rob, &format!("r{i}"), T0);
    }
    rob.unwrap(nim_message("n0", T0_S + 1, &[], "nina"), T0 + S)
        .unwrap();
    rob.take_store_ops();
    let mut snap = rob.snapshot();
    // A backend returns the log in its own order.
    snap.log.reverse();
    let mut restored =
        Channel::restore("c".into(), "rob".into(), config, snap, T0 + 2 * S).unwrap();
    assert!(restored.take_store_ops().is_empty(), "nothing to trim");
    wrap(&mut restored, "r3", T0 + 2 * S);
    assert_eq!(log_ids(&restored), ["n0", "r1", "r2", "r3"]);
    wrap(&mut restored, "r4", T0 + 2 * S);
    wrap(&mut restored, "r5", T0 + 2 * S);
    assert_eq!(log_ids(&restored), ["n0", "r3", "r4", "r5"]);
    wrap(&mut restored, "r6", T0 + 2 * S);
    assert_eq!(log_ids(&restored), ["r3", "r4", "r5", "r6"]);
}

/// A store written while the clock counted milliseconds keeps working once the channel counts
/// seconds: the clock only has to keep growing.
#[test]
fn lamport_07_a_millisecond_store_restored_into_a_seconds_channel_keeps_working() {
    let ms = Config::default().with_lamport_unit(Some(LamportUnit::Milliseconds));
    let mut old = Channel::new("c".into(), "rob".into(), ms, T0).unwrap();
    let r0 = wrap(&mut old, "r0", T0);
    assert_eq!(decode(&r0).lamport_timestamp, T0 as i64 + 1);
    let r1 = wrap(&mut old, "r1", T0 + 5);
    let snap = old.snapshot();
    assert_eq!(snap.lamport, Some(T0 as i64 + 5));

    let mut rob =
        Channel::restore("c".into(), "rob".into(), Config::default(), snap, T0 + S).unwrap();
    assert_eq!(rob.config().clock_unit(), LamportUnit::Seconds);
    let r2 = decode(&wrap(&mut rob, "r2", T0 + S));
    assert_eq!(
        r2.lamport_timestamp,
        T0 as i64 + 6,
        "L + 1 beats now in seconds"
    );
    assert_eq!(
        r2.causal_history
            .iter()
            .map(|e| e.message_id.to_string())
            .collect::<Vec<_>>(),
        ["r0", "r1"]
    );
    // A second-scale message from a nim-sds member is delivered; the clock does not go back.
    rob.unwrap(nim_message("n0", T0_S + 2, &[], "nina"), T0 + 2 * S)
        .unwrap();
    let events = drain_events(&mut rob);
    assert!(
        matches!(events[..], [Event::MessageReady { .. }]),
        "{events:?}"
    );
    let r3 = decode(&wrap(&mut rob, "r3", T0 + 3 * S));
    assert_eq!(r3.lamport_timestamp, T0 as i64 + 7);
    // The restored outgoing entries are still resent from their stored times.
    rob.handle_timeout(T0 + 60 * S + 5);
    let resent: Vec<Bytes> = std::iter::from_fn(|| rob.poll_transmit())
        .map(|t| t.bytes)
        .collect();
    assert!(
        resent == [r0, r1],
        "the two restored messages, byte for byte"
    );

    // Near the top of the range the clock still never wraps.
    let top = ChannelSnapshot {
        lamport: Some(i64::MAX - 1),
        log: vec![LogEntry {
            message_id: "old".into(),
            lamport_timestamp: i64::MAX - 1,
            sender_id: "rob".into(),
            retrieval_hint: Bytes::new(),
            bytes: nim_message("old", i64::MAX - 1, &[], "rob"),
            arrival: 0,
        }],
        ..ChannelSnapshot::default()
    };
    let mut ch = Channel::restore("c".into(), "rob".into(), Config::default(), top, T0).unwrap();
    assert_eq!(
        decode(&wrap(&mut ch, "last", T0)).lamport_timestamp,
        i64::MAX
    );
    assert!(ch
        .wrap(Bytes::from_static(b"x"), "over".into(), T0)
        .is_err());
}
