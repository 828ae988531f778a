//! The manager and its persistence (checklist ids in test names). Timer tests run on tokio's
//! paused clock: no real sleeping.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sds_manager::{
    Bytes, Call, ChannelId, ChannelSnapshot, Config, Event, ManagerConfig, ManagerError,
    MemoryPersistence, MessageId, NoopPersistence, Notification, Persistence, PersistenceResult,
    ReceivedKind, ReliabilityManager, StoreOp, TransmitKind, UnjoinedChannels,
};
use sds_proto::wire::nim;
use sds_proto::{HistoryEntry, SdsMessage};

/// Received messages open their channels (most tests feed channels they never joined).
fn open_channels() -> ManagerConfig {
    ManagerConfig::default().with_unjoined_channels(UnjoinedChannels::Accept { max: 1_000 })
}

fn manager(name: &str, store: &MemoryPersistence) -> ReliabilityManager {
    manager_with(name, store, Config::default())
}

fn manager_with(name: &str, store: &MemoryPersistence, engine: Config) -> ReliabilityManager {
    ReliabilityManager::new(
        name,
        open_channels().with_engine(engine),
        Arc::new(store.clone()),
    )
    .unwrap()
}

fn msg(id: &str, lamport: i64, deps: &[&str], sender: &str, channel: &str) -> Bytes {
    let m = SdsMessage {
        message_id: id.into(),
        lamport_timestamp: lamport,
        causal_history: deps.iter().map(|d| HistoryEntry::new(*d)).collect(),
        channel_id: channel.into(),
        content: Bytes::from(format!("content of {id}")),
        sender_id: sender.into(),
        ..SdsMessage::default()
    };
    Bytes::from(nim::encode(&m))
}

fn drain(rx: &mut sds_manager::Subscription) -> Vec<Notification> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

fn ready(ns: &[Notification]) -> Vec<String> {
    ns.iter()
        .filter_map(|n| match n {
            Notification::Event(Event::MessageReady { message_id, .. }) => {
                Some(message_id.to_string())
            }
            _ => None,
        })
        .collect()
}

fn ids<T, I: std::fmt::Display>(v: &[T], id: impl Fn(&T) -> &I) -> Vec<String> {
    v.iter().map(|e| id(e).to_string()).collect()
}

/// Channel state as observable from outside, including filter answers for `probes`.
async fn observe(
    m: &ReliabilityManager,
    channel: &str,
    probes: &[&str],
) -> (ChannelSnapshot, Vec<bool>) {
    let mut snap = m.snapshot(channel).await.unwrap();
    snap.incoming
        .sort_by(|a, b| a.message_id.cmp(&b.message_id));
    let mut answers = Vec::new();
    for p in probes {
        answers.push(
            m.bloom_contains(channel, &MessageId::from(*p))
                .await
                .unwrap(),
        );
    }
    (snap, answers)
}

// ----- PERSIST ---------------------------------------------------------------------------------

#[tokio::test]
async fn persist_01_one_batch_per_operation() {
    let store = MemoryPersistence::new();
    let bob = manager("bob", &store);
    bob.ensure_channel("c").await.unwrap();
    let batches = || store.calls(Call::ApplyBatch);
    let before = batches();
    bob.wrap_outgoing_message(&b"x"[..], "w1", "c")
        .await
        .unwrap();
    assert_eq!(batches(), before + 1);
    bob.unwrap_received_message(msg("m3", 3, &["m2"], "a", "c"))
        .await
        .unwrap();
    bob.unwrap_received_message(msg("m2", 2, &["m1"], "a", "c"))
        .await
        .unwrap();
    let before = batches();
    bob.unwrap_received_message(msg("m1", 1, &[], "a", "c"))
        .await
        .unwrap();
    assert_eq!(
        batches(),
        before + 1,
        "a three-message cascade is one batch"
    );
    let before = batches();
    bob.unwrap_received_message(msg("m1", 1, &[], "a", "c"))
        .await
        .unwrap();
    assert_eq!(
        batches(),
        before,
        "a duplicate with nothing to cancel commits nothing"
    );
}

#[tokio::test]
async fn persist_02_wraps_survive_restarts() {
    let store = MemoryPersistence::new();
    let mut lamport = 0;
    for (run, id) in ["m1", "m2", "m3"].iter().enumerate() {
        let m = manager("alice", &store);
        if run > 0 {
            assert_eq!(m.lamport("c").await.unwrap(), lamport, "clock restored");
        }
        m.wrap_outgoing_message(&b"x"[..], *id, "c").await.unwrap();
        lamport = m.lamport("c").await.unwrap();
        m.cleanup().await;
    }
    let m = manager("alice", &store);
    let out = m.get_outgoing("c").await.unwrap();
    assert_eq!(ids(&out, |e| &e.message_id), ["m1", "m2", "m3"]);
    assert_eq!(
        ids(&m.get_log("c").await.unwrap(), |e| &e.message_id),
        ["m1", "m2", "m3"]
    );
    assert_eq!(m.lamport("c").await.unwrap(), lamport);
}

