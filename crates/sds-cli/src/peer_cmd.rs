//! `sds peer`: a line-oriented driver of one participant, for scripts and interop tests. The
//! protocol is documented in `docs/peer.md`.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use sds_manager::{
    Config, Event, ManagerConfig, MemoryPersistence, NoopPersistence, Notification, Persistence,
    ReliabilityManager, UnjoinedChannels,
};
use sds_proto::engine::{DropReason, LamportUnit, SendFailure};
use sds_proto::wire::Profile;
use sds_proto::{Bytes, ChannelId, HistoryEntry, MessageId};
use sds_sqlite::{Durability, Options, SqliteStore};
use serde_json::{json, Map, Value};

use crate::{key_from_file, CmdResult};

/// Options of `sds peer`.
#[derive(Args, Clone, Debug)]
pub(crate) struct PeerArgs {
    /// Our participant id ("" turns SDS-R off, as in nim-sds).
    #[arg(long, default_value = "")]
    participant: String,
    /// Where state goes: `none`, `memory` or `sqlite:PATH`. Default: SQLite in the working
    /// directory, `sds-peer-<participant>.db` with its `-wal` and `-shm` files and its
    /// `-messages` directory beside it, resumed by the next run there. The `ready` line on
    /// stderr names every path.
    #[arg(long)]
    store: Option<String>,
    /// With an SQLite store, `full` syncs every operation to disk (survives power loss);
    /// `normal` survives crashes of the process, and power loss may take the newest operations.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Normal)]
    durability: DurabilityArg,
    /// With an SQLite store, encrypt it with the key in this file (its bytes as they are, at
    /// least 16; for example `head -c 32 /dev/urandom > sds.key`). A new store is created
    /// encrypted; an existing one opens only with its own key. Needs a build with the feature
    /// `encryption`.
    #[arg(long, value_name = "PATH")]
    key_file: Option<std::path::PathBuf>,
    /// Start the timer-driven periodic work (resends, syncs, repairs) in the background;
    /// otherwise it runs only on `sweep`.
    #[arg(long)]
    periodic: bool,
    /// The longest command line read; a longer one is skipped (without being kept in memory)
    /// and answered with an error.
    #[arg(long, default_value_t = 8 << 20)]
    max_line_bytes: usize,
    /// Serve the library's metrics as Prometheus text over HTTP at this address (for example
    /// 127.0.0.1:9184).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    #[command(flatten)]
    config: ConfigArgs,
}

/// `--durability`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DurabilityArg {
    /// `synchronous = NORMAL`.
    Normal,
    /// `synchronous = FULL`.
    Full,
}

/// Every `Config` field, as an option (defaults: the engine's).
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct ConfigArgs {
    /// Bloom filter capacity.
    #[arg(long)]
    bloom_capacity: Option<i64>,
    /// Bloom filter false-positive rate.
    #[arg(long)]
    bloom_error_rate: Option<f64>,
    /// Log entries kept.
    #[arg(long)]
    max_message_history: Option<usize>,
    /// Log entries cited per message.
    #[arg(long)]
    max_causal_history: Option<usize>,
    /// Milliseconds before an unacknowledged message is sent again.
    #[arg(long)]
    resend_interval: Option<u64>,
    /// Milliseconds before a possibly-acknowledged message is sent again.
    #[arg(long)]
    possibly_acked_resend_interval: Option<u64>,
    /// Resends before giving up.
    #[arg(long)]
    max_resend_attempts: Option<u32>,
    /// Bloom hits that acknowledge.
    #[arg(long)]
    possible_ack_threshold: Option<u32>,
    /// Milliseconds between periodic syncs.
    #[arg(long)]
    sync_interval: Option<u64>,
    /// Skip periodic syncs while the channel is busy.
    #[arg(long)]
    quiet_sync: bool,
    /// Rebroadcast a recent message of ours when a member's filter lacks it, at most once per
    /// this many milliseconds (0: never, the default).
    #[arg(long)]
    filter_resend_after: Option<u64>,
    /// Milliseconds before a missing dependency is declared lost (0: never).
    #[arg(long)]
    lost_dependency_timeout: Option<u64>,
    /// Most messages waiting for dependencies.
    #[arg(long)]
    max_incoming_buffer: Option<usize>,
    /// Most bytes of messages waiting for dependencies.
    #[arg(long)]
    max_incoming_buffer_bytes: Option<usize>,
    /// Most unacknowledged own messages.
    #[arg(long)]
    max_outgoing_buffer: Option<usize>,
    /// Ids remembered beyond the log.
    #[arg(long)]
    max_known_ids: Option<usize>,
    /// SDS-R T_min in milliseconds.
    #[arg(long)]
    repair_t_min: Option<u64>,
    /// SDS-R T_max in milliseconds.
    #[arg(long)]
    repair_t_max: Option<u64>,
    /// SDS-R response groups.
    #[arg(long)]
    num_response_groups: Option<u32>,
    /// SDS-R requests per message.
    #[arg(long)]
    max_repair_requests: Option<usize>,
    /// SDS-R buffer size.
    #[arg(long)]
    max_repair_buffer: Option<usize>,
    /// Wire profile: `nim-sds` (default) or `spec` (the @waku/sds layout, filter and SDS-R
    /// arithmetic; enables ephemeral messages).
    #[arg(long)]
    profile: Option<Profile>,
    /// Unit of the lamport clock: `seconds` or `milliseconds` (default: the profile's —
    /// seconds on nim-sds, as nim-sds counts, milliseconds on spec).
    #[arg(long)]
    lamport_unit: Option<LamportUnit>,
}

