//! Moved, linked, emptied and damaged stores: opening reports what is wrong and deletes
//! nothing; quarantine, when asked for, leaves damaged messages out and keeps their rows; putting
//! the files back brings everything back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sds_manager::persistence::Persistence;
use sds_manager::{ChannelSnapshot, ManagerConfig, ReliabilityManager};
use sds_sqlite::{check, repair, DamageKind, OnDamage, OpenError, Options, SqliteStore};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sds-damage-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn messages_dir(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-messages", db.display()))
}

/// A store at `path` with `n` messages sent on channel "c" (each ~19 KB, in segment files),
/// closed again: its threads have ended and SQLite has folded the WAL into the database, as
/// after any orderly shutdown, so the database file alone holds every row.
async fn store_with_messages(path: &Path, n: usize, options: Options) {
    {
        let store = SqliteStore::open_with_options(path, options).unwrap();
        let m =
            ReliabilityManager::new("alice", ManagerConfig::default(), Arc::new(store)).unwrap();
        for i in 0..n {
            m.wrap_outgoing_message(&b"x"[..], format!("m{i}"), "c")
                .await
                .unwrap();
        }
    }
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    for _ in 0..500 {
        if !wal.exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the store did not close");
}

async fn log_len(path: &Path, options: Options) -> usize {
    let store = SqliteStore::open_with_options(path, options).unwrap();
    store.load_channel(&"c".into()).await.unwrap().log.len()
}

fn count(path: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Every file in the message directory (recursively), with its size.
fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push((
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            ));
        }
    }
    out.sort();
    out
}

fn small_segments() -> Options {
    Options {
        segment_bytes: 100_000,
        ..Options::default()
    }
}

#[tokio::test]
async fn opening_through_a_symbolic_link_finds_every_message() {
    let dir = temp_dir("link");
    let real = dir.join("real.db");
    store_with_messages(&real, 30, Options::default()).await;
    let link = dir.join("link.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert_eq!(log_len(&link, Options::default()).await, 30);
    // No second message directory beside the link; the real one is intact.
    assert!(!messages_dir(&link).exists());
    assert_eq!(log_len(&real, Options::default()).await, 30);
    // Through both paths at once in one process: one store.
    let a = SqliteStore::open(&real).unwrap();
    let b = SqliteStore::open(&link).unwrap();
    assert_eq!(a.path(), b.path());
}

#[tokio::test]
async fn a_database_moved_without_its_directory_is_refused_and_comes_back_when_moved_back() {
    let dir = temp_dir("moved");
    let path = dir.join("sds.db");
    store_with_messages(&path, 20, Options::default()).await;
    let before = files(&messages_dir(&path));
    let moved = dir.join("moved.db");
    std::fs::rename(&path, &moved).unwrap();
    match SqliteStore::open(&moved) {
        Err(OpenError::MessagesMissing { messages, .. }) => {
            assert_eq!(messages, messages_dir(&moved))
        }
        other => panic!("expected MessagesMissing, got {other:?}"),
    }
    // Nothing was created where the directory should be, nothing touched where it is.
    assert!(!messages_dir(&moved).exists());
    assert_eq!(files(&messages_dir(&path)), before);
    std::fs::rename(&moved, &path).unwrap();
    assert_eq!(log_len(&path, Options::default()).await, 20);
}

#[tokio::test]
async fn an_emptied_database_is_refused_and_its_message_files_are_kept() {
    let dir = temp_dir("emptied");
    let path = dir.join("sds.db");
    store_with_messages(&path, 20, small_segments()).await;
    let before = files(&messages_dir(&path));
    assert!(before.iter().filter(|(n, _)| n.ends_with(".seg")).count() > 1);
    std::fs::write(&path, b"").unwrap();
    match SqliteStore::open(&path) {
        Err(OpenError::ForeignMessages { database: None, .. }) => {}
        other => panic!("expected ForeignMessages, got {other:?}"),
    }
    assert_eq!(files(&messages_dir(&path)), before);
}

#[tokio::test]
async fn a_missing_segment_is_reported_and_nothing_is_deleted_until_asked() {
    let dir = temp_dir("missing");
    let path = dir.join("sds.db");
    store_with_messages(&path, 20, small_segments()).await;
    let seg = messages_dir(&path).join("00000001.seg");
    let kept = dir.join("kept.seg");
    std::fs::rename(&seg, &kept).unwrap();
    let rows = count(&path, "SELECT COUNT(*) FROM log");
    let before = files(&messages_dir(&path));
    let lost = match SqliteStore::open_with_options(&path, small_segments()) {
        Err(OpenError::Damaged { report, .. }) => report,
        other => panic!("expected Damaged, got {other:?}"),
    };
    assert!(!lost.is_empty());
    assert!(lost
        .messages
        .iter()
        .all(|m| m.kind == DamageKind::MissingFile));
    assert_eq!(count(&path, "SELECT COUNT(*) FROM log"), rows);
    assert_eq!(files(&messages_dir(&path)), before);

    // Asked to go on: the damaged messages are left out and listed; their rows stay.
    let quarantine = Options {
        on_damage: OnDamage::Quarantine,
        ..small_segments()
    };
    {
        let store = SqliteStore::open_with_options(&path, quarantine).unwrap();
        assert_eq!(store.damage(), lost);
        let snap = store.load_channel(&"c".into()).await.unwrap();
        assert_eq!(snap.log.len(), 20 - lost.messages.len());
    }
    assert_eq!(count(&path, "SELECT COUNT(*) FROM log"), rows);
    assert_eq!(files(&messages_dir(&path)), before);

    // The file put back and the marks cleared: everything is there again.
    std::fs::rename(&kept, &seg).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE message SET damaged = 0", []).unwrap();
    drop(conn);
    assert_eq!(log_len(&path, small_segments()).await, 20);
}

#[tokio::test]
async fn bytes_failing_their_checksum_fail_the_load_or_are_quarantined_never_deleted() {
    let dir = temp_dir("checksum");
    let path = dir.join("sds.db");
    store_with_messages(&path, 3, Options::default()).await;
    let (seg, off) = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row("SELECT seg, off FROM message WHERE id = x'6d31'", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })
        .unwrap()
    };
    let file = messages_dir(&path).join(format!("{seg:08}.seg"));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[off as usize + 100] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    {
        let store = SqliteStore::open(&path).unwrap();
        let err = store.load_channel(&"c".into()).await.unwrap_err();
        assert!(err.to_string().contains("m1"), "{err}");
    }
    let ids = |s: &ChannelSnapshot| -> Vec<String> {
        s.log.iter().map(|e| e.message_id.to_string()).collect()
    };
    let quarantine = Options {
        on_damage: OnDamage::Quarantine,
        ..Options::default()
    };
    {
        let store = SqliteStore::open_with_options(&path, quarantine).unwrap();
        let snap = store.load_channel(&"c".into()).await.unwrap();
        assert_eq!(ids(&snap), ["m0", "m2"]);
        assert_eq!(store.damage().messages.len(), 1);
        assert_eq!(store.damage().messages[0].kind, DamageKind::Checksum);
    }
    assert_eq!(
        count(&path, "SELECT COUNT(*) FROM log WHERE id = x'6d31'"),
        1
    );
    assert_eq!(
        count(&path, "SELECT damaged FROM message WHERE id = x'6d31'"),
        1
    );
    // Marked damaged, the message is left out on later loads too, without an error.
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        ids(&store.load_channel(&"c".into()).await.unwrap()),
        ["m0", "m2"]
    );
}

