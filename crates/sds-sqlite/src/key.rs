//! Encryption at rest: the application's key, the database opened with it (SQLCipher), and
//! message bytes sealed in segment files.
//!
//! Two keys are derived from the application's with HKDF-SHA256, one for each use: SQLCipher's
//! raw database key (it encrypts and authenticates every page of the database and its WAL), and
//! the key that seals segment records with XChaCha20-Poly1305. A sealed record is its nonce (24
//! random bytes from the operating system, drawn for every record: a 192-bit random nonce does
//! not repeat under one key in any number of records a store will write, across restarts,
//! compactions and recycled files alike), the ciphertext, and the 16-byte tag. The record's
//! channel and message id are its associated data, so a record copied over another message's
//! fails authentication. The CRC-32 in the row covers the record as stored; a record that passes
//! it and fails authentication was tampered with, or sealed under another key, and is reported
//! as damage ([`DamageKind::Authentication`](crate::DamageKind::Authentication)) like any other.

use std::fmt;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use zeroize::Zeroizing;

use crate::{KeyProblem, OpenError};

/// The key of an encrypted store ([`Options::key`](crate::Options::key)): a secret of the
/// application's, at least 16 bytes.
///
/// It must be a high-entropy secret (say 32 random bytes kept in the platform's key store): the
/// store derives its keys from it with HKDF, which does not slow down guessing. A passphrase
/// must be stretched by the application first (Argon2, scrypt). The bytes are wiped from memory
/// when the last copy is dropped, and `Debug` does not show them.
#[derive(Clone)]
pub struct StoreKey(Zeroizing<Vec<u8>>);

/// Why bytes are not a [`StoreKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreKeyError {
    /// Fewer than [`StoreKey::MIN_LEN`] bytes.
    #[error("a store key has at least {min} bytes, this one {len}", min = StoreKey::MIN_LEN)]
    TooShort {
        /// Bytes given.
        len: usize,
    },
    /// Not an even number of hexadecimal digits.
    #[error("a store key in hexadecimal has an even number of the digits 0-9, a-f")]
    NotHex,
}

impl StoreKey {
    /// The fewest bytes a key may have.
    pub const MIN_LEN: usize = 16;

    /// The key made of `secret`.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, StoreKeyError> {
        let secret = Zeroizing::new(secret.into());
        if secret.len() < Self::MIN_LEN {
            return Err(StoreKeyError::TooShort { len: secret.len() });
        }
        Ok(StoreKey(secret))
    }

    /// The key written in hexadecimal digits (upper or lower case).
    pub fn from_hex(hex: &str) -> Result<Self, StoreKeyError> {
        let digits = hex.as_bytes();
        if !digits.len().is_multiple_of(2) {
            return Err(StoreKeyError::NotHex);
        }
        let mut secret = Zeroizing::new(Vec::with_capacity(digits.len() / 2));
        for pair in digits.chunks_exact(2) {
            let digit = |d: u8| char::from(d).to_digit(16).ok_or(StoreKeyError::NotHex);
            secret.push((digit(pair[0])? * 16 + digit(pair[1])?) as u8);
        }
        Self::new(std::mem::take(&mut *secret))
    }

    /// Whether `other` is the same key.
    pub(crate) fn same_as(&self, other: &StoreKey) -> bool {
        // Not in constant time: both are the application's own keys, in its own process.
        self.0[..] == other.0[..]
    }

    /// A key derived from this one for `purpose`.
    #[cfg(feature = "encryption")]
    fn derive(&self, purpose: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        let kdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"sds-sqlite store key"), &self.0);
        // 32 bytes are always within HKDF-SHA256's output limit.
        if kdf.expand(purpose, &mut *out).is_err() {
            unreachable!("HKDF-SHA256 gives 32 bytes");
        }
        out
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

