//! A live Waku relay exchange: two nodes with the Waku framing connected only through a js-waku
//! relay peer (`scripts/interop/waku_relay_peer.mjs`: the published `@waku/relay` 0.0.14 over
//! libp2p TCP). A message of one node reaches the other through js-waku's relay, which decodes
//! its envelope on the way; and an SDS message published by the js-waku peer in its own
//! envelope reaches both nodes.
//!
//! Runs only with `SDS_INTEROP=1` (`.ci/run` sets it) and when `node` is installed; otherwise it
//! prints a `SKIP` line saying why, past the test harness's capture, and passes without testing.
//! `scripts/interop/setup-waku-relay.sh` installs the packages with npm under `target/`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sds_libp2p::waku::{WakuFraming, DEFAULT_PUBSUB_TOPIC};
use sds_libp2p::{Framing, Keypair, Multiaddr, Node, NodeConfig, NodeHandle};
use sds_manager::{Config, ManagerConfig, MemoryPersistence, ReliabilityManager};
use tokio::sync::mpsc;

#[path = "../../sds-proto/tests/support/interop.rs"]
mod interop;

const CHANNEL: &str = "room";

fn relay_package() -> Option<PathBuf> {
    if let Some(reason) = interop::skip_reason() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP waku_live: live js-waku relay exchange: {reason}"
        );
        return None;
    }
    Some(interop::install("setup-waku-relay.sh", "waku-relay-0.0.14"))
}

/// The js-waku peer: its process, its input, and its output lines as they come.
struct JsPeer {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl JsPeer {
    fn start(dir: &PathBuf, content_topic: &str) -> JsPeer {
        let mut child = Command::new("node")
            .arg("waku_relay_peer.mjs")
            .arg(DEFAULT_PUBSUB_TOPIC)
            .arg(content_topic)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // Shown when the test fails.
                eprintln!("js-waku: {line:.200}");
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        JsPeer { child, lines }
    }

    /// The next output line starting with `word`, within 60 s.
    async fn next(&mut self, word: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = self.lines.recv().await {
                if let Some(rest) = line.strip_prefix(word) {
                    return Some(rest.trim().to_string());
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(rest)) => rest,
            _ => panic!("the js-waku peer never printed `{word}`"),
        }
    }

    fn send(&mut self, payload: &[u8]) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "send {}", hex(payload)).expect("write to the js-waku peer");
    }
}

impl Drop for JsPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn manager(name: &str) -> ReliabilityManager {
    let engine = Config::default()
        .with_resend_interval(Duration::from_millis(1_000))
        .with_sync_interval(Duration::from_millis(1_000))
        .with_max_resend_attempts(50);
    ReliabilityManager::new(
        name,
        ManagerConfig::default().with_engine(engine),
        Arc::new(MemoryPersistence::new()),
    )
    .unwrap()
}

async fn start(name: &str, peer: Multiaddr) -> NodeHandle {
    let config = NodeConfig {
        peers: vec![peer],
        heartbeat_interval: Duration::from_millis(500),
        framing: Framing::Waku(WakuFraming::new()),
        ..NodeConfig::default()
    };
    let (handle, events) = Node::spawn(manager(name), Keypair::generate_ed25519(), config)
        .await
        .unwrap();
    drop(events);
    handle.join(CHANNEL).await.unwrap();
    handle
}

async fn logged(node: &NodeHandle, id: &str) -> bool {
    node.manager()
        .get_log(CHANNEL)
        .await
        .unwrap()
        .iter()
        .any(|e| e.message_id.as_bytes() == id.as_bytes())
}

async fn until_logged(node: &NodeHandle, id: &str) {
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        while !logged(node, id).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "{id} never reached {}", node.peer_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_through_a_js_waku_relay() {
    let Some(dir) = relay_package() else { return };
    let content_topic = WakuFraming::new().content_topic(&CHANNEL.into());
    let mut js = JsPeer::start(&dir, &content_topic);
    let addr: Multiaddr = js.next("listening").await.parse().unwrap();
    let alice = start("alice", addr.clone()).await;
    let bob = start("bob", addr).await;
    // Both see the js-waku peer on the pubsub topic.
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let mut ready = true;
            for node in [&alice, &bob] {
                let status = node.status().await.unwrap();
                ready &= status.channel_peers.iter().any(|(_, n)| *n >= 1);
            }
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the js-waku peer never joined the pubsub topic");

    // Alice to Bob, through js-waku's relay, which reads the envelope on the way.
    alice
        .send(CHANNEL, "from-alice", b"hello through waku".to_vec())
        .await
        .unwrap();
    until_logged(&bob, "from-alice").await;
    let seen = js.next("recv").await;
    assert!(!seen.is_empty());

    // An SDS message published by the js-waku peer in its own envelope reaches both.
    let carol = manager("carol");
    carol.join_channel(CHANNEL).await.unwrap();
    let bytes = carol
        .wrap_outgoing_message(b"hello from js".to_vec(), "from-js", CHANNEL)
        .await
        .unwrap();
    js.send(&bytes);
    until_logged(&alice, "from-js").await;
    until_logged(&bob, "from-js").await;

    // Alice and Bob never connected to each other: everything went through the js-waku peer.
    for node in [&alice, &bob] {
        let status = node.status().await.unwrap();
        assert_eq!(status.peers.len(), 1, "{status:?}");
    }
    for node in [&alice, &bob] {
        node.shutdown().await;
    }
}
