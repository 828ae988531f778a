//! # sds-sqlite
//!
//! A [`Persistence`] backend for the SDS [`ReliabilityManager`](sds::ReliabilityManager) on an
//! embedded SQLite database (bundled: nothing to install).
//!
//! * Every batch of store operations (one protocol operation) is one transaction, and so is
//!   `drop_channel`: a crash leaves each operation entirely applied or not at all.
//! * The database runs in WAL mode. Durability is configurable: [`Durability::Normal`] (the
//!   default) survives any crash of the process — a committed operation is in the WAL before the
//!   call returns — but may lose the last operations on power loss or an OS crash;
//!   [`Durability::Full`] also survives those, at the cost of an fsync per operation.
//! * One dedicated thread owns the connection; async callers send it work and await the result,
//!   so SQLite never blocks a tokio worker. A second thread, with its own connection, copies
//!   the WAL into the database (checkpoints) while operations go on. Just before a commit
//!   (with [`Durability::Normal`]) the waiting task is woken, so its wake-up overlaps the
//!   commit; a task woken that way waits at most 60 µs for the answer before it sleeps again.
//! * A message's bytes (about 19 KB at default settings) are stored once per channel, however
//!   many places refer to them (log, outgoing buffer, incoming buffer, repair responses), and
//!   released with the last reference. Bytes over 1 KiB are not written into the database
//!   (where they would pass through the WAL and again into the database at checkpoint) but
//!   appended once to a segment file in the directory `<database>-messages`; the row keeps
//!   their location and CRC-32. Segments rotate at [`Options::segment_bytes`], are deleted once
//!   nothing refers to them, and a segment holding mostly dead bytes is compacted, so the
//!   directory stays within about twice the live bytes. Bytes are written before the
//!   transaction that refers to them commits, and a compacted segment is deleted only after
//!   its copies and their new locations are synced, so a process crash loses nothing. With
//!   [`Durability::Normal`], power loss may also lose the bytes of recent operations whose rows
//!   reached the disk: the checksum (or the missing file) detects it and loading drops those
//!   entries (and their rows) rather than misreading them. With [`Durability::Full`] the bytes
//!   are synced before each commit.
//! * One process at a time: the message directory is locked while a store is open. Opening a
//!   database that is already open in this process returns a handle to the same store.
//! * The schema is versioned with `PRAGMA user_version` and migrated forward on open; a database
//!   written by a newer version is refused with [`OpenError::TooNew`] rather than misread.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use sds::{ManagerConfig, ReliabilityManager};
//! use sds_sqlite::SqliteStore;
//!
//! let dir = std::env::temp_dir().join(format!("sds-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let store = SqliteStore::open(dir.join("sds.db")).unwrap();
//! let m = ReliabilityManager::new("alice", ManagerConfig::default(), Arc::new(store)).unwrap();
//! m.wrap_outgoing_message(&b"hi"[..], "m1", "chat").await.unwrap();
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # });
//! ```

mod codec;
mod reply;
mod schema;
mod segments;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::thread;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use sds::persistence::{Persistence, PersistenceError, PersistenceResult};
use sds::{
    Bytes, ChannelId, ChannelSnapshot, HistoryEntry, IncomingEntry, IncomingRepairEntry, LogEntry,
    MessageId, OutgoingEntry, OutgoingRepairEntry, StoreOp,
};

pub use schema::SCHEMA_VERSION;
use segments::{Loc, ReadError, Segments};

/// How hard a commit tries to survive failures beyond the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = NORMAL` with WAL: survives process crashes; the last operations may be lost
    /// on power loss. The default.
    #[default]
    Normal,
    /// `synchronous = FULL`: an fsync per operation; survives power loss.
    Full,
}

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How hard a commit tries to survive failures beyond the process.
    pub durability: Durability,
    /// Size at which a message segment file (see [the crate docs](crate)) is closed and a new
    /// one started. Default 64 MiB.
    pub segment_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::default(),
            segment_bytes: 64 << 20,
        }
    }
}

/// Messages up to this size are kept in the database row itself; larger ones go to segments.
const INLINE_MAX: usize = 1024;

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite refused (file not accessible, not a database, …).
    #[error("cannot open {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer version of this store.
    #[error(
        "{path} has schema version {found}, newer than this build supports ({supported}); \
         upgrade sds-rs to open it"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// The message directory next to the database could not be opened.
    #[error("cannot open message files in {path}: {source}")]
    Messages {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The connection thread could not be started.
    #[error("cannot start the database thread: {0}")]
    Thread(std::io::Error),
}

/// What the connection thread owns.
struct Db {
    conn: Connection,
    segments: Segments,
    wal: PathBuf,
    /// The running job's notice, given just before its commit (see [`reply`]).
    soon: Option<Arc<dyn reply::Soon>>,
    /// Whether commits are quick enough for a notice (no fsync per commit).
    notice: bool,
}

type Job = Box<dyn FnOnce(&mut Db) + Send>;

/// How long the connection thread keeps looking for the next job before it sleeps. Callers
/// that run operation after operation (a busy channel) then find it awake: waking a sleeping
/// thread costs more than an operation's own statements.
const STAY_AWAKE: std::time::Duration = std::time::Duration::from_micros(50);

