//! Loading a channel: its rows, and each entry's bytes read back and checked.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use sds_manager::persistence::{PersistenceError, PersistenceResult};
use sds_manager::{
    Bytes, ChannelId, ChannelSnapshot, HistoryEntry, IncomingEntry, IncomingRepairEntry, LogEntry,
    MessageId, OutgoingEntry, OutgoingRepairEntry, ParticipantId,
};

use crate::bytes::{blob, stored_at, Stored, MESSAGE_COLUMNS};
use crate::codec;
use crate::connection::Db;
use crate::damage::{quarantine, DamageReport, DamagedMessage, OnDamage};
use crate::key::Owner;
use crate::segments::ReadError;
use crate::store::sql_err;
use crate::write::ch;

/// A stored entry that carries a message's bytes.
pub(crate) trait WithBytes {
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

/// Gives each entry its bytes from `stored` (same order); entries for which `resolve` finds
/// none are left out.
pub(crate) fn fill_bytes<E: WithBytes>(
    entries: &mut Vec<E>,
    stored: Vec<Stored>,
    resolve: &mut impl FnMut(&MessageId, Stored) -> PersistenceResult<Option<Bytes>>,
) -> PersistenceResult<()> {
    let mut keep = Vec::with_capacity(entries.len());
    for (mut e, s) in std::mem::take(entries).into_iter().zip(stored) {
        if let Some(b) = resolve(e.id(), s)? {
            e.set_bytes(b);
            keep.push(e);
        }
    }
    *entries = keep;
    Ok(())
}

/// Reads message bytes back for one channel, as [`Options::on_damage`] says: bytes found lost or
/// damaged fail the read ([`OnDamage::Refuse`]) or are collected to be quarantined
/// ([`OnDamage::Quarantine`], see [`Reader::finish`]); messages already marked damaged read as
/// none. Nothing is deleted either way.
///
/// [`Options::on_damage`]: crate::Options::on_damage
struct Reader<'a> {
    db: &'a mut Db,
    channel: &'a ChannelId,
    files: HashMap<u32, std::fs::File>,
    found: DamageReport,
}

impl<'a> Reader<'a> {
    fn new(db: &'a mut Db, channel: &'a ChannelId) -> Self {
        Reader {
            db,
            channel,
            files: HashMap::new(),
            found: DamageReport::default(),
        }
    }

    fn bytes(&mut self, id: &MessageId, s: Stored) -> PersistenceResult<Option<Bytes>> {
        if s.damaged {
            return Ok(None);
        }
        match s.loc {
            None => Ok(Some(blob(s.inline.unwrap_or_default()))),
            Some(loc) => match self.db.segments.read(
                loc,
                Owner {
                    channel: ch(self.channel),
                    id: id.as_bytes(),
                },
                &mut self.files,
            ) {
                Ok(b) => Ok(Some(blob(b))),
                Err(ReadError::Lost { seg, kind, .. }) => {
                    let damaged = DamagedMessage {
                        channel: self.channel.clone(),
                        message_id: id.clone(),
                        segment: seg,
                        kind,
                    };
                    if self.db.on_damage == OnDamage::Refuse {
                        return Err(PersistenceError::new(format!(
                            "damaged store: {damaged}; nothing was changed (reopen the store \
                             with OnDamage::Quarantine to go on without it, or restore the file)"
                        )));
                    }
                    if !self.found.messages.contains(&damaged) {
                        self.found.messages.push(damaged);
                    }
                    Ok(None)
                }
                Err(e) => Err(PersistenceError::with_source(e.to_string(), e)),
            },
        }
    }

    /// Marks the damaged messages found, and adds them to the store's report.
    fn finish(self) -> PersistenceResult<()> {
        if !self.found.is_empty() {
            quarantine(&self.db.conn, &self.found).map_err(sql_err)?;
            let mut all = self.db.damage.lock().unwrap_or_else(|e| e.into_inner());
            all.messages.extend(self.found.messages);
        }
        Ok(())
    }
}

/// Reads a channel. Entries whose message is marked damaged are left out. Bytes found lost or
/// damaged now fail the load ([`OnDamage::Refuse`]) or mark their message damaged and leave
/// its entries out ([`OnDamage::Quarantine`]); nothing is deleted either way.
pub(crate) fn load(db: &mut Db, c: &ChannelId) -> PersistenceResult<ChannelSnapshot> {
    let (mut snap, stored) = read_channel(&mut db.conn, c).map_err(sql_err)?;
    let mut reader = Reader::new(db, c);
    let mut resolve = |id: &MessageId, s: Stored| reader.bytes(id, s);
    let [log, outgoing, incoming, incoming_repair] = stored;
    // Marked-met markers have no bytes and read as empty ones.
    fill_bytes(&mut snap.log, log, &mut resolve)?;
    fill_bytes(&mut snap.outgoing, outgoing, &mut resolve)?;
    fill_bytes(&mut snap.incoming, incoming, &mut resolve)?;
    fill_bytes(&mut snap.incoming_repair, incoming_repair, &mut resolve)?;
    reader.finish()?;
    Ok(snap)
}