impl ConfigArgs {
    fn to_config(&self) -> Config {
        let mut c = Config::default();
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = self.$field {
                    c.$field = v;
                }
            )*};
        }
        macro_rules! set_ms {
            ($($field:ident),*) => {$(
                if let Some(v) = self.$field {
                    c.$field = Duration::from_millis(v);
                }
            )*};
        }
        set_ms!(
            resend_interval,
            possibly_acked_resend_interval,
            sync_interval,
            repair_t_min,
            repair_t_max
        );
        set!(
            bloom_capacity,
            bloom_error_rate,
            max_message_history,
            max_causal_history,
            max_resend_attempts,
            possible_ack_threshold,
            max_incoming_buffer,
            max_incoming_buffer_bytes,
            max_outgoing_buffer,
            max_known_ids,
            num_response_groups,
            max_repair_requests,
            max_repair_buffer
        );
        if let Some(p) = self.profile {
            c.profile = p;
        }
        c.lamport_unit = self.lamport_unit;
        c.quiet_sync = self.quiet_sync;
        if let Some(t) = self.filter_resend_after {
            c.filter_resend_after = (t > 0).then(|| Duration::from_millis(t));
        }
        if let Some(t) = self.lost_dependency_timeout {
            c.lost_dependency_timeout = (t > 0).then(|| Duration::from_millis(t));
        }
        c
    }
}

fn text_or_hex(id: impl AsRef<[u8]>) -> Value {
    let id = id.as_ref();
    match std::str::from_utf8(id).ok() {
        Some(s) => Value::String(s.to_string()),
        None => Value::String(format!("hex:{}", hex::encode(id))),
    }
}

fn entry_json(e: &HistoryEntry) -> Value {
    json!({
        "messageId": text_or_hex(&e.message_id),
        "retrievalHint": hex::encode(&e.retrieval_hint),
        "senderId": text_or_hex(&e.sender_id),
    })
}

