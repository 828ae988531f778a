//! A peer that floods a channel's topic with bytes that are not SDS messages is graylisted by
//! gossipsub's own scoring (the node rejects what SDS cannot decode), while an honest member
//! connected the same way keeps a score of at least zero.

use std::sync::Arc;
use std::time::Duration;

use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::gossipsub::{self, MessageAuthenticity};
use libp2p::{noise, yamux, Transport};
use sds_libp2p::{topic_of, Keypair, Multiaddr, Node, NodeConfig, NodeHandle, PeerId};
use sds_manager::{ManagerConfig, MemoryPersistence, ReliabilityManager};

/// The score under which gossipsub ignores a peer (its default graylist threshold).
const GRAYLIST: f64 = -80.0;

async fn node(listen: Option<Multiaddr>, peers: Vec<Multiaddr>) -> NodeHandle {
    let manager = ReliabilityManager::new(
        "member",
        ManagerConfig::default(),
        Arc::new(MemoryPersistence::new()),
    )
    .unwrap();
    let config = NodeConfig {
        listen: listen.into_iter().collect(),
        peers,
        heartbeat_interval: Duration::from_millis(100),
        ..NodeConfig::default()
    };
    let (handle, _events) = Node::spawn(manager, Keypair::generate_ed25519(), config)
        .await
        .unwrap();
    handle.join("room").await.unwrap();
    handle
}

async fn score(node: &NodeHandle, peer: PeerId) -> Option<f64> {
    let status = node.status().await.unwrap();
    status
        .peer_scores
        .iter()
        .find(|(p, _)| *p == peer)
        .map(|(_, s)| *s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_garbage_is_graylisted_and_an_honest_one_is_not() {
    let addr: Multiaddr = format!("/memory/{}", 3_000_000 + u64::from(std::process::id()))
        .parse()
        .unwrap();
    let target = node(Some(addr.clone()), Vec::new()).await;
    let honest = node(None, vec![addr.clone()]).await;

    tokio::time::timeout(Duration::from_secs(30), async {
        while score(&target, honest.peer_id()).await.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the honest member never connected");

    // The attacker: a plain gossipsub peer, signing its messages as gossipsub requires.
    let mut attacker = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(MemoryTransport::default()
                    .upgrade(Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()))
            },
        )
        .unwrap()
        .with_behaviour(|key| {
            gossipsub::Behaviour::<gossipsub::IdentityTransform>::new(
                MessageAuthenticity::Signed(key.clone()),
                gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_millis(100))
                    .build()
                    .unwrap(),
            )
            .unwrap()
        })
        .unwrap()
        .build();
    let attacker_id = *attacker.local_peer_id();
    let topic = topic_of(&sds_manager::ChannelId::from("room"));
    attacker.behaviour_mut().subscribe(&topic).unwrap();
    attacker.dial(addr).unwrap();

    let mut sent = 0u32;
    let result = tokio::time::timeout(Duration::from_secs(30), async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = futures::StreamExt::select_next_some(&mut attacker) => {}
                _ = tick.tick() => {
                    // Not an SDS message: a byte sequence no decoder accepts.
                    let garbage = vec![0xff; 16 + (sent as usize % 7)];
                    if attacker.behaviour_mut().publish(topic.clone(), garbage).is_ok() {
                        sent += 1;
                    }
                    if let Some(s) = score(&target, attacker_id).await {
                        if s < GRAYLIST {
                            return s;
                        }
                    }
                }
            }
        }
    })
    .await;
    let attacker_score = result.unwrap_or_else(|_| panic!("not graylisted after {sent} messages"));
    let honest_score = score(&target, honest.peer_id())
        .await
        .expect("the honest member is still connected");
    eprintln!("attacker {attacker_score:.1} after {sent} messages; honest {honest_score:.1}");
    assert!(honest_score >= 0.0, "honest member scored {honest_score}");
}