#[tokio::test]
async fn persist_03_buffered_messages_survive_with_their_missing_sets() {
    let store = MemoryPersistence::new();
    let m = manager("bob", &store);
    m.unwrap_received_message(msg("c", 3, &["b"], "x", "ch"))
        .await
        .unwrap();
    m.unwrap_received_message(msg("b", 2, &["a"], "x", "ch"))
        .await
        .unwrap();
    m.cleanup().await;
    let m = manager("bob", &store);
    let mut rx = m.subscribe();
    let incoming = m.get_incoming("ch").await.unwrap();
    assert_eq!(ids(&incoming, |e| &e.message_id), ["b", "c"]);
    m.unwrap_received_message(msg("a", 1, &[], "x", "ch"))
        .await
        .unwrap();
    assert_eq!(ready(&drain(&mut rx)), ["a", "b", "c"]);
    assert!(m.get_incoming("ch").await.unwrap().is_empty());
    assert!(store.stored(&"ch".into()).unwrap().incoming.is_empty());
}

#[tokio::test]
async fn persist_04_05_acks_are_stored_and_the_filter_is_rebuilt() {
    let store = MemoryPersistence::new();
    let m = manager("alice", &store);
    m.wrap_outgoing_message(&b"x"[..], "msg-x", "c")
        .await
        .unwrap();
    m.unwrap_received_message(msg("d1", 1, &["msg-x"], "bob", "c"))
        .await
        .unwrap();
    let stored = store.stored(&"c".into()).unwrap();
    assert!(stored.outgoing.is_empty());
    m.cleanup().await;
    let m = manager("alice", &store);
    assert!(m.bloom_contains("c", &"d1".into()).await.unwrap());
    assert!(m.bloom_contains("c", &"msg-x".into()).await.unwrap());
}

#[tokio::test]
async fn persist_06_loaded_log_is_trimmed_and_eviction_resumes() {
    let store = MemoryPersistence::new();
    let small = Config::default().with_max_message_history(3);
    let m = manager_with("alice", &store, small.clone());
    for i in 1..=5 {
        m.wrap_outgoing_message(&b"x"[..], format!("m{i}"), "c")
            .await
            .unwrap();
    }
    let logged =
        |s: &MemoryPersistence| ids(&s.stored(&"c".into()).unwrap().log, |e| &e.message_id);
    assert_eq!(logged(&store), ["m3", "m4", "m5"]);
    m.cleanup().await;
    let m = manager_with("alice", &store, small);
    m.wrap_outgoing_message(&b"x"[..], "m6", "c").await.unwrap();
    assert_eq!(logged(&store), ["m4", "m5", "m6"]);
}

#[tokio::test]
async fn persist_08_remove_channel_drops_exactly_once() {
    let store = MemoryPersistence::new();
    let m = manager("alice", &store);
    m.wrap_outgoing_message(&b"x"[..], "m1", "c").await.unwrap();
    m.remove_channel("c").await.unwrap();
    assert_eq!(store.calls(Call::DropChannel), 1);
    assert!(store.stored(&"c".into()).is_none());
    assert!(m.channel_ids().is_empty());
    // A channel that is only in the store.
    let other = manager("alice", &store);
    other
        .wrap_outgoing_message(&b"x"[..], "m1", "stored-only")
        .await
        .unwrap();
    other.cleanup().await;
    m.remove_channel("stored-only").await.unwrap();
    assert_eq!(store.calls(Call::DropChannel), 2);
    let fresh = manager("alice", &store);
    assert!(fresh.get_log("stored-only").await.unwrap().is_empty());
}

#[tokio::test]
async fn persist_12_load_failure_is_reported_and_retried() {
    let store = MemoryPersistence::new();
    let m = manager("alice", &store);
    store.fail_next(Call::LoadChannel, 1);
    let err = m
        .wrap_outgoing_message(&b"x"[..], "m1", "c")
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::Persistence(_)));
    m.wrap_outgoing_message(&b"x"[..], "m1", "c").await.unwrap();
    assert_eq!(store.calls(Call::LoadChannel), 2);
}

#[tokio::test]
async fn persist_13_drop_failure_leaves_the_channel_and_a_retry_drops_it() {
    let store = MemoryPersistence::new();
    let m = manager("alice", &store);
    m.wrap_outgoing_message(&b"x"[..], "m1", "c").await.unwrap();
    store.fail_next(Call::DropChannel, 1);
    assert!(m.remove_channel("c").await.is_err());
    assert_eq!(
        ids(&m.get_log("c").await.unwrap(), |e| &e.message_id),
        ["m1"]
    );
    assert!(store.stored(&"c".into()).is_some());
    m.remove_channel("c").await.unwrap();
    assert_eq!(store.calls(Call::DropChannel), 2);
    assert!(store.stored(&"c".into()).is_none());
}

#[tokio::test]
async fn a_failed_batch_announces_nothing_and_memory_never_runs_ahead_of_disk() {
    let store = MemoryPersistence::new();
    let m = manager("bob", &store);
    let mut rx = m.subscribe();
    m.ensure_channel("c").await.unwrap();
    store.fail_next(Call::ApplyBatch, 1);
    let err = m
        .unwrap_received_message(msg("m1", 1, &[], "a", "c"))
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::Persistence(_)));
    assert!(drain(&mut rx).is_empty(), "nothing announced");
    // The channel reloads from the store: m1 was not delivered, so it is delivered now.
    assert!(m.get_log("c").await.unwrap().is_empty());
    let r = m
        .unwrap_received_message(msg("m1", 1, &[], "a", "c"))
        .await
        .unwrap();
    assert_eq!(r.kind, ReceivedKind::Delivered);
    assert_eq!(ready(&drain(&mut rx)), ["m1"]);
}

