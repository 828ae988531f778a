//! Benchmark B4: five members in one process, each a `ReliabilityManager` with in-memory
//! persistence, exchanging N messages with no loss; prints one JSON line with the messages per
//! second delivered at every member and the end-to-end latency (send call to delivery, over
//! every message and receiver: p50, p99, max).
//!
//! `--transport tcp`: a `Node` each, connected over localhost TCP (noise, yamux, gossipsub);
//! `memory`: the same nodes over libp2p's in-process memory transport (no sockets, same
//! protocols); `direct`: no libp2p at all, each member's bytes handed to the others' `unwrap`
//! through channels. The differences show what the sockets and what libp2p cost.
//!
//! Senders take turns, with at most `--window` messages not yet delivered everywhere.
//!
//! ```sh
//! cargo run --release -p sds-libp2p --example b4 -- --transport tcp --messages 5000
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sds_libp2p::{Keypair, Node, NodeConfig, NodeEvent, NodeHandle};
use sds_manager::{
    Bytes, Event, ManagerConfig, MemoryPersistence, Notification, ReliabilityManager,
};
use tokio::sync::{mpsc, Semaphore};

const MEMBERS: usize = 5;
const CHANNEL: &str = "b4";

struct Args {
    transport: String,
    messages: usize,
    window: usize,
}

fn args() -> Args {
    let mut a = Args {
        transport: "tcp".into(),
        messages: 2_000,
        window: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--transport" => a.transport = value,
            "--messages" => a.messages = value.parse().expect("--messages N"),
            "--window" => a.window = value.parse().expect("--window N"),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// Deliveries so far: per message, the receivers that delivered it; and every latency.
struct Tally {
    start: Instant,
    sent_at: HashMap<String, Duration>,
    delivered: HashMap<String, usize>,
    latencies: Vec<Duration>,
    complete: usize,
    done_at: Option<Duration>,
    total: usize,
}

impl Tally {
    fn delivered(&mut self, id: &str, window: &Semaphore) {
        let now = self.start.elapsed();
        if let Some(sent) = self.sent_at.get(id) {
            self.latencies.push(now.saturating_sub(*sent));
        }
        let n = self.delivered.entry(id.to_string()).or_default();
        *n += 1;
        if *n == MEMBERS - 1 {
            self.complete += 1;
            window.add_permits(1);
            if self.complete == self.total {
                self.done_at = Some(now);
            }
        }
    }
}

fn manager(i: usize) -> ReliabilityManager {
    ReliabilityManager::new(
        format!("m{i}"),
        ManagerConfig::default(),
        Arc::new(MemoryPersistence::new()),
    )
    .expect("manager")
}

/// Senders: take turns; `send` of member i.
enum Members {
    Nodes(Vec<NodeHandle>),
    Direct(Vec<(ReliabilityManager, Vec<mpsc::UnboundedSender<Bytes>>)>),
}

impl Members {
    async fn send(&self, i: usize, id: String, content: Vec<u8>) {
        match self {
            Members::Nodes(nodes) => nodes[i].send(CHANNEL, id, content).await.expect("send"),
            Members::Direct(members) => {
                let (m, peers) = &members[i];
                let bytes = m
                    .wrap_outgoing_message(content, id, CHANNEL)
                    .await
                    .expect("wrap");
                for p in peers {
                    let _ = p.send(bytes.clone());
                }
            }
        }
    }
}

async fn start_nodes(transport: &str, tally: Arc<Mutex<Tally>>, window: Arc<Semaphore>) -> Members {
    let base = 2_000_000 + u64::from(std::process::id()) * 8;
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..MEMBERS {
        let listen = if transport == "tcp" {
            "/ip4/127.0.0.1/tcp/0".to_string()
        } else {
            format!("/memory/{}", base + i as u64)
        };
        let config = NodeConfig {
            listen: vec![listen.parse().expect("address")],
            peers: addrs.clone(),
            heartbeat_interval: Duration::from_millis(200),
            author_rate: 1e9,
            author_burst: 1e9,
            ..NodeConfig::default()
        };
        let (node, mut events) = Node::spawn(manager(i), Keypair::generate_ed25519(), config)
            .await
            .expect("node");
        // Its listen address, for the ones started after it.
        loop {
            match events.recv().await {
                Some(NodeEvent::Listening(a)) => {
                    addrs.push(a);
                    break;
                }
                Some(_) => {}
                None => panic!("node stopped"),
            }
        }
        node.join(CHANNEL).await.expect("join");
        let (tally, window) = (tally.clone(), window.clone());
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if let NodeEvent::Sds(Event::MessageReady { message_id, .. }) = e {
                    let id = message_id.as_str().unwrap_or_default().to_string();
                    tally.lock().unwrap().delivered(&id, &window);
                }
            }
        });
        nodes.push(node);
    }
    // Everyone sees the four others on the channel.
    loop {
        let mut ready = true;
        for n in &nodes {
            let s = n.status().await.expect("status");
            ready &= s.channel_peers.first().map(|(_, n)| *n) == Some(MEMBERS - 1);
        }
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Members::Nodes(nodes)
}