#[test]
fn an_open_error_says_why_the_operating_system_refused() {
    let dir = temp_dir("no-such-dir");
    let err = SqliteStore::open(dir.join("missing").join("sds.db")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("No such file or directory"), "{text}");
    assert!(matches!(err, OpenError::Sqlite { cause: Some(_), .. }));
}

#[tokio::test]
async fn check_reports_without_changing_anything_and_repair_only_marks() {
    let dir = temp_dir("check");
    let path = dir.join("sds.db");
    store_with_messages(&path, 12, small_segments()).await;
    let clean = check(&path).unwrap();
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(clean.messages, 12);
    assert!(clean.segment_bytes > 12 * 18_000);
    // One message's bytes damaged, one segment file gone.
    let (seg, off) = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row("SELECT seg, off FROM message WHERE id = x'6d35'", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })
        .unwrap()
    };
    let file = messages_dir(&path).join(format!("{seg:08}.seg"));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[off as usize + 7] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    std::fs::remove_file(messages_dir(&path).join("00000001.seg")).unwrap();
    let files_before = files(&messages_dir(&path));
    let db_before = std::fs::read(&path).unwrap();

    let found = check(&path).unwrap();
    assert!(!found.is_clean());
    let kinds: Vec<_> = found.damaged.messages.iter().map(|m| m.kind).collect();
    assert!(kinds.contains(&DamageKind::Checksum), "{kinds:?}");
    assert!(kinds.contains(&DamageKind::MissingFile), "{kinds:?}");
    assert_eq!(found.quarantined, 0);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        db_before,
        "check wrote to the database"
    );
    assert_eq!(files(&messages_dir(&path)), files_before);

    let repaired = repair(&path).unwrap();
    assert_eq!(
        repaired.damaged.messages.len(),
        found.damaged.messages.len()
    );
    let rows = count(&path, "SELECT COUNT(*) FROM log");
    assert_eq!(rows, 12, "repair deleted rows");
    assert_eq!(
        count(&path, "SELECT COUNT(*) FROM message WHERE damaged = 1") as usize,
        found.damaged.messages.len()
    );
    // Afterwards: nothing new is damaged, the marked ones are counted, and the store opens
    // with its default options, leaving them out.
    let after = check(&path).unwrap();
    assert!(after.damaged.is_empty(), "{after:?}");
    assert_eq!(after.quarantined as usize, found.damaged.messages.len());
    assert_eq!(
        log_len(&path, small_segments()).await,
        12 - found.damaged.messages.len()
    );
}

#[tokio::test]
async fn a_store_error_keeps_the_sqlite_error_as_its_source() {
    let dir = temp_dir("source");
    let path = dir.join("sds.db");
    let store = SqliteStore::open(&path).unwrap();
    store.load_channel(&"c".into()).await.unwrap();
    // The schema pulled from under the store.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("DROP TABLE outgoing").unwrap();
    drop(conn);
    let err = store.load_channel(&"c".into()).await.unwrap_err();
    let source = std::error::Error::source(&err).expect("a source");
    assert!(
        source.downcast_ref::<rusqlite::Error>().is_some(),
        "{source:?}"
    );
}
