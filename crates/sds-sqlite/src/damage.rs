//! Damage: message bytes a row refers to that are missing, cut short or fail their checksum.
//!
//! Nothing is deleted for it. By default damage found when a database is opened is an error
//! ([`OpenError::Damaged`](crate::OpenError::Damaged)), and damage found when a channel is
//! loaded fails the load. With [`OnDamage::Quarantine`] the damaged messages are marked
//! instead: their entries are left out of what is loaded, their rows stay, a `tracing` warning
//! is emitted for each, and [`SqliteStore::damage`](crate::SqliteStore::damage) lists them. A
//! marked message is whole again when its bytes arrive again (a peer rebroadcasts it), or when
//! the files are restored and the mark cleared ([`crate::repair`]).

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection};
use sds_manager::{ChannelId, MessageId};

use crate::segments::seg_name;

/// What to do about damaged message bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnDamage {
    /// Refuse: opening fails with [`OpenError::Damaged`](crate::OpenError::Damaged), loading a
    /// channel with damaged bytes fails. Nothing is changed. The default.
    #[default]
    Refuse,
    /// Mark the damaged messages and go on without them: their entries are left out of what is
    /// loaded, their rows stay, a `tracing` warning is emitted for each, and
    /// [`SqliteStore::damage`](crate::SqliteStore::damage) lists them.
    Quarantine,
}

/// What is wrong with a message's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DamageKind {
    /// The segment file is not there.
    MissingFile,
    /// The segment file ends before the bytes do.
    Truncated,
    /// The bytes are there but fail their CRC-32.
    Checksum,
    /// The bytes pass their CRC-32 but fail authentication: an encrypted store's record was
    /// tampered with, moved from another message, or sealed under another key.
    Authentication,
}

/// One damaged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedMessage {
    /// Its channel.
    pub channel: ChannelId,
    /// Its id.
    pub message_id: MessageId,
    /// The segment file its bytes are in.
    pub segment: u32,
    /// What is wrong.
    pub kind: DamageKind,
}

impl std::fmt::Display for DamagedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            DamageKind::MissingFile => "its segment file is missing",
            DamageKind::Truncated => "its segment file is cut short",
            DamageKind::Checksum => "its bytes fail their checksum",
            DamageKind::Authentication => "its bytes fail authentication",
        };
        write!(
            f,
            "message {} of channel {} (segment {}): {what}",
            self.message_id,
            self.channel,
            seg_name(self.segment)
        )
    }
}

/// Messages whose bytes are damaged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DamageReport {
    /// Each damaged message once.
    pub messages: Vec<DamagedMessage>,
}

impl DamageReport {
    /// Whether nothing is damaged.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

impl std::fmt::Display for DamageReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} damaged message(s)", self.messages.len())?;
        for (i, m) in self.messages.iter().take(5).enumerate() {
            write!(f, "{} {m}", if i == 0 { ":" } else { ";" })?;
        }
        if self.messages.len() > 5 {
            write!(f, "; …")?;
        }
        Ok(())
    }
}

/// Messages (not yet marked) whose segment file is missing or ends before their bytes: one
/// look at each file's size, no bytes read.
pub(crate) fn find_missing(conn: &Connection, dir: &Path) -> rusqlite::Result<DamageReport> {
    let mut stmt = conn.prepare(
        "SELECT channel, id, seg, off + len FROM message WHERE seg IS NOT NULL AND damaged = 0",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut sizes: HashMap<u32, Option<u64>> = HashMap::new();
    let mut report = DamageReport::default();
    for row in rows {
        let (channel, id, seg, end) = row?;
        let seg = u32::try_from(seg).unwrap_or(u32::MAX);
        let size = *sizes.entry(seg).or_insert_with(|| {
            std::fs::metadata(dir.join(seg_name(seg)))
                .ok()
                .map(|m| m.len())
        });
        let kind = match size {
            None => DamageKind::MissingFile,
            Some(size) if u64::try_from(end).unwrap_or(u64::MAX) > size => DamageKind::Truncated,
            Some(_) => continue,
        };
        report.messages.push(DamagedMessage {
            channel: ChannelId::from(channel),
            message_id: MessageId::from(id),
            segment: seg,
            kind,
        });
    }
    Ok(report)
}

/// Marks the messages of `report` damaged (their rows stay) and warns about each.
pub(crate) fn quarantine(conn: &Connection, report: &DamageReport) -> rusqlite::Result<()> {
    let mut stmt =
        conn.prepare_cached("UPDATE message SET damaged = 1 WHERE channel = ?1 AND id = ?2")?;
    for m in &report.messages {
        stmt.execute(params![m.channel.as_bytes(), m.message_id.as_bytes()])?;
        tracing::warn!(channel = %m.channel, message_id = %m.message_id, kind = ?m.kind, "sqlite store: damaged message quarantined");
    }
    Ok(())
}
