//! Power loss: what survives when the machine stops, not only the process.
//!
//! A SIGKILL (crash.rs) leaves the page cache to the kernel, which still writes it out; power
//! loss drops whatever was not synced. Here a child process (this test binary, running the
//! ignored `powerloss_child` test) runs a workload against a store with a recording library
//! preloaded (`powerloss/record.c`, built with the system C compiler): every write, truncation,
//! fsync, creation, rename and removal of the store's files is logged, with the bytes, and so
//! is each operation the store acknowledged. From the log the test rebuilds states a power loss
//! could leave behind: the files as of a point in the log, where the writes made since a file's
//! last completed fsync may each be kept, lost, or kept in part (pages written back in any
//! order, sectors torn), and names created, renamed or removed since their directory's last
//! completed fsync may be lost (in order). The store is opened on each state and must show:
//!
//! * with `FULL`, every acknowledged operation, and nothing damaged;
//! * with `NORMAL`, the state after some prefix of the operations (none half-applied) that
//!   includes every operation acknowledged before the last completed sync of the WAL; messages
//!   whose rows survived without their bytes are reported (`OpenError::Damaged`, or a failed
//!   load), and with quarantine exactly those are left out; and such loss is allowed only for
//!   messages acknowledged after their segment file's last completed sync and after the last
//!   sync round of the store gone quiet (the WAL emptied).
//!
//! The first state of the log is an empty directory. Crash points are taken around every fsync
//! and acknowledgement and at random, each with the synced state alone, with everything
//! written, and with a random mix. `power_loss_long` (ignored) checks many more. A failing
//! state can be kept for a look with `SDS_PL_KEEP=<full|normal>-<state number>`.

#![cfg(target_os = "linux")]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sds_manager::persistence::Persistence;
use sds_manager::{
    Bytes, ChannelId, ChannelSnapshot, IncomingEntry, IncomingRepairEntry, LogEntry,
    MemoryPersistence, MessageId, OutgoingEntry, StoreOp,
};
use sds_sqlite::{DamagedMessage, Durability, OnDamage, OpenError, Options, SqliteStore, StoreKey};

/// splitmix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------
// The workload: the same in the child, which runs it on the store, and in the test, which runs
// it on the in-memory store to know the state after each operation.

/// One store call.
#[derive(Debug, Clone)]
enum Step {
    Batch(ChannelId, Vec<StoreOp>),
    Drop(ChannelId),
}

