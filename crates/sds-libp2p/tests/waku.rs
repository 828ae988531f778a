//! Nodes with the Waku relay framing on libp2p's in-process memory transport: SDS messages in
//! `WakuMessage` envelopes, unsigned, with content-hash message ids. Two nodes exchange
//! messages on two channels sharing the one pubsub topic; and a resend of the very same SDS
//! bytes gets through gossipsub's duplicate cache (each publication has its own timestamp).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sds_libp2p::waku::WakuFraming;
use sds_libp2p::{
    Framing, GossipFilter, Keypair, Multiaddr, Node, NodeConfig, NodeError, NodeHandle,
};
use sds_manager::{ChannelId, Config, ManagerConfig, MemoryPersistence, ReliabilityManager};

fn engine() -> Config {
    Config::default()
        .with_resend_interval(Duration::from_millis(500))
        .with_sync_interval(Duration::from_millis(500))
        .with_max_resend_attempts(50)
}

async fn start(
    name: &str,
    listen: Multiaddr,
    peers: Vec<Multiaddr>,
    filter: Option<GossipFilter>,
) -> NodeHandle {
    let manager = ReliabilityManager::new(
        name,
        ManagerConfig::default().with_engine(engine()),
        Arc::new(MemoryPersistence::new()),
    )
    .unwrap();
    let config = NodeConfig {
        listen: vec![listen],
        peers,
        heartbeat_interval: Duration::from_millis(200),
        gossip_filter: filter,
        framing: Framing::Waku(
            WakuFraming::new()
                .with_pubsub_topic("/waku/2/rs/42/3")
                .with_content_topic("room", "/my-app/1/room/proto"),
        ),
        ..NodeConfig::default()
    };
    let (handle, events) = Node::spawn(manager, Keypair::generate_ed25519(), config)
        .await
        .unwrap();
    drop(events);
    handle
}

async fn log(node: &NodeHandle, channel: &str) -> Vec<String> {
    node.manager()
        .get_log(channel)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message_id.to_string())
        .collect()
}

/// Waits up to 30 s until `node`'s log of `channel` holds `ids`.
async fn until_logged(node: &NodeHandle, channel: &str, ids: &[&str]) {
    let done = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let logged = log(node, channel).await;
            if ids.iter().all(|id| logged.iter().any(|l| l == id)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "{channel}: {:?} never logged all of {ids:?}",
        log(node, channel).await
    );
}

/// Waits until both nodes see each other on the pubsub topic.
async fn until_meshed(nodes: &[&NodeHandle]) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut ready = true;
            for node in nodes {
                let status = node.status().await.unwrap();
                ready &= status.channel_peers.iter().all(|(_, n)| *n == 1);
                ready &= !status.channel_peers.is_empty();
            }
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the nodes never saw each other on the pubsub topic");
}

fn base() -> u64 {
    3_000_000 + u64::from(std::process::id()) * 8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_waku_nodes_exchange_sds_messages_on_two_channels() {
    let b = base();
    let (addr_a, addr_b): (Multiaddr, Multiaddr) = (
        format!("/memory/{b}").parse().unwrap(),
        format!("/memory/{}", b + 1).parse().unwrap(),
    );
    let alice = start("alice", addr_a.clone(), vec![], None).await;
    let bob = start("bob", addr_b, vec![addr_a], None).await;
    for node in [&alice, &bob] {
        node.join("room").await.unwrap();
        node.join("lobby").await.unwrap();
    }
    until_meshed(&[&alice, &bob]).await;
    alice
        .send("room", "a1", b"hello room".to_vec())
        .await
        .unwrap();
    bob.send("lobby", "b1", b"hello lobby".to_vec())
        .await
        .unwrap();
    alice.send("lobby", "a2", b"again".to_vec()).await.unwrap();
    for node in [&alice, &bob] {
        until_logged(node, "room", &["a1"]).await;
        until_logged(node, "lobby", &["b1", "a2"]).await;
    }
    let status = bob.status().await.unwrap();
    assert!(status.gossip_received >= 2, "{status:?}");
    for node in [&alice, &bob] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_of_the_same_bytes_gets_through() {
    let b = base() + 4;
    let (addr_a, addr_b): (Multiaddr, Multiaddr) = (
        format!("/memory/{b}").parse().unwrap(),
        format!("/memory/{}", b + 1).parse().unwrap(),
    );
    // Bob drops the first copy of every SDS message he is shown: a lone message reaches him
    // only if a later publication of the same bytes does (no later message cites it, so
    // retrieval cannot fill the gap).
    let seen: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
    let dropped = Arc::new(Mutex::new(0_usize));
    let filter: GossipFilter = {
        let dropped = dropped.clone();
        Arc::new(move |_: &ChannelId, bytes: &[u8]| {
            let first = seen.lock().unwrap().insert(bytes.to_vec());
            if first {
                *dropped.lock().unwrap() += 1;
            }
            !first
        })
    };
    let alice = start("alice", addr_a.clone(), vec![], None).await;
    let bob = start("bob", addr_b, vec![addr_a], Some(filter)).await;
    for node in [&alice, &bob] {
        node.join("room").await.unwrap();
    }
    until_meshed(&[&alice, &bob]).await;
    alice
        .send("room", "lone", b"only once".to_vec())
        .await
        .unwrap();
    until_logged(&bob, "room", &["lone"]).await;
    assert!(*dropped.lock().unwrap() >= 1);
    for node in [&alice, &bob] {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn one_content_topic_for_two_channels_is_refused() {
    let manager = ReliabilityManager::new(
        "alice",
        ManagerConfig::default(),
        Arc::new(MemoryPersistence::new()),
    )
    .unwrap();
    let config = NodeConfig {
        framing: Framing::Waku(
            WakuFraming::new()
                .with_content_topic("a", "/my-app/1/room/proto")
                .with_content_topic("b", "/my-app/1/room/proto"),
        ),
        ..NodeConfig::default()
    };
    let spawned = Node::spawn(manager, Keypair::generate_ed25519(), config).await;
    assert!(matches!(spawned, Err(NodeError::Config(_))));
}