fn notification_json(n: Notification) -> Value {
    match n {
        Notification::Event(e) => match e {
            Event::MessageReady {
                channel_id,
                message_id,
                sequence,
                ..
            } => {
                json!({"event": "messageReady", "messageId": text_or_hex(&message_id), "channelId": text_or_hex(&channel_id), "sequence": sequence})
            }
            Event::Acknowledged {
                channel_id,
                message_id,
            } => {
                json!({"event": "messageSent", "messageId": text_or_hex(&message_id), "channelId": text_or_hex(&channel_id)})
            }
            Event::PossiblyAcknowledged {
                channel_id,
                message_id,
                count,
            } => {
                json!({"event": "possiblyAcknowledged", "messageId": text_or_hex(&message_id), "channelId": text_or_hex(&channel_id), "count": count})
            }
            Event::MissingDependencies {
                channel_id,
                message_id,
                missing,
            } => {
                json!({"event": "missingDependencies", "messageId": text_or_hex(&message_id), "channelId": text_or_hex(&channel_id), "missingDeps": missing.iter().map(entry_json).collect::<Vec<_>>()})
            }
            Event::MissingMessages {
                channel_id,
                cited_by,
                missing,
            } => {
                json!({"event": "missingMessages", "messageId": text_or_hex(&cited_by), "channelId": text_or_hex(&channel_id), "missingDeps": missing.iter().map(entry_json).collect::<Vec<_>>()})
            }
            Event::SendFailed {
                channel_id,
                message_id,
                reason,
            } => {
                json!({"event": "sendFailed", "messageId": text_or_hex(&message_id), "channelId": text_or_hex(&channel_id), "reason": match reason { SendFailure::RetriesExhausted => "retriesExhausted", SendFailure::BufferFull => "bufferFull", _ => "other" }})
            }
            Event::IrretrievablyLost { channel_id, entry } => {
                json!({"event": "irretrievablyLost", "channelId": text_or_hex(&channel_id), "entry": entry_json(&entry)})
            }
            // Informational: the engine also emits the rebroadcast as a `Repair` transmit, which
            // becomes the `transmit` event drivers broadcast (docs/peer.md); broadcasting this
            // one too would send the repair twice.
            Event::RepairReady {
                channel_id,
                message_id,
                bytes,
            } => {
                json!({"event": "repairReady", "messageId": text_or_hex(&message_id), "channelId": text_or_hex(&channel_id), "message": hex::encode(&bytes)})
            }
            Event::InvalidBloomFilter {
                channel_id,
                message_id,
                error,
            } => {
                json!({"event": "invalidBloomFilter", "messageId": text_or_hex(&message_id), "channelId": text_or_hex(&channel_id), "error": error.to_string()})
            }
            Event::Dropped {
                channel_id,
                message_id,
                reason,
            } => {
                json!({"event": "messageDropped", "messageId": text_or_hex(&message_id), "channelId": text_or_hex(&channel_id), "reason": match reason { DropReason::Expired => "expired", DropReason::Evicted => "evicted", _ => "other" }})
            }
            Event::MessageConflict {
                channel_id,
                message_id,
                sender_id,
            } => {
                json!({"event": "messageConflict", "messageId": text_or_hex(&message_id), "channelId": text_or_hex(&channel_id), "senderId": text_or_hex(&sender_id)})
            }
            Event::Ephemeral {
                channel_id,
                message_id,
                sender_id,
                content,
            } => {
                json!({"event": "ephemeral", "messageId": text_or_hex(&message_id), "channelId": text_or_hex(&channel_id), "senderId": text_or_hex(&sender_id), "content": hex::encode(&content)})
            }
            other => json!({"event": "other", "debug": format!("{other:?}")}),
        },
        // What the driver broadcasts (resends, syncs, repair rebroadcasts), each once.
        Notification::Transmit(t) => json!({
            "event": "transmit",
            "kind": t.kind.as_str(),
            "messageId": text_or_hex(&t.message_id),
            "channelId": text_or_hex(&t.channel_id),
            "bytes": hex::encode(&t.bytes),
        }),
        Notification::TaskError { channel_id, error } => json!({
            "event": "taskError",
            "channelId": text_or_hex(&channel_id),
            "error": error.to_string(),
        }),
        Notification::Lagged { missed } => json!({"event": "lagged", "missed": missed}),
        other => json!({"event": "other", "debug": format!("{other:?}")}),
    }
}

/// A string argument: `-` is empty, `hex:<hex>` raw bytes, anything else its UTF-8 bytes.
fn arg_bytes(s: &str) -> Result<Vec<u8>, String> {
    if s == "-" {
        Ok(Vec::new())
    } else if let Some(h) = s.strip_prefix("hex:") {
        hex::decode(h).map_err(|e| format!("bad hex in {s:?}: {e}"))
    } else {
        Ok(s.as_bytes().to_vec())
    }
}

fn arg_id<T: From<Vec<u8>>>(s: &str) -> Result<T, String> {
    arg_bytes(s).map(T::from)
}

fn hex_arg(s: &str) -> Result<Vec<u8>, String> {
    if s == "-" {
        return Ok(Vec::new());
    }
    hex::decode(s.strip_prefix("hex:").unwrap_or(s)).map_err(|e| format!("bad hex: {e}"))
}

struct Peer {
    manager: ReliabilityManager,
    notifications: sds_manager::Subscription,
    hints: Arc<Mutex<HashMap<MessageId, Bytes>>>,
}

