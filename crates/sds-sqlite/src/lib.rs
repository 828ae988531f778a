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
//!   the WAL into the database (checkpoints) while operations go on.
//! * A message's bytes (about 19 KB at default settings) are stored once per channel, however
//!   many places refer to them (log, outgoing buffer, incoming buffer, repair responses), and
//!   deleted with the last reference.
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
mod schema;

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::thread;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use sds::persistence::{Persistence, PersistenceError, PersistenceResult};
use sds::{
    Bytes, ChannelId, ChannelSnapshot, HistoryEntry, IncomingEntry, IncomingRepairEntry, LogEntry,
    MessageId, OutgoingEntry, OutgoingRepairEntry, StoreOp,
};
use tokio::sync::oneshot;

pub use schema::SCHEMA_VERSION;

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
    /// The connection thread could not be started.
    #[error("cannot start the database thread: {0}")]
    Thread(std::io::Error),
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

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

/// WAL pages after which the checkpoint thread is woken (~8 MB at 8 KiB pages).
const CHECKPOINT_PAGES: i32 = 1_000;

/// WAL pages after which the connection thread checkpoints itself (~80 MB). The checkpoint
/// thread copies frames while new ones are appended, so it rarely finds the WAL fully copied
/// between two commits, which SQLite needs to start the WAL over; here it is, after a short
/// catch-up, and the WAL stays bounded even if the checkpoint thread falls behind.
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
    jobs: std_mpsc::Sender<Job>,
    path: PathBuf,
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
        let path = path.as_ref().to_path_buf();
        let fail = |source| OpenError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        // 8 KiB pages: a ~19 KB message takes three pages instead of five.
        conn.pragma_update(None, "page_size", 8192).map_err(fail)?;
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
                let mut conn = conn;
                let mut wal = WalWatch::default();
                // Runs until every handle to the store is dropped.
                while let Some(job) = next_job(&rx) {
                    job(&mut conn);
                    match wal.after_job() {
                        WalAction::None => {}
                        WalAction::WakeCheckpointer => {
                            // Full means a wake-up is already pending.
                            let _ = wake_checkpointer.try_send(());
                        }
                        WalAction::CheckpointHere => {
                            let _ = checkpoint(&conn);
                        }
                    }
                }
            })
            .map_err(OpenError::Thread)?;
        Ok(SqliteStore { jobs, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection thread and awaits its result.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> PersistenceResult<T> + Send + 'static,
    ) -> PersistenceResult<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.jobs
            .send(job)
            .map_err(|_| PersistenceError::new("the database thread has stopped"))?;
        rx.await
            .map_err(|_| PersistenceError::new("the database thread stopped mid-operation"))?
    }

    /// Applies `ops` in one transaction.
    async fn transaction(&self, channel: &ChannelId, ops: Vec<StoreOp>) -> PersistenceResult<()> {
        let channel = channel.clone();
        self.run(move |conn| {
            let tx = conn.transaction().map_err(sql_err)?;
            ensure_channel_row(&tx, &channel).map_err(sql_err)?;
            let mut unreferenced = Vec::new();
            for op in &ops {
                apply(&tx, &channel, op, &mut unreferenced).map_err(sql_err)?;
            }
            // Bytes are released after the whole batch: a message that leaves one place and
            // enters another in the same operation (incoming buffer to log) keeps its row
            // instead of being deleted and written again.
            unreferenced.sort_unstable();
            unreferenced.dedup();
            for id in &unreferenced {
                release_bytes(&tx, &channel, id).map_err(sql_err)?;
            }
            tx.commit().map_err(sql_err)
        })
        .await
    }
}

fn ch(c: &ChannelId) -> &[u8] {
    c.as_bytes()
}

/// Stores a message's bytes once per channel.
fn put_bytes(
    tx: &Transaction<'_>,
    channel: &ChannelId,
    id: &MessageId,
    bytes: &[u8],
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO message (channel, id, bytes) VALUES (?1, ?2, ?3) \
         ON CONFLICT (channel, id) DO NOTHING",
    )?
    .execute(params![ch(channel), id.as_bytes(), bytes])?;
    Ok(())
}

/// Deletes a message's bytes once nothing refers to them any more.
fn release_bytes(
    tx: &Transaction<'_>,
    channel: &ChannelId,
    id: &MessageId,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "DELETE FROM message WHERE channel = ?1 AND id = ?2 \
         AND NOT EXISTS (SELECT 1 FROM log WHERE channel = ?1 AND id = ?2) \
         AND NOT EXISTS (SELECT 1 FROM outgoing WHERE channel = ?1 AND id = ?2) \
         AND NOT EXISTS (SELECT 1 FROM incoming WHERE channel = ?1 AND id = ?2) \
         AND NOT EXISTS (SELECT 1 FROM incoming_repair WHERE channel = ?1 AND id = ?2)",
    )?
    .execute(params![ch(channel), id.as_bytes()])?;
    Ok(())
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
fn ensure_channel_row(tx: &Transaction<'_>, c: &ChannelId) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO channel (channel) VALUES (?1) ON CONFLICT DO NOTHING")?
        .execute(params![ch(c)])?;
    Ok(())
}

