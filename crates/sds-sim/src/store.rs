//! Members' SQLite stores, when a scenario persists state: one file per member, driven from one
//! current-thread runtime.

use std::path::{Path, PathBuf};

use sds_manager::persistence::Persistence;
use sds_proto::engine::{Channel, Config, StoreOp};
use sds_proto::ChannelId;
use sds_sqlite::SqliteStore;

use crate::Error;

/// Every member's store.
pub(crate) struct Stores {
    rt: tokio::runtime::Runtime,
    stores: Vec<SqliteStore>,
}

impl Stores {
    /// Opens `participants` fresh stores in `dir` (created if needed), `p0000.db` onwards; what
    /// an earlier run left there is removed first.
    pub(crate) fn open(dir: &Path, participants: usize) -> Result<Self, Error> {
        let failed = Error::Failed;
        std::fs::create_dir_all(dir)
            .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        let mut stores = Vec::with_capacity(participants);
        for p in 0..participants {
            let file = member_db(dir, p);
            sds_sqlite::remove_database(&file)
                .map_err(|e| failed(format!("cannot remove {}: {e}", file.display())))?;
            stores.push(SqliteStore::open(&file).map_err(|e| failed(e.to_string()))?);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed(e.to_string()))?;
        Ok(Stores { rt, stores })
    }

    /// Commits one member's batch of store operations.
    pub(crate) fn apply(
        &self,
        p: usize,
        channel: &ChannelId,
        ops: &[StoreOp],
    ) -> Result<(), Error> {
        self.rt
            .block_on(self.stores[p].apply_batch(channel, ops))
            .map_err(|e| Error::Failed(format!("p{p:04}: store failed: {e}")))
    }

    /// Rebuilds member `p`'s channel from its store, as a restarted process would.
    pub(crate) fn restore(
        &self,
        p: usize,
        ch: &Channel,
        config: Config,
        now: u64,
    ) -> Result<Channel, Error> {
        let channel = ch.channel_id().clone();
        let participant = ch.participant_id().clone();
        let snapshot = self
            .rt
            .block_on(self.stores[p].load_channel(&channel))
            .map_err(|e| Error::Failed(format!("p{p:04}: cannot load: {e}")))?;
        Channel::restore(channel, participant, config, snapshot, now)
            .map_err(|e| Error::Failed(e.to_string()))
    }
}

/// Member `p`'s database in `dir`.
fn member_db(dir: &Path, p: usize) -> PathBuf {
    dir.join(format!("p{p:04}.db"))
}

/// Every path a member's store keeps beside its database: SQLite's `-wal` and `-shm`, and the
/// directory of message bytes.
fn member_paths(dir: &Path, p: usize) -> [PathBuf; 4] {
    let db = member_db(dir, p);
    let beside = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [beside("-wal"), beside("-shm"), beside("-messages"), db]
}

/// Bytes a file or directory takes (its files' lengths, counted down the tree); 0 when it does
/// not exist.
fn size_of(path: &Path) -> std::io::Result<u64> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        total += size_of(&entry?.path())?;
    }
    Ok(total)
}

/// Bytes on disk of the members' stores that a run of `participants` members keeps in `dir`
/// ([`Scenario::store`](crate::Scenario::store)): their databases, SQLite's `-wal` and `-shm`
/// files and their message directories. Nothing else in `dir` counts.
pub fn stores_size(dir: &Path, participants: usize) -> std::io::Result<u64> {
    let mut total = 0;
    for p in 0..participants {
        for path in member_paths(dir, p) {
            total += size_of(&path)?;
        }
    }
    Ok(total)
}

/// Removes the members' stores that a run of `participants` members kept in `dir`, as
/// [`stores_size`] counts them, and nothing else; `dir` itself stays. Call it once the run has
/// returned.
pub fn remove_stores(dir: &Path, participants: usize) -> std::io::Result<()> {
    for p in 0..participants {
        let db = member_db(dir, p);
        // A store's threads end just after the run drops it: a file they still write may
        // appear while its directory is removed. Try again briefly.
        let mut tries = 0;
        loop {
            match sds_sqlite::remove_database(&db) {
                Ok(()) => break,
                Err(_) if tries < 20 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
