//! Connections on libp2p's in-process memory transport: a node that accepts at most N inbound
//! connections refuses the N+1-th, and a node with room for N+1 takes it (so the refusal is the
//! limit's doing, not the test's); a node given a peer opens one connection to it, not two.

use std::sync::Arc;
use std::time::Duration;

use sds_libp2p::{Keypair, Multiaddr, Node, NodeConfig, NodeHandle, PeerId};
use sds_manager::{ManagerConfig, NoopPersistence, ReliabilityManager};

async fn start(name: &str, config: NodeConfig) -> NodeHandle {
    let manager =
        ReliabilityManager::new(name, ManagerConfig::default(), Arc::new(NoopPersistence)).unwrap();
    let (handle, events) = Node::spawn(manager, Keypair::generate_ed25519(), config)
        .await
        .unwrap();
    // Nobody reads the events here; dropping the stream is fine (the node drops events).
    drop(events);
    handle
}

async fn peers(node: &NodeHandle) -> Vec<PeerId> {
    node.status().await.unwrap().peers
}

/// Waits up to 10 s until `node` has `n` peers.
async fn until_peers(node: &NodeHandle, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while peers(node).await.len() != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never reached {n} peers"));
}

/// A listener taking at most `max_incoming` inbound connections; `dialers` nodes dial it one
/// after the other. Returns how many peers the listener has once the last dial had 1.5 s to
/// complete, and whether the last dialer is connected to it.
async fn dial_in(base: u64, max_incoming: u32, dialers: usize) -> (usize, bool) {
    let addr: Multiaddr = format!("/memory/{base}").parse().unwrap();
    let listener = start(
        "listener",
        NodeConfig {
            listen: vec![addr.clone()],
            max_incoming_connections: max_incoming,
            ..NodeConfig::default()
        },
    )
    .await;
    let mut nodes = Vec::new();
    for i in 0..dialers {
        let node = start(&format!("dialer-{i}"), NodeConfig::default()).await;
        node.dial(addr.clone()).await.unwrap();
        if i + 1 < dialers {
            until_peers(&node, 1).await;
        }
        nodes.push(node);
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let at_listener = peers(&listener).await.len();
    let last = nodes.last().unwrap();
    let last_connected = peers(last).await.contains(&listener.peer_id());
    for node in nodes.iter().chain([&listener]) {
        node.shutdown().await;
    }
    (at_listener, last_connected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_connection_over_the_limit_is_refused() {
    let base = 2_000_000 + u64::from(std::process::id()) * 4;
    // Room for all three: the third dial goes through.
    assert_eq!(dial_in(base, 3, 3).await, (3, true));
    // Room for two: the third is refused, the two first stay.
    assert_eq!(dial_in(base + 1, 2, 3).await, (2, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_peer_gets_one_connection() {
    let base = 2_000_000 + u64::from(std::process::id()) * 4 + 2;
    let addr: Multiaddr = format!("/memory/{base}").parse().unwrap();
    let listener = start(
        "listener",
        NodeConfig {
            listen: vec![addr.clone()],
            ..NodeConfig::default()
        },
    )
    .await;
    let with_id = addr.clone().with_p2p(listener.peer_id()).unwrap();
    let mut dialers = Vec::new();
    for (i, target) in [with_id, addr].into_iter().enumerate() {
        let config = NodeConfig {
            peers: vec![target],
            redial_interval: Duration::from_millis(300),
            ..NodeConfig::default()
        };
        dialers.push(start(&format!("dialer-{i}"), config).await);
    }
    // Several redial rounds.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for node in &dialers {
        let status = node.status().await.unwrap();
        assert_eq!(status.connections, 1, "{status:?}");
    }
    assert_eq!(listener.status().await.unwrap().connections, 2);
    for node in dialers.iter().chain([&listener]) {
        node.shutdown().await;
    }
}