/// A fixed workload touching every kind of operation, on channel "c" (bob).
async fn workload(m: &ReliabilityManager, step: usize) -> Result<(), ManagerError> {
    match step {
        0 => m
            .wrap_outgoing_message(&b"b1"[..], "b1", "c")
            .await
            .map(drop),
        1 => m
            .unwrap_received_message(msg("a3", 30, &["a2"], "alice", "c"))
            .await
            .map(drop),
        2 => m
            .unwrap_received_message(msg("a2", 20, &["a1"], "alice", "c"))
            .await
            .map(drop),
        3 => m
            .unwrap_received_message(msg("a1", 10, &["b1"], "alice", "c"))
            .await
            .map(drop),
        4 => m
            .wrap_outgoing_message(&b"b2"[..], "b2", "c")
            .await
            .map(drop),
        5 => m
            .unwrap_received_message(msg("x2", 50, &["x1"], "carol", "c"))
            .await
            .map(drop),
        6 => m.mark_dependencies_met(&["x1".into()], "c").await,
        7 => m
            .unwrap_received_message(msg("y2", 60, &["y1"], "carol", "c"))
            .await
            .map(drop),
        8 => {
            let mut r = SdsMessage {
                message_id: "req".into(),
                lamport_timestamp: 70,
                channel_id: "c".into(),
                content: Bytes::from_static(b"r"),
                sender_id: "carol".into(),
                ..SdsMessage::default()
            };
            r.repair_request = vec![HistoryEntry {
                message_id: "a1".into(),
                retrieval_hint: Bytes::new(),
                sender_id: "alice".into(),
            }];
            m.unwrap_received_message(Bytes::from(nim::encode(&r)))
                .await
                .map(drop)
        }
        9 => m.sync_message("c").await.map(drop),
        10 => {
            // A bloom filter holding b2: a possible acknowledgement, counted and stored.
            let mut f = sds_proto::bloom::BloomFilter::new(10_000, 0.001).unwrap();
            f.insert(b"b2");
            let hit = SdsMessage {
                message_id: "hit".into(),
                lamport_timestamp: 80,
                channel_id: "c".into(),
                content: Bytes::from_static(b"h"),
                sender_id: "dave".into(),
                bloom_filter: Bytes::from(f.serialize()),
                ..SdsMessage::default()
            };
            m.unwrap_received_message(Bytes::from(nim::encode(&hit)))
                .await
                .map(drop)
        }
        _ => m
            .unwrap_received_message(msg("a1", 10, &["b1"], "alice", "c"))
            .await
            .map(drop),
    }
}

const STEPS: usize = 12;
const PROBES: [&str; 8] = ["b1", "b2", "a1", "a2", "a3", "x1", "x2", "nope"];

#[tokio::test]
async fn a_fresh_manager_sees_identical_state_after_every_kind_of_operation() {
    let store = MemoryPersistence::new();
    let live = manager("bob", &store);
    for step in 0..STEPS {
        workload(&live, step).await.unwrap();
        if step == 10 {
            let out = live.get_outgoing("c").await.unwrap();
            assert!(out.iter().any(|e| e.possible_acks == 1), "{out:?}");
        }
        let fresh = manager("bob", &store);
        let (a, fa) = observe(&live, "c", &PROBES).await;
        let (b, fb) = observe(&fresh, "c", &PROBES).await;
        assert_eq!(a, b, "after step {step}");
        assert_eq!(fa, fb, "filter after step {step}");
        // The snapshot is the whole state, as stored: marked-met ids included (PERSIST-15).
        assert_eq!(
            by_id(live.snapshot("c").await.unwrap()),
            by_id(store.load_channel(&"c".into()).await.unwrap()),
            "snapshot and store after step {step}"
        );
    }
}

/// A snapshot with every part in one order: the log by (lamport, id), buffers by id.
fn by_id(mut s: ChannelSnapshot) -> ChannelSnapshot {
    s.log.sort_by(|a, b| {
        (a.lamport_timestamp, &a.message_id).cmp(&(b.lamport_timestamp, &b.message_id))
    });
    s.incoming.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    s.outgoing_repair
        .sort_by(|a, b| a.entry.message_id.cmp(&b.entry.message_id));
    s.incoming_repair
        .sort_by(|a, b| a.entry.message_id.cmp(&b.entry.message_id));
    s
}

#[tokio::test]
async fn failure_at_any_store_call_leaves_a_consistent_state() {
    // Count the calls of a clean run, then fail at each of them in turn.
    let clean = MemoryPersistence::new();
    let m = manager("bob", &clean);
    for step in 0..STEPS {
        workload(&m, step).await.unwrap();
    }
    let total: u64 = [Call::ApplyBatch, Call::LoadChannel]
        .iter()
        .map(|c| clean.calls(*c))
        .sum();
    let (expected, _) = observe(&m, "c", &PROBES).await;
    for k in 0..=total + 40 {
        let store = MemoryPersistence::new();
        let m = manager("bob", &store);
        store.fail_after(Some(k));
        for step in 0..STEPS {
            let _ = workload(&m, step).await;
        }
        store.fail_after(None);
        // Whatever was stored reloads into a coherent channel ...
        let fresh = manager("bob", &store);
        let snap = fresh.snapshot("c").await.unwrap();
        for e in &snap.outgoing {
            assert!(
                snap.log.iter().any(|l| l.message_id == e.message_id),
                "k={k}"
            );
        }
        for e in &snap.incoming {
            assert!(
                !snap.log.iter().any(|l| l.message_id == e.message_id),
                "k={k}"
            );
        }
        // ... and running the workload again converges to the clean run's log.
        for step in 0..STEPS {
            let _ = workload(&fresh, step).await;
        }
        let (got, _) = observe(&fresh, "c", &PROBES).await;
        let log_ids = |s: &ChannelSnapshot| ids(&s.log, |e| &e.message_id);
        let mut a = log_ids(&got);
        let mut b = log_ids(&expected);
        a.sort();
        b.sort();
        assert_eq!(a, b, "k={k}");
    }
}

