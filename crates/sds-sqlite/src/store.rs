//! Opening a store: one per database in a process, its threads, and the way jobs reach them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::Instant;

use rusqlite::Connection;
use sds_manager::persistence::{PersistenceError, PersistenceResult};
use sds_manager::{ChannelId, MessageId, StoreOp};

use crate::bytes::release_bytes;
use crate::connection::{next_job, Db, Job, Next, Pace, Progress, Spins, Work};
use crate::damage::{self, DamageReport, OnDamage};
use crate::identity::{self, Mismatch, Pairing};
use crate::key::{open_connection, seal_for};
use crate::segments::{sync_dir, Segments};
use crate::upkeep::{note_wal_size, sync_file, Checkpoint, SyncRound, Upkeep, WAL_SIZE_LIMIT};
use crate::write::{apply, reference_change};
use crate::{reply, schema, Durability, KeyProblem, OpenError, Options, StoreKey};

/// The SQLite store. Cheap to clone; clones share the connection thread.
///
/// Dropping the last handle closes the store and waits for it: its threads finish the work
/// they have (a compaction under way, say), run a last sync round that makes every operation
/// durable, and end — typically a few milliseconds, on the dropping thread. Once the drop
/// returns, the process may exit, and the database may be opened again, here or in another
/// process, without waiting.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

/// One open database: its connection, and the way to its connection thread.
pub(crate) struct Shared {
    /// The connection, taken by the connection thread for each job, or by a caller that runs
    /// its operation itself.
    pub(crate) db: Arc<Mutex<Db>>,
    /// Whether operations may run on their caller's thread ([`Options::inline`], with
    /// [`Durability::Normal`]).
    pub(crate) inline: bool,
    /// Jobs sent to the connection thread and not yet run: an operation runs on its caller's
    /// thread only when there are none, so operations never overtake ones sent before them.
    pub(crate) queued: Arc<std::sync::atomic::AtomicUsize>,
    /// Operations that ran on their caller's thread (tests check when they do).
    pub(crate) ran_inline: std::sync::atomic::AtomicU64,
    pub(crate) jobs: std_mpsc::Sender<Work>,
    pub(crate) path: PathBuf,
    /// The messages quarantined since the store was opened.
    pub(crate) damage: Arc<Mutex<DamageReport>>,
    /// Turns of the store's busy-wait loops, the connection thread's and its callers'.
    pub(crate) spins: Spins,
    /// Set when a task's busy-wait for its answer was preempted; the connection thread then
    /// stops spinning for a while (see `Pace::preempted`).
    pub(crate) contended: Arc<std::sync::atomic::AtomicBool>,
    /// The key it was opened with: opening it again in the process needs the same.
    pub(crate) key: Option<StoreKey>,
    /// Joins the connection thread when the last handle goes. Declared last: fields drop in
    /// order, so the job sender above is gone by then and the thread is closing.
    _closing: Closing,
}

/// Waits, on drop, for the connection thread to end: its closing round makes everything
/// durable, and it waits for the checkpoint thread in turn. Without it the store's threads
/// could still be writing while the process exits, and a library torn down at exit (OpenSSL,
/// with the feature `encryption`) would be used after its end.
struct Closing(Option<thread::JoinHandle<()>>);

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            // Never on the thread itself (a job that held the last handle).
            if handle.thread().id() != thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("path", &self.path)
            .field("inline", &self.inline)
            .finish_non_exhaustive()
    }
}

/// The stores open in this process, by canonical path: opening a database again returns the
/// open store (its segment files have one writer).
pub(crate) static OPEN: Mutex<Vec<(PathBuf, Weak<Shared>)>> = Mutex::new(Vec::new());

/// The real path of the database: symbolic links resolved (of the file itself when it exists,
/// otherwise of its directory), so the lock, the database and its message directory are the
/// same whatever path reaches them.
pub(crate) fn canonical(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => path.to_path_buf(),
    }
}

/// What the operating system says about opening `path` for reading and writing, and creating
/// files beside it, when SQLite could not open it: the reason SQLite's message leaves out.
pub(crate) fn open_cause(path: &Path) -> Option<std::io::Error> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        return Some(e);
    }
    // SQLite also creates `-wal` and `-shm` files beside the database.
    let probe = PathBuf::from(format!("{}-probe", path.display()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) => Some(e),
    }
}

