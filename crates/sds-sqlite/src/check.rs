//! Checking a store offline: every message row against its bytes, the database against its
//! message directory, and what lies in the directory that nothing refers to. [`check`] changes
//! nothing; [`repair`] marks the damaged messages (quarantine) and deletes nothing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use sds_manager::{ChannelId, MessageId};

use crate::damage::{quarantine, DamageReport, DamagedMessage};
use crate::identity::{self, Mismatch};
use crate::key::{open_connection, seal_for, Owner, Seal};
use crate::segments::{read_in, seg_id, Loc, ReadError, ASIDE};
use crate::store::{canonical, messages_dir};
use crate::{OnDamage, OpenError, Options, SqliteStore, StoreKey};

/// What [`check`] or [`repair`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// The database checked (symbolic links resolved).
    pub path: PathBuf,
    /// Message rows read.
    pub messages: u64,
    /// Bytes read back from segment files and checked.
    pub segment_bytes: u64,
    /// Messages whose bytes are missing, cut short or fail their checksum (not counting those
    /// already marked).
    pub damaged: DamageReport,
    /// Messages already marked damaged (quarantined).
    pub quarantined: u64,
    /// Why the database and its message directory do not go together, if they do not.
    pub mismatch: Option<String>,
    /// Segment files no row refers to.
    pub unreferenced: Vec<String>,
    /// Files kept aside in `unreferenced/`.
    pub kept_aside: Vec<String>,
}

impl CheckReport {
    /// Whether the store is whole: nothing damaged, the directory its own.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.mismatch.is_none()
    }
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> OpenError + '_ {
    move |source| OpenError::Sqlite {
        path: path.to_path_buf(),
        source,
        cause: None,
    }
}

/// Checks the store at `path` without changing anything (the database is opened read-only;
/// every message's bytes are read back and checked). Fails only when the database cannot be
/// read at all. An encrypted store needs its key: [`check_with_key`].
pub fn check(path: impl AsRef<Path>) -> Result<CheckReport, OpenError> {
    check_keyed(path.as_ref(), None)
}

/// [`check`] for an encrypted store: the database is read with `key`, and every sealed record
/// must open with it (one that does not is reported as
/// [`DamageKind::Authentication`](crate::DamageKind::Authentication)).
pub fn check_with_key(path: impl AsRef<Path>, key: &StoreKey) -> Result<CheckReport, OpenError> {
    check_keyed(path.as_ref(), Some(key))
}

fn check_keyed(path: &Path, key: Option<&StoreKey>) -> Result<CheckReport, OpenError> {
    let path = canonical(path);
    let conn = open_connection(
        &path,
        Some(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX),
        key,
    )?;
    inspect(&conn, &path, seal_for(key).as_ref())
}

/// Checks the store at `path` like [`check`], then marks every damaged message (its entries
/// are left out of loads, its rows stay; see [`OnDamage::Quarantine`]). Deletes nothing. The
/// store must not be open in another process. An encrypted store needs its key:
/// [`repair_with_key`].
pub fn repair(path: impl AsRef<Path>) -> Result<CheckReport, OpenError> {
    repair_keyed(path.as_ref(), None)
}

/// [`repair`] for an encrypted store.
pub fn repair_with_key(path: impl AsRef<Path>, key: &StoreKey) -> Result<CheckReport, OpenError> {
    repair_keyed(path.as_ref(), Some(key))
}

fn repair_keyed(path: &Path, key: Option<&StoreKey>) -> Result<CheckReport, OpenError> {
    let path = canonical(path);
    // Opening with quarantine marks missing and cut-short bytes and takes the store's lock.
    let store = SqliteStore::open_with_options(
        &path,
        Options {
            on_damage: OnDamage::Quarantine,
            key: key.cloned(),
            ..Options::default()
        },
    )?;
    let marked_at_open = store.damage();
    let conn = open_connection(&path, None, key)?;
    let mut report = inspect(&conn, &path, seal_for(key).as_ref())?;
    quarantine(&conn, &report.damaged).map_err(sql(&path))?;
    // What opening marked counts as found now, not as marked before.
    report.quarantined = report
        .quarantined
        .saturating_sub(marked_at_open.messages.len() as u64);
    report
        .damaged
        .messages
        .splice(0..0, marked_at_open.messages);
    drop(store);
    Ok(report)
}

