//! Two members of a chat in one process: alice sends, bob receives, alice learns that bob has
//! her message. Run with `cargo run -p sds-manager --example quickstart`.

use std::sync::Arc;
use std::time::Duration;

use sds_manager::{Event, ManagerConfig, MemoryPersistence, Notification, ReliabilityManager};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // MemoryPersistence for tests; sds_sqlite::SqliteStore::open("sds.db")? for state that
    // survives restarts.
    let alice = ReliabilityManager::new(
        "alice",
        ManagerConfig::default(),
        Arc::new(MemoryPersistence::new()),
    )?;
    let bob = ReliabilityManager::new(
        "bob",
        ManagerConfig::default(),
        Arc::new(MemoryPersistence::new()),
    )?;
    let mut alice_events = alice.subscribe(); // events and periodic transmissions
    let mut bob_events = bob.subscribe();
    bob.join_channel("chat").await?; // messages for channels not joined are refused
    alice.start_periodic_tasks().await; // resends, syncs, repairs, lost dependencies

    // Alice sends: broadcast `wire` on your network. Bob receives it.
    let wire = alice
        .wrap_outgoing_message(&b"hi bob"[..], "msg-1", "chat")
        .await?;
    let got = bob.unwrap_received_message(wire).await?; // content, kind, missing dependencies
    println!(
        "bob got {:?} ({:?})",
        String::from_utf8_lossy(&got.content),
        got.kind
    );

    // Bob answers; his message cites hers, so alice learns that bob has it.
    let reply = bob
        .wrap_outgoing_message(&b"hi alice"[..], "msg-2", "chat")
        .await?;
    alice.unwrap_received_message(reply).await?;

    for (name, events) in [("bob", &mut bob_events), ("alice", &mut alice_events)] {
        while let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(50), events.recv()).await
        {
            match n {
                Notification::Event(Event::MessageReady { message_id, .. }) => {
                    println!("{name}: {message_id} delivered, in causal order")
                }
                Notification::Event(Event::Acknowledged { message_id, .. }) => {
                    println!("{name}: {message_id} acknowledged")
                }
                Notification::Event(e) => println!("{name}: {e:?}"),
                Notification::Transmit(t) => {
                    println!("{name}: broadcast {} bytes ({:?})", t.bytes.len(), t.kind)
                }
                Notification::TaskError { error, .. } => {
                    println!("{name}: periodic work failed: {error}")
                }
                Notification::Lagged { missed } => println!("{name}: fell behind by {missed}"),
                _ => {}
            }
        }
    }
    alice.cleanup().await;
    Ok(())
}