/// The next job, or `None` once every handle to the store is gone.
fn next_job(rx: &std_mpsc::Receiver<Job>) -> Option<Job> {
    let since = std::time::Instant::now();
    loop {
        match rx.try_recv() {
            Ok(job) => return Some(job),
            Err(std_mpsc::TryRecvError::Disconnected) => return None,
            Err(std_mpsc::TryRecvError::Empty) if since.elapsed() < STAY_AWAKE => {
                std::hint::spin_loop();
            }
            Err(std_mpsc::TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

/// WAL pages after which the checkpoint thread is woken (4 MB at 4 KiB pages).
const CHECKPOINT_PAGES: i32 = 1_000;

/// WAL pages after which the connection thread checkpoints itself (40 MB at 4 KiB pages). The
/// checkpoint thread copies frames while new ones are appended, so it rarely finds the WAL fully
/// copied between two commits, which SQLite needs to start the WAL over; here it is, after a
/// short catch-up, and the WAL stays bounded even if the checkpoint thread falls behind.
const CHECKPOINT_HERE_PAGES: i32 = 10_000;

thread_local! {
    /// Pages in the WAL after the last commit on this thread's connection.
    static WAL_PAGES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// SQLite's WAL hook: runs after each commit on the connection thread.
fn note_wal_size(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// Copies what it can of the WAL into the database without waiting for anybody.
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// What the connection thread does about the WAL after a job.
#[derive(Debug, PartialEq, Eq)]
enum WalAction {
    None,
    WakeCheckpointer,
    CheckpointHere,
}

/// Decides when checkpoints run, from the WAL's size after each job.
#[derive(Debug, Default)]
struct WalWatch {
    /// WAL size at the last wake-up of the checkpoint thread.
    woken_at: i32,
}

impl WalWatch {
    fn after_job(&mut self) -> WalAction {
        self.decide(WAL_PAGES.with(|p| p.get()))
    }

    fn decide(&mut self, pages: i32) -> WalAction {
        if pages < self.woken_at {
            // The WAL started over.
            self.woken_at = 0;
        }
        if pages >= CHECKPOINT_HERE_PAGES {
            WalAction::CheckpointHere
        } else if pages >= self.woken_at + CHECKPOINT_PAGES {
            self.woken_at = pages;
            WalAction::WakeCheckpointer
        } else {
            WalAction::None
        }
    }
}

/// The SQLite store. Cheap to clone; clones share the connection thread.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

/// One open database: the way to its connection thread.
#[derive(Debug)]
struct Shared {
    jobs: std_mpsc::Sender<Job>,
    path: PathBuf,
}

/// The stores open in this process, by canonical path: opening a database again returns the
/// open store (its segment files have one writer).
static OPEN: Mutex<Vec<(PathBuf, Weak<Shared>)>> = Mutex::new(Vec::new());

/// `path` with its directory made canonical (the file itself may not exist yet).
fn canonical(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => path.to_path_buf(),
    }
}

fn sql_err(e: rusqlite::Error) -> PersistenceError {
    PersistenceError::new(format!("sqlite: {e}"))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with [`Durability::Normal`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path, Durability::default())
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open_with(path: impl AsRef<Path>, durability: Durability) -> Result<Self, OpenError> {
        Self::open_with_options(
            path,
            Options {
                durability,
                ..Options::default()
            },
        )
    }

    /// Opens (creating if needed) the database at `path` and its message directory
    /// `<path>-messages`. A database already open in this process is shared: the handle
    /// returned is the open store's (and its options stay). A database another process has
    /// open is waited for up to 5 s, then refused with [`OpenError::Messages`].
    pub fn open_with_options(path: impl AsRef<Path>, options: Options) -> Result<Self, OpenError> {
        let key = canonical(path.as_ref());
        // Held while opening, so two opens of one new database cannot race.
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(_, w)| w.strong_count() > 0);
        if let Some(shared) = open
            .iter()
            .find(|(p, _)| *p == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(SqliteStore { shared });
        }
        let store = Self::open_new(path.as_ref(), options)?;
        open.push((key, Arc::downgrade(&store.shared)));
        Ok(store)
    }

    fn open_new(path: &Path, options: Options) -> Result<Self, OpenError> {
        let durability = options.durability;
        let path = path.to_path_buf();
        let fail = |source| OpenError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        // Rows are small (message bytes live in segment files): 4 KiB pages keep the pages
        // an operation rewrites small. Applies to new databases only.
        conn.pragma_update(None, "page_size", 4096).map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        let sync = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(fail)?;
        conn.pragma_update(None, "cache_size", -32_768)
            .map_err(fail)?;
        // Every statement this store runs stays prepared (rusqlite keeps 16 by default).
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&conn, &path)?;
        let dir = messages_dir(&path);
        let segments = open_segments(&conn, dir.clone(), &options)
            .map_err(|source| OpenError::Messages { path: dir, source })?;
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        // Checkpoints run on a second connection in a thread of their own, so copying the
        // WAL into the database and syncing it stays off the path of operations.
        let checkpointer = Connection::open(&path).map_err(fail)?;
        checkpointer
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        checkpointer
            .pragma_update(None, "synchronous", sync)
            .map_err(fail)?;
        let (wake_checkpointer, checkpoint_due) = std_mpsc::sync_channel::<()>(1);
        thread::Builder::new()
            .name("sds-sqlite-ckpt".into())
            .spawn(move || {
                // Runs until the connection thread ends.
                while checkpoint_due.recv().is_ok() {
                    // A failed checkpoint leaves the frames in the WAL, where they are safe;
                    // the next one (or the connection thread's own) copies them.
                    let _ = checkpoint(&checkpointer);
                }
            })
            .map_err(OpenError::Thread)?;
        conn.wal_hook(Some(note_wal_size));
        let (jobs, rx) = std_mpsc::channel::<Job>();
        thread::Builder::new()
            .name("sds-sqlite".into())
            .spawn(move || {
                let mut db = Db {
                    conn,
                    segments,
                    wal,
                    soon: None,
                    notice: durability == Durability::Normal,
                };
                let mut wal = WalWatch::default();
                // Runs until every handle to the store is dropped.
                while let Some(job) = next_job(&rx) {
                    job(&mut db);
                    match wal.after_job() {
                        WalAction::None => {}
                        WalAction::WakeCheckpointer => {
                            // Full means a wake-up is already pending.
                            let _ = wake_checkpointer.try_send(());
                        }
                        WalAction::CheckpointHere => {
                            let _ = checkpoint(&db.conn);
                        }
                    }
                }
            })
            .map_err(OpenError::Thread)?;
        Ok(SqliteStore {
            shared: Arc::new(Shared { jobs, path }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The directory of message segment files, `<database>-messages`.
    pub fn messages_dir(&self) -> PathBuf {
        messages_dir(&self.shared.path)
    }

    /// Runs `f` on the connection thread and awaits its result.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> PersistenceResult<T> + Send + 'static,
    ) -> PersistenceResult<T> {
        let (answer, reply) = reply::pair();
        let job: Job = Box::new(move |db| {
            if db.notice {
                db.soon = Some(answer.soon_handle());
            }
            let result = f(db);
            db.soon = None;
            answer.send(result);
        });
        self.shared
            .jobs
            .send(job)
            .map_err(|_| PersistenceError::new("the database thread has stopped"))?;
        reply
            .await
            .ok_or_else(|| PersistenceError::new("the database thread stopped mid-operation"))?
    }

    /// Applies `ops` in one transaction.
    async fn transaction(&self, channel: &ChannelId, ops: Vec<StoreOp>) -> PersistenceResult<()> {
        let channel = channel.clone();
        self.run(move |db| {
            db.write(|tx, segments| {
                let mut unreferenced = Vec::new();
                for op in &ops {
                    apply(tx, segments, &channel, op, &mut unreferenced)?;
                }
                // Bytes are released after the whole batch: a message that leaves one place
                // and enters another in the same operation (incoming buffer to log) keeps its
                // bytes instead of having them deleted and written again; one the batch stored
                // last is still referred to and not even checked.
                unreferenced.sort_unstable();
                unreferenced.dedup();
                let mut stored_last: HashMap<&MessageId, bool> = HashMap::new();
                for op in &ops {
                    if let Some((id, stored)) = reference_change(op) {
                        stored_last.insert(id, stored);
                    }
                }
                for id in &unreferenced {
                    if stored_last.get(id) != Some(&true) {
                        release_bytes(tx, segments, &channel, id)?;
                    }
                }
                Ok(())
            })
        })
        .await
    }
}

/// Deletes the database at `path` and every file that goes with it (`-wal`, `-shm`, the
/// `-messages` directory); files that do not exist are fine. The database must not be open.
pub fn remove_database(path: impl AsRef<Path>) -> std::io::Result<()> {
    let path = path.as_ref();
    for suffix in ["", "-wal", "-shm"] {
        match std::fs::remove_file(format!("{}{suffix}", path.display())) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match std::fs::remove_dir_all(messages_dir(path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `<database>-messages`.
fn messages_dir(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-messages", db.display()))
}

/// Opens the segment directory with what the database refers to.
fn open_segments(conn: &Connection, dir: PathBuf, options: &Options) -> std::io::Result<Segments> {
    let sql = |e: rusqlite::Error| std::io::Error::other(e.to_string());
    let mut stmt = conn
        .prepare(
            "SELECT seg, SUM((len + 4095) / 4096 * 4096) FROM message \
             WHERE seg IS NOT NULL GROUP BY seg",
        )
        .map_err(sql)?;
    let live = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .map_err(sql)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql)?;
    let live: Vec<(u32, u64)> = live
        .into_iter()
        .filter_map(|(seg, len)| Some((u32::try_from(seg).ok()?, u64::try_from(len).ok()?)))
        .collect();
    let highest = live.iter().map(|(seg, _)| *seg).max();
    Segments::open(
        dir,
        options.segment_bytes.max(1),
        options.durability == Durability::Full,
        &live,
        highest,
    )
}

/// A failure inside a write transaction.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("sqlite: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("message files: {0}")]
    Io(#[from] std::io::Error),
}

impl From<WriteError> for PersistenceError {
    fn from(e: WriteError) -> Self {
        PersistenceError::new(e.to_string())
    }
}

impl Db {
    /// Runs `f` in one transaction, with the segment files kept in step: appended bytes are
    /// synced before the commit when durability asks for it, live bytes change only if the
    /// transaction commits, and segments it empties are deleted once that is durable. Then
    /// compacts a segment if the directory has grown to twice its live bytes.
    fn write(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &mut Segments) -> Result<(), WriteError>,
    ) -> PersistenceResult<()> {
        self.write_once(f)?;
        if let Some(seg) = self.segments.compaction_candidate() {
            // A failed compaction leaves every message where it was.
            let _ = self.write_once(|tx, segments| compact(tx, segments, seg));
            self.segments.compacted(seg);
        }
        Ok(())
    }

    fn write_once(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &mut Segments) -> Result<(), WriteError>,
    ) -> Result<(), WriteError> {
        let result = (|| {
            let tx = self.conn.transaction()?;
            f(&tx, &mut self.segments)?;
            self.segments.before_commit()?;
            if let Some(soon) = self.soon.take() {
                soon.soon();
            }
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            self.segments.rolled_back();
            return Err(e);
        }
        let empty = self.segments.committed();
        // The operation is committed; a segment left behind is deleted on a later commit or
        // the next open.
        let _ = self.segments.delete(&empty, &self.wal);
        Ok(())
    }
}

/// Copies the live messages of segment `seg` to the active one; the segment is then empty and
/// deleted after the commit.
fn compact(tx: &Transaction<'_>, segments: &mut Segments, seg: u32) -> Result<(), WriteError> {
    segments.moving(seg);
    let rows: Vec<(Vec<u8>, Vec<u8>, Loc)> = tx
        .prepare("SELECT channel, id, off, len, crc FROM message WHERE seg = ?1")?
        .query_map(params![seg], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                Loc {
                    seg,
                    off: r.get::<_, i64>(2)?.max(0) as u64,
                    len: r.get::<_, i64>(3)?.clamp(0, u32::MAX as i64) as u32,
                    crc: r.get::<_, i64>(4)?.clamp(0, u32::MAX as i64) as u32,
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut files = HashMap::new();
    for (channel, id, old) in rows {
        // Bytes that cannot be read stay where they are (and are dropped when loaded).
        let Ok(bytes) = segments.read(old, &mut files) else {
            continue;
        };
        let new = segments.append(&bytes)?;
        tx.prepare_cached("UPDATE message SET seg = ?3, off = ?4 WHERE channel = ?1 AND id = ?2")?
            .execute(params![channel, id, new.seg, new.off as i64])?;
        segments.released(old.seg, old.len);
    }
    Ok(())
}

fn ch(c: &ChannelId) -> &[u8] {
    c.as_bytes()
}

/// Stores a message's bytes once per channel: small ones in the row, others appended to a
/// segment file.
fn put_bytes(
    tx: &Transaction<'_>,
    segments: &mut Segments,
    channel: &ChannelId,
    id: &MessageId,
    bytes: &[u8],
) -> Result<(), WriteError> {
    let stored = tx
        .prepare_cached("SELECT 1 FROM message WHERE channel = ?1 AND id = ?2")?
        .exists(params![ch(channel), id.as_bytes()])?;
    if stored {
        return Ok(());
    }
    if bytes.len() <= INLINE_MAX {
        tx.prepare_cached("INSERT INTO message (channel, id, bytes) VALUES (?1, ?2, ?3)")?
            .execute(params![ch(channel), id.as_bytes(), bytes])?;
        return Ok(());
    }
    let loc = segments.append(bytes)?;
    tx.prepare_cached(
        "INSERT INTO message (channel, id, bytes, seg, off, len, crc) \
         VALUES (?1, ?2, x'', ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        ch(channel),
        id.as_bytes(),
        loc.seg,
        loc.off as i64,
        loc.len,
        loc.crc
    ])?;
    Ok(())
}

/// Deletes a message's bytes once nothing refers to them any more.
fn release_bytes(
    tx: &Transaction<'_>,
    segments: &mut Segments,
    channel: &ChannelId,
    id: &MessageId,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "DELETE FROM message WHERE channel = ?1 AND id = ?2 \
         AND NOT EXISTS (SELECT 1 FROM log WHERE channel = ?1 AND id = ?2) \
         AND NOT EXISTS (SELECT 1 FROM outgoing WHERE channel = ?1 AND id = ?2) \
         AND NOT EXISTS (SELECT 1 FROM incoming WHERE channel = ?1 AND id = ?2) \
         AND NOT EXISTS (SELECT 1 FROM incoming_repair WHERE channel = ?1 AND id = ?2) \
         RETURNING seg, len",
    )?;
    let mut rows = stmt.query(params![ch(channel), id.as_bytes()])?;
    while let Some(r) = rows.next()? {
        released(segments, r.get(0)?, r.get(1)?);
    }
    Ok(())
}

/// Notes that the bytes of a deleted message row (segment and length, if in a segment) are
/// no longer referred to.
fn released(segments: &mut Segments, seg: Option<i64>, len: Option<i64>) {
    if let (Some(seg), Some(len)) = (seg, len) {
        if let (Ok(seg), Ok(len)) = (u32::try_from(seg), u32::try_from(len)) {
            segments.released(seg, len);
        }
    }
}

/// Deletes `id` from `table`; its bytes become a candidate for release.
fn delete(
    tx: &Transaction<'_>,
    table: &str,
    channel: &ChannelId,
    id: &MessageId,
    unreferenced: &mut Vec<MessageId>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!(
        "DELETE FROM {table} WHERE channel = ?1 AND id = ?2"
    ))?
    .execute(params![ch(channel), id.as_bytes()])?;
    unreferenced.push(id.clone());
    Ok(())
}

/// Makes sure the channel has its row (once per transaction).
/// The message whose references `op` adds (`true`) or removes (`false`).
fn reference_change(op: &StoreOp) -> Option<(&MessageId, bool)> {
    match op {
        StoreOp::AppendLogEntry(e) => Some((&e.message_id, !e.is_met_marker())),
        StoreOp::SaveOutgoing(e) => Some((&e.message_id, true)),
        StoreOp::SaveIncoming(e) => Some((&e.message_id, true)),
        StoreOp::SaveIncomingRepair(e) => Some((&e.entry.message_id, true)),
        StoreOp::RemoveLogEntry(id)
        | StoreOp::RemoveOutgoing(id)
        | StoreOp::RemoveIncoming(id)
        | StoreOp::RemoveIncomingRepair(id) => Some((id, false)),
        _ => None,
    }
}

fn apply(
    tx: &Transaction<'_>,
    segments: &mut Segments,
    c: &ChannelId,
    op: &StoreOp,
    unreferenced: &mut Vec<MessageId>,
) -> Result<(), WriteError> {
    match op {
        StoreOp::SaveLamport(l) => {
            tx.prepare_cached(
                "INSERT INTO channel (channel, lamport) VALUES (?1, ?2) \
                 ON CONFLICT (channel) DO UPDATE SET lamport = ?2",
            )?
            .execute(params![ch(c), l])?;
        }
        StoreOp::AppendLogEntry(e) => {
            let met = e.is_met_marker();
            if !met {
                put_bytes(tx, segments, c, &e.message_id, &e.bytes)?;
            }
            tx.prepare_cached(
                "INSERT INTO log (channel, id, lamport, sender, hint, met) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (channel, id) DO UPDATE SET lamport = ?3, sender = ?4, hint = ?5, met = ?6",
            )?
            .execute(params![
                ch(c),
                e.message_id.as_bytes(),
                e.lamport_timestamp,
                e.sender_id.as_bytes(),
                &e.retrieval_hint[..],
                met
            ])?;
        }
        StoreOp::RemoveLogEntry(id) => delete(tx, "log", c, id, unreferenced)?,
        StoreOp::SetRetrievalHint { message_id, hint } => {
            tx.prepare_cached("UPDATE log SET hint = ?3 WHERE channel = ?1 AND id = ?2")?
                .execute(params![ch(c), message_id.as_bytes(), &hint[..]])?;
        }
        StoreOp::SaveOutgoing(e) => {
            put_bytes(tx, segments, c, &e.message_id, &e.bytes)?;
            let seq: i64 = tx
                .prepare_cached(
                    "INSERT INTO channel (channel, next_seq) VALUES (?1, 1) \
                     ON CONFLICT (channel) DO UPDATE SET next_seq = next_seq + 1 RETURNING next_seq",
                )?
                .query_row(params![ch(c)], |r| r.get(0))?;
            tx.prepare_cached(
                "INSERT INTO outgoing (channel, id, send_time, attempts, possible_acks, seq) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (channel, id) DO UPDATE SET send_time = ?3, attempts = ?4, possible_acks = ?5",
            )?
            .execute(params![
                ch(c),
                e.message_id.as_bytes(),
                e.send_time as i64,
                e.attempts,
                e.possible_acks,
                seq
            ])?;
        }
        StoreOp::RemoveOutgoing(id) => delete(tx, "outgoing", c, id, unreferenced)?,
        StoreOp::SaveIncoming(e) => {
            put_bytes(tx, segments, c, &e.message_id, &e.bytes)?;
            tx.prepare_cached(
                "INSERT INTO incoming (channel, id, missing, received_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (channel, id) DO UPDATE SET missing = ?3, received_at = ?4",
            )?
            .execute(params![
                ch(c),
                e.message_id.as_bytes(),
                codec::encode_entries(&e.missing),
                e.received_at as i64
            ])?;
        }
        StoreOp::RemoveIncoming(id) => delete(tx, "incoming", c, id, unreferenced)?,
        StoreOp::SaveOutgoingRepair(e) => {
            tx.prepare_cached(
                "INSERT INTO outgoing_repair (channel, id, hint, sender, t_req) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (channel, id) DO UPDATE SET hint = ?3, sender = ?4, t_req = ?5",
            )?
            .execute(params![
                ch(c),
                e.entry.message_id.as_bytes(),
                &e.entry.retrieval_hint[..],
                e.entry.sender_id.as_bytes(),
                e.t_req as i64
            ])?;
        }
        StoreOp::RemoveOutgoingRepair(id) => {
            tx.prepare_cached("DELETE FROM outgoing_repair WHERE channel = ?1 AND id = ?2")?
                .execute(params![ch(c), id.as_bytes()])?;
        }
        StoreOp::SaveIncomingRepair(e) => {
            put_bytes(tx, segments, c, &e.entry.message_id, &e.bytes)?;
            tx.prepare_cached(
                "INSERT INTO incoming_repair (channel, id, hint, sender, t_resp) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (channel, id) DO UPDATE SET hint = ?3, sender = ?4, t_resp = ?5",
            )?
            .execute(params![
                ch(c),
                e.entry.message_id.as_bytes(),
                &e.entry.retrieval_hint[..],
                e.entry.sender_id.as_bytes(),
                e.t_resp as i64
            ])?;
        }
        StoreOp::RemoveIncomingRepair(id) => delete(tx, "incoming_repair", c, id, unreferenced)?,
    }
    Ok(())
}

fn blob(v: Vec<u8>) -> Bytes {
    Bytes::from(v)
}

/// Message bytes as a row refers to them: in the row, or at a location in a segment.
#[derive(Debug, Default)]
struct Stored {
    inline: Option<Vec<u8>>,
    loc: Option<Loc>,
}

/// The message columns `bytes, seg, off, len, crc` starting at column `i`.
fn stored_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Stored> {
    let inline: Option<Vec<u8>> = r.get(i)?;
    let seg: Option<i64> = r.get(i + 1)?;
    let int = |k: usize| -> rusqlite::Result<i64> { Ok(r.get::<_, Option<i64>>(k)?.unwrap_or(-1)) };
    let loc = match seg {
        None => None,
        // Out-of-range values name no real place: they read as lost.
        Some(seg) => Some(Loc {
            seg: u32::try_from(seg).unwrap_or(u32::MAX),
            off: u64::try_from(int(i + 2)?).unwrap_or(u64::MAX),
            len: u32::try_from(int(i + 3)?).unwrap_or(0),
            crc: u32::try_from(int(i + 4)?).unwrap_or(0),
        }),
    };
    Ok(Stored { inline, loc })
}

const MESSAGE_COLUMNS: &str = "m.bytes, m.seg, m.off, m.len, m.crc";

/// A stored entry that carries a message's bytes.
trait WithBytes {
    fn id(&self) -> &MessageId;
    fn set_bytes(&mut self, bytes: Bytes);
}

macro_rules! with_bytes {
    ($t:ty, $($id:ident).+) => {
        impl WithBytes for $t {
            fn id(&self) -> &MessageId {
                &self.$($id).+
            }
            fn set_bytes(&mut self, bytes: Bytes) {
                self.bytes = bytes;
            }
        }
    };
}
with_bytes!(LogEntry, message_id);
with_bytes!(OutgoingEntry, message_id);
with_bytes!(IncomingEntry, message_id);
with_bytes!(IncomingRepairEntry, entry.message_id);

/// Gives each entry of `table` its bytes from `stored` (same order); entries whose bytes
/// `resolve` finds lost are left out.
fn fill_bytes<E: WithBytes>(
    entries: &mut Vec<E>,
    stored: Vec<Stored>,
    table: &'static str,
    resolve: &mut impl FnMut(&'static str, &MessageId, Stored) -> PersistenceResult<Option<Bytes>>,
) -> PersistenceResult<()> {
    let mut keep = Vec::with_capacity(entries.len());
    for (mut e, s) in std::mem::take(entries).into_iter().zip(stored) {
        if let Some(b) = resolve(table, e.id(), s)? {
            e.set_bytes(b);
            keep.push(e);
        }
    }
    *entries = keep;
    Ok(())
}

/// Reads a channel. Entries whose bytes are lost (see [`segments`]) are left out and deleted.
fn load(db: &mut Db, c: &ChannelId) -> PersistenceResult<ChannelSnapshot> {
    let (mut snap, stored) = read_channel(&mut db.conn, c).map_err(sql_err)?;
    let mut files = HashMap::new();
    let mut lost: Vec<(&'static str, MessageId)> = Vec::new();
    let mut resolve =
        |table: &'static str, id: &MessageId, s: Stored| -> PersistenceResult<Option<Bytes>> {
            match s.loc {
                None => Ok(Some(blob(s.inline.unwrap_or_default()))),
                Some(loc) => match db.segments.read(loc, &mut files) {
                    Ok(b) => Ok(Some(blob(b))),
                    Err(ReadError::Lost { .. }) => {
                        lost.push((table, id.clone()));
                        Ok(None)
                    }
                    Err(e) => Err(PersistenceError::new(e.to_string())),
                },
            }
        };
    let [log, outgoing, incoming, incoming_repair] = stored;
    // Marked-met markers have no bytes and read as empty ones.
    fill_bytes(&mut snap.log, log, "log", &mut resolve)?;
    fill_bytes(&mut snap.outgoing, outgoing, "outgoing", &mut resolve)?;
    fill_bytes(&mut snap.incoming, incoming, "incoming", &mut resolve)?;
    fill_bytes(
        &mut snap.incoming_repair,
        incoming_repair,
        "incoming_repair",
        &mut resolve,
    )?;
    if !lost.is_empty() {
        let channel = c.clone();
        db.write(|tx, segments| {
            let mut unreferenced = Vec::new();
            for (table, id) in &lost {
                delete(tx, table, &channel, id, &mut unreferenced)?;
            }
            for id in &unreferenced {
                release_bytes(tx, segments, &channel, id)?;
            }
            Ok(())
        })?;
    }
    Ok(snap)
}

/// The channel's rows, with the stored form of the bytes of log, outgoing, incoming and
/// incoming-repair entries (in that order) beside them.
fn read_channel(
    conn: &mut Connection,
    c: &ChannelId,
) -> rusqlite::Result<(ChannelSnapshot, [Vec<Stored>; 4])> {
    let tx = conn.transaction()?;
    let lamport: Option<i64> = tx
        .query_row(
            "SELECT lamport FROM channel WHERE channel = ?1",
            params![ch(c)],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let mut snap = ChannelSnapshot {
        lamport,
        ..ChannelSnapshot::default()
    };
    let mut stored: [Vec<Stored>; 4] = Default::default();
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT l.id, l.lamport, l.sender, l.hint, l.met, {MESSAGE_COLUMNS} FROM log l \
             LEFT JOIN message m ON m.channel = l.channel AND m.id = l.id \
             WHERE l.channel = ?1 ORDER BY l.lamport, l.id"
        ))?;
        let rows = stmt.query_map(params![ch(c)], |r| {
            let met: bool = r.get(4)?;
            Ok((
                LogEntry {
                    message_id: MessageId::from(r.get::<_, Vec<u8>>(0)?),
                    lamport_timestamp: r.get(1)?,
                    sender_id: MessageId::from(r.get::<_, Vec<u8>>(2)?),
                    retrieval_hint: blob(r.get(3)?),
                    bytes: Bytes::new(),
                },
                if met {
                    Stored::default()
                } else {
                    stored_at(r, 5)?
                },
            ))
        })?;
        for row in rows {
            let (e, s) = row?;
            snap.log.push(e);
            stored[0].push(s);
        }
    }
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT o.id, o.send_time, o.attempts, o.possible_acks, {MESSAGE_COLUMNS} \
             FROM outgoing o JOIN message m ON m.channel = o.channel AND m.id = o.id \
             WHERE o.channel = ?1 ORDER BY o.seq"
        ))?;
        let rows = stmt.query_map(params![ch(c)], |r| {
            Ok((
                OutgoingEntry {
                    message_id: MessageId::from(r.get::<_, Vec<u8>>(0)?),
                    bytes: Bytes::new(),
                    send_time: r.get::<_, i64>(1)?.max(0) as u64,
                    attempts: r.get(2)?,
                    possible_acks: r.get(3)?,
                },
                stored_at(r, 4)?,
            ))
        })?;
        for row in rows {
            let (e, s) = row?;
            snap.outgoing.push(e);
            stored[1].push(s);
        }
    }
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT i.id, i.missing, i.received_at, {MESSAGE_COLUMNS} FROM incoming i \
             JOIN message m ON m.channel = i.channel AND m.id = i.id \
             WHERE i.channel = ?1 ORDER BY i.id"
        ))?;
        let rows = stmt.query_map(params![ch(c)], |r| {
            let missing: Vec<u8> = r.get(1)?;
            Ok((
                MessageId::from(r.get::<_, Vec<u8>>(0)?),
                missing,
                r.get::<_, i64>(2)?.max(0) as u64,
                stored_at(r, 3)?,
            ))
        })?;
        for row in rows {
            let (message_id, missing, received_at, s) = row?;
            // A missing set that does not decode is recomputed by the engine from the message
            // itself, so an empty one is a safe reading.
            let missing = codec::decode_entries(&missing).unwrap_or_default();
            snap.incoming.push(IncomingEntry {
                message_id,
                bytes: Bytes::new(),
                missing,
                received_at,
            });
            stored[2].push(s);
        }
    }
    {
        let mut stmt = tx.prepare_cached(
            "SELECT id, hint, sender, t_req FROM outgoing_repair WHERE channel = ?1 ORDER BY t_req, id",
        )?;
        let rows = stmt.query_map(params![ch(c)], |r| {
            Ok(OutgoingRepairEntry {
                entry: HistoryEntry {
                    message_id: MessageId::from(r.get::<_, Vec<u8>>(0)?),
                    retrieval_hint: blob(r.get(1)?),
                    sender_id: MessageId::from(r.get::<_, Vec<u8>>(2)?),
                },
                t_req: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })?;
        for row in rows {
            snap.outgoing_repair.push(row?);
        }
    }
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT r.id, r.hint, r.sender, r.t_resp, {MESSAGE_COLUMNS} FROM incoming_repair r \
             JOIN message m ON m.channel = r.channel AND m.id = r.id \
             WHERE r.channel = ?1 ORDER BY r.t_resp, r.id"
        ))?;
        let rows = stmt.query_map(params![ch(c)], |r| {
            Ok((
                IncomingRepairEntry {
                    entry: HistoryEntry {
                        message_id: MessageId::from(r.get::<_, Vec<u8>>(0)?),
                        retrieval_hint: blob(r.get(1)?),
                        sender_id: MessageId::from(r.get::<_, Vec<u8>>(2)?),
                    },
                    t_resp: r.get::<_, i64>(3)?.max(0) as u64,
                    bytes: Bytes::new(),
                },
                stored_at(r, 4)?,
            ))
        })?;
        for row in rows {
            let (e, s) = row?;
            snap.incoming_repair.push(e);
            stored[3].push(s);
        }
    }
    tx.commit()?;
    Ok((snap, stored))
}

