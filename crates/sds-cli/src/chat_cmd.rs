//! `sds chat`: a group chat over libp2p (crate `sds-libp2p`), its state in SQLite.
//!
//! Lines typed are sent; delivered messages are printed in causal order with their sender,
//! delivery latency and a mark when they came late or after a gap was detected. Commands:
//! `/status`, `/history`, `/quit`. Output lines start with a word saying what they are, so
//! scripts (and the tests) can read them:
//!
//! ```text
//! waku /waku/2/rs/0/0 /sds/1/6c6f626279/proto    (with --waku: pubsub and content topic)
//! listening /ip4/127.0.0.1/tcp/4001/p2p/12D3…
//! msg alice: hello  (+12 ms)
//! history-begin
//! alice-1700000000000-0 alice: hello
//! history-end 1
//! ```

use std::collections::HashSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use sds_libp2p::waku::{WakuFraming, DEFAULT_PUBSUB_TOPIC};
use sds_libp2p::{Framing, Keypair, Multiaddr, Node, NodeConfig, NodeEvent, NodeHandle};
use sds_manager::{ChannelId, Config, Event, ManagerConfig, MessageId, ReliabilityManager};
use sds_proto::wire::{nim, Limits};
use sds_sqlite::{Durability, Options, SqliteStore};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::CmdResult;

/// Options of `sds chat`.
#[derive(Args, Clone, Debug)]
pub(crate) struct ChatArgs {
    /// Our name in the chat (the SDS participant id).
    #[arg(long)]
    name: String,
    /// The channel (room) to join.
    #[arg(long, default_value = "lobby")]
    channel: String,
    /// Addresses to listen on (repeatable).
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/0")]
    listen: Vec<Multiaddr>,
    /// A peer to connect to, as printed by its `listening` line (repeatable); redialled while
    /// disconnected.
    #[arg(long)]
    peer: Vec<Multiaddr>,
    /// Directory of the state (SQLite database and network identity); created if missing. A
    /// chat restarted on it resumes its history. Default: `sds-chat-NAME` in the working
    /// directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Find peers on the LAN with mDNS.
    #[arg(long)]
    mdns: bool,
    /// Milliseconds between sync messages.
    #[arg(long, default_value_t = 5_000)]
    sync_interval: u64,
    /// Milliseconds before an unacknowledged message is sent again.
    #[arg(long, default_value_t = 10_000)]
    resend_interval: u64,
    /// A message delivered this many milliseconds or more after it was sent is marked late.
    #[arg(long, default_value_t = 2_000)]
    late_after: u64,
    /// Speak Waku relay: messages in `WakuMessage` envelopes on a Waku pubsub topic, the room
    /// told apart by its content topic (`/sds/1/<room in hex>/proto` unless `--content-topic`).
    #[arg(long)]
    waku: bool,
    /// With `--waku`: the Waku pubsub topic.
    #[arg(long, default_value = DEFAULT_PUBSUB_TOPIC)]
    pubsub_topic: String,
    /// With `--waku`: the room's content topic, `/{application}/{version}/{name}/{encoding}`.
    #[arg(long, requires = "waku")]
    content_topic: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The network identity under `dir`, created on first use (so the peer id survives restarts).
fn identity(dir: &Path) -> Result<Keypair, String> {
    let path = dir.join("identity.key");
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| format!("{}: not a key: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| e.to_string())?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            file.write_all(&bytes)
                .and_then(|_| file.sync_all())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// A chat message's content: who, when, what (JSON).
fn encode(from: &str, at: u64, text: &str) -> Vec<u8> {
    json!({"from": from, "at": at, "text": text})
        .to_string()
        .into_bytes()
}

/// Reads a chat message's content; content from other applications shows as raw text.
fn decode(content: &[u8]) -> (String, Option<u64>, String) {
    match serde_json::from_slice::<Value>(content) {
        Ok(v) if v.get("text").is_some() => (
            v.get("from")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string(),
            v.get("at").and_then(Value::as_u64),
            v.get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ),
        _ => (
            "?".into(),
            None,
            String::from_utf8_lossy(content).into_owned(),
        ),
    }
}

/// Prints one line to stdout and flushes (scripts read line by line).
fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

/// Reads stdin lines on a thread of its own (stdin has no async reader in this runtime).
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    rx
}

pub(crate) fn run(args: ChatArgs) -> CmdResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(chat(args))
}

struct Chat {
    name: String,
    channel: ChannelId,
    node: NodeHandle,
    manager: ReliabilityManager,
    /// Ids we learnt were missing (a gap): delivered later, they are marked.
    missing: HashSet<MessageId>,
    late_after: u64,
    next_seq: u64,
}

const MAX_MISSING_TRACKED: usize = 10_000;

impl Chat {
    async fn send(&mut self, text: &str) -> Result<(), String> {
        let at = now_ms();
        let id = format!("{}-{at}-{}", self.name, self.next_seq);
        self.next_seq += 1;
        self.node
            .send(self.channel.clone(), id, encode(&self.name, at, text))
            .await
            .map_err(|e| e.to_string())
    }

