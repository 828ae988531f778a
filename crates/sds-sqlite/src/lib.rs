//! # sds-sqlite
//!
//! A [`Persistence`](sds_manager::persistence::Persistence) backend for the SDS [`ReliabilityManager`](sds_manager::ReliabilityManager) on an
//! embedded SQLite database (bundled: nothing to install).
//!
//! * Every batch of store operations (one protocol operation) is one transaction, and so is
//!   `drop_channel`: a crash leaves each operation entirely applied or not at all.
//! * The database runs in WAL mode. Durability is configurable (see [`Durability`]):
//!   - [`Durability::Full`]: before a call returns, its operation is on disk — rows, message
//!     bytes, and the names of files it created. Power loss or an OS crash loses nothing
//!     acknowledged. About two fsyncs per operation.
//!   - [`Durability::Normal`] (the default): before a call returns, its operation is in the WAL,
//!     which survives any crash of the process. Against power loss, operations are made durable
//!     by *sync rounds*: the message directory and segment files are synced, then the WAL is
//!     checkpointed and synced. A round runs at the latest [`Options::sync_interval`] (1 s)
//!     after a commit, and whenever the WAL has grown by 4 MB; on a quiet store the connection
//!     thread runs it and empties the WAL. Power loss keeps every operation acknowledged before
//!     the last completed round started, loses some or all of the later ones (about the last
//!     second's), and leaves the state after some prefix of the operations: none is
//!     half-applied. The kernel may write WAL pages out before a round syncs the message bytes
//!     they refer to, so messages stored since the last round may come back without their
//!     bytes: those are reported when the store is opened ([`OpenError::Damaged`], or
//!     quarantined with [`OnDamage::Quarantine`]), never silently left out.
//!
//!   The power-loss test (`tests/powerloss.rs`) records every write, fsync and file-name change
//!   of a store at work and checks both promises on hundreds of states a power loss could leave.
//! * One connection does the writing, behind a lock. With [`Durability::Normal`], an operation
//!   that finds it free (and no operation sent before it waiting) runs its transaction on the
//!   caller's thread — in B2 a median of 60 µs, 250 µs at the 99th percentile, never an
//!   fsync ([`Options::inline`]). Everything else goes to a dedicated connection thread, which async callers await: operations that
//!   find the connection busy, every operation with [`Durability::Full`] (whose commit waits
//!   for an fsync), reads, and the upkeep that takes long (compaction, sync rounds). A second
//!   thread, with its own connection, copies the WAL into the database (checkpoints) while
//!   operations go on. By default the threads busy-wait only while operations handed to them
//!   arrive back to back, which shortens each of them; an idle store, or one whose operations
//!   come apart, uses no CPU ([`Options::spin`], [`Spin`]).
//! * A message's bytes (about 19 KB at default settings) are stored once per channel, however
//!   many places refer to them (log, outgoing buffer, incoming buffer, repair responses), and
//!   released with the last reference. Bytes over 1 KiB are not written into the database
//!   (where they would pass through the WAL and again into the database at checkpoint) but
//!   appended once to a segment file in the directory `<database>-messages`; the row keeps
//!   their location and CRC-32. Segments rotate at [`Options::segment_bytes`], are deleted once
//!   nothing refers to them, and a segment holding mostly dead bytes is compacted, so the
//!   directory stays within about twice the live bytes. Bytes are written before the
//!   transaction that refers to them commits (with [`Durability::Full`], synced, with the
//!   directory when a segment file was created), and a segment is deleted only once the commit
//!   that emptied it is durable, so no crash leaves a row without bytes it was promised.
//! * Nothing stored is deleted for damage or a mismatch. The database and its message directory
//!   carry one identity: a database opened without its directory (moved, copied, replaced,
//!   emptied) is refused ([`OpenError::MessagesMissing`], [`OpenError::ForeignMessages`]), and
//!   the path is resolved (symbolic links) before anything is derived from it. Missing or
//!   damaged message bytes are an error ([`OpenError::Damaged`], or a failed load), or, with
//!   [`OnDamage::Quarantine`], their messages are marked and left out while their rows stay
//!   ([`SqliteStore::damage`] lists them; a copy received again makes them whole). Segment files
//!   nothing refers to are deleted only when the database and directory are known to belong
//!   together and nothing is damaged; otherwise they are kept in `unreferenced/`.
//! * One process at a time: the message directory is locked while a store is open. Opening a
//!   database that is already open in this process returns a handle to the same store.
//! * Encryption at rest, with the crate feature `encryption` and a key from the application
//!   ([`Options::key`], [`StoreKey`]): the database is opened through SQLCipher (compiled in
//!   like SQLite, using the system's OpenSSL libcrypto; `encryption-vendored-openssl` compiles
//!   OpenSSL in too), which encrypts and authenticates every page of the database and its WAL,
//!   and each message's bytes in a segment file are sealed with XChaCha20-Poly1305 under a
//!   random 192-bit nonce (no nonce repeats under a key, across restarts too), bound to their
//!   channel and message id. Both keys are derived from the application's with HKDF-SHA256. A
//!   wrong or missing key is [`OpenError::Key`], before anything is written, never an empty
//!   store; a record that fails authentication is damage like any other
//!   ([`DamageKind::Authentication`]: the load fails, or with quarantine the message is left
//!   out), never deleted. The store's identity file, lock file and file names are not
//!   secret and stay in the clear. A plain database is not converted: a key opens only a store
//!   created with it. [`check_with_key`] and [`repair_with_key`] check an encrypted store.
//! * The schema is versioned with `PRAGMA user_version` and migrated forward on open; a database
//!   written by a newer version is refused with [`OpenError::TooNew`] rather than misread.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use sds_manager::{ManagerConfig, ReliabilityManager};
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

