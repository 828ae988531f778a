//! Catching up from the store: delivery sequence numbers and `read_log`, so that an application
//! handles every delivery at least once across crashes.

use std::sync::Arc;

use sds_manager::{
    Bytes, Config, Event, ManagerConfig, MemoryPersistence, Notification, ReliabilityManager,
    Subscription,
};

fn manager(name: &str, store: &MemoryPersistence, history: usize) -> ReliabilityManager {
    let config =
        ManagerConfig::default().with_engine(Config::default().with_max_message_history(history));
    ReliabilityManager::new(name, config, Arc::new(store.clone())).unwrap()
}

/// (message id, sequence) of the deliveries announced so far.
fn delivered(rx: &mut Subscription) -> Vec<(String, u64)> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .filter_map(|n| match n {
            Notification::Event(Event::MessageReady {
                message_id,
                sequence,
                ..
            }) => Some((message_id.to_string(), sequence)),
            _ => None,
        })
        .collect()
}

/// Alice sends `n` messages; bob receives them in order.
async fn exchange(alice: &ReliabilityManager, bob: &ReliabilityManager, n: usize) {
    bob.join_channel("lobby").await.unwrap();
    for i in 1..=n {
        let content = Bytes::from(format!("hello {i}"));
        let wire = alice
            .wrap_outgoing_message(content, format!("m{i}"), "lobby")
            .await
            .unwrap();
        bob.unwrap_received_message(wire).await.unwrap();
    }
}

#[tokio::test]
async fn deliveries_carry_increasing_sequences_that_read_log_starts_after() {
    let (sa, sb) = (MemoryPersistence::new(), MemoryPersistence::new());
    let (alice, bob) = (manager("alice", &sa, 100), manager("bob", &sb, 100));
    let mut rx = bob.subscribe();
    exchange(&alice, &bob, 5).await;
    let got = delivered(&mut rx);
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2", "m3", "m4", "m5"]);
    assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "{got:?}");

    // Everything after the second delivery, with content, in delivery order.
    let after = got[1].1;
    let rest = bob.read_log("lobby", after, 100).await.unwrap();
    let read: Vec<(String, u64)> = rest
        .iter()
        .map(|m| (m.message_id.to_string(), m.sequence))
        .collect();
    assert_eq!(read, got[2..]);
    assert_eq!(&rest[0].content[..], b"hello 3");
    assert_eq!(rest[0].sender_id, "alice");
    // A limit cuts from the end; reading from the last sequence finds nothing.
    assert_eq!(bob.read_log("lobby", 0, 2).await.unwrap().len(), 2);
    assert!(bob
        .read_log("lobby", got[4].1, 10)
        .await
        .unwrap()
        .is_empty());
    // The sender's log holds its own messages the same way.
    let own = alice.read_log("lobby", 0, 100).await.unwrap();
    assert_eq!(own.len(), 5);
    assert_eq!(own[4].sender_id, "alice");
}

/// The crash between the store's commit and the application's handling: the notification is
/// lost with the process, the delivery is not.
#[tokio::test]
async fn a_delivery_whose_notification_was_lost_is_read_back_after_a_restart() {
    let (sa, sb) = (MemoryPersistence::new(), MemoryPersistence::new());
    let alice = manager("alice", &sa, 100);
    let bob = manager("bob", &sb, 100);
    let mut rx = bob.subscribe();
    exchange(&alice, &bob, 2).await;
    // The application handled m1 and recorded its sequence, then the process died.
    let handled = delivered(&mut rx)[0].1;
    drop(rx);
    drop(bob);

    let bob = manager("bob", &sb, 100);
    let missed = bob.read_log("lobby", handled, 100).await.unwrap();
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0].message_id, "m2");
    assert_eq!(&missed[0].content[..], b"hello 2");
}

#[tokio::test]
async fn a_store_keeping_history_reads_back_what_the_bounded_log_evicted() {
    let (sa, kept) = (
        MemoryPersistence::new(),
        MemoryPersistence::keeping_history(),
    );
    let alice = manager("alice", &sa, 3);
    let bob = manager("bob", &kept, 3);
    exchange(&alice, &bob, 8).await;
    // Bob's engine keeps three messages in memory; his store keeps all eight.
    assert_eq!(bob.get_log("lobby").await.unwrap().len(), 3);
    let all = bob.read_log("lobby", 0, 100).await.unwrap();
    let ids: Vec<String> = all.iter().map(|m| m.message_id.to_string()).collect();
    assert_eq!(ids, ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"]);
    assert_eq!(&all[0].content[..], b"hello 1");
    // Without history, the store has what the log has.
    assert_eq!(alice.read_log("lobby", 0, 100).await.unwrap().len(), 3);
    // Removing the channel deletes its history too.
    bob.remove_channel("lobby").await.unwrap();
    assert!(bob.read_log("lobby", 0, 100).await.unwrap().is_empty());
}
