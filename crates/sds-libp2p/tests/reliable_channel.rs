//! Reliable channels over libp2p's in-process memory transport: the lifecycle of a message,
//! a segmented payload under gossip loss, partial reassembly across a restart, the rate limit,
//! and the query on connect.

use std::sync::Arc;
use std::time::Duration;

use sds_libp2p::{
    ChannelEvent, ChannelEvents, EphemeralDropReason, GossipFilter, Keypair, Multiaddr, Node,
    NodeConfig, NodeHandle, RateLimit, ReliableChannel, ReliableChannelConfig, RetrievalConfig,
};
use sds_manager::{ChannelId, ManagerConfig, MemoryPersistence, MessageId, ReliabilityManager};

mod support;
use support::lossy;

const CHANNEL: &str = "room";

/// Memory addresses are process-wide: each test takes a range of its own.
fn base(test: u64) -> u64 {
    7_000_000 + u64::from(std::process::id()) * 64 + test * 8
}

fn addr(port: u64) -> Multiaddr {
    format!("/memory/{port}").parse().unwrap()
}

/// Short intervals, so that tests take seconds.
fn fast() -> ReliableChannelConfig {
    ReliableChannelConfig::default()
        .with_sync_interval(Duration::from_secs(1))
        .with_retry_interval(Duration::from_secs(2))
        .with_max_retry_attempts(30)
        .with_retrieve_frequency(Duration::from_secs(1))
}

struct Member {
    node: NodeHandle,
    channel: ReliableChannel,
    events: ChannelEvents,
}

async fn member(
    name: &str,
    store: Arc<MemoryPersistence>,
    listen: Option<u64>,
    peers: Vec<Multiaddr>,
    filter: Option<GossipFilter>,
    config: ReliableChannelConfig,
    retrieval: bool,
) -> Member {
    let manager = ReliabilityManager::new(
        name,
        config.apply_to_manager(ManagerConfig::default()),
        store,
    )
    .unwrap();
    let node_config = config.apply_to_node(NodeConfig {
        listen: listen.map(addr).into_iter().collect(),
        peers,
        heartbeat_interval: Duration::from_millis(200),
        gossip_filter: filter,
        ..NodeConfig::default()
    });
    let node_config = NodeConfig {
        retrieval: RetrievalConfig {
            enabled: retrieval,
            ..node_config.retrieval.clone()
        },
        ..node_config
    };
    let (node, _node_events) = Node::spawn(manager, Keypair::generate_ed25519(), node_config)
        .await
        .unwrap();
    let (channel, events) = ReliableChannel::open(node.clone(), CHANNEL, config)
        .await
        .unwrap();
    Member {
        node,
        channel,
        events,
    }
}

/// Waits until `node` sees `n` other members on the channel.
async fn meshed(node: &NodeHandle, n: usize) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let s = node.status().await.unwrap();
            if s.channel_peers.first().map(|(_, k)| *k) == Some(n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("peers never met on the channel");
}

/// Reads events until `f` picks one, within `secs` seconds.
async fn until<T>(
    events: &mut ChannelEvents,
    secs: u64,
    mut f: impl FnMut(&ChannelEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(secs), async {
        while let Some(e) = events.recv().await {
            if let Some(t) = f(&e) {
                return t;
            }
        }
        panic!("channel closed");
    })
    .await
    .expect("the awaited event never came")
}