/// The directory the database file is in.
fn db_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The connection thread's loop: runs jobs until every handle to the store is gone, taking the
/// connection's lock for each, and takes a turn of upkeep after each job, each nudge and at each
/// due time of a sync round (see [`Db::turn`]). `pace` says when to busy-wait (`notice`:
/// whether jobs may give notice before their commit at all). Returns at once if an operation
/// panicked while it held the lock: the connection's state is then unknown, and every operation
/// fails from then on.
fn serve(
    shared: &Mutex<Db>,
    rx: &std_mpsc::Receiver<Work>,
    round: &SyncRound,
    queued: &std::sync::atomic::AtomicUsize,
    mut pace: Pace,
    notice: bool,
    spins: &Spins,
) {
    loop {
        let Ok(due) = shared.lock().map(|db| db.upkeep.due) else {
            return;
        };
        let (next, preempted) = next_job(rx, pace.stay_awake(), due, spins);
        if round.wanted_here.load(Ordering::Acquire) {
            round.presync();
        }
        let Ok(mut db) = shared.lock() else {
            return;
        };
        let due_only = match next {
            Next::Job(job) => {
                let now = Instant::now();
                if preempted || db.contended.swap(false, Ordering::Relaxed) {
                    pace.preempted(now);
                }
                pace.started(job.sent, now);
                db.notice = notice && pace.spinning();
                (job.run)(&mut db);
                queued.fetch_sub(1, Ordering::AcqRel);
                pace.ended(db.answered.take().unwrap_or_else(Instant::now));
                db.after_job(true);
                false
            }
            Next::Nudge => false,
            Next::Due => true,
            Next::Closed => return,
        };
        db.turn(due_only);
    }
}