// ----- PERSIST-09: nothing announced before it is durable ---------------------------------------

/// A store whose batches (and, if given, loads) wait for a permit.
struct GatedStore {
    inner: MemoryPersistence,
    gate: Arc<tokio::sync::Semaphore>,
    loads: Option<Arc<tokio::sync::Semaphore>>,
}

#[async_trait]
impl Persistence for GatedStore {
    async fn drop_channel(&self, c: &ChannelId) -> PersistenceResult<()> {
        self.inner.drop_channel(c).await
    }
    async fn load_channel(&self, c: &ChannelId) -> PersistenceResult<ChannelSnapshot> {
        if let Some(loads) = &self.loads {
            if let Ok(p) = loads.acquire().await {
                p.forget();
            }
        }
        self.inner.load_channel(c).await
    }
    async fn apply_batch(&self, c: &ChannelId, ops: &[StoreOp]) -> PersistenceResult<()> {
        let permit = self.gate.acquire().await;
        let r = self.inner.apply_batch(c, ops).await;
        if let Ok(p) = permit {
            p.forget();
        }
        r
    }
}

#[tokio::test]
async fn persist_09_nothing_is_announced_before_the_commit_returns() {
    let gate = Arc::new(tokio::sync::Semaphore::new(1)); // the load's trim-free restore needs none
    let store = GatedStore {
        inner: MemoryPersistence::new(),
        gate: gate.clone(),
        loads: None,
    };
    let m = ReliabilityManager::new("bob", open_channels(), Arc::new(store)).unwrap();
    let mut rx = m.subscribe();
    m.ensure_channel("c").await.unwrap();
    let m2 = m.clone();
    // Use the one permit on a first message, then block the second one.
    m.unwrap_received_message(msg("m0", 1, &[], "a", "c"))
        .await
        .unwrap();
    drain(&mut rx);
    let pending = tokio::spawn(async move {
        m2.unwrap_received_message(msg("m1", 2, &[], "a", "c"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!pending.is_finished(), "the call waits for its commit");
    assert!(drain(&mut rx).is_empty(), "no event before the commit");
    gate.add_permits(1);
    pending.await.unwrap().unwrap();
    assert_eq!(ready(&drain(&mut rx)), ["m1"]);
}

// ----- MULTI -----------------------------------------------------------------------------------

#[tokio::test]
async fn multi_01_02_03_channels_are_isolated_and_routed_by_bytes() {
    let store = MemoryPersistence::new();
    let alice = manager("alice", &store);
    let bob = ReliabilityManager::new("bob", open_channels(), Arc::new(NoopPersistence)).unwrap();
    assert!(alice.channel_ids().is_empty());
    alice.ensure_channel("ch1").await.unwrap();
    alice.ensure_channel("ch2").await.unwrap();
    assert_eq!(alice.channel_ids().len(), 2);
    let w1 = alice
        .wrap_outgoing_message(&b"one"[..], "m1", "ch1")
        .await
        .unwrap();
    let w2 = alice
        .wrap_outgoing_message(&b"two"[..], "m2", "ch2")
        .await
        .unwrap();
    assert_eq!(
        ids(&alice.get_log("ch1").await.unwrap(), |e| &e.message_id),
        ["m1"]
    );
    assert_eq!(
        ids(&alice.get_log("ch2").await.unwrap(), |e| &e.message_id),
        ["m2"]
    );
    let r1 = bob.unwrap_received_message(w1).await.unwrap();
    let r2 = bob.unwrap_received_message(w2).await.unwrap();
    assert_eq!(
        (r1.channel_id.to_string(), &r1.content[..]),
        ("ch1".to_string(), &b"one"[..])
    );
    assert_eq!(
        (r2.channel_id.to_string(), &r2.content[..]),
        ("ch2".to_string(), &b"two"[..])
    );
    alice.remove_channel("ch1").await.unwrap();
    assert_eq!(ids(&alice.channel_ids(), |c| c), ["ch2"]);
    assert!(!alice.bloom_contains("ch2", &"m1".into()).await.unwrap());
}

#[tokio::test]
async fn hostile_11_channel_limit_refuses_new_channels_without_loading() {
    let store = MemoryPersistence::new();
    let m = ReliabilityManager::new(
        "bob",
        ManagerConfig::default().with_max_channels(2),
        Arc::new(store.clone()),
    )
    .unwrap();
    m.join_channel("a").await.unwrap();
    m.join_channel("b").await.unwrap();
    let loads = store.calls(Call::LoadChannel);
    assert!(matches!(
        m.join_channel("third").await.unwrap_err(),
        ManagerError::TooManyChannels { limit: 2 }
    ));
    // A message for a channel nobody joined: refused before anything is loaded or created.
    let err = m
        .unwrap_received_message(msg("m", 1, &[], "x", "other"))
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::NotJoined { .. }), "{err}");
    assert_eq!(store.calls(Call::LoadChannel), loads);
    assert_eq!(m.channel_ids().len(), 2);
    // A malformed message loads nothing either.
    assert!(m
        .unwrap_received_message(Bytes::from_static(&[0x0a]))
        .await
        .is_err());
    assert_eq!(store.calls(Call::LoadChannel), loads);
    // A joined channel takes received messages.
    let r = m
        .unwrap_received_message(msg("m", 1, &[], "x", "a"))
        .await
        .unwrap();
    assert_eq!(r.kind, ReceivedKind::Delivered);
}

/// Received messages may open channels (a tool that takes any channel), but never take the
/// application's places: they are bounded apart, evicted least recently used first (memory and
/// store), and a channel the application joins stops counting as theirs.
#[tokio::test]
async fn channels_opened_by_received_messages_never_take_the_applications_places() {
    let store = MemoryPersistence::new();
    let m = ReliabilityManager::new(
        "bob",
        ManagerConfig::default()
            .with_max_channels(2)
            .with_unjoined_channels(UnjoinedChannels::Accept { max: 3 }),
        Arc::new(store.clone()),
    )
    .unwrap();
    m.wrap_outgoing_message(&b"mine"[..], "a1", "app")
        .await
        .unwrap();
    // A flood of channels from the network.
    for i in 0..50 {
        let channel = format!("spam{i}");
        m.unwrap_received_message(msg(&format!("s{i}"), 1, &[], "x", &channel))
            .await
            .unwrap();
    }
    let ids = m.channel_ids();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert!(ids.contains(&"app".into()));
    for i in 47..50 {
        assert!(ids.contains(&format!("spam{i}").into()), "{ids:?}");
    }
    // Evicted ones are gone from the store too; the application's channel is whole.
    assert!(store.stored(&"spam0".into()).is_none());
    assert_eq!(m.get_outgoing("app").await.unwrap().len(), 1);
    // The application can still join its second channel, and a received one it joins counts
    // as its own from then on.
    m.join_channel("app2").await.unwrap();
    assert!(matches!(
        m.join_channel("spam49").await.unwrap_err(),
        ManagerError::TooManyChannels { limit: 2 }
    ));
    m.remove_channel("app2").await.unwrap();
    m.join_channel("spam49").await.unwrap();
    for i in 50..60 {
        let channel = format!("spam{i}");
        m.unwrap_received_message(msg(&format!("s{i}"), 1, &[], "x", &channel))
            .await
            .unwrap();
    }
    let ids = m.channel_ids();
    assert!(
        ids.contains(&"spam49".into()) && ids.contains(&"app".into()),
        "{ids:?}"
    );
    assert_eq!(ids.len(), 5, "{ids:?}");
}

#[tokio::test]
async fn multi_08_reset_drops_every_known_channel() {
    let store = MemoryPersistence::new();
    let m = manager("alice", &store);
    for c in ["a", "b", "c"] {
        m.wrap_outgoing_message(&b"x"[..], "m", c).await.unwrap();
    }
    store.fail_next(Call::DropChannel, 1);
    assert!(m.reset().await.is_err());
    m.reset().await.unwrap();
    assert_eq!(store.calls(Call::DropChannel), 4);
    assert!(store.channels().is_empty());
    assert!(m.get_log("a").await.unwrap().is_empty());
}

#[tokio::test]
async fn invalid_arguments_are_typed_errors() {
    let m =
        ReliabilityManager::new("a", ManagerConfig::default(), Arc::new(NoopPersistence)).unwrap();
    assert!(matches!(
        m.wrap_outgoing_message(Bytes::new(), "m", "c").await,
        Err(ManagerError::InvalidArgument(_))
    ));
    assert!(matches!(
        m.wrap_outgoing_message(&b"x"[..], "m", "").await,
        Err(ManagerError::InvalidArgument(_))
    ));
    assert!(matches!(
        m.wrap_outgoing_message(vec![0u8; 1_048_577], "m", "c")
            .await,
        Err(ManagerError::MessageTooLarge { .. })
    ));
    assert!(matches!(
        m.unwrap_received_message(Bytes::from_static(b"\x0a\x01"))
            .await,
        Err(ManagerError::Decode(_))
    ));
    let bad = ManagerConfig::default()
        .with_engine(Config::default().with_resend_interval(Duration::from_millis(0)));
    assert!(matches!(
        ReliabilityManager::new("a", bad, Arc::new(NoopPersistence)),
        Err(ManagerError::Config(_))
    ));
}

// ----- periodic tasks (paused clock) -----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn periodic_tasks_resend_sync_and_stop_cleanly() {
    let store = MemoryPersistence::new();
    let m = manager("alice", &store);
    let mut rx = m.subscribe();
    let wire = m.wrap_outgoing_message(&b"x"[..], "m1", "c").await.unwrap();
    m.start_periodic_tasks().await;
    m.start_periodic_tasks().await; // MULTI-06: no second set of timers
    tokio::time::sleep(Duration::from_secs(61)).await;
    let ns = drain(&mut rx);
    let kinds: Vec<(TransmitKind, Bytes)> = ns
        .iter()
        .filter_map(|n| match n {
            Notification::Transmit(t) => Some((t.kind, t.bytes.clone())),
            _ => None,
        })
        .collect();
    // Syncs at +30 s and +60 s, the resend at +60 s: once each.
    assert_eq!(
        kinds
            .iter()
            .filter(|(k, _)| *k == TransmitKind::Sync)
            .count(),
        2
    );
    let resends: Vec<&Bytes> = kinds
        .iter()
        .filter(|(k, _)| *k == TransmitKind::Resend)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(resends, [&wire]);
    assert_eq!(store.stored(&"c".into()).unwrap().outgoing[0].attempts, 1);
    // MULTI-07: cleanup stops the work; nothing comes afterwards.
    m.cleanup().await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(drain(&mut rx).is_empty());
}