/// The first bytes of a plain SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Opens a connection to the database at `path` (`flags`: SQLite's defaults when `None`) and,
/// with a key, hands SQLCipher the database key. Then reads the schema, so a database the key
/// does not open — a wrong key, an encrypted database without its key, a plain one with a key
/// — fails here with [`OpenError::Key`], before anything is written.
pub(crate) fn open_connection(
    path: &Path,
    flags: Option<OpenFlags>,
    key: Option<&StoreKey>,
) -> Result<Connection, OpenError> {
    let sql = |source| OpenError::Sqlite {
        path: path.to_path_buf(),
        source,
        cause: None,
    };
    if key.is_some() && !cfg!(feature = "encryption") {
        // Refused before the file is even created.
        return Err(OpenError::Key {
            path: path.to_path_buf(),
            problem: KeyProblem::Unsupported,
        });
    }
    let conn = match flags {
        None => Connection::open(path),
        Some(flags) => Connection::open_with_flags(path, flags),
    }
    .map_err(|source| OpenError::Sqlite {
        path: path.to_path_buf(),
        source,
        cause: crate::store::open_cause(path),
    })?;
    if let Some(key) = key {
        apply_database_key(&conn, key).map_err(|problem| OpenError::Key {
            path: path.to_path_buf(),
            problem,
        })?;
    }
    match conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())) {
        Ok(()) => Ok(conn),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => {
            let problem = match (key.is_some(), has_sqlite_header(path)) {
                (true, true) => KeyProblem::NotEncrypted,
                (true, false) => KeyProblem::Wrong,
                (false, false) if could_be_encrypted(path) => KeyProblem::Missing,
                // Damage or not a database: not a key matter.
                (false, _) => return Err(sql(e)),
            };
            Err(OpenError::Key {
                path: path.to_path_buf(),
                problem,
            })
        }
        Err(e) => Err(sql(e)),
    }
}

/// Whether the file at `path` starts like a plain SQLite database.
fn has_sqlite_header(path: &Path) -> bool {
    use std::io::Read as _;
    let mut header = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok_and(|()| &header == SQLITE_HEADER)
}

/// Whether the file at `path` could be an encrypted database: whole pages (of at least 512
/// bytes) or nothing yet, the pages then being in the WAL.
fn could_be_encrypted(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len().is_multiple_of(512))
}

/// `PRAGMA key` with the derived raw key: SQLCipher then reads and writes the file encrypted.
#[cfg(feature = "encryption")]
fn apply_database_key(conn: &Connection, key: &StoreKey) -> Result<(), KeyProblem> {
    use std::fmt::Write as _;
    let raw = key.derive(b"sqlcipher database key v1");
    let mut sql = Zeroizing::new(String::with_capacity(80));
    sql.push_str("PRAGMA key = \"x'");
    for b in raw.iter() {
        let _ = write!(sql, "{b:02x}");
    }
    sql.push_str("'\"");
    conn.execute_batch(&sql).map_err(|_| KeyProblem::Wrong)
}

#[cfg(not(feature = "encryption"))]
fn apply_database_key(_: &Connection, _: &StoreKey) -> Result<(), KeyProblem> {
    Err(KeyProblem::Unsupported)
}

/// Bytes a sealed record has beyond the message: nonce and tag.
pub(crate) const SEAL_OVERHEAD: usize = 24 + 16;

/// What a sealed record belongs to: its associated data.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "encryption"), allow(dead_code))]
pub(crate) struct Owner<'a> {
    pub(crate) channel: &'a [u8],
    pub(crate) id: &'a [u8],
}

/// Seals and opens segment records (see the module docs).
#[cfg(feature = "encryption")]
pub(crate) struct Seal {
    cipher: chacha20poly1305::XChaCha20Poly1305,
}

#[cfg(feature = "encryption")]
mod sealing {
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

    use super::{Owner, Seal, StoreKey};

    /// Nonce bytes at the start of a sealed record.
    const NONCE: usize = 24;
    /// Tag bytes at its end.
    const TAG: usize = 16;
    const _: () = assert!(NONCE + TAG == super::SEAL_OVERHEAD);

    fn associated_data(owner: Owner<'_>) -> Vec<u8> {
        let mut aad = Vec::with_capacity(4 + owner.channel.len() + owner.id.len());
        // The channel's length first, so no other (channel, id) pair gives the same bytes.
        aad.extend_from_slice(&(owner.channel.len() as u32).to_le_bytes());
        aad.extend_from_slice(owner.channel);
        aad.extend_from_slice(owner.id);
        aad
    }

