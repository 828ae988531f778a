//! Encryption at rest (`Options::key`): nothing the application stored is readable in any file
//! of the store, a wrong or missing key is a clear error that changes nothing, and a record
//! tampered with is reported as damage, never deleted. (Needs the crate feature `encryption`.)

#![cfg(feature = "encryption")]

use std::path::{Path, PathBuf};

use sds_manager::persistence::Persistence;
use sds_manager::{Bytes, ChannelId, LogEntry, MessageId, OutgoingEntry};
use sds_sqlite::{KeyProblem, OpenError, Options, SqliteStore, StoreKey};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sds-enc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn key(byte: u8) -> StoreKey {
    StoreKey::new(vec![byte; 32]).unwrap()
}

fn keyed(key: Option<StoreKey>) -> Options {
    Options {
        key,
        ..Options::default()
    }
}

/// What the application stores, each part easy to find in a file: a channel id, message ids,
/// senders, retrieval hints and message bytes of both kinds (kept in the row up to 1 KiB,
/// in a segment file beyond).
const CHANNEL: &str = "CHANNEL-b1e5";
const MARKERS: [&[u8]; 6] = [
    b"CHANNEL-b1e5",
    b"MSGID-7a0c",
    b"SENDER-33f1",
    b"HINT-9d42",
    b"SMALL-CONTENT-e8",
    b"LARGE-CONTENT-c6",
];

fn content(marker: &str, len: usize) -> Bytes {
    let mut b = Vec::with_capacity(len);
    while b.len() < len {
        b.extend_from_slice(marker.as_bytes());
        b.push(b' ');
    }
    b.truncate(len);
    Bytes::from(b)
}

fn log_entry(id: &str, bytes: Bytes) -> LogEntry {
    LogEntry {
        message_id: MessageId::from(id),
        lamport_timestamp: 7,
        sender_id: "SENDER-33f1".into(),
        retrieval_hint: Bytes::from_static(b"HINT-9d42"),
        arrival: 1,
        bytes,
    }
}

/// Stores messages of both sizes in the log and the outgoing buffer.
async fn store_known_content(store: &SqliteStore) {
    let c = ChannelId::from(CHANNEL);
    for i in 0..20 {
        let small = log_entry(
            &format!("MSGID-7a0c-s{i}"),
            content("SMALL-CONTENT-e8", 300),
        );
        store.append_log_entry(&c, &small).await.unwrap();
        let large = log_entry(
            &format!("MSGID-7a0c-l{i}"),
            content("LARGE-CONTENT-c6", 19_000),
        );
        store.append_log_entry(&c, &large).await.unwrap();
        let out = OutgoingEntry {
            message_id: format!("MSGID-7a0c-o{i}").as_str().into(),
            bytes: content("LARGE-CONTENT-c6", 5_000),
            send_time: 1,
            attempts: 0,
            possible_acks: 0,
        };
        store.save_outgoing(&c, &out).await.unwrap();
    }
}

/// Every file under `dir` (recursively) with its bytes.
fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(all_files(&e.path()));
        } else if let Ok(bytes) = std::fs::read(e.path()) {
            out.push((e.path(), bytes));
        }
    }
    out
}

/// The markers found in some file under `dir`, with the file.
fn markers_on_disk(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for (path, bytes) in all_files(dir) {
        for m in MARKERS {
            if bytes.windows(m.len()).any(|w| w == m) {
                found.push((String::from_utf8_lossy(m).into_owned(), path.clone()));
            }
        }
    }
    found
}

/// Waits for the store's threads to end after its last handle is dropped (the WAL is folded
/// into the database and removed).
async fn closed(db: &Path) {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    for _ in 0..500 {
        if !wal.exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the store did not close");
}

#[tokio::test]
async fn known_content_appears_in_no_file_of_an_encrypted_store() {
    // The same content in a plain store is found, so the search below can find it.
    let plain = temp_dir("plain");
    {
        let store = SqliteStore::open(plain.join("sds.db")).unwrap();
        store_known_content(&store).await;
    }
    closed(&plain.join("sds.db")).await;
    let found = markers_on_disk(&plain);
    for m in MARKERS {
        let m = String::from_utf8_lossy(m);
        assert!(
            found.iter().any(|(f, _)| *f == m),
            "{m} not in a plain store"
        );
    }

    let dir = temp_dir("sealed");
    let db = dir.join("sds.db");
    let store = SqliteStore::open_with_options(&db, keyed(Some(key(1)))).unwrap();
    store_known_content(&store).await;
    // While open: the WAL holds the latest pages.
    assert_eq!(markers_on_disk(&dir), vec![], "while open");
    let snap = store.load_channel(&CHANNEL.into()).await.unwrap();
    assert_eq!(snap.log.len(), 40);
    assert_eq!(snap.outgoing.len(), 20);
    assert!(snap
        .log
        .iter()
        .all(|e| e.bytes.starts_with(b"SMALL-CONTENT-e8")
            || e.bytes.starts_with(b"LARGE-CONTENT-c6")));
    drop(store);
    closed(&db).await;
    assert_eq!(markers_on_disk(&dir), vec![], "once closed");

    // Reopened with the key, everything reads back.
    let store = SqliteStore::open_with_options(&db, keyed(Some(key(1)))).unwrap();
    let again = store.load_channel(&CHANNEL.into()).await.unwrap();
    assert_eq!(again, snap);
    // The check reads every record back with the key.
    drop(store);
    closed(&db).await;
    let report = sds_sqlite::check_with_key(&db, &key(1)).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.messages, 60);
    let _ = std::fs::remove_dir_all(&plain);
    let _ = std::fs::remove_dir_all(&dir);
}