mod bytes;
mod check;
mod codec;
mod connection;
mod damage;
mod identity;
mod key;
mod load;
mod persistence;
mod reply;
mod schema;
mod segments;
mod store;
mod upkeep;
mod write;

use std::path::PathBuf;

pub use check::{check, check_with_key, repair, repair_with_key, CheckReport};
pub use damage::{DamageKind, DamageReport, DamagedMessage, OnDamage};
pub use key::{StoreKey, StoreKeyError};
pub use schema::SCHEMA_VERSION;
pub use store::{remove_database, SqliteStore};

/// How hard a commit tries to survive failures beyond the process (see
/// [the crate docs](crate) for exactly what each promises).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = NORMAL` with WAL: an acknowledged operation survives a crash of the
    /// process; against power loss it is durable once the next sync round has run (at most
    /// [`Options::sync_interval`] later), and power loss leaves an earlier state, with
    /// messages whose bytes did not make it reported. The default.
    #[default]
    Normal,
    /// `synchronous = FULL`: every acknowledged operation survives power loss; an fsync of the
    /// WAL per operation, and of the message bytes (and directory) when it stores any.
    Full,
}

/// When the store's threads busy-wait instead of sleeping (see [`Options::spin`]).
///
/// Waking a sleeping thread is slow on some machines (idle virtual CPUs that halt: ~22 µs a
/// wake-up, a quarter of a durable operation), and an operation handed to the connection
/// thread costs two: the thread's for the job, the task's for the answer. (With
/// [`Options::inline`], a `NORMAL` operation that finds the connection free runs on its
/// caller's thread and costs none; spinning concerns the others.) Spinning, the connection thread keeps
/// polling for the next job for 50 µs after each one, and (with [`Durability::Normal`]) gives
/// the waiting task notice just before its commit, after which the task polls for up to 60 µs
/// for the answer instead of sleeping. That hides both wake-ups when operations come one after
/// another, at the cost of CPU time while it lasts: up to ~110 µs per operation, which on a
/// phone is battery and on a loaded machine is taken from other work (see `docs/BENCHMARKS.md`,
/// B2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spin {
    /// Never: every wait sleeps.
    Off,
    /// Only while operations arrive back to back, and only while the machine's CPUs are not
    /// contended: when a job was sent within 50 µs of the end of the one before (or while it
    /// was running), the connection thread polls 50 µs for the next one and gives notice before
    /// the commit; a job sent after a longer pause switches both off again. A spinning thread
    /// (the connection thread, or a task waiting for its answer) that finds it was preempted —
    /// other work wanted its CPU, so spinning took from that work instead of using idle time —
    /// stops spinning for 200 ms. An idle store, or one whose operations come apart, never
    /// spins; a burst of operations costs at most one 50 µs poll after its last. The default.
    #[default]
    Adaptive,
    /// After every operation, whatever the pace.
    Always,
}

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// How hard a commit tries to survive failures beyond the process.
    pub durability: Durability,
    /// Size at which a message segment file (see [the crate docs](crate)) is closed and a new
    /// one started. Default 64 MiB.
    pub segment_bytes: u64,
    /// What to do about message bytes that are missing or damaged: refuse (the default) or
    /// quarantine the messages. Nothing is deleted either way (see [`OnDamage`]).
    pub on_damage: OnDamage,
    /// When threads of the store busy-wait to shave the latency of back-to-back operations.
    /// By default ([`Spin::Adaptive`]) only while operations arrive back to back: an idle
    /// store, or one whose operations come apart, never spins and uses no CPU.
    pub spin: Spin,
    /// With [`Durability::Normal`], let an operation (a batch of store operations) run its
    /// transaction on the calling task's thread when the connection is free and no operation
    /// sent before it waits, instead of handing it to the connection thread and waiting for the
    /// answer. That saves two thread wake-ups per operation — on some machines more than the
    /// operation's own statements — and blocks the caller's thread for as long as the
    /// transaction takes: the statements and the write of the WAL pages into the page cache,
    /// in B2 (`docs/BENCHMARKS.md`) a median of 60 µs and 250 µs at the 99th percentile, never
    /// an fsync. What takes longer (a checkpoint of an overgrown WAL, compacting a segment,
    /// sync rounds) stays on the store's threads, and so does every operation with
    /// [`Durability::Full`], whose commit waits for an fsync, and every read (loading a
    /// channel, `read_log`). An operation that finds the connection busy with such work is
    /// handed over and waits for it (a few milliseconds when the WAL reaches its bound), as it
    /// would with this off. On by default; off, every operation is handed to the connection
    /// thread, as with `FULL`.
    pub inline: bool,
    /// With [`Durability::Normal`], the longest a commit waits before a sync round makes it
    /// durable against power loss (message bytes first, then the WAL); see
    /// [the crate docs](crate). Default 1 s. On a quiet store the round also folds the WAL into
    /// the database and empties it.
    pub sync_interval: std::time::Duration,
    /// Keep the messages the bounded log evicts (after `max_message_history` later ones), with
    /// their bytes, so that [`read_log`](sds_manager::persistence::Persistence::read_log) — and the
    /// manager's `read_log` — return a channel's whole history. Off by default: the store then
    /// holds what the protocol needs and no more. Evicted entries are never loaded into the
    /// engine; `remove_channel` deletes them with the rest of the channel.
    pub keep_history: bool,
    /// The key of an encrypted store, `None` (the default) for a plain one. With a key, the
    /// database is opened through SQLCipher (every page of it and of its WAL encrypted and
    /// authenticated) and message bytes in segment files are sealed with XChaCha20-Poly1305,
    /// under keys derived from this one (see [`StoreKey`]). A new database is created
    /// encrypted; an existing one opens only with its own key ([`OpenError::Key`]); a plain
    /// database is not converted. Needs the crate feature `encryption` (without it, opening
    /// with a key fails with [`KeyProblem::Unsupported`]).
    pub key: Option<StoreKey>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::default(),
            segment_bytes: 64 << 20,
            on_damage: OnDamage::default(),
            spin: Spin::default(),
            inline: true,
            sync_interval: std::time::Duration::from_secs(1),
            keep_history: false,
            key: None,
        }
    }
}