impl Peer {
    fn events(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.notifications.try_recv().ok())
            .map(notification_json)
            .collect()
    }

    /// Runs one command line; `Ok(None)` means quit.
    async fn command(&mut self, line: &str) -> Result<Option<Map<String, Value>>, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let need = |n: usize| -> Result<(), String> {
            if words.len() == n + 1 {
                Ok(())
            } else {
                Err(format!(
                    "{} takes {n} argument(s), got {}",
                    words.first().copied().unwrap_or(""),
                    words.len().saturating_sub(1)
                ))
            }
        };
        let m = &self.manager;
        let err = |e: sds_manager::ManagerError| e.to_string();
        let mut out = Map::new();
        match words.first().copied() {
            None => return Err("empty command".into()),
            Some("quit") => return Ok(None),
            Some("wrap") => {
                need(3)?;
                let bytes = m
                    .wrap_outgoing_message(
                        hex_arg(words[3])?,
                        arg_id::<MessageId>(words[2])?,
                        arg_id::<ChannelId>(words[1])?,
                    )
                    .await
                    .map_err(err)?;
                out.insert("bytes".into(), json!(hex::encode(&bytes)));
            }
            Some("ephemeral") => {
                need(3)?;
                let bytes = m
                    .wrap_ephemeral_message(
                        hex_arg(words[3])?,
                        arg_id::<MessageId>(words[2])?,
                        arg_id::<ChannelId>(words[1])?,
                    )
                    .map_err(err)?;
                out.insert("bytes".into(), json!(hex::encode(&bytes)));
            }
            Some("unwrap") => {
                need(1)?;
                let r = m
                    .unwrap_received_message(hex_arg(words[1])?)
                    .await
                    .map_err(err)?;
                out.insert("content".into(), json!(hex::encode(&r.content)));
                out.insert(
                    "missingDeps".into(),
                    Value::Array(r.missing_dependencies.iter().map(entry_json).collect()),
                );
                out.insert("channelId".into(), text_or_hex(&r.channel_id));
                out.insert("messageId".into(), text_or_hex(&r.message_id));
                out.insert("kind".into(), json!(format!("{:?}", r.kind).to_lowercase()));
            }
            Some("markmet") => {
                need(2)?;
                let ids = words[2]
                    .split(',')
                    .map(arg_id)
                    .collect::<Result<Vec<_>, _>>()?;
                m.mark_dependencies_met(&ids, arg_id::<ChannelId>(words[1])?)
                    .await
                    .map_err(err)?;
            }
            Some("history") => {
                need(1)?;
                let log = m
                    .get_log(arg_id::<ChannelId>(words[1])?)
                    .await
                    .map_err(err)?;
                out.insert(
                    "history".into(),
                    Value::Array(log.iter().map(|e| text_or_hex(&e.message_id)).collect()),
                );
            }
            Some("log") => {
                if words.len() != 4 {
                    need(2)?;
                }
                let after: u64 = words[2]
                    .parse()
                    .map_err(|_| format!("not a sequence number: {}", words[2]))?;
                let limit = match words.get(3) {
                    Some(w) => w.parse().map_err(|_| format!("not a count: {w}"))?,
                    None => 1_000,
                };
                let log = m
                    .read_log(arg_id::<ChannelId>(words[1])?, after, limit)
                    .await
                    .map_err(err)?;
                let messages = log.iter().map(|e| {
                    json!({
                        "sequence": e.sequence,
                        "messageId": text_or_hex(&e.message_id),
                        "senderId": text_or_hex(&e.sender_id),
                        "lamport": e.lamport_timestamp,
                        "content": hex::encode(&e.content),
                    })
                });
                out.insert("messages".into(), Value::Array(messages.collect()));
            }
            Some("state") => {
                need(1)?;
                let s = m
                    .snapshot(arg_id::<ChannelId>(words[1])?)
                    .await
                    .map_err(err)?;
                out.insert("lamport".into(), json!(s.lamport));
                out.insert(
                    "history".into(),
                    Value::Array(s.log.iter().map(|e| text_or_hex(&e.message_id)).collect()),
                );
                out.insert(
                    "outgoing".into(),
                    Value::Array(
                        s.outgoing
                            .iter()
                            .map(|e| json!({"messageId": text_or_hex(&e.message_id), "attempts": e.attempts, "possibleAcks": e.possible_acks}))
                            .collect(),
                    ),
                );
                out.insert(
                    "incoming".into(),
                    Value::Array(
                        s.incoming
                            .iter()
                            .map(|e| json!({"messageId": text_or_hex(&e.message_id), "missingDeps": e.missing.iter().map(entry_json).collect::<Vec<_>>()}))
                            .collect(),
                    ),
                );
                out.insert(
                    "outgoingRepair".into(),
                    Value::Array(
                        s.outgoing_repair
                            .iter()
                            .map(|e| json!({"entry": entry_json(&e.entry), "tReq": e.t_req}))
                            .collect(),
                    ),
                );
                out.insert(
                    "incomingRepair".into(),
                    Value::Array(
                        s.incoming_repair
                            .iter()
                            .map(|e| json!({"entry": entry_json(&e.entry), "tResp": e.t_resp}))
                            .collect(),
                    ),
                );
            }
            Some("ensure") => {
                need(1)?;
                m.ensure_channel(arg_id::<ChannelId>(words[1])?)
                    .await
                    .map_err(err)?;
            }
            Some("remove") => {
                need(1)?;
                m.remove_channel(arg_id::<ChannelId>(words[1])?)
                    .await
                    .map_err(err)?;
            }
            Some("reset") => {
                need(0)?;
                m.reset().await.map_err(err)?;
            }
            Some("sweep") => {
                need(0)?;
                m.run_due_work().await;
            }
            Some("hint") => {
                need(2)?;
                let hint = Bytes::from(hex_arg(words[2])?);
                self.hints
                    .lock()
                    .map_err(|_| "hint table unavailable".to_string())?
                    .insert(arg_id(words[1])?, hint);
            }
            Some("sync") => {
                need(1)?;
                let bytes = m
                    .sync_message(arg_id::<ChannelId>(words[1])?)
                    .await
                    .map_err(err)?;
                out.insert(
                    "bytes".into(),
                    bytes.map(|b| json!(hex::encode(&b))).unwrap_or(Value::Null),
                );
            }
            Some(other) => return Err(format!("unknown command {other:?}")),
        }
        Ok(Some(out))
    }
}

