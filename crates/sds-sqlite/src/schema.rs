//! The database schema and its forward migrations.

use std::path::Path;

use rusqlite::Connection;

use crate::OpenError;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 7;

/// Migrations by the version they produce; migration `i` turns version `i` into `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: the first schema.
    "
    CREATE TABLE channel (
        channel BLOB PRIMARY KEY,
        lamport INTEGER,
        -- Send order of outgoing entries.
        next_seq INTEGER NOT NULL DEFAULT 0
    );
    -- Message bytes, once per channel, shared by every place that refers to them.
    CREATE TABLE message (
        channel BLOB NOT NULL,
        id BLOB NOT NULL,
        bytes BLOB NOT NULL,
        PRIMARY KEY (channel, id)
    );
    CREATE TABLE log (
        channel BLOB NOT NULL,
        id BLOB NOT NULL,
        lamport INTEGER NOT NULL,
        sender BLOB NOT NULL,
        hint BLOB NOT NULL,
        -- 1 for an id marked met by the application: no message, not part of the log proper.
        met INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (channel, id)
    ) WITHOUT ROWID;
    CREATE TABLE outgoing (
        channel BLOB NOT NULL,
        id BLOB NOT NULL,
        send_time INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        possible_acks INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (channel, id)
    ) WITHOUT ROWID;
    CREATE TABLE incoming (
        channel BLOB NOT NULL,
        id BLOB NOT NULL,
        missing BLOB NOT NULL,
        received_at INTEGER NOT NULL,
        PRIMARY KEY (channel, id)
    ) WITHOUT ROWID;
    CREATE TABLE outgoing_repair (
        channel BLOB NOT NULL,
        id BLOB NOT NULL,
        hint BLOB NOT NULL,
        sender BLOB NOT NULL,
        t_req INTEGER NOT NULL,
        PRIMARY KEY (channel, id)
    ) WITHOUT ROWID;
    CREATE TABLE incoming_repair (
        channel BLOB NOT NULL,
        id BLOB NOT NULL,
        hint BLOB NOT NULL,
        sender BLOB NOT NULL,
        t_resp INTEGER NOT NULL,
        PRIMARY KEY (channel, id)
    ) WITHOUT ROWID;
    ",
    // 1 → 2: message bytes may live in a segment file (`<database>-messages/<seg>.seg`, at
    // `off`, `len` bytes with CRC-32 `crc`); such rows keep an empty `bytes`. Rows written
    // before keep their bytes in `bytes`.
    "
    ALTER TABLE message ADD COLUMN seg INTEGER;
    ALTER TABLE message ADD COLUMN off INTEGER;
    ALTER TABLE message ADD COLUMN len INTEGER;
    ALTER TABLE message ADD COLUMN crc INTEGER;
    ",
    // 2 → 3: with the bytes in segment files, message rows are small: keyed by (channel, id)
    // themselves (no rowid, no separate index to write on every insert and delete).
    "
    CREATE TABLE message_v3 (
        channel BLOB NOT NULL,
        id BLOB NOT NULL,
        bytes BLOB NOT NULL,
        seg INTEGER,
        off INTEGER,
        len INTEGER,
        crc INTEGER,
        PRIMARY KEY (channel, id)
    ) WITHOUT ROWID;
    INSERT INTO message_v3 (channel, id, bytes, seg, off, len, crc)
        SELECT channel, id, bytes, seg, off, len, crc FROM message;
    DROP TABLE message;
    ALTER TABLE message_v3 RENAME TO message;
    ",
    // 3 → 4: the store's identity, shared with its message directory (see `identity`), and a
    // mark on messages whose bytes are damaged (see `damage`): kept, left out of loads.
    "
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE message ADD COLUMN damaged INTEGER NOT NULL DEFAULT 0;
    ",
    // 4 → 5: the log evicts by arrival, so each entry keeps its arrival number. Entries written
    // before read as 0, "arrived before anything newer", and are evicted first, in (lamport, id)
    // order, as they were.
    "
    ALTER TABLE log ADD COLUMN arrival INTEGER NOT NULL DEFAULT 0;
    ",
    // 5 → 6: an outgoing repair entry something still waits for is asked for again after a
    // wait that doubles with each retry, so it keeps its retry count.
    "
    ALTER TABLE outgoing_repair ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
    ",
    // 6 → 7: with `Options::keep_history`, entries the log evicts move to `history`, their
    // bytes kept, for reading a channel's whole history in arrival order; and the channel's
    // low-water mark, the highest lamport timestamp of a delivered message that left the log.
    "
    ALTER TABLE channel ADD COLUMN low_water INTEGER;
    CREATE TABLE history (
        channel BLOB NOT NULL,
        id BLOB NOT NULL,
        lamport INTEGER NOT NULL,
        sender BLOB NOT NULL,
        arrival INTEGER NOT NULL,
        PRIMARY KEY (channel, id)
    ) WITHOUT ROWID;
    CREATE INDEX history_by_arrival ON history (channel, arrival);
    ",
];

/// Brings the database to [`SCHEMA_VERSION`], refusing one written by a newer build.
pub(crate) fn migrate(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    let fail = |source| OpenError::Sqlite {
        path: path.to_path_buf(),
        source,
        cause: None,
    };
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(fail)?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let to = from as i64 + 1;
        conn.execute_batch(&format!("BEGIN; {sql} PRAGMA user_version = {to}; COMMIT;"))
            .map_err(fail)?;
    }
    Ok(())
}
