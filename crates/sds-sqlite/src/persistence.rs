//! The [`Persistence`](sds::persistence::Persistence) interface on the store: every operation, and every batch, one
//! transaction on the connection thread.

use async_trait::async_trait;
use sds::persistence::{Persistence, PersistenceResult};
use sds::{
    Bytes, ChannelId, ChannelSnapshot, IncomingEntry, IncomingRepairEntry, LogEntry, MessageId,
    OutgoingEntry, OutgoingRepairEntry, StoreOp,
};

use crate::load::load;
use crate::write::drop_all;
use crate::SqliteStore;

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
