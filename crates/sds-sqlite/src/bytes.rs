//! A message's bytes: kept once per channel, small ones in the row, others in segment files;
//! released with their last reference; moved when a segment is compacted.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, Transaction};
use sds_manager::{Bytes, ChannelId, MessageId};

use crate::connection::WriteError;
use crate::key::Owner;
use crate::segments::{Loc, Segments};
use crate::write::ch;

/// Messages up to this size are kept in the database row itself; larger ones go to segments.
pub(crate) const INLINE_MAX: usize = 1024;

/// Copies the live messages of segment `seg` to the active one; the segment is then empty and
/// deleted after the commit.
pub(crate) fn compact(
    tx: &Transaction<'_>,
    segments: &mut Segments,
    seg: u32,
) -> Result<(), WriteError> {
    let rows: Vec<(Vec<u8>, Vec<u8>, Loc)> = tx
        .prepare("SELECT channel, id, off, len, crc FROM message WHERE seg = ?1")?
        .query_map(params![seg], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                Loc {
                    seg,
                    off: r.get::<_, i64>(2)?.max(0) as u64,
                    len: r.get::<_, i64>(3)?.clamp(0, u32::MAX as i64) as u32,
                    crc: r.get::<_, i64>(4)?.clamp(0, u32::MAX as i64) as u32,
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut files = HashMap::new();
    for (channel, id, old) in rows {
        let owner = Owner {
            channel: &channel,
            id: &id,
        };
        // Bytes that cannot be read stay where they are (and are reported when loaded).
        let Ok(bytes) = segments.read(old, owner, &mut files) else {
            continue;
        };
        let new = segments.append(&bytes, owner)?;
        // A sealed record is sealed anew (a fresh nonce): its checksum changes with it.
        tx.prepare_cached(
            "UPDATE message SET seg = ?3, off = ?4, len = ?5, crc = ?6 \
             WHERE channel = ?1 AND id = ?2",
        )?
        .execute(params![
            channel,
            id,
            new.seg,
            new.off as i64,
            new.len,
            new.crc
        ])?;
        segments.released(old.seg, old.len);
    }
    Ok(())
}

/// Stores a message's bytes once per channel: small ones in the row, others appended to a
/// segment file.
pub(crate) fn put_bytes(
    tx: &Transaction<'_>,
    segments: &mut Segments,
    channel: &ChannelId,
    id: &MessageId,
    bytes: &[u8],
) -> Result<(), WriteError> {
    let stored: Option<(bool, Option<i64>, Option<i64>)> = tx
        .prepare_cached("SELECT damaged, seg, len FROM message WHERE channel = ?1 AND id = ?2")?
        .query_row(params![ch(channel), id.as_bytes()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    match stored {
        Some((false, ..)) => return Ok(()),
        // A copy of a quarantined message: its bytes are whole again.
        Some((true, seg, len)) => {
            tx.prepare_cached("DELETE FROM message WHERE channel = ?1 AND id = ?2")?
                .execute(params![ch(channel), id.as_bytes()])?;
            released(segments, seg, len);
        }
        None => {}
    }
    if bytes.len() <= INLINE_MAX {
        tx.prepare_cached("INSERT INTO message (channel, id, bytes) VALUES (?1, ?2, ?3)")?
            .execute(params![ch(channel), id.as_bytes(), bytes])?;
        return Ok(());
    }
    let owner = Owner {
        channel: ch(channel),
        id: id.as_bytes(),
    };
    let loc = segments.append(bytes, owner)?;
    tx.prepare_cached(
        "INSERT INTO message (channel, id, bytes, seg, off, len, crc) \
         VALUES (?1, ?2, x'', ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        ch(channel),
        id.as_bytes(),
        loc.seg,
        loc.off as i64,
        loc.len,
        loc.crc
    ])?;
    Ok(())
}

/// Deletes a message's bytes once nothing refers to them any more.
pub(crate) fn release_bytes(
    tx: &Transaction<'_>,
    segments: &mut Segments,
    channel: &ChannelId,
    id: &MessageId,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "DELETE FROM message WHERE channel = ?1 AND id = ?2 \
         AND NOT EXISTS (SELECT 1 FROM log WHERE channel = ?1 AND id = ?2) \
         AND NOT EXISTS (SELECT 1 FROM history WHERE channel = ?1 AND id = ?2) \
         AND NOT EXISTS (SELECT 1 FROM outgoing WHERE channel = ?1 AND id = ?2) \
         AND NOT EXISTS (SELECT 1 FROM incoming WHERE channel = ?1 AND id = ?2) \
         AND NOT EXISTS (SELECT 1 FROM incoming_repair WHERE channel = ?1 AND id = ?2) \
         RETURNING seg, len",
    )?;
    let mut rows = stmt.query(params![ch(channel), id.as_bytes()])?;
    while let Some(r) = rows.next()? {
        released(segments, r.get(0)?, r.get(1)?);
    }
    Ok(())
}

/// Notes that the bytes of a deleted message row (segment and length, if in a segment) are
/// no longer referred to.
pub(crate) fn released(segments: &mut Segments, seg: Option<i64>, len: Option<i64>) {
    if let (Some(seg), Some(len)) = (seg, len) {
        if let (Ok(seg), Ok(len)) = (u32::try_from(seg), u32::try_from(len)) {
            segments.released(seg, len);
        }
    }
}

pub(crate) fn blob(v: Vec<u8>) -> Bytes {
    Bytes::from(v)
}

/// Message bytes as a row refers to them: in the row, or at a location in a segment.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    pub(crate) inline: Option<Vec<u8>>,
    pub(crate) loc: Option<Loc>,
    /// Marked damaged (see [`crate::damage`]): left out.
    pub(crate) damaged: bool,
}

/// The message columns `bytes, seg, off, len, crc, damaged` starting at column `i`.
pub(crate) fn stored_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Stored> {
    let inline: Option<Vec<u8>> = r.get(i)?;
    let seg: Option<i64> = r.get(i + 1)?;
    let int = |k: usize| -> rusqlite::Result<i64> { Ok(r.get::<_, Option<i64>>(k)?.unwrap_or(-1)) };
    let loc = match seg {
        None => None,
        // Out-of-range values name no real place: they read as lost.
        Some(seg) => Some(Loc {
            seg: u32::try_from(seg).unwrap_or(u32::MAX),
            off: u64::try_from(int(i + 2)?).unwrap_or(u64::MAX),
            len: u32::try_from(int(i + 3)?).unwrap_or(0),
            crc: u32::try_from(int(i + 4)?).unwrap_or(0),
        }),
    };
    let damaged = r.get::<_, Option<bool>>(i + 5)?.unwrap_or(false);
    Ok(Stored {
        inline,
        loc,
        damaged,
    })
}

pub(crate) const MESSAGE_COLUMNS: &str = "m.bytes, m.seg, m.off, m.len, m.crc, m.damaged";