fn drop_all(db: &mut Db, c: &ChannelId) -> PersistenceResult<()> {
    db.write(|tx, segments| {
        for table in [
            "log",
            "outgoing",
            "incoming",
            "outgoing_repair",
            "incoming_repair",
        ] {
            tx.prepare_cached(&format!("DELETE FROM {table} WHERE channel = ?1"))?
                .execute(params![ch(c)])?;
        }
        {
            let mut stmt =
                tx.prepare_cached("DELETE FROM message WHERE channel = ?1 RETURNING seg, len")?;
            let mut rows = stmt.query(params![ch(c)])?;
            while let Some(r) = rows.next()? {
                released(segments, r.get(0)?, r.get(1)?);
            }
        }
        tx.prepare_cached("DELETE FROM channel WHERE channel = ?1")?
            .execute(params![ch(c)])?;
        Ok(())
    })
}

/// Every single operation is its own transaction.
#[async_trait]
impl Persistence for SqliteStore {
    async fn save_lamport(&self, channel: &ChannelId, lamport: i64) -> PersistenceResult<()> {
        self.transaction(channel, vec![StoreOp::SaveLamport(lamport)])
            .await
    }

    async fn append_log_entry(
        &self,
        channel: &ChannelId,
        entry: &LogEntry,
    ) -> PersistenceResult<()> {
        self.transaction(channel, vec![StoreOp::AppendLogEntry(entry.clone())])
            .await
    }