fn inspect(conn: &Connection, path: &Path, seal: Option<&Seal>) -> Result<CheckReport, OpenError> {
    let dir = messages_dir(path);
    let err = sql(path);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(&err)?;
    let mut report = CheckReport {
        path: path.to_path_buf(),
        ..CheckReport::default()
    };
    // Databases written before identities and damage marks have neither.
    let current = version >= 4;
    let database = if current {
        identity::of_database(conn).map_err(&err)?
    } else {
        None
    };
    let directory = identity::of_directory(&dir).unwrap_or(None);
    let refers = identity::refers_to_segments(conn).map_err(&err)?;
    report.mismatch = match identity::pair(
        database.as_deref(),
        directory.as_deref(),
        dir.is_dir(),
        refers,
    ) {
        Ok(_) => None,
        Err(Mismatch::Missing) => Some(format!(
            "the database refers to message files in {}, which does not exist",
            dir.display()
        )),
        Err(Mismatch::Foreign { .. }) => Some(format!(
            "{} belongs to another database (or this one looks new)",
            dir.display()
        )),
    };
    let query = if current {
        "SELECT channel, id, seg, off, len, crc, damaged FROM message"
    } else {
        "SELECT channel, id, seg, off, len, crc, 0 FROM message"
    };
    let mut stmt = conn.prepare(query).map_err(&err)?;
    let mut rows = stmt.query([]).map_err(&err)?;
    let mut files = HashMap::new();
    let mut referenced = HashSet::new();
    while let Some(r) = rows.next().map_err(&err)? {
        report.messages += 1;
        let seg: Option<i64> = r.get(2).map_err(&err)?;
        let Some(seg) = seg else { continue };
        let seg = u32::try_from(seg).unwrap_or(u32::MAX);
        referenced.insert(seg);
        if r.get::<_, bool>(6).map_err(&err)? {
            report.quarantined += 1;
            continue;
        }
        let int = |i: usize| -> Result<i64, OpenError> {
            Ok(r.get::<_, Option<i64>>(i).map_err(&err)?.unwrap_or(-1))
        };
        let loc = Loc {
            seg,
            off: u64::try_from(int(3)?).unwrap_or(u64::MAX),
            len: u32::try_from(int(4)?).unwrap_or(0),
            crc: u32::try_from(int(5)?).unwrap_or(0),
        };
        let channel: Vec<u8> = r.get(0).map_err(&err)?;
        let id: Vec<u8> = r.get(1).map_err(&err)?;
        let owner = Owner {
            channel: &channel,
            id: &id,
        };
        let kind = match read_in(&dir, loc, seal, owner, &mut files) {
            Ok(_) => {
                report.segment_bytes += u64::from(loc.len);
                continue;
            }
            Err(ReadError::Lost { kind, .. }) => kind,
            Err(ReadError::Io { .. }) => crate::DamageKind::MissingFile,
        };
        report.damaged.messages.push(DamagedMessage {
            channel: ChannelId::from(channel),
            message_id: MessageId::from(id),
            segment: seg,
            kind,
        });
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if seg_id(&name).is_some_and(|id| !referenced.contains(&id)) {
                report.unreferenced.push(name);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.join(ASIDE)) {
        for e in entries.flatten() {
            report
                .kept_aside
                .push(e.file_name().to_string_lossy().into_owned());
        }
    }
    report.unreferenced.sort();
    report.kept_aside.sort();
    Ok(report)
}