/// The default store of a peer: `sds-peer-<participant>.db` in the working directory (characters
/// other than letters, digits, `.`, `_` and `-` become `_`; no participant: `sds-peer.db`).
fn default_store(participant: &str) -> String {
    if participant.is_empty() {
        return "sqlite:sds-peer.db".into();
    }
    let name: String = participant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("sqlite:sds-peer-{name}.db")
}

/// Every file and directory an SQLite store keeps: the database, SQLite's `-wal` and `-shm`
/// beside it, and the directory of message bytes.
fn sqlite_paths(db: &SqliteStore) -> Vec<PathBuf> {
    let file = |suffix: &str| {
        let mut p = db.path().as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    vec![
        db.path().to_path_buf(),
        file("-wal"),
        file("-shm"),
        db.messages_dir(),
    ]
}

/// One line of input.
enum Line {
    Text(String),
    /// Over the limit: its length (read and dropped).
    TooLong(usize),
    NotUtf8,
}

/// Reads one line of at most `max` bytes; a longer one is consumed without being kept.
/// `None` at the end of input.
fn read_line(input: &mut impl BufRead, max: usize) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            if !any {
                return Ok(None);
            }
            break;
        }
        any = true;
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        total = total.saturating_add(chunk.len());
        if total <= max {
            line.extend_from_slice(chunk);
        } else if !line.is_empty() {
            line = Vec::new();
        }
        let used = done.unwrap_or(buf.len());
        input.consume(used);
        if done.is_some() {
            break;
        }
    }
    if total > max {
        return Ok(Some(Line::TooLong(total)));
    }
    Ok(Some(match String::from_utf8(line) {
        Ok(text) => Line::Text(text),
        Err(_) => Line::NotUtf8,
    }))
}

