//! A peer that answers retrieval requests with messages that were not asked for: the node
//! processes none of them, counts them, graylists the peer and stops asking it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::gossipsub::{self, MessageAuthenticity};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, yamux, Transport};
use sds_libp2p::retrieve::{Codec, Response, PROTOCOL};
use sds_libp2p::{topic_of, Keypair, Multiaddr, Node, NodeConfig, RetrievalConfig};
use sds_manager::{ChannelId, ManagerConfig, MemoryPersistence, MessageId, ReliabilityManager};

#[derive(NetworkBehaviour)]
struct Liar {
    gossipsub: gossipsub::Behaviour,
    retrieve: request_response::Behaviour<Codec>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_messages_not_asked_for_are_refused_and_cost_the_peer() {
    let addr: Multiaddr = format!("/memory/{}", 5_000_000 + u64::from(std::process::id()))
        .parse()
        .unwrap();
    let retrieval = RetrievalConfig {
        retry_after: Duration::from_millis(200),
        max_attempts: 10,
        ..RetrievalConfig::default()
    };
    let manager = ReliabilityManager::new(
        "bob",
        ManagerConfig::default(),
        Arc::new(MemoryPersistence::new()),
    )
    .unwrap();
    let (bob, _events) = Node::spawn(
        manager,
        Keypair::generate_ed25519(),
        NodeConfig {
            listen: vec![addr.clone()],
            heartbeat_interval: Duration::from_millis(100),
            retrieval: retrieval.clone(),
            ..NodeConfig::default()
        },
    )
    .await
    .unwrap();
    bob.join("room").await.unwrap();

    // Carol's messages: m2 depends on m1; m3 is another one, never asked for.
    let carol = ReliabilityManager::new(
        "carol",
        ManagerConfig::default(),
        Arc::new(MemoryPersistence::new()),
    )
    .unwrap();
    let _m1 = carol
        .wrap_outgoing_message(&b"one"[..], "m1", "room")
        .await
        .unwrap();
    let m2 = carol
        .wrap_outgoing_message(&b"two"[..], "m2", "room")
        .await
        .unwrap();
    let m3 = carol
        .wrap_outgoing_message(&b"three"[..], "m3", "room")
        .await
        .unwrap();

    let limits = sds_manager::Config::default().limits;
    let mut liar = libp2p::SwarmBuilder::with_new_identity()
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
        .with_behaviour(|key| Liar {
            gossipsub: gossipsub::Behaviour::new(
                MessageAuthenticity::Signed(key.clone()),
                gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_millis(100))
                    .build()
                    .unwrap(),
            )
            .unwrap(),
            retrieve: request_response::Behaviour::with_codec(
                Codec::new(&retrieval, limits.max_id_len, limits.max_message_size),
                [(PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default(),
            ),
        })
        .unwrap()
        .build();
    let liar_id = *liar.local_peer_id();
    let topic = topic_of(&ChannelId::from("room"));
    liar.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    liar.dial(addr).unwrap();

    let mut asked = Vec::new();
    let mut published = false;
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                event = liar.select_next_some() => {
                    if let SwarmEvent::Behaviour(LiarEvent::Retrieve(
                        request_response::Event::Message {
                            message: request_response::Message::Request { request, channel, .. },
                            ..
                        },
                    )) = event
                    {
                        asked.push(request.ids.clone());
                        // Not what was asked for: another valid message of the channel.
                        let _ = liar
                            .behaviour_mut()
                            .retrieve
                            .send_response(channel, Response::Messages(vec![m3.clone()]));
                    }
                }
                _ = tick.tick() => {
                    let status = bob.status().await.unwrap();
                    if !published && status.channel_peers.first().map(|(_, n)| *n) == Some(1) {
                        // Bob gets m2 and misses m1: he asks the only member there is.
                        published = liar
                            .behaviour_mut()
                            .gossipsub
                            .publish(topic.clone(), m2.to_vec())
                            .is_ok();
                    }
                    if status.retrieval_mismatches >= 3 {
                        return status;
                    }
                }
            }
        }
    })
    .await;
    let status = outcome.expect("the mismatches were never counted");
    assert!(asked.iter().all(|ids| ids == &[MessageId::from("m1")]));
    // Bob processed none of the answers.
    let log: Vec<MessageId> = bob
        .manager()
        .get_log("room")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message_id)
        .collect();
    assert!(!log.contains(&MessageId::from("m3")), "log {log:?}");
    assert_eq!(status.retrieved, 0);
    // Graylisted, and no longer asked (m1 is still missing, and retries are due every 200 ms).
    let score = status
        .peer_scores
        .iter()
        .find(|(p, _)| *p == liar_id)
        .map(|(_, s)| *s);
    assert!(score.is_some_and(|s| s < -80.0), "score {score:?}");
    let before = bob.status().await.unwrap().retrieval_requests;
    let quiet = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            liar.select_next_some().await;
        }
    })
    .await;
    assert!(quiet.is_err());
    assert_eq!(bob.status().await.unwrap().retrieval_requests, before);
    bob.shutdown().await;
}