#[tokio::test(start_paused = true)]
async fn persist_11_failed_periodic_batch_is_reported_and_redone() {
    let store = MemoryPersistence::new();
    let m = manager("alice", &store);
    let mut rx = m.subscribe();
    m.wrap_outgoing_message(&b"x"[..], "m1", "c").await.unwrap();
    m.start_periodic_tasks().await;
    tokio::time::sleep(Duration::from_secs(29)).await;
    store.fail_next(Call::ApplyBatch, 1);
    tokio::time::sleep(Duration::from_millis(1_500)).await; // the sync at +30 s fails
    let ns = drain(&mut rx);
    assert!(
        matches!(ns.first(), Some(Notification::TaskError { .. })),
        "{ns:?}"
    );
    assert!(!ns.iter().any(|n| matches!(n, Notification::Transmit(_))));
    tokio::time::sleep(Duration::from_secs(2)).await; // redone about a second later
    let ns = drain(&mut rx);
    assert!(ns
        .iter()
        .any(|n| matches!(n, Notification::Transmit(t) if t.kind == TransmitKind::Sync)));
    m.cleanup().await;
}

// ----- concurrency -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wraps_and_unwraps_on_several_channels_stay_consistent() {
    let senders: Vec<ReliabilityManager> = (0..4)
        .map(|i| {
            ReliabilityManager::new(
                format!("s{i}"),
                open_channels(),
                Arc::new(MemoryPersistence::new()),
            )
            .unwrap()
        })
        .collect();
    let store = MemoryPersistence::new();
    let receiver = manager("r", &store);
    let mut tasks = Vec::new();
    for (i, s) in senders.iter().enumerate() {
        for c in 0..3 {
            let (s, receiver) = (s.clone(), receiver.clone());
            tasks.push(tokio::spawn(async move {
                for k in 0..40 {
                    let w = s
                        .wrap_outgoing_message(
                            &b"p"[..],
                            format!("s{i}-c{c}-{k}"),
                            format!("ch{c}"),
                        )
                        .await
                        .unwrap();
                    receiver.unwrap_received_message(w).await.unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for c in 0..3 {
        let channel = format!("ch{c}");
        let live = receiver.get_log(channel.as_str()).await.unwrap();
        assert_eq!(live.len(), 4 * 40);
        let keys: Vec<(i64, MessageId)> = live
            .iter()
            .map(|e| (e.lamport_timestamp, e.message_id.clone()))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let fresh = manager("r", &store);
        assert_eq!(fresh.get_log(channel.as_str()).await.unwrap(), live);
        assert!(receiver
            .get_incoming(channel.as_str())
            .await
            .unwrap()
            .is_empty());
    }
}

#[tokio::test]
async fn mdm_04_marked_ids_stay_met_across_restarts() {
    let store = MemoryPersistence::new();
    let m = manager("bob", &store);
    m.mark_dependencies_met(&["x1".into()], "c").await.unwrap();
    m.cleanup().await;
    let m = manager("bob", &store);
    let r = m
        .unwrap_received_message(msg("x2", 5, &["x1"], "carol", "c"))
        .await
        .unwrap();
    assert_eq!(r.kind, ReceivedKind::Delivered);
    assert!(m.bloom_contains("c", &"x1".into()).await.unwrap());
    // The marker is not part of the log or of causal histories.
    assert_eq!(
        ids(&m.get_log("c").await.unwrap(), |e| &e.message_id),
        ["x2"]
    );
    let w = m.wrap_outgoing_message(&b"y"[..], "b1", "c").await.unwrap();
    let cited = nim::decode(&w, &sds_proto::wire::Limits::default())
        .unwrap()
        .causal_history;
    assert!(cited.iter().all(|e| e.message_id != "x1"));
}

// EPH-06 (and EPH-01 through the manager): on the spec profile an ephemeral message is sent and
// received without creating or loading a channel and without touching the store.
#[tokio::test]
async fn eph_06_ephemeral_messages_touch_no_channel_and_no_store() {
    let spec = Config::default().with_profile(sds_proto::wire::Profile::Spec);
    let (sa, sb) = (MemoryPersistence::new(), MemoryPersistence::new());
    let alice = manager_with("alice", &sa, spec.clone());
    let bob = manager_with("bob", &sb, spec);
    let mut rx = bob.subscribe();
    let bytes = alice
        .wrap_ephemeral_message(&b"typing"[..], "e1", "chan")
        .unwrap();
    let bytes_again = bytes.clone();
    let got = bob.unwrap_received_message(bytes).await.unwrap();
    assert_eq!(got.kind, ReceivedKind::Ephemeral);
    assert_eq!(&got.content[..], b"typing");
    let ns = drain(&mut rx);
    assert!(
        matches!(&ns[..], [Notification::Event(Event::Ephemeral { message_id, sender_id, .. })]
            if message_id.as_bytes() == b"e1" && sender_id.as_bytes() == b"alice"),
        "{ns:?}"
    );
    // Alice's own ephemeral, echoed back to her, is ignored (RECV-02).
    let mut alice_rx = alice.subscribe();
    let echo = alice.unwrap_received_message(bytes_again).await.unwrap();
    assert_eq!(echo.kind, ReceivedKind::Own);
    assert!(drain(&mut alice_rx).is_empty());
    for (m, store) in [(&alice, &sa), (&bob, &sb)] {
        assert!(m.channel_ids().is_empty());
        for call in [Call::LoadChannel, Call::ApplyBatch] {
            assert_eq!(store.calls(call), 0, "{call:?}");
        }
    }
    // The nim-sds profile has no ephemeral form.
    let nim_store = MemoryPersistence::new();
    let nim_manager = manager("carol", &nim_store);
    assert!(matches!(
        nim_manager.wrap_ephemeral_message(&b"x"[..], "e2", "chan"),
        Err(ManagerError::Protocol(_))
    ));
}

// ----- cancellation, drop, subscribers -----------------------------------------------------------

/// An operation whose caller stops waiting at any of its await points (the load, the commit)
/// still completes on its own: stored, then announced, exactly once.
#[tokio::test]
async fn a_cancelled_operation_completes_stored_then_announced() {
    for park_at_load in [true, false] {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let loads = Arc::new(tokio::sync::Semaphore::new(if park_at_load {
            0
        } else {
            100
        }));
        let memory = MemoryPersistence::new();
        let store = GatedStore {
            inner: memory.clone(),
            gate: gate.clone(),
            loads: Some(loads.clone()),
        };
        let m = ReliabilityManager::new("bob", open_channels(), Arc::new(store)).unwrap();
        let mut rx = m.subscribe();
        let call = m.unwrap_received_message(msg("m1", 1, &[], "a", "c"));
        let stopped = tokio::time::timeout(Duration::from_millis(20), call).await;
        assert!(stopped.is_err(), "the caller stopped waiting part-way");
        assert!(
            drain(&mut rx).is_empty(),
            "nothing announced before the commit"
        );
        loads.add_permits(100);
        gate.add_permits(100);
        let n = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the operation finished without its caller")
            .unwrap();
        assert_eq!(ready(&[n]), ["m1"], "park_at_load={park_at_load}");
        let stored = memory.stored(&"c".into()).unwrap();
        let ids: Vec<String> = stored
            .log
            .iter()
            .map(|e| e.message_id.to_string())
            .collect();
        assert_eq!(ids, ["m1"]);
        let again = m
            .unwrap_received_message(msg("m1", 1, &[], "a", "c"))
            .await
            .unwrap();
        assert_eq!(again.kind, ReceivedKind::Duplicate);
        assert!(ready(&drain(&mut rx)).is_empty(), "delivered once");
    }
}

/// Dropping the last handle stops periodic work: no transmission and no store write after it,
/// and subscriptions end.
#[tokio::test(start_paused = true)]
async fn dropping_the_manager_stops_its_periodic_work() {
    let store = MemoryPersistence::new();
    let m = manager_with(
        "alice",
        &store,
        Config::default()
            .with_resend_interval(Duration::from_millis(100))
            .with_possibly_acked_resend_interval(Duration::from_millis(100))
            .with_sync_interval(Duration::from_millis(100))
            .with_max_resend_attempts(1_000),
    );
    let mut rx = m.subscribe();
    m.start_periodic_tasks().await;
    m.wrap_outgoing_message(&b"x"[..], "m1", "c").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = drain(&mut rx);
    assert!(
        before
            .iter()
            .any(|n| matches!(n, Notification::Transmit(_))),
        "periodic work ran: {before:?}"
    );
    let writes = store.calls(Call::ApplyBatch);
    let clone = m.clone();
    drop(m);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        drain(&mut rx)
            .iter()
            .any(|n| matches!(n, Notification::Transmit(_))),
        "a clone keeps the manager running"
    );
    let writes_with_clone = store.calls(Call::ApplyBatch);
    assert!(writes_with_clone > writes);
    drop(clone);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        drain(&mut rx).is_empty(),
        "nothing after the last handle was dropped"
    );
    assert_eq!(store.calls(Call::ApplyBatch), writes_with_clone);
    assert_eq!(
        rx.try_recv().unwrap_err(),
        sds_manager::TryRecvError::Closed
    );
}

/// Every subscriber gets every notification; one that falls behind loses the newest ones and is
/// told how many, in order; dropping one does not disturb the others.
#[tokio::test]
async fn several_subscribers_each_with_a_bounded_queue() {
    let store = MemoryPersistence::new();
    let m = manager("bob", &store);
    let mut all = m.subscribe();
    let mut small = m.subscribe_with_capacity(3);
    let gone = m.subscribe();
    drop(gone);
    for (i, deps) in [
        (1, vec![]),
        (2, vec!["m1"]),
        (3, vec!["m2"]),
        (4, vec!["m3"]),
    ] {
        let id = format!("m{i}");
        m.unwrap_received_message(msg(&id, i, &deps, "a", "c"))
            .await
            .unwrap();
    }
    assert_eq!(ready(&drain(&mut all)), ["m1", "m2", "m3", "m4"]);
    let got = drain(&mut small);
    assert_eq!(ready(&got), ["m1", "m2", "m3"]);
    assert!(
        matches!(got.last(), Some(Notification::Lagged { missed: 1 })),
        "{got:?}"
    );
    // Read as a Stream, in order, after the lag.
    m.unwrap_received_message(msg("m5", 5, &["m4"], "a", "c"))
        .await
        .unwrap();
    let next = std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut small), cx)
    })
    .await;
    assert_eq!(ready(&[next.unwrap()]), ["m5"]);
}

