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

mod bytes;
mod codec;
mod connection;
mod load;
mod persistence;
mod reply;
mod schema;
mod segments;
mod store;
mod write;

use std::path::PathBuf;

pub use schema::SCHEMA_VERSION;
pub use store::{remove_database, SqliteStore};

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