    async fn history(&self) -> Result<(), String> {
        let log = self
            .manager
            .get_log(self.channel.clone())
            .await
            .map_err(|e| e.to_string())?;
        say("history-begin");
        let mut n = 0;
        for entry in log.iter().filter(|e| !e.is_met_marker()) {
            // The log keeps each message's bytes as sent (nim-sds layout, the default profile).
            let (from, _, text) = match nim::decode(&entry.bytes, &Limits::default()) {
                Ok(m) => decode(&m.content),
                Err(_) => ("?".into(), None, "(undecodable)".into()),
            };
            say(format!("{} {from}: {text}", entry.message_id));
            n += 1;
        }
        say(format!("history-end {n}"));
        Ok(())
    }

    async fn status(&self) -> Result<(), String> {
        let s = self.node.status().await.map_err(|e| e.to_string())?;
        let m = &self.manager;
        let ch = self.channel.clone();
        let err = |e: sds_manager::ManagerError| e.to_string();
        let unacked = m.get_outgoing(ch.clone()).await.map_err(err)?.len();
        let waiting = m.get_incoming(ch.clone()).await.map_err(err)?.len();
        let logged = m.get_log(ch.clone()).await.map_err(err)?.len();
        say(format!(
            "status peers={} channel-peers={} log={logged} unacknowledged={unacked} \
             waiting={waiting} retrieval-pending={} published={} publish-failed={} \
             gossip-received={} retrieved={} served={}",
            s.peers.len(),
            s.channel_peers.first().map(|(_, n)| *n).unwrap_or(0),
            s.retrieval_pending,
            s.published,
            s.publish_failed,
            s.gossip_received,
            s.retrieved,
            s.served,
        ));
        for peer in &s.peers {
            say(format!("status-peer {peer}"));
        }
        Ok(())
    }

