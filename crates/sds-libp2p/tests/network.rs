//! Nodes on libp2p's in-process memory transport: five members, 200 messages, a fifth of the
//! received gossip dropped at the node (before SDS sees it); every log must end identical, and
//! the gaps are closed by retrieval, whose use is counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use sds_libp2p::{Keypair, Multiaddr, Node, NodeConfig, NodeEvent, NodeHandle};
use sds_manager::{
    Config, Event, ManagerConfig, MemoryPersistence, MessageId, ReceivedKind, ReliabilityManager,
};

mod support;
use support::lossy;

const NODES: usize = 5;
const MESSAGES: usize = 200;
const CHANNEL: &str = "lobby";

fn engine() -> Config {
    Config::default()
        .with_resend_interval(Duration::from_millis(2_000))
        .with_possibly_acked_resend_interval(Duration::from_millis(4_000))
        .with_sync_interval(Duration::from_millis(1_000))
        .with_max_resend_attempts(20)
}

#[derive(Default, Debug, Clone)]
struct Counts {
    retrieved: HashMap<&'static str, usize>,
    requested: usize,
    missing_events: usize,
    served: usize,
}

fn kind_name(kind: ReceivedKind) -> &'static str {
    kind.as_str()
}

async fn start(
    index: usize,
    base: u64,
    peers: Vec<Multiaddr>,
    counts: Arc<Mutex<Counts>>,
) -> NodeHandle {
    let manager = ReliabilityManager::new(
        format!("member-{index}"),
        ManagerConfig::default().with_engine(engine()),
        Arc::new(MemoryPersistence::new()),
    )
    .unwrap();
    let config = NodeConfig {
        listen: vec![format!("/memory/{}", base + index as u64).parse().unwrap()],
        peers,
        heartbeat_interval: Duration::from_millis(200),
        gossip_filter: Some(lossy(0x5eed_0000 + index as u64, 20)),
        ..NodeConfig::default()
    };
    let (handle, mut events) = Node::spawn(manager, Keypair::generate_ed25519(), config)
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let mut c = counts.lock().unwrap();
            match event {
                NodeEvent::Retrieved { kind, .. } => {
                    *c.retrieved.entry(kind_name(kind)).or_default() += 1
                }
                NodeEvent::RetrievalRequested { .. } => c.requested += 1,
                NodeEvent::RetrievalServed { count, .. } => c.served += count,
                NodeEvent::Sds(Event::MissingDependencies { .. })
                | NodeEvent::Sds(Event::MissingMessages { .. }) => c.missing_events += 1,
                _ => {}
            }
        }
    });
    handle
}

