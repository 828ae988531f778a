//! A member restarted from its SQLite store, and at-least-once delivery to the application
//! across a crash.
//!
//! Bob's application records the sequence of each delivery it has handled (here in a file; in
//! a real application, in the same transaction as the effect of handling it). Bob crashes after
//! the store has committed a delivery but before the application handled it. Restarted from
//! the same database, he reads the log after the recorded sequence, handles what he missed,
//! and then follows the live notifications.
//!
//! `cargo run -p sds-sqlite --example catch_up`

use std::path::Path;
use std::sync::Arc;

use sds_manager::{
    Bytes, Event, ManagerConfig, NoopPersistence, Notification, ReliabilityManager, Subscription,
};
use sds_sqlite::{Options, SqliteStore};

/// The application's own record: the last sequence it handled.
fn handled(cursor: &Path) -> u64 {
    std::fs::read_to_string(cursor)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Handles one message and records that it did.
fn handle(cursor: &Path, sequence: u64, id: &str, content: &[u8]) -> std::io::Result<()> {
    println!("bob handles {id}: {}", String::from_utf8_lossy(content));
    std::fs::write(cursor, sequence.to_string())
}

/// Handles the deliveries announced so far.
fn handle_notifications(rx: &mut Subscription, cursor: &Path) -> std::io::Result<()> {
    while let Ok(n) = rx.try_recv() {
        if let Notification::Event(Event::MessageReady {
            message_id,
            content,
            sequence,
            ..
        }) = n
        {
            handle(cursor, sequence, &message_id.to_string(), &content)?;
        }
    }
    Ok(())
}

fn bob(db: &Path) -> Result<ReliabilityManager, Box<dyn std::error::Error>> {
    let options = Options {
        // The whole history stays readable, not only the bounded log.
        keep_history: true,
        ..Options::default()
    };
    let store = Arc::new(SqliteStore::open_with_options(db, options)?);
    Ok(ReliabilityManager::new(
        "bob",
        ManagerConfig::default(),
        store,
    )?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("sds-catch-up-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (db, cursor) = (dir.join("bob.db"), dir.join("bob.cursor"));
    let alice =
        ReliabilityManager::new("alice", ManagerConfig::default(), Arc::new(NoopPersistence))?;
    let say = |id: &'static str, text: &'static str| {
        let alice = alice.clone();
        async move {
            alice
                .wrap_outgoing_message(Bytes::from_static(text.as_bytes()), id, "lobby")
                .await
        }
    };

    {
        let bob = bob(&db)?;
        let mut rx = bob.subscribe();
        bob.join_channel("lobby").await?;
        bob.unwrap_received_message(say("m1", "hello").await?)
            .await?;
        handle_notifications(&mut rx, &cursor)?;
        // m2 is delivered and stored, and then the process dies before the application
        // handles it: its notification is lost.
        bob.unwrap_received_message(say("m2", "are you there?").await?)
            .await?;
        println!("bob crashes before handling m2");
    }

    // Restarted from the same database: catch up from the store, then follow notifications.
    let bob = bob(&db)?;
    let mut rx = bob.subscribe();
    bob.join_channel("lobby").await?;
    let missed = bob.read_log("lobby", handled(&cursor), 1_000).await?;
    assert_eq!(missed.len(), 1, "m2 is read back");
    for m in missed {
        handle(&cursor, m.sequence, &m.message_id.to_string(), &m.content)?;
    }
    bob.unwrap_received_message(say("m3", "welcome back").await?)
        .await?;
    handle_notifications(&mut rx, &cursor)?;
    // Every message was handled once, in order, and the store holds what bob saw.
    assert_eq!(
        bob.read_log("lobby", handled(&cursor), 1_000).await?.len(),
        0
    );
    println!(
        "bob's log: {:?}",
        bob.get_log("lobby")
            .await?
            .iter()
            .map(|e| e.message_id.to_string())
            .collect::<Vec<_>>()
    );
    bob.cleanup().await;
    drop(bob);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