/// A message of a size drawn from: inline (under 1 KiB), small (1–4 KiB), a default-settings
/// message (~19 KB).
fn message(rng: &mut u64, id: &str) -> Bytes {
    let len = match next(rng) % 6 {
        0 => 100 + next(rng) % 800,
        1..=3 => 1025 + next(rng) % 3000,
        _ => 18_000 + next(rng) % 2000,
    } as usize;
    let mut seed = id
        .bytes()
        .fold(len as u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    Bytes::from((0..len).map(|_| next(&mut seed) as u8).collect::<Vec<u8>>())
}

fn log_entry(id: &str, lamport: i64, bytes: &Bytes) -> LogEntry {
    LogEntry {
        message_id: id.into(),
        lamport_timestamp: lamport,
        sender_id: "alice".into(),
        retrieval_hint: Bytes::from_static(b"hint"),
        bytes: bytes.clone(),
        // The order of arrival follows the lamport clock in this workload.
        arrival: lamport.max(0) as u64,
    }
}

/// `n` store calls on channels "c" and "d" like those of a chat: sends (log, outgoing, clock in
/// one batch), acknowledgements, receipts out of order and their later delivery (one batch),
/// evictions from the log, repair entries, and a scratch channel filled and dropped.
fn workload(n: usize, seed: u64) -> Vec<Step> {
    let mut rng = seed;
    let c: ChannelId = "c".into();
    let d: ChannelId = "d".into();
    let mut lamport = 0i64;
    let mut bytes: HashMap<String, Bytes> = HashMap::new();
    let mut logged: Vec<String> = Vec::new();
    let mut outgoing: Vec<String> = Vec::new();
    let mut incoming: Vec<String> = Vec::new();
    let mut repair: Vec<String> = Vec::new();
    let mut scratch = 0;
    let mut steps = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("m{i}");
        let step = match next(&mut rng) % 10 {
            0..=2 => {
                let b = message(&mut rng, &id);
                lamport += 1;
                bytes.insert(id.clone(), b.clone());
                logged.push(id.clone());
                outgoing.push(id.clone());
                let mut ops = vec![
                    StoreOp::SaveLamport(lamport),
                    StoreOp::AppendLogEntry(log_entry(&id, lamport, &b)),
                    StoreOp::SaveOutgoing(OutgoingEntry {
                        message_id: id.as_str().into(),
                        bytes: b,
                        send_time: 1_000 + i as u64,
                        attempts: 0,
                        possible_acks: 0,
                    }),
                ];
                // A bounded history: the oldest entry leaves the log in the same batch.
                if logged.len() > 10 {
                    ops.push(StoreOp::RemoveLogEntry(logged.remove(0).as_str().into()));
                }
                Step::Batch(c.clone(), ops)
            }
            3 => {
                let b = message(&mut rng, &id);
                bytes.insert(id.clone(), b.clone());
                incoming.push(id.clone());
                let entry = IncomingEntry {
                    message_id: id.as_str().into(),
                    bytes: b,
                    missing: vec![sds_manager::HistoryEntry::new("elsewhere")],
                    received_at: 2_000 + i as u64,
                };
                Step::Batch(c.clone(), vec![StoreOp::SaveIncoming(entry)])
            }
            4 if !incoming.is_empty() => {
                let id = incoming.remove((next(&mut rng) % incoming.len() as u64) as usize);
                lamport += 1;
                logged.push(id.clone());
                let ops = vec![
                    StoreOp::RemoveIncoming(id.as_str().into()),
                    StoreOp::AppendLogEntry(log_entry(&id, lamport, &bytes[&id])),
                    StoreOp::SaveLamport(lamport),
                ];
                Step::Batch(c.clone(), ops)
            }
            5 | 6 if outgoing.len() > 2 => {
                let id = outgoing.remove((next(&mut rng) % outgoing.len() as u64) as usize);
                Step::Batch(c.clone(), vec![StoreOp::RemoveOutgoing(id.as_str().into())])
            }
            6 if logged.len() > 4 => {
                let id = logged.remove(0);
                Step::Batch(c.clone(), vec![StoreOp::RemoveLogEntry(id.as_str().into())])
            }
            7 if scratch >= 4 => {
                scratch = 0;
                Step::Drop(d.clone())
            }
            7 => {
                scratch += 1;
                let b = message(&mut rng, &id);
                let ops = vec![
                    StoreOp::AppendLogEntry(log_entry(&id, 1, &b)),
                    StoreOp::SaveOutgoing(OutgoingEntry {
                        message_id: id.as_str().into(),
                        bytes: b,
                        send_time: 3_000,
                        attempts: 1,
                        possible_acks: 0,
                    }),
                ];
                Step::Batch(d.clone(), ops)
            }
            8 if repair.len() > 3 || !repair.is_empty() && next(&mut rng).is_multiple_of(2) => {
                let id = repair.remove(0);
                Step::Batch(
                    c.clone(),
                    vec![StoreOp::RemoveIncomingRepair(id.as_str().into())],
                )
            }
            8 if !logged.is_empty() => {
                let id = logged[(next(&mut rng) % logged.len() as u64) as usize].clone();
                if repair.contains(&id) {
                    lamport += 1;
                    Step::Batch(c.clone(), vec![StoreOp::SaveLamport(lamport)])
                } else {
                    repair.push(id.clone());
                    let entry = IncomingRepairEntry {
                        entry: sds_manager::HistoryEntry::new(id.as_str()),
                        bytes: bytes[&id].clone(),
                        t_resp: 5_000 + i as u64,
                    };
                    Step::Batch(c.clone(), vec![StoreOp::SaveIncomingRepair(entry)])
                }
            }
            _ => {
                lamport += 1;
                Step::Batch(c.clone(), vec![StoreOp::SaveLamport(lamport)])
            }
        };
        steps.push(step);
    }
    steps
}

/// The operation that first stored each message's bytes, by (channel, id).
fn stored_by(steps: &[Step]) -> HashMap<(Vec<u8>, Vec<u8>), usize> {
    let mut first = HashMap::new();
    for (k, step) in steps.iter().enumerate() {
        let Step::Batch(c, ops) = step else { continue };
        for op in ops {
            let id = match op {
                StoreOp::AppendLogEntry(e) => &e.message_id,
                StoreOp::SaveOutgoing(e) => &e.message_id,
                StoreOp::SaveIncoming(e) => &e.message_id,
                StoreOp::SaveIncomingRepair(e) => &e.entry.message_id,
                _ => continue,
            };
            first
                .entry((c.as_bytes().to_vec(), id.as_bytes().to_vec()))
                .or_insert(k);
        }
    }
    first
}

async fn run_step<P: Persistence + ?Sized>(store: &P, step: &Step) {
    let result = match step {
        Step::Batch(c, ops) => store.apply_batch(c, ops).await,
        Step::Drop(c) => store.drop_channel(c).await,
    };
    if let Err(e) = result {
        panic!("{step:?}: {e}");
    }
}

/// Operations between two pauses of the child: long enough for the store's sync interval to
/// pass, so the idle-time sync is exercised too.
const PAUSE_EVERY: usize = 25;