/// Up to `limit` entries of the channel's log and history (see `Options::keep_history`) whose
/// arrival is above `after`, in arrival order, with their bytes; damage as for [`load`].
pub(crate) fn read_log(
    db: &mut Db,
    c: &ChannelId,
    after: u64,
    limit: usize,
) -> PersistenceResult<Vec<LogEntry>> {
    let (mut entries, stored) = read_log_rows(&db.conn, c, after, limit).map_err(sql_err)?;
    let mut reader = Reader::new(db, c);
    fill_bytes(&mut entries, stored, &mut |id, s| reader.bytes(id, s))?;
    reader.finish()?;
    Ok(entries)
}

/// A log entry, without its bytes, from the columns `id, lamport, sender, hint, met, arrival`.
fn log_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<LogEntry> {
    Ok(LogEntry {
        message_id: MessageId::from(r.get::<_, Vec<u8>>(0)?),
        lamport_timestamp: r.get(1)?,
        sender_id: ParticipantId::from(r.get::<_, Vec<u8>>(2)?),
        retrieval_hint: blob(r.get(3)?),
        bytes: Bytes::new(),
        arrival: r.get::<_, i64>(5)?.max(0) as u64,
    })
}

fn read_log_rows(
    conn: &Connection,
    c: &ChannelId,
    after: u64,
    limit: usize,
) -> rusqlite::Result<(Vec<LogEntry>, Vec<Stored>)> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT e.id, e.lamport, e.sender, e.hint, 0, e.arrival, {MESSAGE_COLUMNS} FROM ( \
             SELECT channel, id, lamport, sender, hint, arrival FROM log \
             WHERE channel = ?1 AND met = 0 AND arrival > ?2 \
             UNION ALL \
             SELECT channel, id, lamport, sender, x'', arrival FROM history \
             WHERE channel = ?1 AND arrival > ?2 \
         ) e JOIN message m ON m.channel = e.channel AND m.id = e.id \
         ORDER BY e.arrival LIMIT ?3"
    ))?;
    // Stored as SQLite's signed integers.
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![ch(c), after, limit], |r| {
        Ok((log_entry(r)?, stored_at(r, 6)?))
    })?;
    let (mut entries, mut stored) = (Vec::new(), Vec::new());
    for row in rows {
        let (e, s) = row?;
        entries.push(e);
        stored.push(s);
    }
    Ok((entries, stored))
}

/// The channel's rows, with the stored form of the bytes of log, outgoing, incoming and
/// incoming-repair entries (in that order) beside them.
pub(crate) fn read_channel(
    conn: &mut Connection,
    c: &ChannelId,
) -> rusqlite::Result<(ChannelSnapshot, [Vec<Stored>; 4])> {
    let tx = conn.transaction()?;
    let (lamport, low_water): (Option<i64>, Option<i64>) = tx
        .query_row(
            "SELECT lamport, low_water FROM channel WHERE channel = ?1",
            params![ch(c)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or_default();
    let mut snap = ChannelSnapshot {
        lamport,
        low_water,
        ..ChannelSnapshot::default()
    };
    let mut stored: [Vec<Stored>; 4] = Default::default();
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT l.id, l.lamport, l.sender, l.hint, l.met, l.arrival, {MESSAGE_COLUMNS} FROM log l \
             LEFT JOIN message m ON m.channel = l.channel AND m.id = l.id \
             WHERE l.channel = ?1 ORDER BY l.lamport, l.id"
        ))?;
        let rows = stmt.query_map(params![ch(c)], |r| {
            let met: bool = r.get(4)?;
            Ok((
                log_entry(r)?,
                if met {
                    Stored::default()
                } else {
                    stored_at(r, 6)?
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
            "SELECT id, hint, sender, t_req, retries FROM outgoing_repair WHERE channel = ?1 \
             ORDER BY t_req, id",
        )?;
        let rows = stmt.query_map(params![ch(c)], |r| {
            Ok(OutgoingRepairEntry {
                entry: HistoryEntry {
                    message_id: MessageId::from(r.get::<_, Vec<u8>>(0)?),
                    retrieval_hint: blob(r.get(1)?),
                    sender_id: ParticipantId::from(r.get::<_, Vec<u8>>(2)?),
                },
                t_req: r.get::<_, i64>(3)?.max(0) as u64,
                // Out-of-range values read as the most retries (the longest wait).
                retries: u32::try_from(r.get::<_, i64>(4)?.max(0)).unwrap_or(u32::MAX),
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
                        sender_id: ParticipantId::from(r.get::<_, Vec<u8>>(2)?),
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
