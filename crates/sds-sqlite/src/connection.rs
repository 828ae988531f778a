//! The connection thread: it owns the SQLite connection and the segment files, runs one job at
//! a time, keeps the segment files in step with each transaction, and decides when the WAL is
//! checkpointed.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, Transaction};
use sds::persistence::{PersistenceError, PersistenceResult};

use crate::bytes::compact;
use crate::damage::{DamageReport, OnDamage};
use crate::reply;
use crate::segments::Segments;

/// What the connection thread owns.
pub(crate) struct Db {
    pub(crate) conn: Connection,
    pub(crate) segments: Segments,
    pub(crate) wal: PathBuf,
    /// The running job's notice, given just before its commit (see [`reply`]).
    pub(crate) soon: Option<Arc<dyn reply::Soon>>,
    /// Whether jobs give their task notice before the commit ([`Options::spin`] and no fsync
    /// per commit).
    ///
    /// [`Options::spin`]: crate::Options::spin
    pub(crate) notice: bool,
    /// What loading does about damaged bytes.
    pub(crate) on_damage: OnDamage,
    /// The messages quarantined since the store was opened.
    pub(crate) damage: Arc<Mutex<DamageReport>>,
}

pub(crate) type Job = Box<dyn FnOnce(&mut Db) + Send>;

/// With [`Options::spin`](crate::Options::spin), how long the connection thread keeps looking
/// for the next job before it sleeps. Callers that run operation after operation (a busy
/// channel) then find it awake: waking a sleeping thread costs more than an operation's own
/// statements.
pub(crate) const STAY_AWAKE: std::time::Duration = std::time::Duration::from_micros(50);

/// Turns of the busy-wait loops (here and in [`reply`]) since the process started: a test
/// checks that a store opened without [`Options::spin`](crate::Options::spin) has none.
pub(crate) static SPINS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts one turn of a busy-wait loop.
pub(crate) fn spun() {
    SPINS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::hint::spin_loop();
}

/// The next job, or `None` once every handle to the store is gone. Looks for it for
/// `stay_awake` before sleeping (zero: sleeps at once).
pub(crate) fn next_job(
    rx: &std_mpsc::Receiver<Job>,
    stay_awake: std::time::Duration,
) -> Option<Job> {
    let since = std::time::Instant::now();
    loop {
        match rx.try_recv() {
            Ok(job) => return Some(job),
            Err(std_mpsc::TryRecvError::Disconnected) => return None,
            Err(std_mpsc::TryRecvError::Empty) if since.elapsed() < stay_awake => spun(),
            Err(std_mpsc::TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

/// WAL pages after which the checkpoint thread is woken (4 MB at 4 KiB pages).
pub(crate) const CHECKPOINT_PAGES: i32 = 1_000;

/// WAL pages after which the connection thread checkpoints itself (40 MB at 4 KiB pages). The
/// checkpoint thread copies frames while new ones are appended, so it rarely finds the WAL fully
/// copied between two commits, which SQLite needs to start the WAL over; here it is, after a
/// short catch-up, and the WAL stays bounded even if the checkpoint thread falls behind.
pub(crate) const CHECKPOINT_HERE_PAGES: i32 = 10_000;

thread_local! {
    /// Pages in the WAL after the last commit on this thread's connection.
    static WAL_PAGES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// SQLite's WAL hook: runs after each commit on the connection thread.
pub(crate) fn note_wal_size(
    _: &rusqlite::hooks::Wal,
    pages: std::ffi::c_int,
) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// Copies what it can of the WAL into the database without waiting for anybody.
pub(crate) fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// What the connection thread does about the WAL after a job.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WalAction {
    None,
    WakeCheckpointer,
    CheckpointHere,
}

/// Decides when checkpoints run, from the WAL's size after each job.
#[derive(Debug, Default)]
pub(crate) struct WalWatch {
    /// WAL size at the last wake-up of the checkpoint thread.
    woken_at: i32,
}

impl WalWatch {
    pub(crate) fn after_job(&mut self) -> WalAction {
        self.decide(WAL_PAGES.with(|p| p.get()))
    }

    pub(crate) fn decide(&mut self, pages: i32) -> WalAction {
        if pages < self.woken_at {
            // The WAL started over.
            self.woken_at = 0;
        }
        if pages >= CHECKPOINT_HERE_PAGES {
            WalAction::CheckpointHere
        } else if pages >= self.woken_at + CHECKPOINT_PAGES {
            self.woken_at = pages;
            WalAction::WakeCheckpointer
        } else {
            WalAction::None
        }
    }
}

/// A failure inside a write transaction.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("sqlite: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("message files: {0}")]
    Io(#[from] std::io::Error),
}

impl From<WriteError> for PersistenceError {
    fn from(e: WriteError) -> Self {
        let message = e.to_string();
        match e {
            WriteError::Sql(source) => PersistenceError::with_source(message, source),
            WriteError::Io(source) => PersistenceError::with_source(message, source),
        }
    }
}

impl Db {
    /// Runs `f` in one transaction, with the segment files kept in step: appended bytes are
    /// synced before the commit when durability asks for it, live bytes change only if the
    /// transaction commits, and segments it empties are deleted once that is durable. Then
    /// compacts a segment if the directory has grown to twice its live bytes.
    pub(crate) fn write(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &mut Segments) -> Result<(), WriteError>,
    ) -> PersistenceResult<()> {
        self.write_once(f)?;
        if let Some(seg) = self.segments.compaction_candidate() {
            // A failed compaction leaves every message where it was.
            let _ = self.write_once(|tx, segments| compact(tx, segments, seg));
            self.segments.compacted(seg);
        }
        Ok(())
    }

    pub(crate) fn write_once(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &mut Segments) -> Result<(), WriteError>,
    ) -> Result<(), WriteError> {
        let result = (|| {
            let tx = self.conn.transaction()?;
            f(&tx, &mut self.segments)?;
            self.segments.before_commit()?;
            if let Some(soon) = self.soon.take() {
                soon.soon();
            }
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            self.segments.rolled_back();
            return Err(e);
        }
        let empty = self.segments.committed();
        // The operation is committed; a segment left behind is deleted on a later commit or
        // the next open.
        let _ = self.segments.delete(&empty, &self.wal);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn checkpoint_thread_is_woken_once_per_step_of_wal_growth() {
        let mut w = WalWatch::default();
        assert_eq!(w.decide(10), WalAction::None);
        assert_eq!(w.decide(CHECKPOINT_PAGES), WalAction::WakeCheckpointer);
        assert_eq!(w.decide(CHECKPOINT_PAGES + 5), WalAction::None);
        assert_eq!(
            w.decide(2 * CHECKPOINT_PAGES + 5),
            WalAction::WakeCheckpointer
        );
        // The WAL started over: the next step counts from zero.
        assert_eq!(w.decide(3), WalAction::None);
        assert_eq!(w.decide(CHECKPOINT_PAGES), WalAction::WakeCheckpointer);
        // Too large: the connection thread checkpoints until the WAL starts over.
        assert_eq!(w.decide(CHECKPOINT_HERE_PAGES), WalAction::CheckpointHere);
        assert_eq!(
            w.decide(CHECKPOINT_HERE_PAGES + 7),
            WalAction::CheckpointHere
        );
        assert_eq!(w.decide(12), WalAction::None);
    }
}
