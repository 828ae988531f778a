//! Three members of a chat in one process, over a lossy network made of tokio channels: every
//! broadcast reaches each other member with probability 0.7, after a random delay (so out of
//! order). Resends, syncs and repairs (SDS-R) bring every member every message, in causal
//! order. Run with `cargo run -p sds-manager --example chat`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sds_manager::{
    Bytes, Config, Event, ManagerConfig, MemoryPersistence, Notification, ReliabilityManager,
};
use tokio::sync::mpsc;

const MEMBERS: [&str; 3] = ["alice", "bob", "carol"];
const MESSAGES_EACH: usize = 10;
const DELIVERY: f64 = 0.7;

/// A small seeded generator: the same run every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sends `bytes` from member `from` to every other member, losing and delaying some.
fn broadcast(net: &[mpsc::UnboundedSender<Bytes>], rng: &Mutex<Rng>, from: usize, bytes: Bytes) {
    for (to, tx) in net.iter().enumerate() {
        let (lost, delay) = {
            let mut r = rng.lock().unwrap();
            (r.next() > DELIVERY, r.next() * 200.0)
        };
        if to == from || lost {
            continue;
        }
        let (tx, bytes) = (tx.clone(), bytes.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
            let _ = tx.send(bytes);
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Short timers so that the example finishes in seconds (the defaults are nim-sds's minutes).
    let config = ManagerConfig::default().with_engine(
        Config::default()
            .with_resend_interval(Duration::from_millis(500))
            .with_possibly_acked_resend_interval(Duration::from_millis(500))
            .with_sync_interval(Duration::from_millis(400))
            .with_repair_t_min(Duration::from_millis(100))
            .with_repair_t_max(Duration::from_millis(1_000))
            .with_filter_resend_after(Some(Duration::from_millis(300))),
    );
    let rng = Arc::new(Mutex::new(Rng(7)));
    let (senders, receivers): (Vec<_>, Vec<_>) = MEMBERS
        .iter()
        .map(|_| mpsc::unbounded_channel::<Bytes>())
        .unzip();
    let net = Arc::new(senders);
    let delivered: Arc<Mutex<Vec<BTreeSet<String>>>> =
        Arc::new(Mutex::new(vec![BTreeSet::new(); MEMBERS.len()]));
    let mut managers = Vec::new();
    for (i, mut inbox) in receivers.into_iter().enumerate() {
        let m = ReliabilityManager::new(
            MEMBERS[i],
            config.clone(),
            Arc::new(MemoryPersistence::new()),
        )?;
        m.join_channel("lobby").await?;
        let mut notifications = m.subscribe();
        m.start_periodic_tasks().await;
        // What the member receives goes to its manager.
        let receiver = m.clone();
        tokio::spawn(async move {
            while let Some(bytes) = inbox.recv().await {
                let _ = receiver.unwrap_received_message(bytes).await;
            }
        });
        // What the manager announces: deliveries are counted, transmissions broadcast.
        let (net, rng, delivered) = (net.clone(), rng.clone(), delivered.clone());
        tokio::spawn(async move {
            while let Some(n) = notifications.recv().await {
                match n {
                    Notification::Event(Event::MessageReady { message_id, .. }) => {
                        delivered.lock().unwrap()[i].insert(message_id.to_string());
                    }
                    Notification::Transmit(t) => broadcast(&net, &rng, i, t.bytes),
                    _ => {}
                }
            }
        });
        managers.push(m);
    }
    for k in 0..MESSAGES_EACH {
        for (i, m) in managers.iter().enumerate() {
            let id = format!("{}-{k}", MEMBERS[i]);
            let text = format!("message {k} from {}", MEMBERS[i]);
            let wire = m
                .wrap_outgoing_message(Bytes::from(text), id.clone(), "lobby")
                .await?;
            // Our own message counts as delivered to us.
            delivered.lock().unwrap()[i].insert(id);
            broadcast(&net, &rng, i, wire);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = MEMBERS.len() * MESSAGES_EACH;
    for second in 1..=30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let counts: Vec<usize> = delivered.lock().unwrap().iter().map(|d| d.len()).collect();
        println!("after {second:>2} s: messages at each member {counts:?} of {total}");
        if counts.iter().all(|&c| c == total) {
            println!("every member has every message");
            break;
        }
    }
    for m in &managers {
        m.cleanup().await;
    }
    Ok(())
}