    impl std::fmt::Debug for Seal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Seal(..)")
        }
    }

    impl Seal {
        pub(crate) fn new(key: &StoreKey) -> Self {
            let k = key.derive(b"segment records v1");
            Seal {
                cipher: XChaCha20Poly1305::new((&*k).into()),
            }
        }

        /// Appends the sealed record of `plain` to `out`.
        pub(crate) fn seal_into(
            &self,
            plain: &[u8],
            owner: Owner<'_>,
            out: &mut Vec<u8>,
        ) -> std::io::Result<()> {
            let mut nonce = [0u8; NONCE];
            getrandom::fill(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
            let start = out.len();
            out.extend_from_slice(&nonce);
            out.extend_from_slice(plain);
            let tag = self
                .cipher
                .encrypt_in_place_detached(
                    XNonce::from_slice(&nonce),
                    &associated_data(owner),
                    &mut out[start + NONCE..],
                )
                .map_err(|_| std::io::Error::other("message too long to seal"))?;
            out.extend_from_slice(&tag);
            Ok(())
        }

        /// The plain bytes of a sealed record, if it is authentic.
        pub(crate) fn open(&self, mut sealed: Vec<u8>, owner: Owner<'_>) -> Option<Vec<u8>> {
            if sealed.len() < NONCE + TAG {
                return None;
            }
            let tag = Tag::clone_from_slice(&sealed[sealed.len() - TAG..]);
            let nonce = XNonce::clone_from_slice(&sealed[..NONCE]);
            let end = sealed.len() - TAG;
            self.cipher
                .decrypt_in_place_detached(
                    &nonce,
                    &associated_data(owner),
                    &mut sealed[NONCE..end],
                    &tag,
                )
                .ok()?;
            sealed.truncate(end);
            sealed.drain(..NONCE);
            Some(sealed)
        }
    }
}

/// Without the `encryption` feature no store is opened with a key, so nothing is sealed.
#[cfg(not(feature = "encryption"))]
#[derive(Debug)]
pub(crate) enum Seal {}

#[cfg(not(feature = "encryption"))]
impl Seal {
    pub(crate) fn seal_into(&self, _: &[u8], _: Owner<'_>, _: &mut Vec<u8>) -> std::io::Result<()> {
        match *self {}
    }

    pub(crate) fn open(&self, _: Vec<u8>, _: Owner<'_>) -> Option<Vec<u8>> {
        match *self {}
    }
}