/// Why a key does not open a database ([`OpenError::Key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The database is encrypted under another key.
    #[error("the key is wrong (or the file is not a database)")]
    Wrong,
    /// No key was given, and the file is not a plain SQLite database: encrypted, or not a
    /// database at all.
    #[error("the database is encrypted (or not a database): give its key")]
    Missing,
    /// A key was given for a plain (unencrypted) database, which is not converted.
    #[error("a key was given, but the database is not encrypted")]
    NotEncrypted,
    /// A key was given to a build without the crate feature `encryption`.
    #[error("a key was given, but this build has no encryption (crate feature `encryption`)")]
    Unsupported,
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// SQLite refused (file not accessible, not a database, …).
    #[error("cannot open {path}: {source}{}", cause.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
        /// What the operating system said when the file or its directory was tried directly
        /// (permission denied, no such directory, read-only file system, …), when SQLite's own
        /// error does not say.
        cause: Option<std::io::Error>,
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
    /// The database refers to message files, and its message directory is missing: the
    /// database was moved or copied without it, or is opened through another path. Nothing was
    /// changed; put the directory back beside it (`<database>-messages`).
    #[error(
        "{path} refers to message files in {messages}, which does not exist; was the database \
         moved without it? Nothing was changed"
    )]
    MessagesMissing {
        /// The database.
        path: PathBuf,
        /// The directory it needs.
        messages: PathBuf,
    },
    /// The message directory belongs to another database (or the database looks new: emptied
    /// or replaced). Nothing was changed.
    #[error(
        "{messages} belongs to another database than {path} ({}); nothing was changed",
        if database.is_some() { "the identities differ" } else { "the database looks new or emptied" }
    )]
    ForeignMessages {
        /// The database.
        path: PathBuf,
        /// The directory.
        messages: PathBuf,
        /// The database's identity (`None`: it has none, it looks new).
        database: Option<String>,
        /// The directory's identity.
        directory: String,
    },
    /// Message bytes the database refers to are missing or cut short. Nothing was changed;
    /// restore the files, or open with [`OnDamage::Quarantine`] to go on without those messages.
    #[error("{path}: {report}; nothing was changed")]
    Damaged {
        /// The database.
        path: PathBuf,
        /// The damaged messages.
        report: DamageReport,
    },
    /// The key given does not open the database (or a key is needed, or this build cannot use
    /// one). Nothing was changed.
    #[error("cannot open {path}: {problem}; nothing was changed")]
    Key {
        /// The database.
        path: PathBuf,
        /// What is wrong.
        problem: KeyProblem,
    },
    /// The connection thread could not be started.
    #[error("cannot start the database thread: {0}")]
    Thread(std::io::Error),
}