fn received(e: &ChannelEvent) -> Option<(MessageId, Vec<u8>, bool)> {
    match e {
        ChannelEvent::Received {
            message_id,
            payload,
            ephemeral,
            ..
        } => Some((message_id.clone(), payload.to_vec(), *ephemeral)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_goes_sending_then_sent_then_acknowledged() {
    let b0 = base(0);
    let store = || Arc::new(MemoryPersistence::new());
    let mut a = member("alice", store(), Some(b0), vec![], None, fast(), true).await;
    let mut b = member("bob", store(), None, vec![addr(b0)], None, fast(), true).await;
    meshed(&a.node, 1).await;
    let id = a.channel.send(&b"hello"[..]).unwrap();
    // Bob's next sync cites the message: Alice sees it acknowledged.
    let got = until(&mut b.events, 30, received).await;
    assert_eq!(
        (got.0.clone(), got.1.as_slice(), got.2),
        (id.clone(), &b"hello"[..], false)
    );
    let mut stages = Vec::new();
    until(&mut a.events, 30, |e| {
        let (mid, chunks) = match e {
            ChannelEvent::Sending {
                message_id, chunks, ..
            }
            | ChannelEvent::Sent {
                message_id, chunks, ..
            }
            | ChannelEvent::Acknowledged {
                message_id, chunks, ..
            } => (message_id, chunks),
            _ => return None,
        };
        assert_eq!(mid, &id);
        assert_eq!(
            (chunks.chunks.as_slice(), chunks.total_chunks),
            (&[0u32][..], 1)
        );
        stages.push(e.name());
        (e.name() == "message-acknowledged").then_some(())
    })
    .await;
    // Resends may repeat sending/sent before the acknowledgement; the order holds.
    assert_eq!(stages[..2], ["sending-message", "message-sent"]);
    let first_ack = stages.iter().position(|s| *s == "message-acknowledged");
    assert_eq!(first_ack, Some(stages.len() - 1));
    a.node.shutdown().await;
    b.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_is_segmented_and_delivered_whole_once_under_gossip_loss() {
    let b0 = base(1);
    let store = || Arc::new(MemoryPersistence::new());
    let mut a = member(
        "alice",
        store(),
        Some(b0),
        vec![],
        Some(lossy(0xa11ce, 20)),
        fast(),
        true,
    )
    .await;
    let mut b = member(
        "bob",
        store(),
        None,
        vec![addr(b0)],
        Some(lossy(0xb0b, 20)),
        fast(),
        true,
    )
    .await;
    meshed(&a.node, 1).await;
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let t0 = std::time::Instant::now();
    let id = a.channel.send(payload.clone()).unwrap();
    let got = until(&mut b.events, 90, received).await;
    let delivered = t0.elapsed();
    assert_eq!(got.0, id);
    assert!(got.1 == payload, "the payload came back different");
    // Alice sees every one of the 10 segments acknowledged.
    let acked = until(&mut a.events, 90, |e| match e {
        ChannelEvent::Acknowledged { chunks, .. } if chunks.is_complete() => {
            Some(chunks.total_chunks)
        }
        _ => None,
    })
    .await;
    assert_eq!(acked, 10);
    // Once: nothing more is delivered while resends and syncs go on.
    let again = tokio::time::timeout(Duration::from_secs(4), async {
        while let Some(e) = b.events.recv().await {
            if received(&e).is_some() {
                return true;
            }
        }
        false
    })
    .await;
    assert!(again.is_err(), "delivered twice, or the channel closed");
    let (sa, sb) = (
        a.node.status().await.unwrap(),
        b.node.status().await.unwrap(),
    );
    eprintln!(
        "1 MB delivered whole after {delivered:?}; gossip dropped {} of {} at alice, {} of {} \
         at bob; bob retrieved {}",
        sa.gossip_filtered,
        sa.gossip_received,
        sb.gossip_filtered,
        sb.gossip_received,
        sb.retrieved
    );
    assert!(sb.gossip_filtered > 0, "no loss happened");
    a.node.shutdown().await;
    b.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_reassembly_survives_a_restart() {
    let b0 = base(2);
    // Alice resends rarely: the missing segments come after the restart by the query on
    // connect, not by a resend.
    let slow = fast()
        .with_retry_interval(Duration::from_secs(600))
        .with_sync_interval(Duration::from_secs(600))
        .with_segment_size(1_000);
    let a = member(
        "alice",
        Arc::new(MemoryPersistence::new()),
        Some(b0),
        vec![],
        None,
        slow.clone(),
        true,
    )
    .await;
    // Bob's first run lets only segments 0 and 1 through, and does not retrieve.
    let engine = slow
        .apply_to_manager(ManagerConfig::default())
        .engine
        .clone();
    let first_two: GossipFilter = Arc::new(move |_: &ChannelId, bytes: &[u8]| {
        let bytes = sds_manager::Bytes::copy_from_slice(bytes);
        match sds_proto::engine::decode(&bytes, &engine) {
            Ok(sds_proto::engine::Received::Message(m)) => {
                let id = m.message_id.as_bytes();
                id.ends_with(b"#0/5") || id.ends_with(b"#1/5")
            }
            _ => false,
        }
    });
    let bob_store = Arc::new(MemoryPersistence::new());
    let mut b = member(
        "bob",
        bob_store.clone(),
        None,
        vec![addr(b0)],
        Some(first_two),
        slow.clone(),
        false,
    )
    .await;
    meshed(&a.node, 1).await;
    let payload: Vec<u8> = (0..4_500u32).map(|i| (i % 253) as u8).collect();
    let id = a.channel.send(payload.clone()).unwrap();
    // Both segments are in Bob's log before he stops.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let log = b.node.manager().get_log(CHANNEL).await.unwrap();
            if log.len() == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the first two segments never arrived");
    let early = tokio::time::timeout(Duration::from_millis(300), b.events.recv()).await;
    assert!(
        !matches!(early, Ok(Some(ChannelEvent::Received { .. }))),
        "delivered from two of five segments"
    );
    b.channel.close().await;
    b.node.shutdown().await;
    b.node.manager().cleanup().await;
    drop(b.node);
    drop(b.events);

    // Bob again, on the same store, without loss: the query on connect brings Alice's latest
    // messages, the five segments; two of them Bob already has (duplicates, not delivered
    // again), and the partial message rebuilt from his log takes the three others.
    let mut b = member(
        "bob",
        bob_store,
        None,
        vec![addr(b0)],
        None,
        slow.clone(),
        true,
    )
    .await;
    let got = until(&mut b.events, 30, received).await;
    assert_eq!(got.0, id);
    assert!(got.1 == payload, "the payload came back different");
    a.node.shutdown().await;
    b.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_queues_regular_messages_and_drops_ephemeral_ones() {
    let b0 = base(3);
    let store = || Arc::new(MemoryPersistence::new());
    // No syncs or resends in the way: only what the test sends uses the budget.
    let quiet = fast()
        .with_sync_interval(Duration::from_secs(600))
        .with_retry_interval(Duration::from_secs(600));
    let limited = quiet
        .clone()
        .with_rate_limit(Some(RateLimit::new(4, Duration::from_secs(5))));
    let mut b = member("bob", store(), Some(b0), vec![], None, quiet, true).await;
    let mut a = member("alice", store(), None, vec![addr(b0)], None, limited, true).await;
    meshed(&a.node, 1).await;

    let eph = a.channel.send_ephemeral(&b"typing"[..]).unwrap();
    let ids: Vec<MessageId> = (0..6)
        .map(|i| a.channel.send(format!("m{i}").into_bytes()).unwrap())
        .collect();
    let eph2 = a.channel.send_ephemeral(&b"still typing"[..]).unwrap();

    let mut sent_first = Vec::new();
    let mut queued = Vec::new();
    let mut dropped = None;
    until(&mut a.events, 30, |e| {
        match e {
            ChannelEvent::Sent { message_id, .. } => sent_first.push(message_id.clone()),
            ChannelEvent::Queued { message_id, .. } => queued.push(message_id.clone()),
            ChannelEvent::EphemeralDropped { message_id, reason } => {
                dropped = Some((message_id.clone(), *reason))
            }
            _ => {}
        }
        dropped.is_some().then_some(())
    })
    .await;
    // The ephemeral message went first, then three regular ones filled the epoch's four; the
    // other three wait, and the second ephemeral message is dropped.
    assert_eq!(
        sent_first,
        [eph.clone(), ids[0].clone(), ids[1].clone(), ids[2].clone()]
    );
    assert_eq!(queued, ids[3..]);
    assert_eq!(dropped, Some((eph2, EphemeralDropReason::RateLimitReached)));
    // The next epoch publishes the queued ones; Bob gets everything but the dropped one.
    let mut got = Vec::new();
    until(&mut b.events, 30, |e| {
        if let Some((id, _, ephemeral)) = received(e) {
            got.push((id, ephemeral));
        }
        (got.len() == 7).then_some(())
    })
    .await;
    assert_eq!(got[0], (eph, true));
    let regular: Vec<MessageId> = got[1..].iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(regular, ids);

    a.node.shutdown().await;
    b.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_was_away_gets_what_was_sent_through_the_query_on_connect() {
    let b0 = base(4);
    let store = || Arc::new(MemoryPersistence::new());
    // Nothing would bring the messages to Bob for ten minutes but the query on connect.
    let slow = fast()
        .with_retry_interval(Duration::from_secs(600))
        .with_sync_interval(Duration::from_secs(600));
    let mut a = member("alice", store(), Some(b0), vec![], None, slow.clone(), true).await;
    let ids: Vec<MessageId> = (0..3)
        .map(|i| {
            a.channel
                .send(format!("while away {i}").into_bytes())
                .unwrap()
        })
        .collect();
    // No one is on the channel: the publications fail; the messages are in Alice's log.
    for _ in 0..3 {
        until(&mut a.events, 10, |e| {
            matches!(e, ChannelEvent::PublishFailed { .. }).then_some(())
        })
        .await;
    }
    let mut b = member("bob", store(), None, vec![addr(b0)], None, slow, true).await;
    let mut got = Vec::new();
    until(&mut b.events, 30, |e| {
        if let Some((id, payload, _)) = received(e) {
            got.push((id, payload));
        }
        (got.len() == 3).then_some(())
    })
    .await;
    let expected: Vec<(MessageId, Vec<u8>)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), format!("while away {i}").into_bytes()))
        .collect();
    assert_eq!(got, expected);
    a.node.shutdown().await;
    b.node.shutdown().await;
}
