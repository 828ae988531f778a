//! The [`Persistence`](sds_manager::persistence::Persistence) interface on the store: every operation, and every batch, one
//! transaction on the connection thread.

use async_trait::async_trait;
use sds_manager::persistence::{Persistence, PersistenceResult};
use sds_manager::{ChannelId, ChannelSnapshot, LogEntry, StoreOp};

use crate::load::{load, read_log};
use crate::write::drop_all;
use crate::SqliteStore;

/// Every batch (and so every single operation) is one transaction.
#[async_trait]
impl Persistence for SqliteStore {
    async fn drop_channel(&self, channel: &ChannelId) -> PersistenceResult<()> {
        let channel = channel.clone();
        self.run(move |db| drop_all(db, &channel)).await
    }

    async fn load_channel(&self, channel: &ChannelId) -> PersistenceResult<ChannelSnapshot> {
        let channel = channel.clone();
        self.run(move |db| load(db, &channel)).await
    }

    /// The log and, with [`Options::keep_history`](crate::Options::keep_history), the entries
    /// it evicted.
    async fn read_log(
        &self,
        channel: &ChannelId,
        after: u64,
        limit: usize,
    ) -> PersistenceResult<Vec<LogEntry>> {
        let channel = channel.clone();
        self.run(move |db| read_log(db, &channel, after, limit))
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