/// The sealing of segment records for a store opened with `key`.
pub(crate) fn seal_for(key: Option<&StoreKey>) -> Option<Seal> {
    #[cfg(feature = "encryption")]
    {
        key.map(Seal::new)
    }
    #[cfg(not(feature = "encryption"))]
    {
        // Opening with a key fails before segments are opened.
        let _ = key;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_never_shown() {
        assert_eq!(
            StoreKey::new(vec![1; 15]).unwrap_err(),
            StoreKeyError::TooShort { len: 15 }
        );
        assert!(StoreKey::new(vec![1; 16]).is_ok());
        let k = StoreKey::from_hex("00112233445566778899AABBCCDDEEff").unwrap();
        assert_eq!(
            &k.0[..],
            &[
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
        assert_eq!(
            StoreKey::from_hex("0011g2").unwrap_err(),
            StoreKeyError::NotHex
        );
        assert_eq!(
            StoreKey::from_hex("001").unwrap_err(),
            StoreKeyError::NotHex
        );
        assert_eq!(
            StoreKey::from_hex("0011").unwrap_err(),
            StoreKeyError::TooShort { len: 2 }
        );
        assert_eq!(format!("{k:?}"), "StoreKey(..)");
    }

    #[cfg(feature = "encryption")]
    #[test]
    fn records_open_only_with_their_key_and_owner() {
        let seal = Seal::new(&StoreKey::new(*b"0123456789abcdef").unwrap());
        let owner = Owner {
            channel: b"chat",
            id: b"m1",
        };
        let mut a = Vec::new();
        seal.seal_into(b"hello world", owner, &mut a).unwrap();
        let mut b = Vec::new();
        seal.seal_into(b"hello world", owner, &mut b).unwrap();
        assert_eq!(a.len(), 11 + 40);
        // A fresh nonce every time: the same bytes seal differently.
        assert_ne!(a, b);
        assert!(!a.windows(5).any(|w| w == b"hello"));
        assert_eq!(seal.open(a.clone(), owner).unwrap(), b"hello world");
        // Another owner (the channel's length is part of the data: "cha" + "tm1" differs).
        let other = Owner {
            channel: b"cha",
            id: b"tm1",
        };
        assert!(seal.open(a.clone(), other).is_none());
        // Another key.
        let wrong = Seal::new(&StoreKey::new(*b"0123456789abcdeF").unwrap());
        assert!(wrong.open(a.clone(), owner).is_none());
        // Any flipped bit.
        for i in [0, 23, 24, 30, a.len() - 1] {
            let mut t = a.clone();
            t[i] ^= 1;
            assert!(seal.open(t, owner).is_none(), "bit flipped at {i}");
        }
        assert!(seal.open(a[..39].to_vec(), owner).is_none());
    }

    /// Tampering a record in a way its CRC does not show (the CRC in the row fixed up, or
    /// another message's record put in its place) is caught by authentication and reported
    /// as damage like any other: the load fails, or with quarantine leaves the message out;
    /// nothing is deleted.
    #[cfg(feature = "encryption")]
    #[tokio::test]
    async fn a_tampered_record_is_damage_not_deletion() {
        use std::os::unix::fs::FileExt;

        use sds_manager::persistence::Persistence;
        use sds_manager::{Bytes, ChannelId, LogEntry};

        use crate::segments::seg_name;
        use crate::{check_with_key, DamageKind, OnDamage, SqliteStore};

        let dir = std::env::temp_dir().join(format!("sds-tamper-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("sds.db");
        let key = StoreKey::new([9u8; 32]).unwrap();
        let options = |on_damage| crate::Options {
            key: Some(key.clone()),
            on_damage,
            ..crate::Options::default()
        };
        let c = ChannelId::from("c");
        let entry = |id: &str, fill: u8| LogEntry {
            message_id: id.into(),
            lamport_timestamp: 1,
            sender_id: "s".into(),
            retrieval_hint: Bytes::new(),
            arrival: 1,
            bytes: Bytes::from(vec![fill; 5_000]),
        };
        let closed = || async {
            let wal = std::path::PathBuf::from(format!("{}-wal", db.display()));
            while wal.exists() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        for (case, tamper) in ["flipped", "swapped"].into_iter().enumerate() {
            let _ = crate::remove_database(&db);
            {
                let store = SqliteStore::open_with_options(&db, options(OnDamage::Refuse)).unwrap();
                for (id, fill) in [("m1", 1), ("m2", 2), ("m3", 3)] {
                    store.append_log_entry(&c, &entry(id, fill)).await.unwrap();
                }
            }
            closed().await;
            let conn = open_connection(&db, None, Some(&key)).unwrap();
            let loc = |id: &str| -> (u32, u64, usize, u32) {
                conn.query_row(
                    "SELECT seg, off, len, crc FROM message WHERE channel = ?1 AND id = ?2",
                    rusqlite::params![c.as_bytes(), id.as_bytes()],
                    |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?, r.get(3)?)),
                )
                .unwrap()
            };
            let (seg, off, len, _) = loc("m1");
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(dir.join("sds.db-messages").join(seg_name(seg)))
                .unwrap();
            let mut record = vec![0u8; len];
            if tamper == "flipped" {
                file.read_exact_at(&mut record, off).unwrap();
                record[100] ^= 0x20;
            } else {
                // m2's record, authentic but another message's, in m1's place.
                let (_, off2, len2, _) = loc("m2");
                assert_eq!(len2, len);
                file.read_exact_at(&mut record, off2).unwrap();
            }
            file.write_all_at(&record, off).unwrap();
            conn.execute(
                "UPDATE message SET crc = ?3 WHERE channel = ?1 AND id = ?2",
                rusqlite::params![c.as_bytes(), b"m1".as_slice(), crc32fast::hash(&record)],
            )
            .unwrap();
            drop(conn);

            let report = check_with_key(&db, &key).unwrap();
            assert_eq!(report.damaged.messages.len(), 1, "{tamper}: {report:?}");
            assert_eq!(report.damaged.messages[0].message_id.as_bytes(), b"m1");
            assert_eq!(report.damaged.messages[0].kind, DamageKind::Authentication);

            let store = SqliteStore::open_with_options(&db, options(OnDamage::Refuse)).unwrap();
            let err = store.load_channel(&c).await.unwrap_err();
            assert!(
                err.to_string().contains("fail authentication"),
                "{tamper}: {err}"
            );
            drop(store);
            // A second store of the same database waits for the first to close.
            let store = SqliteStore::open_with_options(&db, options(OnDamage::Quarantine)).unwrap();
            let snap = store.load_channel(&c).await.unwrap();
            let ids: Vec<&[u8]> = snap.log.iter().map(|e| e.message_id.as_bytes()).collect();
            assert_eq!(ids, [b"m2".as_slice(), b"m3"], "{tamper}");
            assert_eq!(store.damage().messages.len(), 1);
            assert_eq!(store.damage().messages[0].kind, DamageKind::Authentication);
            drop(store);
            closed().await;
            // Nothing was deleted: the row and the record are still there.
            let conn = open_connection(&db, None, Some(&key)).unwrap();
            let (rows, damaged): (i64, i64) = conn
                .query_row("SELECT count(*), sum(damaged) FROM message", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            assert_eq!((rows, damaged), (3, 1), "case {case}");
            assert!(dir.join("sds.db-messages").join(seg_name(seg)).exists());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
