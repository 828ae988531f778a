//! Which database a message directory belongs to.
//!
//! A database and its directory `<database>-messages` are one store: rows in the one refer to
//! bytes in the other. Both carry the same random identity (the `meta` table, the directory's
//! `IDENTITY` file), so a database opened with another directory — moved without it, opened
//! through another path, truncated, replaced — is recognised and refused instead of treating the
//! other's files as lost or unreferenced.

use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

/// The file in the message directory that names its database.
pub(crate) const IDENTITY_FILE: &str = "IDENTITY";

/// A new random identity: 32 hex digits.
pub(crate) fn new_identity() -> String {
    let mut parts = [0u64; 2];
    for (i, part) in parts.iter_mut().enumerate() {
        // Each RandomState is seeded from the operating system's randomness.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        *part = h.finish();
    }
    format!("{:016x}{:016x}", parts[0], parts[1])
}

/// The database's identity, if it has one yet.
pub(crate) fn of_database(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = 'identity'", [], |r| {
        r.get::<_, String>(0)
    })
    .optional()
}

/// Gives the database its identity.
pub(crate) fn set_database(conn: &Connection, identity: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('identity', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = ?1",
        params![identity],
    )?;
    Ok(())
}

/// The directory's identity; `None` when the directory or its file does not exist.
pub(crate) fn of_directory(dir: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(dir.join(IDENTITY_FILE)) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the directory's identity durably (a new file, synced, renamed into place, and the
/// directory synced).
pub(crate) fn set_directory(dir: &Path, identity: &str) -> io::Result<()> {
    let tmp = dir.join(format!("{IDENTITY_FILE}.new"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(format!("{identity}\n").as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(IDENTITY_FILE))?;
    File::open(dir)?.sync_all()
}

/// Whether any message row refers to a segment file.
pub(crate) fn refers_to_segments(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM message WHERE seg IS NOT NULL)",
        [],
        |r| r.get(0),
    )
}

/// How a database and a message directory go together.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pairing {
    /// Both carry the same identity.
    Matched,
    /// A database written before identities (or one with no message files yet) and a
    /// directory without an identity: the pair is given one.
    Adopted,
    /// A new database and a new (or absent) directory.
    Fresh,
}

/// Why a database and a directory do not go together.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// The database refers to message files, and the directory is missing or carries no
    /// identity.
    Missing,
    /// The directory belongs to another database (or this database looks new).
    Foreign {
        /// The database's identity (none: it looks new).
        database: Option<String>,
        /// The directory's.
        directory: String,
    },
}

/// Decides from the two identities, whether the directory exists and whether the database
/// refers to segment files. A directory without an identity next to a database with one is the
/// state a crash leaves between the two writes of an adoption (the database's is written first):
/// it is adopted again.
pub(crate) fn pair(
    database: Option<&str>,
    directory: Option<&str>,
    directory_exists: bool,
    refers: bool,
) -> Result<Pairing, Mismatch> {
    match (database, directory) {
        (Some(a), Some(b)) if a == b => Ok(Pairing::Matched),
        (_, Some(b)) => Err(Mismatch::Foreign {
            database: database.map(str::to_string),
            directory: b.to_string(),
        }),
        (_, None) if refers && !directory_exists => Err(Mismatch::Missing),
        (Some(_), None) => Ok(Pairing::Adopted),
        (None, None) if refers => Ok(Pairing::Adopted),
        (None, None) => Ok(Pairing::Fresh),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_pair_only_with_their_own() {
        assert_eq!(pair(Some("a"), Some("a"), true, true), Ok(Pairing::Matched));
        let foreign = pair(Some("a"), Some("b"), true, true);
        assert!(matches!(foreign, Err(Mismatch::Foreign { .. })));
        // A truncated (new-looking) database next to a directory with an identity.
        let truncated = pair(None, Some("b"), true, false);
        assert!(matches!(truncated, Err(Mismatch::Foreign { .. })));
        // Moved (or opened through another path) without its directory.
        assert_eq!(pair(Some("a"), None, false, true), Err(Mismatch::Missing));
        assert_eq!(pair(None, None, false, true), Err(Mismatch::Missing));
        // Nothing to lose, or a crash between the two writes of an adoption.
        assert_eq!(pair(Some("a"), None, false, false), Ok(Pairing::Adopted));
        assert_eq!(pair(Some("a"), None, true, true), Ok(Pairing::Adopted));
        // Written before identities existed.
        assert_eq!(pair(None, None, true, true), Ok(Pairing::Adopted));
        assert_eq!(pair(None, None, false, false), Ok(Pairing::Fresh));
        assert_eq!(pair(None, None, true, false), Ok(Pairing::Fresh));
    }

    #[test]
    fn new_identities_differ() {
        let a = new_identity();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_identity());
    }
}
