//! The store's upkeep, after every operation wherever it ran and on the connection thread's
//! turns: when the WAL is checkpointed, when the next sync round is due, and deleting segment
//! files once the commits that emptied them are durable.
//!
//! An operation may run on the caller's thread ([`Options::inline`]). What it leaves to do
//! that takes long — a checkpoint of an overgrown WAL, compacting a segment — or that needs a
//! timer — arming the next sync round — it leaves to the connection thread, and nudges it.
//!
//! [`Options::inline`]: crate::Options::inline

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::bytes::compact;
use crate::connection::{Db, Progress};
use crate::segments::Unsynced;

/// The upkeep's state: part of [`Db`], so that it runs under the same lock as operations.
pub(crate) struct Upkeep {
    wal: WalWatch,
    /// When the next sync round is due (`None`: no commit waits for one).
    pub(crate) due: Option<Instant>,
    /// Commits up to this number are covered by a round run or asked for.
    covered: u64,
    /// The longest a commit waits for its sync round ([`Options::sync_interval`]).
    ///
    /// [`Options::sync_interval`]: crate::Options::sync_interval
    interval: Duration,
    /// A job ran since the connection thread's last turn (on a caller's thread: the connection
    /// thread does not see those come): the store is not quiet.
    worked: bool,
    /// The WAL size limit set on the connection.
    wal_limit: i64,
    /// Sync rounds run because the store was quiet (tests check when they run).
    pub(crate) quiet_rounds: u64,
    round: Arc<SyncRound>,
    /// Wakes the checkpoint thread (which runs a sync round on its own connection).
    wake: Box<dyn Fn() + Send>,
}

impl Upkeep {
    pub(crate) fn new(
        interval: Duration,
        round: Arc<SyncRound>,
        wake: Box<dyn Fn() + Send>,
    ) -> Self {
        Upkeep {
            wal: WalWatch::default(),
            due: None,
            covered: 0,
            interval,
            worked: false,
            wal_limit: WAL_SIZE_LIMIT,
            quiet_rounds: 0,
            round,
            wake,
        }
    }

    /// On closing, after [`Db::close`]: drops the way to wake the checkpoint thread, which then
    /// ends.
    pub(crate) fn stop_waking(&mut self) {
        self.wake = Box::new(|| {});
    }
}

impl Db {
    /// Upkeep after a job. On the connection thread (`on_thread`) it does everything itself;
    /// on a caller's thread it leaves a checkpoint and compaction to the connection thread, and
    /// says whether to nudge that thread: it has such work, or a sync round it does not know of
    /// yet.
    pub(crate) fn after_job(&mut self, on_thread: bool) -> bool {
        let committed = self.progress.committed.load(Ordering::Acquire);
        let mut nudge = false;
        self.upkeep.worked = true;
        let action = self.upkeep.wal.decide(self.wal_pages);
        self.set_wal_limit();
        match action {
            WalAction::None => {}
            WalAction::WakeCheckpointer => {
                self.upkeep.covered = committed;
                (self.upkeep.wake)();
            }
            WalAction::CheckpointHere if on_thread => {
                self.upkeep.covered = committed;
                self.upkeep.round.run(&self.conn, Checkpoint::Passive);
            }
            WalAction::CheckpointHere => {
                self.upkeep.round.wanted_here.store(true, Ordering::Release);
                nudge = true;
            }
        }
        if !on_thread && self.segments.compaction_candidate().is_some() {
            nudge = true;
        }
        if self.arm(committed, Instant::now()) {
            nudge = true;
        }
        nudge && !on_thread
    }

    /// Sets the sync round's due time if a commit (or a segment waiting to be deleted) waits
    /// for one and none is set; says whether it did.
    fn arm(&mut self, committed: u64, now: Instant) -> bool {
        let waiting = committed > self.upkeep.covered || self.segments.has_doomed();
        if self.upkeep.due.is_none() && waiting {
            self.upkeep.due = Some(now + self.upkeep.interval);
            true
        } else {
            false
        }
    }

    /// Sets the connection's WAL size limit to what [`WalWatch`] says, if it changed.
    fn set_wal_limit(&mut self) {
        let limit = self.upkeep.wal.size_limit();
        if limit != self.upkeep.wal_limit {
            match self.conn.pragma_update(None, "journal_size_limit", limit) {
                Ok(()) => self.upkeep.wal_limit = limit,
                Err(e) => tracing::warn!(error = %e, "sqlite store: cannot set the WAL size limit"),
            }
        }
    }

