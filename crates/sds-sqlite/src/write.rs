//! Store operations as SQL: one batch is one transaction.

use rusqlite::{params, Transaction};
use sds_manager::persistence::PersistenceResult;
use sds_manager::{ChannelId, MessageId, StoreOp};

use crate::bytes::{put_bytes, released};
use crate::codec;
use crate::connection::{Db, WriteError};
use crate::segments::Segments;

pub(crate) fn ch(c: &ChannelId) -> &[u8] {
    c.as_bytes()
}

/// Deletes `id` from `table`; its bytes become a candidate for release.
pub(crate) fn delete(
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
pub(crate) fn reference_change(op: &StoreOp) -> Option<(&MessageId, bool)> {
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

pub(crate) fn apply(
    tx: &Transaction<'_>,
    segments: &mut Segments,
    c: &ChannelId,
    op: &StoreOp,
    unreferenced: &mut Vec<MessageId>,
    keep_history: bool,
) -> Result<(), WriteError> {
    match op {
        StoreOp::SaveLamport(l) => {
            tx.prepare_cached(
                "INSERT INTO channel (channel, lamport) VALUES (?1, ?2) \
                 ON CONFLICT (channel) DO UPDATE SET lamport = ?2",
            )?
            .execute(params![ch(c), l])?;
        }
        StoreOp::SaveLowWater(l) => {
            tx.prepare_cached(
                "INSERT INTO channel (channel, low_water) VALUES (?1, ?2) \
                 ON CONFLICT (channel) DO UPDATE SET low_water = ?2",
            )?
            .execute(params![ch(c), l])?;
        }
        StoreOp::AppendLogEntry(e) => {
            let met = e.is_met_marker();
            if !met {
                put_bytes(tx, segments, c, &e.message_id, &e.bytes)?;
            }
            tx.prepare_cached(
                "INSERT INTO log (channel, id, lamport, sender, hint, met, arrival) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (channel, id) DO UPDATE SET lamport = ?3, sender = ?4, hint = ?5, met = ?6, arrival = ?7",
            )?
            .execute(params![
                ch(c),
                e.message_id.as_bytes(),
                e.lamport_timestamp,
                e.sender_id.as_bytes(),
                &e.retrieval_hint[..],
                met,
                // Stored as SQLite's signed integer; numbers past i64::MAX are never reached.
                i64::try_from(e.arrival).unwrap_or(i64::MAX)
            ])?;
            // Logged again (a message the history kept can be delivered anew only after the
            // channel forgot it): the log's row is the one that counts.
            tx.prepare_cached("DELETE FROM history WHERE channel = ?1 AND id = ?2")?
                .execute(params![ch(c), e.message_id.as_bytes()])?;
        }
        StoreOp::RemoveLogEntry(id) => {
            if keep_history {
                // The row moves to the history and keeps its bytes referred to (markers of
                // ids marked met have no message and are not history).
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO history (channel, id, lamport, sender, arrival) \
                     SELECT channel, id, lamport, sender, arrival FROM log \
                     WHERE channel = ?1 AND id = ?2 AND met = 0",
                )?
                .execute(params![ch(c), id.as_bytes()])?;
            }
            delete(tx, "log", c, id, unreferenced)?
        }
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
                "INSERT INTO outgoing_repair (channel, id, hint, sender, t_req, retries) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (channel, id) DO UPDATE SET hint = ?3, sender = ?4, t_req = ?5, retries = ?6",
            )?
            .execute(params![
                ch(c),
                e.entry.message_id.as_bytes(),
                &e.entry.retrieval_hint[..],
                e.entry.sender_id.as_bytes(),
                e.t_req as i64,
                e.retries
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

pub(crate) fn drop_all(db: &mut Db, c: &ChannelId) -> PersistenceResult<()> {
    db.write(|tx, segments| {
        for table in [
            "log",
            "history",
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