fn apply(
    tx: &Transaction<'_>,
    c: &ChannelId,
    op: &StoreOp,
    unreferenced: &mut Vec<MessageId>,
) -> rusqlite::Result<()> {
    match op {
        StoreOp::SaveLamport(l) => {
            tx.prepare_cached("UPDATE channel SET lamport = ?2 WHERE channel = ?1")?
                .execute(params![ch(c), l])?;
        }
        StoreOp::AppendLogEntry(e) => {
            let met = e.is_met_marker();
            if !met {
                put_bytes(tx, c, &e.message_id, &e.bytes)?;
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
            put_bytes(tx, c, &e.message_id, &e.bytes)?;
            let seq: i64 = tx
                .prepare_cached(
                    "UPDATE channel SET next_seq = next_seq + 1 WHERE channel = ?1 RETURNING next_seq",
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
            put_bytes(tx, c, &e.message_id, &e.bytes)?;
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
            put_bytes(tx, c, &e.entry.message_id, &e.bytes)?;
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

fn load(conn: &mut Connection, c: &ChannelId) -> rusqlite::Result<ChannelSnapshot> {
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
    {
        let mut stmt = tx.prepare_cached(
            "SELECT l.id, l.lamport, l.sender, l.hint, \
             CASE WHEN l.met THEN x'' ELSE COALESCE(m.bytes, x'') END FROM log l \
             LEFT JOIN message m ON m.channel = l.channel AND m.id = l.id \
             WHERE l.channel = ?1 ORDER BY l.lamport, l.id",
        )?;
        let rows = stmt.query_map(params![ch(c)], |r| {
            Ok(LogEntry {
                message_id: MessageId::from(r.get::<_, Vec<u8>>(0)?),
                lamport_timestamp: r.get(1)?,
                sender_id: MessageId::from(r.get::<_, Vec<u8>>(2)?),
                retrieval_hint: blob(r.get(3)?),
                bytes: blob(r.get(4)?),
            })
        })?;
        for row in rows {
            snap.log.push(row?);
        }
    }
    {
        let mut stmt = tx.prepare_cached(
            "SELECT o.id, m.bytes, o.send_time, o.attempts, o.possible_acks FROM outgoing o \
             JOIN message m ON m.channel = o.channel AND m.id = o.id \
             WHERE o.channel = ?1 ORDER BY o.seq",
        )?;
        let rows = stmt.query_map(params![ch(c)], |r| {
            Ok(OutgoingEntry {
                message_id: MessageId::from(r.get::<_, Vec<u8>>(0)?),
                bytes: blob(r.get(1)?),
                send_time: r.get::<_, i64>(2)?.max(0) as u64,
                attempts: r.get(3)?,
                possible_acks: r.get(4)?,
            })
        })?;
        for row in rows {
            snap.outgoing.push(row?);
        }
    }
    {
        let mut stmt = tx.prepare_cached(
            "SELECT i.id, m.bytes, i.missing, i.received_at FROM incoming i \
             JOIN message m ON m.channel = i.channel AND m.id = i.id \
             WHERE i.channel = ?1 ORDER BY i.id",
        )?;
        let rows = stmt.query_map(params![ch(c)], |r| {
            let missing: Vec<u8> = r.get(2)?;
            Ok((
                MessageId::from(r.get::<_, Vec<u8>>(0)?),
                blob(r.get(1)?),
                missing,
                r.get::<_, i64>(3)?.max(0) as u64,
            ))
        })?;
        for row in rows {
            let (message_id, bytes, missing, received_at) = row?;
            // A missing set that does not decode is recomputed by the engine from the message
            // itself, so an empty one is a safe reading.
            let missing = codec::decode_entries(&missing).unwrap_or_default();
            snap.incoming.push(IncomingEntry {
                message_id,
                bytes,
                missing,
                received_at,
            });
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
        let mut stmt = tx.prepare_cached(
            "SELECT r.id, r.hint, r.sender, r.t_resp, m.bytes FROM incoming_repair r \
             JOIN message m ON m.channel = r.channel AND m.id = r.id \
             WHERE r.channel = ?1 ORDER BY r.t_resp, r.id",
        )?;
        let rows = stmt.query_map(params![ch(c)], |r| {
            Ok(IncomingRepairEntry {
                entry: HistoryEntry {
                    message_id: MessageId::from(r.get::<_, Vec<u8>>(0)?),
                    retrieval_hint: blob(r.get(1)?),
                    sender_id: MessageId::from(r.get::<_, Vec<u8>>(2)?),
                },
                t_resp: r.get::<_, i64>(3)?.max(0) as u64,
                bytes: blob(r.get(4)?),
            })
        })?;
        for row in rows {
            snap.incoming_repair.push(row?);
        }
    }
    tx.commit()?;
    Ok(snap)
}

fn drop_all(conn: &mut Connection, c: &ChannelId) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for table in [
        "log",
        "outgoing",
        "incoming",
        "outgoing_repair",
        "incoming_repair",
        "message",
        "channel",
    ] {
        tx.prepare_cached(&format!("DELETE FROM {table} WHERE channel = ?1"))?
            .execute(params![ch(c)])?;
    }
    tx.commit()
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
        self.run(move |conn| drop_all(conn, &channel).map_err(sql_err))
            .await
    }

    async fn load_channel(&self, channel: &ChannelId) -> PersistenceResult<ChannelSnapshot> {
        let channel = channel.clone();
        self.run(move |conn| load(conn, &channel).map_err(sql_err))
            .await
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