    /// The connection thread's turn, after a job, a nudge, or its due time (`due_only`: it
    /// woke for the due time, nothing was sent). Runs a checkpoint or compaction left to it,
    /// the sync round if it is due — itself on a quiet store (no job since the last turn,
    /// wherever it ran), emptying the WAL, or by the checkpoint thread on a busy one — deletes
    /// segments emptied by commits now durable, and sets the next due time.
    pub(crate) fn turn(&mut self, due_only: bool) {
        let worked = std::mem::take(&mut self.upkeep.worked);
        let quiet = due_only && !worked;
        if self.upkeep.round.wanted_here.swap(false, Ordering::AcqRel) {
            self.upkeep.covered = self.progress.committed.load(Ordering::Acquire);
            self.upkeep.round.run(&self.conn, Checkpoint::Passive);
        }
        if let Some(seg) = self.segments.compaction_candidate() {
            // A failed compaction leaves every message where it was.
            let _ = self.write(|tx, segments| compact(tx, segments, seg));
            self.segments.compacted(seg);
        }
        let now = Instant::now();
        if self.upkeep.due.is_some_and(|d| d <= now) {
            self.upkeep.due = None;
            self.upkeep.covered = self.progress.committed.load(Ordering::Acquire);
            self.upkeep.wal.turn();
            self.set_wal_limit();
            if quiet {
                self.upkeep.quiet_rounds += 1;
                self.upkeep.round.run(&self.conn, Checkpoint::Truncate);
            } else {
                (self.upkeep.wake)();
                // One more turn after this, to empty the WAL once the store is quiet.
                self.upkeep.due = Some(now + self.upkeep.interval);
            }
        }
        let _ = self
            .segments
            .delete_durable(self.progress.durable.load(Ordering::Acquire));
        let committed = self.progress.committed.load(Ordering::Acquire);
        self.arm(committed, now);
    }

    /// On closing: everything made durable, then what waited for that deleted.
    pub(crate) fn close(&mut self) {
        self.upkeep.round.run(&self.conn, Checkpoint::Passive);
        let _ = self
            .segments
            .delete_durable(self.progress.durable.load(Ordering::Acquire));
    }
}

/// How a checkpoint treats the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checkpoint {
    /// Copies what it can without waiting for anybody.
    Passive,
    /// Copies everything, waiting for the writer if need be, and empties the WAL file: for a
    /// store gone quiet.
    Truncate,
}

/// Makes every commit so far durable, message bytes before rows: the segment directory and
/// files are synced, then the WAL is checkpointed and synced. Run by the checkpoint thread on
/// its connection, or by the connection thread.
pub(crate) struct SyncRound {
    pub(crate) unsynced: Arc<Unsynced>,
    pub(crate) progress: Arc<Progress>,
    pub(crate) wal: PathBuf,
    /// The WAL outgrew [`CHECKPOINT_HERE_PAGES`] after an operation on a caller's thread: the
    /// connection thread runs a round at its next turn (see [`presync`](Self::presync)).
    pub(crate) wanted_here: AtomicBool,
}

impl SyncRound {
    /// Syncs what a round would, ahead of it and without the connection: the message files,
    /// then the WAL. The round that follows under the connection's lock then has only what was
    /// written since to sync (half of a round's time at the WAL's bound, measured, during
    /// which operations wait for the lock).
    pub(crate) fn presync(&self) {
        if self.unsynced.sync().is_ok() {
            let _ = sync_file(&self.wal);
        }
    }

    pub(crate) fn run(&self, conn: &Connection, mode: Checkpoint) {
        let start = self.progress.committed.load(Ordering::Acquire);
        if let Err(e) = self.unsynced.sync() {
            // Checkpointing would make rows durable whose bytes may not be: the WAL waits.
            tracing::warn!(error = %e, "sqlite store: cannot sync message files; checkpoint put off");
            return;
        }
        // A failed checkpoint leaves the frames in the WAL, where they are safe once synced.
        let sql = match mode {
            Checkpoint::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            Checkpoint::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
        };
        let _ = conn.query_row(sql, [], |_| Ok(()));
        match sync_file(&self.wal) {
            Ok(()) => {
                self.progress.durable.fetch_max(start, Ordering::AcqRel);
            }
            Err(e) => tracing::warn!(error = %e, "sqlite store: cannot sync the WAL"),
        }
    }
}