/// A store shared with the caller (`Arc<P>` is a `Persistence`): what the manager stores, the
/// caller's handle sees.
#[tokio::test]
async fn a_shared_store_is_a_store() {
    let shared = Arc::new(MemoryPersistence::new());
    let m = ReliabilityManager::new("alice", ManagerConfig::default(), Arc::new(shared.clone()))
        .unwrap();
    m.wrap_outgoing_message(&b"x"[..], "m1", "c").await.unwrap();
    assert_eq!(shared.stored(&"c".into()).unwrap().outgoing.len(), 1);
}

/// At the default settings, a subscriber that reads after each operation sees every
/// notification, even when one received message delivers thousands that waited for it.
#[tokio::test]
async fn the_default_subscription_holds_the_largest_burst_of_one_operation() {
    let store = MemoryPersistence::new();
    let m = manager("bob", &store);
    let mut rx = m.subscribe();
    for i in 1..=5_000 {
        m.unwrap_received_message(msg(&format!("w{i}"), 2, &["m0"], "a", "c"))
            .await
            .unwrap();
    }
    drain(&mut rx);
    m.unwrap_received_message(msg("m0", 1, &[], "a", "c"))
        .await
        .unwrap();
    let got = drain(&mut rx);
    assert!(
        !got.iter().any(|n| matches!(n, Notification::Lagged { .. })),
        "lagged"
    );
    assert_eq!(ready(&got).len(), 5_001);
}