async fn start_direct(tally: Arc<Mutex<Tally>>, window: Arc<Semaphore>) -> Members {
    let managers: Vec<ReliabilityManager> = (0..MEMBERS).map(manager).collect();
    for m in &managers {
        m.join_channel(CHANNEL).await.expect("join");
    }
    let mut inboxes = Vec::new();
    for m in &managers {
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        inboxes.push(tx);
        let m = m.clone();
        let mut sub = m.subscribe();
        let (tally, window) = (tally.clone(), window.clone());
        tokio::spawn(async move {
            while let Some(n) = sub.recv().await {
                if let Notification::Event(Event::MessageReady { message_id, .. }) = n {
                    let id = message_id.as_str().unwrap_or_default().to_string();
                    tally.lock().unwrap().delivered(&id, &window);
                }
            }
        });
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                let _ = m.unwrap_received_message(bytes).await;
            }
        });
    }
    Members::Direct(
        managers
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let peers = inboxes
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, tx)| tx.clone())
                    .collect();
                (m, peers)
            })
            .collect(),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = args();
    let window = Arc::new(Semaphore::new(args.window));
    let tally = Arc::new(Mutex::new(Tally {
        start: Instant::now(),
        sent_at: HashMap::new(),
        delivered: HashMap::new(),
        latencies: Vec::new(),
        complete: 0,
        done_at: None,
        total: args.messages,
    }));
    let members = match args.transport.as_str() {
        "tcp" | "memory" => start_nodes(&args.transport, tally.clone(), window.clone()).await,
        "direct" => start_direct(tally.clone(), window.clone()).await,
        other => panic!("--transport tcp|memory|direct, not {other}"),
    };
    let start = {
        let mut t = tally.lock().unwrap();
        t.start = Instant::now();
        t.start
    };
    for k in 0..args.messages {
        window.acquire().await.expect("window").forget();
        let id = format!("b4-{k}");
        tally
            .lock()
            .unwrap()
            .sent_at
            .insert(id.clone(), start.elapsed());
        members
            .send(k % MEMBERS, id, format!("message {k}").into_bytes())
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let elapsed = loop {
        if let Some(d) = tally.lock().unwrap().done_at {
            break d;
        }
        assert!(Instant::now() < deadline, "not every message was delivered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut t = tally.lock().unwrap();
    t.latencies.sort();
    println!(
        "{{\"bench\":\"B4\",\"transport\":\"{}\",\"members\":{MEMBERS},\"messages\":{},\
         \"window\":{},\"seconds\":{:.3},\"delivered_everywhere_per_s\":{:.0},\
         \"latency_ms_p50\":{:.2},\"latency_ms_p99\":{:.2},\"latency_ms_max\":{:.2}}}",
        args.transport,
        args.messages,
        args.window,
        elapsed.as_secs_f64(),
        args.messages as f64 / elapsed.as_secs_f64(),
        percentile(&t.latencies, 0.5),
        percentile(&t.latencies, 0.99),
        percentile(&t.latencies, 1.0),
    );
}