/// Syncs the file at `path`, if there is one.
pub(crate) fn sync_file(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_data(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The size the WAL file is cut back to when it starts over (`PRAGMA journal_size_limit`):
/// without it the file stays at its high-water mark (up to [`CHECKPOINT_HERE_PAGES`], 40 MB).
/// Under sustained load the limit is lifted to [`WAL_KEEP_LIMIT`] (see [`WalWatch`]).
pub(crate) const WAL_SIZE_LIMIT: i64 = 4 << 20;

/// The WAL size limit under sustained load: above the WAL's bound, so the file is not cut back.
/// A file cut back and grown again costs its pages anew (allocating page cache and reserving
/// blocks on each extending write), a quarter of a busy store's time; one kept is overwritten
/// in place.
pub(crate) const WAL_KEEP_LIMIT: i64 = 64 << 20;

/// WAL pages from which the load counts as sustained: the checkpoint thread, woken at
/// [`CHECKPOINT_PAGES`], did not get the WAL to start over before it doubled.
pub(crate) const SUSTAINED_PAGES: i32 = 2 * CHECKPOINT_PAGES;

/// WAL pages after which the checkpoint thread is woken (4 MB at 4 KiB pages).
pub(crate) const CHECKPOINT_PAGES: i32 = 1_000;

/// WAL pages after which the connection thread checkpoints itself (40 MB at 4 KiB pages). The
/// checkpoint thread copies frames while new ones are appended, so it rarely finds the WAL fully
/// copied between two commits, which SQLite needs to start the WAL over; here it is, after a
/// short catch-up, and the WAL stays bounded even if the checkpoint thread falls behind.
pub(crate) const CHECKPOINT_HERE_PAGES: i32 = 10_000;

thread_local! {
    /// Pages in the WAL after the last commit on this thread (-1: none since
    /// [`Db::write_once`] reset it). An operation runs on whichever thread called it (see
    /// [`Options::inline`]), so the number is read right after the commit, on the same thread.
    ///
    /// [`Options::inline`]: crate::Options::inline
    pub(crate) static WAL_PAGES: std::cell::Cell<i32> = const { std::cell::Cell::new(-1) };
}

/// SQLite's WAL hook: runs after each commit, on the committing thread.
pub(crate) fn note_wal_size(
    _: &rusqlite::hooks::Wal,
    pages: std::ffi::c_int,
) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// What is done about the WAL after a job.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WalAction {
    None,
    WakeCheckpointer,
    CheckpointHere,
}

/// Decides when checkpoints run, from the WAL's size after each job, and how far the WAL file
/// is cut back when it starts over: to [`WAL_SIZE_LIMIT`], unless the load is sustained — the
/// WAL reached [`SUSTAINED_PAGES`] since the connection thread's last sync-round turn (or the
/// one before, which the current turn looks back on) — when the file is kept at its size
/// ([`WAL_KEEP_LIMIT`]) to be overwritten in place. Once a whole sync interval passes with the
/// WAL under that mark, the limit comes back down and the next start cuts the file back.
#[derive(Debug, Default)]
pub(crate) struct WalWatch {
    /// WAL size at the last wake-up of the checkpoint thread.
    woken_at: i32,
    /// The most pages seen since the last sync-round turn.
    peak: i32,
    /// The WAL file is kept at its size when it starts over.
    keep: bool,
}

impl WalWatch {
    /// The WAL file's size limit now (`PRAGMA journal_size_limit`).
    pub(crate) fn size_limit(&self) -> i64 {
        if self.keep {
            WAL_KEEP_LIMIT
        } else {
            WAL_SIZE_LIMIT
        }
    }

    /// At a sync-round turn of the connection thread: whether the load of the interval that
    /// ended was sustained decides the limit for the next.
    pub(crate) fn turn(&mut self) {
        self.keep = self.peak >= SUSTAINED_PAGES;
        self.peak = 0;
    }

    pub(crate) fn decide(&mut self, pages: i32) -> WalAction {
        self.peak = self.peak.max(pages);
        if pages >= SUSTAINED_PAGES {
            self.keep = true;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_thread_is_woken_once_per_step_of_wal_growth() {
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

    #[test]
    fn the_wal_file_is_kept_under_sustained_load_and_cut_back_after() {
        let mut w = WalWatch::default();
        assert_eq!(w.size_limit(), WAL_SIZE_LIMIT);
        // A light interval: the WAL starts over soon after the checkpoint thread's wake-up.
        w.decide(500);
        w.decide(CHECKPOINT_PAGES + 3);
        w.decide(4);
        w.turn();
        assert_eq!(w.size_limit(), WAL_SIZE_LIMIT);
        w.decide(SUSTAINED_PAGES - 1);
        assert_eq!(w.size_limit(), WAL_SIZE_LIMIT);
        // Sustained: kept from then on, before the WAL next starts over.
        w.decide(SUSTAINED_PAGES);
        assert_eq!(w.size_limit(), WAL_KEEP_LIMIT);
        w.decide(CHECKPOINT_HERE_PAGES);
        w.decide(6);
        assert_eq!(w.size_limit(), WAL_KEEP_LIMIT);
        // The interval that ended was sustained: still kept.
        w.turn();
        assert_eq!(w.size_limit(), WAL_KEEP_LIMIT);
        w.decide(300);
        assert_eq!(w.size_limit(), WAL_KEEP_LIMIT);
        // A whole interval under the mark: cut back at the next start.
        w.turn();
        assert_eq!(w.size_limit(), WAL_SIZE_LIMIT);
    }
}