/// Received bytes of `sender` on `channel` citing `deps` missing messages: they wait.
fn waiting(id: &str, deps: usize, sender: &str, channel: &str) -> Bytes {
    let deps: Vec<String> = (0..deps).map(|d| format!("{id}-dep{d}")).collect();
    let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
    msg(id, 1, &deps, sender, channel)
}

#[tokio::test]
async fn the_held_bytes_budget_spans_channels_and_the_heaviest_channel_gives_way() {
    // Each channel may hold 1 MiB of waiting messages; all of them together 2 MiB.
    const BUDGET: usize = 2 << 20;
    let config = |budget| {
        open_channels()
            .with_engine(Config::default().with_max_incoming_buffer_bytes(1 << 20))
            .with_max_held_bytes(budget)
    };
    let feed = |m: ReliabilityManager| async move {
        // Mallory fills "big" below its own bound: ten messages charged about 66 KB each.
        for i in 0..10 {
            m.unwrap_received_message(waiting(&format!("big{i}"), 64, "mallory", "big"))
                .await
                .unwrap();
        }
        let big = m.held_bytes();
        // Five more channels with four of alice's each: each below its own bound, all of
        // them together above the budget.
        for c in 0..5 {
            for i in 0..4 {
                let channel = format!("c{c}");
                m.unwrap_received_message(waiting(
                    &format!("{channel}-{i}"),
                    64,
                    "alice",
                    &channel,
                ))
                .await
                .unwrap();
            }
        }
        (m, big)
    };
    let m = ReliabilityManager::new("bob", config(BUDGET), Arc::new(NoopPersistence)).unwrap();
    let mut rx = m.subscribe();
    let (m, big) = feed(m).await;
    assert!(big > 600_000 && big < 1 << 20, "{big}");
    // The budget holds: the channel holding the most gave way, its heaviest sender's oldest
    // messages first; the other channels keep all of theirs.
    assert!(m.held_bytes() <= BUDGET, "{}", m.held_bytes());
    let dropped: Vec<(String, String)> = drain(&mut rx)
        .iter()
        .filter_map(|n| match n {
            Notification::Event(Event::Dropped {
                channel_id,
                message_id,
                ..
            }) => Some((channel_id.to_string(), message_id.to_string())),
            _ => None,
        })
        .collect();
    assert!(!dropped.is_empty());
    assert!(dropped.iter().all(|(c, _)| c == "big"), "{dropped:?}");
    assert_eq!(dropped[0].1, "big0");
    let kept = m.get_incoming("big").await.unwrap().len();
    assert_eq!(kept + dropped.len(), 10);
    for c in 0..5 {
        assert_eq!(m.get_incoming(format!("c{c}")).await.unwrap().len(), 4);
    }
    // With no budget across channels, the same traffic is held whole: above the budget.
    let unbounded =
        ReliabilityManager::new("bob", config(usize::MAX), Arc::new(NoopPersistence)).unwrap();
    let (unbounded, _) = feed(unbounded).await;
    assert!(
        unbounded.held_bytes() > BUDGET,
        "{}",
        unbounded.held_bytes()
    );
    assert_eq!(unbounded.get_incoming("big").await.unwrap().len(), 10);
}

#[tokio::test]
async fn the_held_bytes_follow_channels_out_of_memory() {
    let store = MemoryPersistence::new();
    let m = manager("bob", &store);
    m.unwrap_received_message(waiting("a1", 8, "alice", "a"))
        .await
        .unwrap();
    m.unwrap_received_message(waiting("b1", 8, "alice", "b"))
        .await
        .unwrap();
    let both = m.held_bytes();
    assert!(both > 2 * 8 * 1_024, "{both}");
    m.remove_channel("a").await.unwrap();
    let one = m.held_bytes();
    assert!(one < both && one > 8 * 1_024, "{one}");
    m.cleanup().await;
    assert_eq!(m.held_bytes(), 0);
    // Loading the channel from its store counts what it holds again.
    m.get_incoming("b").await.unwrap();
    assert_eq!(m.held_bytes(), one);
    assert!(matches!(
        ReliabilityManager::new(
            "bob",
            ManagerConfig::default().with_max_held_bytes(0),
            Arc::new(NoopPersistence)
        ),
        Err(ManagerError::Config(_))
    ));
}