pub(crate) fn run(args: PeerArgs) -> CmdResult {
    if let Some(addr) = args.metrics {
        // Outside any runtime: the exporter serves from a thread of its own, also while the
        // peer waits for its next line.
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| format!("--metrics {addr}: {e}"))?;
        eprintln!("sds peer: metrics at http://{addr}/metrics");
    }
    let store = match &args.store {
        Some(s) => s.clone(),
        None => {
            eprintln!(
                "sds peer: no --store given: state is kept in the working directory and resumed \
                 by the next run there (--store none keeps nothing)"
            );
            default_store(&args.participant)
        }
    };
    // The store as the ready line names it, and the files it keeps.
    let (persistence, store, paths): (Arc<dyn Persistence>, String, Vec<PathBuf>) =
        match store.as_str() {
            "none" => (Arc::new(NoopPersistence), store, Vec::new()),
            "memory" => (Arc::new(MemoryPersistence::new()), store, Vec::new()),
            other => match other.strip_prefix("sqlite:") {
                Some(path) if !path.is_empty() => {
                    let durability = match args.durability {
                        DurabilityArg::Normal => Durability::Normal,
                        DurabilityArg::Full => Durability::Full,
                    };
                    let options = Options {
                        durability,
                        key: key_from_file(args.key_file.as_deref())?,
                        ..Options::default()
                    };
                    let db =
                        SqliteStore::open_with_options(path, options).map_err(|e| e.to_string())?;
                    let paths = sqlite_paths(&db);
                    let name = format!("sqlite:{}", db.path().display());
                    (Arc::new(db), name, paths)
                }
                _ => {
                    return Err(format!(
                        "unknown store {other:?} (expected none, memory or sqlite:PATH)"
                    ))
                }
            },
        };
    let config = ManagerConfig::default()
        .with_engine(args.config.to_config())
        // A driver may feed any channel: received messages open channels, bounded apart from
        // the ones this peer sends on.
        .with_unjoined_channels(UnjoinedChannels::Accept { max: 256 });
    let manager = ReliabilityManager::new(args.participant.as_str(), config, persistence)
        .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let hints: Arc<Mutex<HashMap<MessageId, Bytes>>> = Arc::default();
        let table = hints.clone();
        manager
            .set_retrieval_hint_provider(Some(Arc::new(move |id: &MessageId| {
                table.lock().ok().and_then(|t| t.get(id).cloned())
            })))
            .await;
        // Read after every command; large enough for the largest burst of one operation.
        let notifications = manager.subscribe_with_capacity(1 << 20);
        if args.periodic {
            manager.start_periodic_tasks().await;
        }
        // The store is open and commands are read from here on (docs/peer.md).
        eprintln!(
            "sds peer: ready {}",
            json!({"participant": args.participant, "store": store, "paths": paths})
        );
        let mut peer = Peer {
            manager,
            notifications,
            hints,
        };
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let stdout = std::io::stdout();
        loop {
            let line = read_line(&mut input, args.max_line_bytes)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            let reply = match line {
                None => break,
                // A bad line gets an error reply; the peer goes on with the next one.
                Some(Line::TooLong(n)) => json!({
                    "ok": false,
                    "error": format!("line too long: {n} bytes, limit {} (--max-line-bytes)", args.max_line_bytes),
                    "events": peer.events(),
                }),
                Some(Line::NotUtf8) => json!({
                    "ok": false,
                    "error": "line is not UTF-8 (arguments take hex: for raw bytes)",
                    "events": peer.events(),
                }),
                Some(Line::Text(line)) if line.trim().is_empty() => continue,
                Some(Line::Text(line)) => match peer.command(line.trim()).await {
                    Ok(None) => break,
                    Ok(Some(mut fields)) => {
                        fields.insert("ok".into(), json!(true));
                        fields.insert("events".into(), Value::Array(peer.events()));
                        Value::Object(fields)
                    }
                    Err(e) => json!({"ok": false, "error": e, "events": peer.events()}),
                },
            };
            let mut lock = stdout.lock();
            writeln!(lock, "{reply}").map_err(|e| format!("cannot write stdout: {e}"))?;
            lock.flush()
                .map_err(|e| format!("cannot write stdout: {e}"))?;
        }
        peer.manager.cleanup().await;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut r = std::io::BufReader::with_capacity(4, input);
        std::iter::from_fn(|| read_line(&mut r, max).unwrap())
            .map(|l| match l {
                Line::Text(t) => format!("text {t:?}"),
                Line::TooLong(n) => format!("too long {n}"),
                Line::NotUtf8 => "not utf-8".to_string(),
            })
            .collect()
    }

    #[test]
    fn lines_are_bounded_and_checked_and_reading_goes_on_after_a_bad_one() {
        assert_eq!(
            lines(b"state\n\nabcdefghijk\nwrap\xff\nlast", 8),
            [
                "text \"state\"",
                "text \"\"",
                "too long 11",
                "not utf-8",
                "text \"last\""
            ]
        );
        assert!(lines(b"", 8).is_empty());
    }
}