/// The store's options. Built with the crate feature `encryption`, the stores are encrypted
/// (SQLCipher pages, sealed segment records), so the same states are checked through both.
fn options(durability: Durability) -> Options {
    Options {
        durability,
        // Segments of a few messages: they rotate, empty, become the spare and get compacted.
        segment_bytes: 32 * 1024,
        sync_interval: Duration::from_millis(20),
        key: cfg!(feature = "encryption").then(|| StoreKey::new([5u8; 32]).unwrap()),
        ..Options::default()
    }
}

fn durability_named(name: &str) -> Durability {
    if name == "full" {
        Durability::Full
    } else {
        Durability::Normal
    }
}

/// The child: runs the workload on the store at `$SDS_PL_ROOT/sds.db` and acknowledges each
/// operation by a write to `$SDS_PL_ROOT/ACKS` once it has returned.
#[test]
#[ignore = "run by the power-loss tests in a child process"]
fn powerloss_child() {
    let Ok(root) = std::env::var("SDS_PL_ROOT") else {
        return;
    };
    let root = PathBuf::from(root);
    let durability = durability_named(&std::env::var("SDS_PL_MODE").unwrap_or_default());
    let n: usize = std::env::var("SDS_PL_OPS").unwrap().parse().unwrap();
    let seed: u64 = std::env::var("SDS_PL_SEED").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut acks = std::fs::File::create(root.join("ACKS")).unwrap();
        let db = root.join("sds.db");
        let mut store = SqliteStore::open_with_options(&db, options(durability)).unwrap();
        for (k, step) in workload(n, seed).iter().enumerate() {
            if k == n / 2 {
                // Closed and opened again: the paths of an existing store are recorded too.
                drop(store);
                wait_closed(&db).await;
                store = SqliteStore::open_with_options(&db, options(durability)).unwrap();
            }
            run_step(&store, step).await;
            acks.write_all(format!("{k}\n").as_bytes()).unwrap();
            if k % PAUSE_EVERY == PAUSE_EVERY - 1 {
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        }
        drop(store);
        wait_closed(&root.join("sds.db")).await;
    });
}

