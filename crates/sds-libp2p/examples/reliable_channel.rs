//! Two members of a reliable channel in one process, over libp2p's memory transport: Alice
//! sends a short message and a 250 kB one (three segments); Bob prints what he receives, Alice
//! the lifecycle of her messages until both are acknowledged.
//!
//! ```text
//! cargo run -p sds-libp2p --example reliable_channel
//! ```

use std::sync::Arc;
use std::time::Duration;

use sds_libp2p::{ChannelEvent, Keypair, Node, NodeConfig, ReliableChannel, ReliableChannelConfig};
use sds_manager::{ManagerConfig, MemoryPersistence, ReliabilityManager};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Shorter intervals than the specification's defaults, so that the demo ends in seconds.
    let config = ReliableChannelConfig::default()
        .with_sync_interval(Duration::from_secs(1))
        .with_retry_interval(Duration::from_secs(3));
    let port = 40_000 + u64::from(std::process::id() % 10_000);
    let alice_addr: sds_libp2p::Multiaddr = format!("/memory/{port}").parse()?;

    let mut members = Vec::new();
    for (name, listen, peers) in [
        ("alice", vec![alice_addr.clone()], vec![]),
        ("bob", vec![], vec![alice_addr.clone()]),
    ] {
        let manager = ReliabilityManager::new(
            name,
            config.apply_to_manager(ManagerConfig::default()),
            Arc::new(MemoryPersistence::new()),
        )?;
        let node_config = config.apply_to_node(NodeConfig {
            listen,
            peers,
            heartbeat_interval: Duration::from_millis(200),
            ..NodeConfig::default()
        });
        let (node, _node_events) =
            Node::spawn(manager, Keypair::generate_ed25519(), node_config).await?;
        let (channel, events) = ReliableChannel::open(node.clone(), "demo", config.clone()).await?;
        members.push((node, channel, events));
    }
    let (bob_node, _bob_channel, mut bob_events) = members.pop().ok_or("no bob")?;
    let (alice_node, alice, mut alice_events) = members.pop().ok_or("no alice")?;

    // Wait until the two see each other on the channel (a first publication would otherwise
    // fail and only go out again after the retry interval).
    while alice_node
        .status()
        .await?
        .channel_peers
        .first()
        .map(|(_, n)| *n)
        != Some(1)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let short = alice.send(&b"hello, reliably"[..])?;
    let large = alice.send(vec![42u8; 250_000])?;
    println!("alice sent {short} and {large}");

    tokio::spawn(async move {
        while let Some(event) = bob_events.recv().await {
            if let ChannelEvent::Received {
                message_id,
                payload,
                ..
            } = event
            {
                println!("bob received {message_id}: {} bytes", payload.len());
            }
        }
    });

    let mut acknowledged = 0;
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = alice_events.recv().await {
            match event {
                ChannelEvent::Sending { message_id, chunks } => println!(
                    "alice: {message_id} sending, chunks {:?} of {}",
                    chunks.chunks, chunks.total_chunks
                ),
                ChannelEvent::Sent { message_id, chunks } => println!(
                    "alice: {message_id} sent, chunks {:?} of {}",
                    chunks.chunks, chunks.total_chunks
                ),
                ChannelEvent::Acknowledged { message_id, chunks } => {
                    println!(
                        "alice: {message_id} acknowledged, chunks {:?} of {}",
                        chunks.chunks, chunks.total_chunks
                    );
                    if chunks.is_complete() {
                        acknowledged += 1;
                        if acknowledged == 2 {
                            return;
                        }
                    }
                }
                other => println!("alice: {other:?}"),
            }
        }
    })
    .await;
    if done.is_err() {
        println!("not everything was acknowledged within a minute");
    }
    alice.close().await;
    alice_node.shutdown().await;
    bob_node.shutdown().await;
    Ok(())
}