async fn log_ids(node: &NodeHandle) -> Vec<MessageId> {
    node.manager()
        .get_log(CHANNEL)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_with_a_fifth_of_gossip_lost_converge_through_retrieval() {
    // Memory addresses are process-wide: a base of our own keeps parallel tests apart.
    let t0 = std::time::Instant::now();
    let base = 1_000_000 + u64::from(std::process::id()) * 16;
    let counts = Arc::new(Mutex::new(Counts::default()));
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let peers = (0..i)
            .map(|j| format!("/memory/{}", base + j as u64).parse().unwrap())
            .collect();
        nodes.push(start(i, base, peers, counts.clone()).await);
    }
    for node in &nodes {
        node.join(CHANNEL).await.unwrap();
    }
    // Everyone sees the four others on the channel before the first send.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut ready = true;
            for node in &nodes {
                let status = node.status().await.unwrap();
                let on_channel = status
                    .channel_peers
                    .iter()
                    .find(|(c, _)| c.as_bytes() == CHANNEL.as_bytes())
                    .map(|(_, n)| *n);
                ready &= on_channel == Some(NODES - 1);
            }
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the five nodes never all saw each other on the channel");

    eprintln!("mesh ready after {:?}", t0.elapsed());
    for k in 0..MESSAGES {
        let sender = &nodes[k % NODES];
        sender
            .send(
                CHANNEL,
                format!("m{k:03}"),
                format!("message {k}").into_bytes(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    eprintln!("sent after {:?}", t0.elapsed());
    let converged = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let mut logs = Vec::new();
            for node in &nodes {
                logs.push(log_ids(node).await);
            }
            if logs[0].len() == MESSAGES && logs.iter().all(|l| *l == logs[0]) {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    eprintln!("converged after {:?}", t0.elapsed());
    let mut lens = Vec::new();
    for node in &nodes {
        lens.push(log_ids(node).await.len());
    }
    let logs = converged.unwrap_or_else(|_| panic!("logs never converged: sizes {lens:?}"));

    // Every message, once, in the same order at every member.
    let mut expected: Vec<String> = (0..MESSAGES).map(|k| format!("m{k:03}")).collect();
    expected.sort();
    let mut got: Vec<String> = logs[0]
        .iter()
        .map(|id| id.as_str().unwrap_or_default().to_string())
        .collect();
    got.sort();
    assert_eq!(got, expected);

    let mut filtered = 0;
    let mut received = 0;
    for node in &nodes {
        let s = node.status().await.unwrap();
        filtered += s.gossip_filtered;
        received += s.gossip_received;
    }
    let counts = counts.lock().unwrap().clone();
    eprintln!(
        "gossip received {received}, dropped {filtered}; retrieval: {} requests, {} served, \
         answers {:?}; missing-message events {}",
        counts.requested, counts.served, counts.retrieved, counts.missing_events
    );
    // The loss really happened at about the rate asked (20 % ± a wide margin)…
    assert!(
        filtered * 100 >= received * 12 && filtered * 100 <= received * 28,
        "dropped {filtered} of {received}"
    );
    // …gaps were detected (messages arrived before their dependencies)…
    assert!(counts.missing_events > 0);
    // …and retrieval delivered messages that had been lost.
    let delivered_by_retrieval = counts.retrieved.get("delivered").copied().unwrap_or(0)
        + counts.retrieved.get("buffered").copied().unwrap_or(0);
    assert!(counts.requested > 0 && counts.served > 0);
    assert!(delivered_by_retrieval > 0, "{counts:?}");
    for node in &nodes {
        node.shutdown().await;
    }
}

/// Gossipsub's default `max_transmit_size` (64 KiB) would drop SDS messages above it; the node
/// sizes it from the manager's limits, so a message with the largest content gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_the_largest_content_crosses() {
    let base = 4_000_000 + u64::from(std::process::id()) * 16;
    let counts = Arc::new(Mutex::new(Counts::default()));
    let a = start(0, base, Vec::new(), counts.clone()).await;
    let addr: Multiaddr = format!("/memory/{base}").parse().unwrap();
    let b_manager = ReliabilityManager::new(
        "receiver",
        ManagerConfig::default(),
        Arc::new(MemoryPersistence::new()),
    )
    .unwrap();
    let (b, mut events) = Node::spawn(
        b_manager,
        Keypair::generate_ed25519(),
        NodeConfig {
            peers: vec![addr],
            heartbeat_interval: Duration::from_millis(200),
            // Only gossip may bring it (retrieval answers are sized apart).
            retrieval: sds_libp2p::RetrievalConfig {
                enabled: false,
                ..Default::default()
            },
            ..NodeConfig::default()
        },
    )
    .await
    .unwrap();
    a.join(CHANNEL).await.unwrap();
    b.join(CHANNEL).await.unwrap();
    let content = vec![7u8; sds_manager::Config::default().limits.max_content_size];
    let delivered = tokio::time::timeout(Duration::from_secs(30), async {
        // Sent once both are on the channel (publishing earlier fails and SDS would only send
        // again after its resend interval).
        loop {
            let s = a.status().await.unwrap();
            if s.channel_peers.first().map(|(_, n)| *n) == Some(1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        a.send(CHANNEL, "big", content.clone()).await.unwrap();
        while let Some(event) = events.next().await {
            if let NodeEvent::Sds(Event::MessageReady { content, .. }) = event {
                return content;
            }
        }
        panic!("node stopped");
    })
    .await
    .expect("the large message never arrived");
    assert_eq!(delivered.len(), content.len());
}

/// The real transports: a message crosses between two nodes over localhost TCP, and over QUIC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_crosses_over_tcp_and_over_quic() {
    for listen in ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"] {
        let spawn = |name: &str, listen: &str, peers: Vec<Multiaddr>| {
            let manager = ReliabilityManager::new(
                name,
                ManagerConfig::default(),
                Arc::new(MemoryPersistence::new()),
            )
            .unwrap();
            let config = NodeConfig {
                listen: vec![listen.parse().unwrap()],
                peers,
                heartbeat_interval: Duration::from_millis(200),
                ..NodeConfig::default()
            };
            Node::spawn(manager, Keypair::generate_ed25519(), config)
        };
        let (a, mut a_events) = spawn("a", listen, Vec::new()).await.unwrap();
        let addr = loop {
            match a_events.next().await {
                Some(NodeEvent::Listening(addr)) => break addr,
                Some(_) => {}
                None => panic!("node stopped"),
            }
        };
        let (b, mut b_events) = spawn("b", listen, vec![addr]).await.unwrap();
        a.join(CHANNEL).await.unwrap();
        b.join(CHANNEL).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let s = a.status().await.unwrap();
                if s.channel_peers.first().map(|(_, n)| *n) == Some(1) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            a.send(CHANNEL, "hello", &b"over the wire"[..])
                .await
                .unwrap();
            while let Some(event) = b_events.next().await {
                if let NodeEvent::Sds(Event::MessageReady { content, .. }) = event {
                    return content;
                }
            }
            panic!("node stopped");
        })
        .await
        .unwrap_or_else(|_| panic!("nothing arrived over {listen}"));
        assert_eq!(&got[..], b"over the wire");
        a.shutdown().await;
        b.shutdown().await;
    }
}