    fn on_event(&mut self, event: NodeEvent) {
        match event {
            NodeEvent::Listening(addr) => say(format!("listening {addr}")),
            NodeEvent::PeerConnected(p) => say(format!("peer-connected {p}")),
            NodeEvent::PeerDisconnected(p) => say(format!("peer-disconnected {p}")),
            NodeEvent::Sds(Event::MessageReady {
                message_id,
                content,
                ..
            }) => {
                let (from, at, text) = decode(&content);
                let latency = at.map(|at| now_ms().saturating_sub(at));
                let mut line = format!("msg {from}: {text}");
                if let Some(l) = latency {
                    line.push_str(&format!("  (+{l} ms)"));
                    if l >= self.late_after {
                        line.push_str(" [late]");
                    }
                }
                if self.missing.remove(&message_id) {
                    line.push_str(" [repaired]");
                }
                say(line);
            }
            NodeEvent::Sds(Event::MissingDependencies { missing, .. })
            | NodeEvent::Sds(Event::MissingMessages { missing, .. }) => {
                if self.missing.len() + missing.len() > MAX_MISSING_TRACKED {
                    self.missing.clear();
                }
                self.missing
                    .extend(missing.into_iter().map(|entry| entry.message_id));
            }
            NodeEvent::Sds(Event::SendFailed { message_id, .. }) => {
                say(format!("send-failed {message_id}"))
            }
            NodeEvent::Sds(Event::IrretrievablyLost { entry, .. }) => {
                say(format!("lost {}", entry.message_id))
            }
            NodeEvent::TaskError { error, .. } => say(format!("error {error}")),
            _ => {}
        }
    }
}

async fn chat(args: ChatArgs) -> CmdResult {
    let interactive = std::io::stdin().is_terminal();
    let dir = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("sds-chat-{}", args.name)));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let keypair = identity(&dir)?;
    // A chat keeps its whole history, not only the bounded log the protocol needs.
    let options = Options {
        durability: Durability::Normal,
        keep_history: true,
        ..Options::default()
    };
    let store = SqliteStore::open_with_options(dir.join("sds.db"), options)
        .map_err(|e| format!("{}: {e}", dir.join("sds.db").display()))?;
    let resend = Duration::from_millis(args.resend_interval);
    let engine = Config::default()
        .with_sync_interval(Duration::from_millis(args.sync_interval))
        .with_resend_interval(resend)
        .with_possibly_acked_resend_interval(resend.saturating_mul(2));
    let limits = engine.limits.clone();
    let manager = ReliabilityManager::new(
        args.name.clone(),
        ManagerConfig::default().with_engine(engine),
        Arc::new(store),
    )
    .map_err(|e| e.to_string())?;
    let framing = if args.waku {
        let mut waku = WakuFraming::new().with_pubsub_topic(args.pubsub_topic.clone());
        if let Some(topic) = &args.content_topic {
            waku = waku.with_content_topic(args.channel.clone(), topic.clone());
        }
        say(format!(
            "waku {} {}",
            waku.pubsub_topic,
            waku.content_topic(&ChannelId::from(args.channel.clone()))
        ));
        Framing::Waku(waku)
    } else {
        Framing::Sds
    };
    let config = NodeConfig {
        listen: args.listen.clone(),
        peers: args.peer.clone(),
        mdns: args.mdns,
        limits,
        redial_interval: Duration::from_secs(1),
        framing,
        ..NodeConfig::default()
    };
    let (node, mut events) = Node::spawn(manager.clone(), keypair, config)
        .await
        .map_err(|e| e.to_string())?;
    let channel = ChannelId::from(args.channel.clone());
    node.join(channel.clone())
        .await
        .map_err(|e| e.to_string())?;
    say(format!("peer-id {}", node.peer_id()));
    let mut chat = Chat {
        name: args.name.clone(),
        channel,
        node: node.clone(),
        manager,
        missing: HashSet::new(),
        late_after: args.late_after,
        next_seq: 0,
    };
    let resumed = chat
        .manager
        .get_log(chat.channel.clone())
        .await
        .map_err(|e| e.to_string())?
        .len();
    if resumed > 0 {
        say(format!("resumed {resumed} messages (/history shows them)"));
    }
    if interactive {
        eprintln!("type a line to send it; /status, /history, /quit");
    }
    let mut lines = stdin_lines();
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                let line = line.trim_end();
                match line {
                    "" => {}
                    "/quit" => break,
                    "/history" => chat.history().await?,
                    "/status" => chat.status().await?,
                    text if text.starts_with('/') => say(format!("unknown-command {text}")),
                    text => {
                        if let Err(e) = chat.send(text).await {
                            say(format!("error {e}"));
                        }
                    }
                }
            }
            event = events.recv() => match event {
                Some(event) => chat.on_event(event),
                None => break,
            },
        }
    }
    node.shutdown().await;
    chat.manager.cleanup().await;
    Ok(ExitCode::SUCCESS)
}