pub(crate) fn sql_err(e: rusqlite::Error) -> PersistenceError {
    PersistenceError::with_source(format!("sqlite: {e}"), e)
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
    /// `<path>-messages`, both at the real path (symbolic links resolved). A database already
    /// open in this process is shared: the handle returned is the open store's (and its
    /// options stay; the key must be the same, [`OpenError::Key`] otherwise). A database another process has open is waited for up to 5 s, then
    /// refused with [`OpenError::Messages`].
    ///
    /// Nothing stored is deleted for a mismatch or damage: a database whose message directory
    /// is missing ([`OpenError::MessagesMissing`]) or belongs to another database
    /// ([`OpenError::ForeignMessages`]) is refused, and so is one with missing or cut-short
    /// message bytes ([`OpenError::Damaged`]) unless [`Options::on_damage`] says to quarantine.
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
            let problem = match (&shared.key, &options.key) {
                (None, None) => None,
                (Some(open), Some(given)) if open.same_as(given) => None,
                (Some(_), Some(_)) => Some(KeyProblem::Wrong),
                (Some(_), None) => Some(KeyProblem::Missing),
                (None, Some(_)) => Some(KeyProblem::NotEncrypted),
            };
            if let Some(problem) = problem {
                return Err(OpenError::Key { path: key, problem });
            }
            return Ok(SqliteStore { shared });
        }
        let store = Self::open_new(&key, options)?;
        open.push((key, Arc::downgrade(&store.shared)));
        Ok(store)
    }

    pub(crate) fn open_new(path: &Path, options: Options) -> Result<Self, OpenError> {
        let durability = options.durability;
        let path = path.to_path_buf();
        let fail = |source| OpenError::Sqlite {
            path: path.clone(),
            source,
            cause: None,
        };
        // With a key, a database it does not open is refused here, before anything is written.
        let conn = open_connection(&path, None, options.key.as_ref())?;
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
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(fail)?;
        // Every statement this store runs stays prepared (rusqlite keeps 16 by default).
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&conn, &path)?;
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        let (segments, damage) = open_segments(&conn, &path, &wal, &options)?;
        // The names of the database and its WAL (sync rounds sync the WAL's bytes, not its
        // name), now that both exist.
        sync_dir(db_dir(&path)).map_err(|source| OpenError::Messages {
            path: db_dir(&path).to_path_buf(),
            source,
        })?;
        let progress = Arc::new(Progress::default());
        let round = Arc::new(SyncRound {
            unsynced: segments.unsynced(),
            progress: progress.clone(),
            wal,
            wanted_here: std::sync::atomic::AtomicBool::new(false),
        });
        // Checkpoints run on a second connection in a thread of their own, so syncing the
        // message files, copying the WAL into the database and syncing it stays off the path
        // of operations.
        let checkpointer = open_connection(&path, None, options.key.as_ref())?;
        checkpointer
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        checkpointer
            .pragma_update(None, "synchronous", sync)
            .map_err(fail)?;
        checkpointer
            .pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(fail)?;
        let (wake_checkpointer, checkpoint_due) = std_mpsc::sync_channel::<()>(1);
        let rounds = round.clone();
        let checkpoint_thread = thread::Builder::new()
            .name("sds-sqlite-ckpt".into())
            .spawn(move || {
                // Runs until the connection thread ends.
                while checkpoint_due.recv().is_ok() {
                    rounds.run(&checkpointer, Checkpoint::Passive);
                }
            })
            .map_err(OpenError::Thread)?;
        conn.wal_hook(Some(note_wal_size));
        let (jobs, rx) = std_mpsc::channel::<Work>();
        let damage = Arc::new(Mutex::new(damage));
        let spins = Spins::default();
        let spun = spins.clone();
        let contended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let wake = Box::new(move || {
            // Full means a wake-up is already pending.
            let _ = wake_checkpointer.try_send(());
        });
        let db = Arc::new(Mutex::new(Db {
            conn,
            segments,
            progress,
            soon: None,
            notice: false,
            answered: None,
            contended: contended.clone(),
            on_damage: options.on_damage,
            damage: damage.clone(),
            keep_history: options.keep_history,
            wal_pages: 0,
            upkeep: Upkeep::new(options.sync_interval, round.clone(), wake),
        }));
        let (connection, waiting) = (db.clone(), queued.clone());
        let connection_thread = thread::Builder::new()
            .name("sds-sqlite".into())
            .spawn(move || {
                // Runs until every handle to the store is dropped.
                serve(
                    &connection,
                    &rx,
                    &round,
                    &waiting,
                    Pace::new(options.spin),
                    durability == Durability::Normal,
                    &spun,
                );
                {
                    let mut db = connection.lock().unwrap_or_else(|e| e.into_inner());
                    db.close();
                    // The checkpoint thread ends once it can no longer be woken.
                    db.upkeep.stop_waking();
                }
                let _ = checkpoint_thread.join();
            })
            .map_err(OpenError::Thread)?;
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                db,
                inline: options.inline && durability == Durability::Normal,
                queued,
                ran_inline: std::sync::atomic::AtomicU64::new(0),
                jobs,
                path,
                damage,
                spins,
                contended,
                key: options.key,
                _closing: Closing(Some(connection_thread)),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The messages quarantined (with [`OnDamage::Quarantine`]) since the store was opened:
    /// their bytes are missing or damaged; their rows are kept, their entries left out.
    pub fn damage(&self) -> DamageReport {
        self.shared
            .damage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The directory of message segment files, `<database>-messages`.
    pub fn messages_dir(&self) -> PathBuf {
        messages_dir(&self.shared.path)
    }

    /// Runs `f` on the connection thread and awaits its result.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> PersistenceResult<T> + Send + 'static,
    ) -> PersistenceResult<T> {
        let (answer, mut reply) = reply::pair();
        let run = Box::new(move |db: &mut Db| {
            if db.notice {
                db.soon = Some(answer.soon_handle());
            }
            let result = f(db);
            db.soon = None;
            db.answered = Some(Instant::now());
            answer.send(result);
        });
        let job = Job {
            sent: Instant::now(),
            run,
        };
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        if self.shared.jobs.send(Work::Job(job)).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(PersistenceError::new("the database thread has stopped"));
        }
        let answer = (&mut reply).await;
        if reply.spins > 0 {
            self.shared
                .spins
                .fetch_add(reply.spins, std::sync::atomic::Ordering::Relaxed);
        }
        if reply.preempted {
            self.shared
                .contended
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        answer.ok_or_else(|| PersistenceError::new("the database thread stopped mid-operation"))?
    }

    /// Runs `f` on the caller's thread if the store allows it ([`Options::inline`]), the
    /// connection is free and no job sent before waits for the connection thread; then leaves
    /// the upkeep that takes long to that thread. Gives `f` back otherwise.
    fn run_inline<T, F>(&self, f: F) -> Result<PersistenceResult<T>, F>
    where
        F: FnOnce(&mut Db) -> PersistenceResult<T>,
    {
        if !self.shared.inline {
            return Err(f);
        }
        let mut db = match self.shared.db.try_lock() {
            Ok(db) => db,
            Err(std::sync::TryLockError::WouldBlock) => return Err(f),
            Err(std::sync::TryLockError::Poisoned(_)) => {
                return Ok(Err(PersistenceError::new(
                    "the database connection failed mid-operation earlier; reopen the store",
                )))
            }
        };
        // Taken under the lock: the connection thread counts a job done while it holds it.
        if self.shared.queued.load(Ordering::Acquire) > 0 {
            return Err(f);
        }
        let result = f(&mut db);
        let nudge = db.after_job(false);
        drop(db);
        self.shared.ran_inline.fetch_add(1, Ordering::Relaxed);
        if nudge {
            // Fails only once the thread has stopped, which the next operation reports.
            let _ = self.shared.jobs.send(Work::Nudge);
        }
        Ok(result)
    }

    /// Applies `ops` in one transaction: on the caller's thread when it may
    /// ([`run_inline`](Self::run_inline)), on the connection thread otherwise.
    pub(crate) async fn transaction(
        &self,
        channel: &ChannelId,
        ops: Vec<StoreOp>,
    ) -> PersistenceResult<()> {
        let channel = channel.clone();
        let apply_all = move |db: &mut Db| {
            let keep_history = db.keep_history;
            db.write(|tx, segments| {
                let mut unreferenced = Vec::new();
                for op in &ops {
                    apply(tx, segments, &channel, op, &mut unreferenced, keep_history)?;
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
        };
        match self.run_inline(apply_all) {
            Ok(result) => result,
            Err(apply_all) => self.run(apply_all).await,
        }
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
pub(crate) fn messages_dir(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-messages", db.display()))
}

/// Opens the segment directory with what the database refers to, after checking that the two
/// belong together and that every message's bytes are there (see [`identity`] and [`damage`]).
/// Returns the damage quarantined (with [`OnDamage::Quarantine`]).
pub(crate) fn open_segments(
    conn: &Connection,
    path: &Path,
    wal: &Path,
    options: &Options,
) -> Result<(Segments, DamageReport), OpenError> {
    let dir = messages_dir(path);
    let sql = |source| OpenError::Sqlite {
        path: path.to_path_buf(),
        source,
        cause: None,
    };
    let io = |source| OpenError::Messages {
        path: dir.clone(),
        source,
    };
    let database = identity::of_database(conn).map_err(sql)?;
    let directory = identity::of_directory(&dir).map_err(io)?;
    let refers = identity::refers_to_segments(conn).map_err(sql)?;
    let pairing = identity::pair(
        database.as_deref(),
        directory.as_deref(),
        dir.is_dir(),
        refers,
    )
    .map_err(|m| match m {
        Mismatch::Missing => OpenError::MessagesMissing {
            path: path.to_path_buf(),
            messages: dir.clone(),
        },
        Mismatch::Foreign {
            database,
            directory,
        } => OpenError::ForeignMessages {
            path: path.to_path_buf(),
            messages: dir.clone(),
            database,
            directory,
        },
    })?;
    let damage = damage::find_missing(conn, &dir).map_err(sql)?;
    if !damage.is_empty() {
        if options.on_damage == OnDamage::Refuse {
            return Err(OpenError::Damaged {
                path: path.to_path_buf(),
                report: damage,
            });
        }
        damage::quarantine(conn, &damage).map_err(sql)?;
    }
    let mut stmt = conn
        .prepare("SELECT seg, SUM(len) FROM message WHERE seg IS NOT NULL GROUP BY seg")
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
    // Files nothing refers to are garbage of this database's own only when the pair is known
    // and whole; otherwise they are kept aside.
    let keep_aside = pairing != Pairing::Matched || !damage.is_empty();
    let segments = Segments::open(
        dir.clone(),
        options.segment_bytes.max(1),
        options.durability == Durability::Full,
        &live,
        highest,
        keep_aside,
        seal_for(options.key.as_ref()),
    )
    .map_err(io)?;
    if pairing != Pairing::Matched {
        // The database's first: a crash before the directory's is adopted again.
        let id = database.unwrap_or_else(identity::new_identity);
        identity::set_database(conn, &id).map_err(sql)?;
        // Durable before the directory's (with `NORMAL` a commit is not): a database rolled
        // back to no identity next to a directory with one would look like another's.
        sync_file(wal)
            .and_then(|()| sync_dir(db_dir(path)))
            .map_err(io)?;
        identity::set_directory(&dir, &id).map_err(io)?;
    }
    Ok((segments, damage))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use sds_manager::persistence::Persistence;

    use super::*;
    use crate::Spin;

    fn spins(store: &SqliteStore) -> u64 {
        store.shared.spins.load(Ordering::Relaxed)
    }

    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sds-spin-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A store whose operations all go to the connection thread, where spinning happens.
    fn open_spinning(dir: &Path, name: &str, spin: Spin) -> SqliteStore {
        let options = Options {
            spin,
            inline: false,
            ..Options::default()
        };
        SqliteStore::open_with_options(dir.join(name), options).unwrap()
    }

    /// Operations with pauses between them, as an application issues them: each finds the
    /// connection thread idle.
    async fn paced_operations(store: &SqliteStore) {
        for i in 0..40 {
            store.save_lamport(&"c".into(), i).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Bursts of operations sent while the connection thread is held up, so each is sent
    /// before the one ahead of it ends: back to back whatever the machine's speed.
    async fn bursts(store: &SqliteStore) {
        let channel: ChannelId = "c".into();
        for burst in 0..5 {
            let (release, held) = std::sync::mpsc::channel::<()>();
            let hold = store.run(move |_| {
                let _ = held.recv();
                Ok(())
            });
            let ops = (0..8).map(|i| store.save_lamport(&channel, burst * 8 + i));
            let all = async {
                let (held, ops) = tokio::join!(hold, futures_join_all(ops));
                held.unwrap();
                for op in ops {
                    op.unwrap();
                }
            };
            let releaser = async {
                // Every operation of the burst is sent before the hold ends.
                tokio::task::yield_now().await;
                release.send(()).unwrap();
            };
            tokio::join!(all, releaser);
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Polls every future in turn until all are done (the futures crate's `join_all`).
    async fn futures_join_all<F: std::future::Future>(
        futures: impl Iterator<Item = F>,
    ) -> Vec<F::Output> {
        let mut futures: Vec<_> = futures.map(|f| Some(Box::pin(f))).collect();
        let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
                if let Some(fut) = f {
                    match fut.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => {
                            *o = Some(v);
                            *f = None;
                        }
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        out.into_iter().flatten().collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_store_does_not_spin_unless_told_to_always() {
        let dir = test_dir("idle");
        for (name, spin) in [
            ("default.db", None),
            ("adaptive.db", Some(Spin::Adaptive)),
            ("off.db", Some(Spin::Off)),
        ] {
            let store = match spin {
                None => SqliteStore::open(dir.join(name)).unwrap(),
                Some(spin) => open_spinning(&dir, name, spin),
            };
            paced_operations(&store).await;
            assert_eq!(spins(&store), 0, "{name} spun between paced operations");
        }
        // The counter counts: told to spin always, the same store spins.
        let store = open_spinning(&dir, "always.db", Spin::Always);
        paced_operations(&store).await;
        assert!(spins(&store) > 0, "Spin::Always had no effect");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_spins_under_back_to_back_load_unless_told_not_to() {
        let dir = test_dir("busy");
        let store = open_spinning(&dir, "adaptive.db", Spin::Adaptive);
        bursts(&store).await;
        assert!(spins(&store) > 0, "adaptive spin did not spin under load");
        let store = open_spinning(&dir, "off.db", Spin::Off);
        bursts(&store).await;
        assert_eq!(spins(&store), 0, "Spin::Off spun");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn ran_inline(store: &SqliteStore) -> u64 {
        store.shared.ran_inline.load(Ordering::Relaxed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn operations_run_on_the_callers_thread_only_when_they_may() {
        let dir = test_dir("inline");
        let c: ChannelId = "c".into();
        let store = SqliteStore::open(dir.join("default.db")).unwrap();
        for i in 0..20 {
            store.save_lamport(&c, i).await.unwrap();
        }
        assert_eq!(
            ran_inline(&store),
            20,
            "a free connection, NORMAL: on the caller's thread"
        );
        // Reads stay on the connection thread; what was written is there.
        assert_eq!(store.load_channel(&c).await.unwrap().lamport, Some(19));
        assert_eq!(ran_inline(&store), 20);

        // A job sent before and not yet run: the operation waits its turn behind it.
        store.shared.queued.fetch_add(1, Ordering::AcqRel);
        store.save_lamport(&c, 20).await.unwrap();
        store.shared.queued.fetch_sub(1, Ordering::AcqRel);
        assert_eq!(ran_inline(&store), 20, "overtook a job sent before it");
        // The connection busy on the thread: handed over, and done after the job holding it.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let hold = store.run(move |db| {
            let _ = held.recv();
            // Still the value from before: the operation sent meanwhile waits.
            Ok(crate::load::load(db, &"c".into())?.lamport)
        });
        let op = async {
            tokio::task::yield_now().await;
            let done = store.save_lamport(&c, 21).await;
            done
        };
        let releaser = async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            release.send(()).unwrap();
        };
        let (seen, done, ()) = tokio::join!(hold, op, releaser);
        done.unwrap();
        assert_eq!(seen.unwrap(), Some(20));
        assert_eq!(ran_inline(&store), 20, "ran while the connection was busy");
        assert_eq!(store.load_channel(&c).await.unwrap().lamport, Some(21));

        for (name, options) in [
            (
                "full.db",
                Options {
                    durability: Durability::Full,
                    ..Options::default()
                },
            ),
            (
                "off.db",
                Options {
                    inline: false,
                    ..Options::default()
                },
            ),
        ] {
            let store = SqliteStore::open_with_options(dir.join(name), options).unwrap();
            for i in 0..5 {
                store.save_lamport(&c, i).await.unwrap();
            }
            assert_eq!(
                ran_inline(&store),
                0,
                "{name} ran operations on the caller's thread"
            );
            assert_eq!(store.load_channel(&c).await.unwrap().lamport, Some(4));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn quiet_rounds(store: &SqliteStore) -> u64 {
        let db = store.shared.db.lock().unwrap();
        db.upkeep.quiet_rounds
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_busy_with_operations_on_callers_threads_is_not_quiet() {
        let dir = test_dir("quiet");
        let interval = std::time::Duration::from_millis(100);
        let options = Options {
            sync_interval: interval,
            ..Options::default()
        };
        let store = SqliteStore::open_with_options(dir.join("q.db"), options).unwrap();
        let c: ChannelId = "c".into();
        // Ten sync intervals of back-to-back operations, none of them sent to the connection
        // thread: its due times come with nothing sent, but the store is not quiet.
        let start = Instant::now();
        let mut i = 0;
        while start.elapsed() < 10 * interval {
            store.save_lamport(&c, i).await.unwrap();
            i += 1;
        }
        // (Those that found the connection thread at its upkeep were handed to it.)
        assert!(
            ran_inline(&store) * 10 >= i as u64 * 9,
            "{} of {i}",
            ran_inline(&store)
        );
        let busy = quiet_rounds(&store);
        // A stall of the test of a whole interval would make one quiet, rightly.
        assert!(busy <= 2, "{busy} rounds for a quiet store while busy");
        // Once quiet, a round empties the WAL.
        let mut quiet = busy;
        for _ in 0..200 {
            tokio::time::sleep(interval / 4).await;
            quiet = quiet_rounds(&store);
            if quiet > busy {
                break;
            }
        }
        assert!(quiet > busy, "no round once quiet");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
