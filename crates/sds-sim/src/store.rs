//! Members' SQLite stores, when a scenario persists state: one file per member, driven from one
//! current-thread runtime.

use std::path::Path;

use sds::persistence::Persistence;
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
            let file = dir.join(format!("p{p:04}.db"));
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