    async fn remove_log_entry(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()> {
        self.transaction(channel, vec![StoreOp::RemoveLogEntry(id.clone())])
            .await
    }

    async fn save_outgoing(
        &self,
        channel: &ChannelId,
        entry: &OutgoingEntry,
    ) -> PersistenceResult<()> {
        self.transaction(channel, vec![StoreOp::SaveOutgoing(entry.clone())])
            .await
    }

    async fn remove_outgoing(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()> {
        self.transaction(channel, vec![StoreOp::RemoveOutgoing(id.clone())])
            .await
    }

    async fn save_incoming(
        &self,
        channel: &ChannelId,
        entry: &IncomingEntry,
    ) -> PersistenceResult<()> {
        self.transaction(channel, vec![StoreOp::SaveIncoming(entry.clone())])
            .await
    }

    async fn remove_incoming(&self, channel: &ChannelId, id: &MessageId) -> PersistenceResult<()> {
        self.transaction(channel, vec![StoreOp::RemoveIncoming(id.clone())])
            .await
    }

    async fn save_outgoing_repair(
        &self,
        channel: &ChannelId,
        entry: &OutgoingRepairEntry,
    ) -> PersistenceResult<()> {
        self.transaction(channel, vec![StoreOp::SaveOutgoingRepair(entry.clone())])
            .await
    }

    async fn remove_outgoing_repair(
        &self,
        channel: &ChannelId,
        id: &MessageId,
    ) -> PersistenceResult<()> {
        self.transaction(channel, vec![StoreOp::RemoveOutgoingRepair(id.clone())])
            .await
    }

    async fn save_incoming_repair(
        &self,
        channel: &ChannelId,
        entry: &IncomingRepairEntry,
    ) -> PersistenceResult<()> {
        self.transaction(channel, vec![StoreOp::SaveIncomingRepair(entry.clone())])
            .await
    }

    async fn remove_incoming_repair(
        &self,
        channel: &ChannelId,
        id: &MessageId,
    ) -> PersistenceResult<()> {
        self.transaction(channel, vec![StoreOp::RemoveIncomingRepair(id.clone())])
            .await
    }

    async fn set_retrieval_hint(
        &self,
        channel: &ChannelId,
        id: &MessageId,
        hint: &Bytes,
    ) -> PersistenceResult<()> {
        let op = StoreOp::SetRetrievalHint {
            message_id: id.clone(),
            hint: hint.clone(),
        };
        self.transaction(channel, vec![op]).await
    }

    async fn drop_channel(&self, channel: &ChannelId) -> PersistenceResult<()> {
        let channel = channel.clone();
        self.run(move |db| drop_all(db, &channel)).await
    }

    async fn load_channel(&self, channel: &ChannelId) -> PersistenceResult<ChannelSnapshot> {
        let channel = channel.clone();
        self.run(move |db| load(db, &channel)).await
    }

    /// One transaction for the whole batch.
    async fn apply_batch(&self, channel: &ChannelId, ops: &[StoreOp]) -> PersistenceResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        self.transaction(channel, ops.to_vec()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_thread_is_woken_once_per_step_of_wal_growth() {
        let mut w = WalWatch::default();
        assert_eq!(w.decide(10), WalAction::None);
        assert_eq!(w.decide(CHECKPOINT_PAGES), WalAction::WakeCheckpointer);
        assert_eq!(w.decide(CHECKPOINT_PAGES + 5), WalAction::None);
        assert_eq!(
            w.decide(2 * CHECKPOINT_PAGES + 5),
            WalAction::WakeCheckpointer
        );
        // The WAL started over: the next step counts from zero.
        assert_eq!(w.decide(3), WalAction::None);
        assert_eq!(w.decide(CHECKPOINT_PAGES), WalAction::WakeCheckpointer);
        // Too large: the connection thread checkpoints until the WAL starts over.
        assert_eq!(w.decide(CHECKPOINT_HERE_PAGES), WalAction::CheckpointHere);
        assert_eq!(
            w.decide(CHECKPOINT_HERE_PAGES + 7),
            WalAction::CheckpointHere
        );
        assert_eq!(w.decide(12), WalAction::None);
    }
}