/// Waits until the store at `db` has closed (its last connection folds the WAL in and removes
/// it).
async fn wait_closed(db: &Path) {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    for _ in 0..1000 {
        if !wal.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the store at {} did not close", db.display());
}

// ---------------------------------------------------------------------------------------------
// The log.

#[derive(Debug, Clone)]
enum Ev {
    Create {
        ino: u64,
        path: String,
    },
    Mkdir(String),
    Rmdir(String),
    Unlink(String),
    Rename {
        ino: u64,
        from: String,
        to: String,
    },
    Trunc {
        ino: u64,
        len: u64,
    },
    Write {
        ino: u64,
        off: u64,
        data: Range<usize>,
    },
    SyncFile {
        seq: u64,
        ino: u64,
    },
    SyncDir {
        seq: u64,
        path: String,
    },
    SyncEnd {
        seq: u64,
    },
}

fn parse(log: &[u8]) -> Vec<Ev> {
    let mut events = Vec::new();
    let mut at = 0;
    while at < log.len() {
        let end = at
            + log[at..]
                .iter()
                .position(|&b| b == b'\n')
                .expect("line end");
        let line = std::str::from_utf8(&log[at..end]).expect("utf-8 record");
        at = end + 1;
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| -> u64 { f[i].parse().expect("number") };
        let path = |i: usize| -> String {
            if f[i] == "." {
                String::new()
            } else {
                f[i].to_string()
            }
        };
        events.push(match f[0] {
            "C" => Ev::Create {
                ino: num(1),
                path: path(2),
            },
            "M" => Ev::Mkdir(path(1)),
            "D" => Ev::Rmdir(path(1)),
            "U" => Ev::Unlink(path(1)),
            "R" => Ev::Rename {
                ino: num(1),
                from: path(2),
                to: path(3),
            },
            "T" => Ev::Trunc {
                ino: num(1),
                len: num(2),
            },
            "W" => {
                let len = num(3) as usize;
                let data = at..at + len;
                at += len;
                Ev::Write {
                    ino: num(1),
                    off: num(2),
                    data,
                }
            }
            "S" if f[2] == "f" => Ev::SyncFile {
                seq: num(1),
                ino: num(3),
            },
            "S" => Ev::SyncDir {
                seq: num(1),
                path: path(3),
            },
            "E" => Ev::SyncEnd { seq: num(1) },
            other => panic!("unknown record {other}"),
        });
    }
    events
}

// ---------------------------------------------------------------------------------------------
// Crash states.

#[derive(Debug, Clone)]
enum FileOp {
    Write { off: u64, data: Range<usize> },
    Trunc(u64),
}

fn apply(content: &mut Vec<u8>, op: &FileOp, log: &[u8]) {
    match op {
        FileOp::Write { off, data } => {
            let off = *off as usize;
            let end = off + data.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[off..end].copy_from_slice(&log[data.clone()]);
        }
        FileOp::Trunc(len) => content.resize(*len as usize, 0),
    }
}

/// A file as the disk may hold it: what its last completed fsync covered, and what came since.
#[derive(Debug, Default, Clone)]
struct FileModel {
    durable: Vec<u8>,
    pending: Vec<(usize, FileOp)>,
}

#[derive(Debug, Clone)]
enum NsKind {
    Link { path: String, file: usize },
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
}

/// A change of names, in the directory `dir`.
#[derive(Debug, Clone)]
struct NsOp {
    at: usize,
    dir: String,
    kind: NsKind,
    durable: bool,
}

fn parent(path: &str) -> String {
    path.rsplit_once('/')
        .map(|(d, _)| d.to_string())
        .unwrap_or_default()
}

/// Everything known at one point of the log.
#[derive(Default)]
struct Replay {
    files: Vec<FileModel>,
    names: Vec<String>,
    by_ino: HashMap<u64, usize>,
    ns: Vec<NsOp>,
    syncs: HashMap<u64, (usize, Ev)>,
    acks: Vec<usize>,
    /// Where the last completed fsync of a WAL started.
    wal_synced_at: usize,
    /// Where the WAL was last emptied (by the checkpoint of a quiet store's sync round, which
    /// syncs the message files first).
    wal_emptied_at: Option<usize>,
    /// The file each name was last given to.
    by_name: HashMap<String, usize>,
    /// Per file, where its last completed fsync started.
    synced_at: Vec<Option<usize>>,
}

impl Replay {
    fn step(&mut self, at: usize, ev: &Ev, log: &[u8]) {
        match ev {
            Ev::Create { ino, path } => {
                let file = self.files.len();
                self.files.push(FileModel::default());
                self.synced_at.push(None);
                self.names.push(path.clone());
                self.by_ino.insert(*ino, file);
                self.push_ns(
                    at,
                    NsKind::Link {
                        path: path.clone(),
                        file,
                    },
                );
            }
            Ev::Mkdir(p) => self.push_ns(at, NsKind::Mkdir(p.clone())),
            Ev::Rmdir(p) => self.push_ns(at, NsKind::Rmdir(p.clone())),
            Ev::Unlink(p) => self.push_ns(at, NsKind::Unlink(p.clone())),
            Ev::Rename { ino, from, to } => {
                if let Some(&file) = self.by_ino.get(ino) {
                    self.push_ns(
                        at,
                        NsKind::Link {
                            path: to.clone(),
                            file,
                        },
                    );
                }
                self.push_ns(at, NsKind::Unlink(from.clone()));
            }
            Ev::Trunc { ino, len } => {
                if let Some(&f) = self.by_ino.get(ino) {
                    self.files[f].pending.push((at, FileOp::Trunc(*len)));
                    if *len == 0 && self.names[f].ends_with("-wal") {
                        self.wal_emptied_at = Some(at);
                    }
                }
            }
            Ev::Write { ino, off, data } => {
                if let Some(&f) = self.by_ino.get(ino) {
                    if self.names[f] == "ACKS" {
                        self.acks.push(at);
                    } else {
                        let op = FileOp::Write {
                            off: *off,
                            data: data.clone(),
                        };
                        self.files[f].pending.push((at, op));
                    }
                }
            }
            Ev::SyncFile { seq, .. } | Ev::SyncDir { seq, .. } => {
                self.syncs.insert(*seq, (at, ev.clone()));
            }
            Ev::SyncEnd { seq } => {
                let Some((began, what)) = self.syncs.remove(seq) else {
                    return;
                };
                match what {
                    Ev::SyncFile { ino, .. } => {
                        let Some(&f) = self.by_ino.get(&ino) else {
                            return;
                        };
                        let file = &mut self.files[f];
                        let covered = file.pending.iter().take_while(|(a, _)| *a < began).count();
                        for (_, op) in file.pending.drain(..covered) {
                            apply(&mut file.durable, &op, log);
                        }
                        self.synced_at[f] = Some(began);
                        if self.names[f].ends_with("-wal") {
                            self.wal_synced_at = self.wal_synced_at.max(began);
                        }
                    }
                    Ev::SyncDir { path, .. } => {
                        for op in self.ns.iter_mut() {
                            if op.at < began && op.dir == path {
                                op.durable = true;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn push_ns(&mut self, at: usize, kind: NsKind) {
        let path = match &kind {
            NsKind::Link { path, .. } | NsKind::Unlink(path) => path,
            NsKind::Mkdir(path) | NsKind::Rmdir(path) => path,
        };
        let dir = parent(path);
        if let NsKind::Link { path, file } = &kind {
            self.by_name.insert(path.clone(), *file);
        }
        self.ns.push(NsOp {
            at,
            dir,
            kind,
            durable: false,
        });
    }
}

/// How the writes since the last syncs are treated in one crash state.
#[derive(Debug, Clone, Copy)]
enum Variant {
    /// All lost.
    Synced,
    /// All kept (what a process crash leaves).
    Everything,
    /// Per file: a prefix of the writes with the next one torn at sector granularity, or any
    /// subset of the pages written and the changes of size, applied in order; a prefix of the
    /// unsynced name changes.
    Mixed(u64),
}

const PAGE: usize = 4096;
const SECTOR: usize = 512;

fn file_content(file: &FileModel, variant: Variant, rng: &mut u64, log: &[u8]) -> Vec<u8> {
    let mut content = file.durable.clone();
    match variant {
        Variant::Synced => {}
        Variant::Everything => {
            for (_, op) in &file.pending {
                apply(&mut content, op, log);
            }
        }
        Variant::Mixed(_) if file.pending.is_empty() => {}
        Variant::Mixed(_) => match next(rng) % 3 {
            0 => {
                let kept = (next(rng) % (file.pending.len() as u64 + 1)) as usize;
                for (_, op) in &file.pending[..kept] {
                    apply(&mut content, op, log);
                }
                // The next write, torn: some of its sectors made it.
                if let Some((_, FileOp::Write { off, data })) = file.pending.get(kept) {
                    let off = *off as usize;
                    let mut s = off / SECTOR * SECTOR;
                    while s < off + data.len() {
                        let (lo, hi) = (s.max(off), (s + SECTOR).min(off + data.len()));
                        if next(rng).is_multiple_of(2) {
                            if content.len() < hi {
                                content.resize(hi, 0);
                            }
                            let from = data.start + (lo - off);
                            content[lo..hi].copy_from_slice(&log[from..from + (hi - lo)]);
                        }
                        s += SECTOR;
                    }
                }
            }
            1 => {
                // Pages written back in any order: each page of each write kept or lost, each
                // change of size kept or lost, what is kept applied in order.
                for (_, op) in &file.pending {
                    match op {
                        FileOp::Trunc(_) => {
                            if next(rng).is_multiple_of(2) {
                                apply(&mut content, op, log);
                            }
                        }
                        FileOp::Write { off, data } => {
                            let mut at = *off as usize;
                            let end = at + data.len();
                            while at < end {
                                let page_end = ((at / PAGE + 1) * PAGE).min(end);
                                if next(rng).is_multiple_of(2) {
                                    let from = data.start + (at - *off as usize);
                                    let part = FileOp::Write {
                                        off: at as u64,
                                        data: from..from + (page_end - at),
                                    };
                                    apply(&mut content, &part, log);
                                }
                                at = page_end;
                            }
                        }
                    }
                }
            }
            _ => {
                for (_, op) in &file.pending {
                    apply(&mut content, op, log);
                }
            }
        },
    }
    content
}

/// Writes the crash state into `dir`; returns how many writes and name changes were left out.
fn materialize(replay: &Replay, variant: Variant, dir: &Path, log: &[u8]) -> usize {
    let mut rng = match variant {
        Variant::Mixed(seed) => seed,
        _ => 0,
    };
    let pending: Vec<usize> = (0..replay.ns.len())
        .filter(|&i| !replay.ns[i].durable)
        .collect();
    let keep_pending = match variant {
        Variant::Synced => 0,
        Variant::Everything => pending.len(),
        Variant::Mixed(_) => (next(&mut rng) % (pending.len() as u64 + 1)) as usize,
    };
    let mut names: BTreeMap<String, Option<usize>> = BTreeMap::new();
    let mut dropped = 0;
    for (i, op) in replay.ns.iter().enumerate() {
        let kept = op.durable || pending[..keep_pending].contains(&i);
        if !kept {
            dropped += 1;
            continue;
        }
        match &op.kind {
            NsKind::Link { path, file } => {
                names.insert(path.clone(), Some(*file));
            }
            NsKind::Mkdir(p) => {
                names.insert(p.clone(), None);
            }
            NsKind::Unlink(p) | NsKind::Rmdir(p) => {
                names.remove(p);
            }
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    let mut contents: HashMap<usize, Vec<u8>> = HashMap::new();
    for (path, node) in &names {
        if path == "ACKS" {
            continue;
        }
        let target = dir.join(path);
        if !target.parent().is_some_and(|p| p.is_dir()) {
            // Its directory's own name did not survive.
            continue;
        }
        match node {
            None => std::fs::create_dir(&target).unwrap(),
            Some(f) => {
                let content = contents
                    .entry(*f)
                    .or_insert_with(|| file_content(&replay.files[*f], variant, &mut rng, log));
                std::fs::write(&target, content).unwrap();
            }
        }
    }
    dropped
}

// ---------------------------------------------------------------------------------------------
// Checking a state.

const CHANNELS: [&str; 2] = ["c", "d"];

/// A channel's snapshot in a canonical order.
fn canonical(mut s: ChannelSnapshot) -> ChannelSnapshot {
    s.log.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    s.outgoing.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    s.incoming.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    s.outgoing_repair
        .sort_by(|a, b| a.entry.message_id.cmp(&b.entry.message_id));
    s.incoming_repair
        .sort_by(|a, b| a.entry.message_id.cmp(&b.entry.message_id));
    s
}

type State = Vec<ChannelSnapshot>;

/// The state after each prefix of the workload, from the in-memory store.
async fn expected_states(steps: &[Step]) -> Vec<State> {
    let memory = MemoryPersistence::new();
    let mut states = Vec::with_capacity(steps.len() + 1);
    let snapshot = |m: MemoryPersistence| async move {
        let mut state = Vec::new();
        for c in CHANNELS {
            state.push(canonical(m.load_channel(&c.into()).await.unwrap()));
        }
        state
    };
    states.push(snapshot(memory.clone()).await);
    for step in steps {
        run_step(&memory, step).await;
        states.push(snapshot(memory.clone()).await);
    }
    states
}

/// `state` without the entries of the messages in `lost` (channel, id).
fn without(state: &State, lost: &[(ChannelId, MessageId)]) -> State {
    let mut state = state.clone();
    for (c, s) in CHANNELS.iter().zip(state.iter_mut()) {
        let gone = |id: &MessageId| {
            lost.iter()
                .any(|(lc, li)| lc.as_bytes() == c.as_bytes() && li == id)
        };
        s.log.retain(|e| !gone(&e.message_id));
        s.outgoing.retain(|e| !gone(&e.message_id));
        s.incoming.retain(|e| !gone(&e.message_id));
        s.incoming_repair.retain(|e| !gone(&e.entry.message_id));
    }
    state
}

/// What differs between two states, briefly.
fn difference(got: &State, want: &State) -> String {
    let mut out = Vec::new();
    for (c, (g, w)) in CHANNELS.iter().zip(got.iter().zip(want)) {
        let ids = |v: Vec<&MessageId>| {
            v.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        if g.lamport != w.lamport {
            out.push(format!("{c}: lamport {:?} for {:?}", g.lamport, w.lamport));
        }
        let lists = [
            (
                "log",
                ids(g.log.iter().map(|e| &e.message_id).collect()),
                ids(w.log.iter().map(|e| &e.message_id).collect()),
            ),
            (
                "outgoing",
                ids(g.outgoing.iter().map(|e| &e.message_id).collect()),
                ids(w.outgoing.iter().map(|e| &e.message_id).collect()),
            ),
            (
                "incoming",
                ids(g.incoming.iter().map(|e| &e.message_id).collect()),
                ids(w.incoming.iter().map(|e| &e.message_id).collect()),
            ),
            (
                "incoming repair",
                ids(g
                    .incoming_repair
                    .iter()
                    .map(|e| &e.entry.message_id)
                    .collect()),
                ids(w
                    .incoming_repair
                    .iter()
                    .map(|e| &e.entry.message_id)
                    .collect()),
            ),
        ];
        for (name, a, b) in lists {
            if a != b {
                out.push(format!("{c} {name}: [{a}] for [{b}]"));
            }
        }
        if out.is_empty() && g != w {
            out.push(format!("{c}: entries differ in content"));
        }
    }
    out.join("; ")
}

async fn load_all(store: &SqliteStore) -> Result<State, String> {
    let mut state = Vec::new();
    for c in CHANNELS {
        let snap = store
            .load_channel(&c.into())
            .await
            .map_err(|e| e.to_string())?;
        state.push(canonical(snap));
    }
    Ok(state)
}

/// What opening a crash state showed.
#[derive(Debug)]
struct Seen {
    /// Operations applied.
    ops: usize,
    /// Messages reported damaged.
    damaged: usize,
}

async fn close(store: SqliteStore, db: &Path) {
    drop(store);
    wait_closed(db).await;
}

/// Whether the bytes of a message reported damaged may really have been lost: not if the
/// operation that stored them was acknowledged before the WAL was last emptied (a quiet store's
/// sync round, which syncs the message files first), nor if the segment file they were written
/// to was synced after that acknowledgement.
fn may_be_lost(
    replay: &Replay,
    stored_by: &HashMap<(Vec<u8>, Vec<u8>), usize>,
    m: &DamagedMessage,
) -> Result<(), String> {
    let key = (
        m.channel.as_bytes().to_vec(),
        m.message_id.as_bytes().to_vec(),
    );
    let Some(&op) = stored_by.get(&key) else {
        return Err(format!("{m}: no operation stored it"));
    };
    let Some(&acked) = replay.acks.get(op) else {
        return Ok(());
    };
    if replay.wal_emptied_at.is_some_and(|e| acked < e) {
        return Err(format!(
            "{m}: stored by operation {op}, acknowledged before a quiet store's sync round"
        ));
    }
    let name = format!("sds.db-messages/{:08}.seg", m.segment);
    if let Some(&f) = replay.by_name.get(&name) {
        if replay.synced_at[f].is_some_and(|s| s > acked) {
            return Err(format!(
                "{m}: stored by operation {op}, whose segment file was synced after it was \
                 acknowledged"
            ));
        }
    }
    Ok(())
}

/// Opens the store in `dir` and checks it against the expected states `lo..=hi`.
async fn check_state(
    dir: &Path,
    durability: Durability,
    expected: &[State],
    lo: usize,
    hi: usize,
    lost_ok: impl Fn(&DamagedMessage) -> Result<(), String>,
) -> Result<Seen, String> {
    let db = dir.join("sds.db");
    let refuse = options(durability);
    let quarantine = Options {
        on_damage: OnDamage::Quarantine,
        ..refuse.clone()
    };
    let store = match SqliteStore::open_with_options(&db, refuse) {
        Ok(store) => match load_all(&store).await {
            Ok(state) => {
                close(store, &db).await;
                return match (lo..=hi).find(|&k| expected[k] == state) {
                    Some(ops) => Ok(Seen { ops, damaged: 0 }),
                    None => Err(format!(
                        "the state is none of the states after {lo}..={hi} operations: {}",
                        difference(&state, &expected[hi])
                    )),
                };
            }
            Err(e) if e.contains("damaged") => {
                close(store, &db).await;
                SqliteStore::open_with_options(&db, quarantine)
                    .map_err(|e| format!("reopening with quarantine: {e}"))?
            }
            Err(e) => return Err(format!("loading: {e}")),
        },
        Err(OpenError::Damaged { .. }) => SqliteStore::open_with_options(&db, quarantine)
            .map_err(|e| format!("opening with quarantine: {e}"))?,
        Err(e) => return Err(format!("opening: {e}")),
    };
    let state = load_all(&store)
        .await
        .map_err(|e| format!("loading with quarantine: {e}"))?;
    let damage = store.damage();
    close(store, &db).await;
    if durability == Durability::Full {
        return Err(format!("FULL: {damage}"));
    }
    for m in &damage.messages {
        lost_ok(m)?;
    }
    let lost: Vec<(ChannelId, MessageId)> = damage
        .messages
        .into_iter()
        .map(|m| (m.channel, m.message_id))
        .collect();
    match (lo..=hi).find(|&k| without(&expected[k], &lost) == state) {
        Some(ops) => Ok(Seen {
            ops,
            damaged: lost.len(),
        }),
        None => Err(format!(
            "with {} message(s) quarantined, the state is none of the states after {lo}..={hi} \
             operations less those messages",
            lost.len()
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// The test.

/// The recording library, built once per test process; `None` without a C compiler.
fn recorder(work: &Path) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/powerloss/record.c");
    let lib = work.join("record.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&src)
        .args(["-ldl", "-lpthread"])
        .status();
    match built {
        Ok(s) if s.success() => Some(lib),
        other => {
            eprintln!("power-loss test skipped: cannot build the recorder with cc ({other:?})");
            None
        }
    }
}

/// A scratch directory on tmpfs when there is one (the child's fsyncs then cost nothing; the
/// recording, not the disk, says what was synced).
fn scratch(name: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("sds-powerloss-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::canonicalize(&dir).unwrap()
}

/// Crash points: just before each fsync starts, just after each returns or an operation is
/// acknowledged, and at random, `count` of them spread over the log.
fn crash_points(events: &[Ev], count: usize, rng: &mut u64) -> Vec<usize> {
    let mut points = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        match ev {
            Ev::SyncFile { .. } | Ev::SyncDir { .. } => points.push(i),
            Ev::SyncEnd { .. } | Ev::Rename { .. } | Ev::Unlink(_) | Ev::Create { .. } => {
                points.push(i + 1)
            }
            _ => {}
        }
    }
    for _ in 0..count / 2 {
        points.push((next(rng) % (events.len() as u64 + 1)) as usize);
    }
    points.push(events.len());
    points.sort_unstable();
    points.dedup();
    if points.len() > count {
        let step = points.len() as f64 / count as f64;
        let last = *points.last().unwrap();
        points = (0..count)
            .map(|i| points[(i as f64 * step) as usize])
            .collect();
        points.push(last);
        points.dedup();
    }
    points
}

/// Prints what the replay knows: each file's synced size and later writes, the name changes.
fn describe(replay: &Replay) {
    for (f, m) in replay.files.iter().enumerate() {
        let pending: Vec<String> = m
            .pending
            .iter()
            .map(|(at, op)| match op {
                FileOp::Write { off, data } => format!("{at}: write {off}+{}", data.len()),
                FileOp::Trunc(len) => format!("{at}: size {len}"),
            })
            .collect();
        eprintln!(
            "  file {f} {}: {} bytes synced, then {pending:?}",
            replay.names[f],
            m.durable.len()
        );
    }
    for op in &replay.ns {
        eprintln!("  {op:?}");
    }
}

struct Summary {
    /// Segment files deleted or made the spare by the workload.
    segments_retired: usize,
    states: usize,
    /// States without some acknowledged operations (only with `NORMAL`).
    lost_acknowledged: usize,
    damaged_states: usize,
    lost_names: usize,
}

fn run(durability: Durability, ops: usize, points: usize, seed: u64) -> Option<Summary> {
    let name = if durability == Durability::Full {
        "full"
    } else {
        "normal"
    };
    let work = scratch(&format!("{name}-{seed}"));
    let lib = recorder(&work)?;
    let root = work.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let log_path = work.join("log");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "powerloss_child",
            "--exact",
            "--ignored",
            "--test-threads=1",
            "--quiet",
        ])
        .env("LD_PRELOAD", &lib)
        .env("SDS_PL_ROOT", &root)
        .env("SDS_PL_LOG", &log_path)
        .env("SDS_PL_MODE", name)
        .env("SDS_PL_OPS", ops.to_string())
        .env("SDS_PL_SEED", seed.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the child failed: {status}");
    let log = std::fs::read(&log_path).unwrap();
    let events = parse(&log);
    let steps = workload(ops, seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let expected = rt.block_on(expected_states(&steps));
    let stored_by = stored_by(&steps);
    let mut rng = seed ^ 0xc0ff_ee00;
    let points = crash_points(&events, points, &mut rng);
    let mut replay = Replay::default();
    let mut at = 0;
    let segments_retired = events
        .iter()
        .filter(|e| matches!(e, Ev::Unlink(p) | Ev::Rename { from: p, .. } if p.ends_with(".seg")))
        .count();
    let mut summary = Summary {
        segments_retired,
        states: 0,
        lost_acknowledged: 0,
        damaged_states: 0,
        lost_names: 0,
    };
    let mut failures = Vec::new();
    // `SDS_PL_KEEP=<full|normal>-<state>` keeps that state's directory and prints the log's
    // files and name changes at its crash point, for looking into a failure.
    let mut kept = false;
    for &point in &points {
        while at < point {
            replay.step(at, &events[at], &log);
            at += 1;
        }
        let acked = replay.acks.len();
        let hi = (acked + 1).min(steps.len());
        let lo = match durability {
            Durability::Full => acked,
            Durability::Normal => replay
                .acks
                .iter()
                .filter(|&&a| a < replay.wal_synced_at)
                .count(),
        };
        for variant in [
            Variant::Synced,
            Variant::Everything,
            Variant::Mixed(next(&mut rng)),
        ] {
            let dir = work.join(format!("state-{}", summary.states));
            let lost_names = materialize(&replay, variant, &dir, &log);
            let lost_ok = |m: &DamagedMessage| may_be_lost(&replay, &stored_by, m);
            match rt.block_on(check_state(&dir, durability, &expected, lo, hi, lost_ok)) {
                Ok(seen) => {
                    summary.damaged_states += usize::from(seen.damaged > 0);
                    summary.lost_acknowledged += usize::from(seen.ops < acked);
                }
                Err(e) => failures.push(format!(
                    "{name}, crash at event {point} of {} ({acked} acknowledged), {variant:?}: {e}",
                    events.len()
                )),
            }
            summary.lost_names += lost_names;
            summary.states += 1;
            if std::env::var("SDS_PL_KEEP").ok() == Some(format!("{name}-{}", summary.states - 1)) {
                eprintln!("kept {} (crash at event {point})", dir.display());
                describe(&replay);
                kept = true;
                continue;
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if !kept {
        let _ = std::fs::remove_dir_all(&work);
    }
    assert!(
        failures.is_empty(),
        "{} of {} crash states failed:\n{}",
        failures.len(),
        summary.states,
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    Some(summary)
}

fn report(name: &str, s: &Summary, since: Instant) {
    println!(
        "{name}: {} crash states checked ({} without some acknowledged operations, {} with \
         damage reported, {} name changes lost; {} segment files retired) in {:.1} s",
        s.states,
        s.lost_acknowledged,
        s.damaged_states,
        s.lost_names,
        s.segments_retired,
        since.elapsed().as_secs_f64()
    );
}

#[test]
fn power_loss_full_loses_nothing_acknowledged() {
    let since = Instant::now();
    if let Some(s) = run(Durability::Full, 200, 70, 1) {
        report("FULL", &s, since);
    }
}

#[test]
fn power_loss_normal_leaves_an_earlier_state_and_reports_lost_bytes() {
    let since = Instant::now();
    if let Some(s) = run(Durability::Normal, 200, 70, 2) {
        report("NORMAL", &s, since);
    }
}

#[test]
#[ignore = "long: thousands of crash states"]
fn power_loss_long() {
    for seed in 10..14 {
        for durability in [Durability::Full, Durability::Normal] {
            let since = Instant::now();
            if let Some(s) = run(durability, 600, 600, seed) {
                report(&format!("{durability:?} seed {seed}"), &s, since);
            }
        }
    }
}