fn key_problem(result: Result<SqliteStore, OpenError>) -> KeyProblem {
    match result {
        Err(OpenError::Key { problem, .. }) => problem,
        Err(e) => panic!("expected a key error, got {e}"),
        Ok(_) => panic!("expected a key error, the store opened"),
    }
}

#[tokio::test]
async fn a_wrong_or_missing_key_is_an_error_and_changes_nothing() {
    let dir = temp_dir("keys");
    let db = dir.join("sds.db");
    {
        let store = SqliteStore::open_with_options(&db, keyed(Some(key(1)))).unwrap();
        store_known_content(&store).await;
    }
    closed(&db).await;
    let before = all_files(&dir);

    assert_eq!(
        key_problem(SqliteStore::open_with_options(&db, keyed(Some(key(2))))),
        KeyProblem::Wrong
    );
    assert_eq!(key_problem(SqliteStore::open(&db)), KeyProblem::Missing);
    assert_eq!(
        key_problem(sds_sqlite::check_with_key(&db, &key(2)).map(|_| unreachable!())),
        KeyProblem::Wrong
    );
    assert_eq!(
        key_problem(sds_sqlite::check(&db).map(|_| unreachable!())),
        KeyProblem::Missing
    );
    assert_eq!(
        key_problem(sds_sqlite::repair_with_key(&db, &key(2)).map(|_| unreachable!())),
        KeyProblem::Wrong
    );
    // Nothing was written, created or deleted by the attempts.
    assert_eq!(all_files(&dir), before);

    // The right key opens it; a second open in the process must bring the same key.
    let store = SqliteStore::open_with_options(&db, keyed(Some(key(1)))).unwrap();
    assert_eq!(
        key_problem(SqliteStore::open_with_options(&db, keyed(Some(key(2))))),
        KeyProblem::Wrong
    );
    assert_eq!(key_problem(SqliteStore::open(&db)), KeyProblem::Missing);
    let same = SqliteStore::open_with_options(&db, keyed(Some(key(1)))).unwrap();
    assert_eq!(
        same.load_channel(&CHANNEL.into()).await.unwrap().log.len(),
        40
    );
    drop((store, same));
    closed(&db).await;

    // A plain store is not opened with a key (it would not be converted).
    let plain = dir.join("plain.db");
    drop(SqliteStore::open(&plain).unwrap());
    closed(&plain).await;
    assert_eq!(
        key_problem(SqliteStore::open_with_options(&plain, keyed(Some(key(1))))),
        KeyProblem::NotEncrypted
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn compaction_seals_records_anew_and_they_read_back() {
    let dir = temp_dir("compact");
    let db = dir.join("sds.db");
    let options = Options {
        key: Some(key(3)),
        // Three records a segment.
        segment_bytes: 20_000,
        ..Options::default()
    };
    let c = ChannelId::from(CHANNEL);
    let bytes = |i: usize| content(&format!("LARGE-CONTENT-c6 {i}"), 5_000);
    let store = SqliteStore::open_with_options(&db, options.clone()).unwrap();
    for i in 0..60 {
        let e = log_entry(&format!("m{i}"), bytes(i));
        store.append_log_entry(&c, &e).await.unwrap();
    }
    // Two of every three die: the segments hold three times the live bytes, and compaction
    // copies the survivors forward.
    for i in (0..60).filter(|i| i % 3 != 0) {
        store
            .remove_log_entry(&c, &format!("m{i}").as_str().into())
            .await
            .unwrap();
    }
    let check = |snap: sds_manager::ChannelSnapshot| {
        let got: Vec<(String, Bytes)> = snap
            .log
            .into_iter()
            .map(|e| (e.message_id.to_string(), e.bytes))
            .collect();
        let mut want: Vec<(String, Bytes)> = (0..60)
            .filter(|i| i % 3 == 0)
            .map(|i| (format!("m{i}"), bytes(i)))
            .collect();
        want.sort();
        let mut got = got;
        got.sort();
        assert_eq!(got, want);
    };
    check(store.load_channel(&c).await.unwrap());
    drop(store);
    closed(&db).await;
    let segments = std::fs::read_dir(dir.join("sds.db-messages"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count();
    // Twenty full segments were written; compaction emptied some.
    assert!(segments < 20, "nothing was compacted: {segments} segments");
    let report = sds_sqlite::check_with_key(&db, &key(3)).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let store = SqliteStore::open_with_options(&db, options).unwrap();
    check(store.load_channel(&c).await.unwrap());
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
