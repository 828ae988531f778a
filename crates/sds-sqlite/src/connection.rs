//! The connection and the connection thread: the SQLite connection and the segment files are
//! kept together ([`Db`], behind one lock), every transaction keeps the segment files in step,
//! and the connection thread runs the jobs handed to it one at a time, between its turns of
//! upkeep (see [`upkeep`](crate::upkeep)).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction};
use sds_manager::persistence::{PersistenceError, PersistenceResult};

use crate::damage::{DamageReport, OnDamage};
use crate::reply;
use crate::segments::Segments;
use crate::upkeep::{Upkeep, WAL_PAGES};
use crate::Spin;

/// The connection, its segment files and their upkeep: behind one lock, taken by the
/// connection thread for each job and turn, and by a caller that runs its operation itself
/// ([`Options::inline`](crate::Options::inline)).
pub(crate) struct Db {
    pub(crate) conn: Connection,
    pub(crate) segments: Segments,
    /// Commits counted, and how many are durable.
    pub(crate) progress: Arc<Progress>,
    /// The running job's notice, given just before its commit (see [`reply`]).
    pub(crate) soon: Option<Arc<dyn reply::Soon>>,
    /// Whether the running job gives its task notice before the commit: set per job by the
    /// connection thread's [`Pace`], with [`Durability::Normal`] only (with `FULL` the commit's
    /// fsync is too long to wait for busily).
    ///
    /// [`Durability::Normal`]: crate::Durability::Normal
    pub(crate) notice: bool,
    /// When the running job gave its answer: the end of the job as its caller sees it, from
    /// which the pause before the next job is counted (a thread preempted after answering does
    /// not make the next job look back to back).
    pub(crate) answered: Option<Instant>,
    /// Set by a task whose wait for its answer was preempted (see [`Pace::preempted`]).
    pub(crate) contended: Arc<std::sync::atomic::AtomicBool>,
    /// What loading does about damaged bytes.
    pub(crate) on_damage: OnDamage,
    /// The messages quarantined since the store was opened.
    pub(crate) damage: Arc<Mutex<DamageReport>>,
    /// Whether entries the log evicts move to the history table ([`Options::keep_history`]).
    ///
    /// [`Options::keep_history`]: crate::Options::keep_history
    pub(crate) keep_history: bool,
    /// Pages in the WAL after the last commit.
    pub(crate) wal_pages: i32,
    /// Checkpoints, sync rounds and deleting segments.
    pub(crate) upkeep: Upkeep,
}

/// What is sent to the connection thread.
pub(crate) enum Work {
    /// A job to run.
    Job(Job),
    /// An operation run on a caller's thread left upkeep to do (see [`Db::after_job`]).
    Nudge,
}

/// Work for the connection thread, and when it was sent.
pub(crate) struct Job {
    /// When the caller sent it: with the end of the job before, how far apart operations come.
    pub(crate) sent: Instant,
    pub(crate) run: Box<dyn FnOnce(&mut Db) + Send>,
}

/// While spinning, how long the connection thread keeps looking for the next job before it
/// sleeps; with [`Spin::Adaptive`], also the longest pause between the end of a job and the
/// sending of the next that counts as back to back. Callers that run operation after operation
/// (a busy channel) then find the thread awake: waking a sleeping thread costs more than an
/// operation's own statements.
pub(crate) const STAY_AWAKE: Duration = Duration::from_micros(50);

/// Turns of the busy-wait loops (here and in [`reply`]) of one store: tests check when a store
/// spins and when it does not.
pub(crate) type Spins = Arc<AtomicU64>;

/// Counts one turn of a busy-wait loop.
pub(crate) fn spun(spins: &AtomicU64) {
    spins.fetch_add(1, Ordering::Relaxed);
    std::hint::spin_loop();
}

/// A pause this long between two turns of a busy-wait loop means the thread was taken off its
/// CPU: other work wants the machine's CPUs, and spinning takes from it (and from the store's
/// own threads) instead of using idle time.
pub(crate) const PREEMPTED: Duration = Duration::from_micros(25);

/// With [`Spin::Adaptive`], how long the store does not spin after a spinning thread was
/// preempted.
pub(crate) const CONTENDED: Duration = Duration::from_millis(200);

/// Whether a busy-wait loop whose last turn was at `last` was preempted before `now`.
pub(crate) fn preempted(last: Instant, now: Instant) -> bool {
    now.saturating_duration_since(last) > PREEMPTED
}

/// Whether the connection thread busy-waits, from [`Options::spin`], the pace of jobs and,
/// with [`Spin::Adaptive`], whether the machine's CPUs are contended.
///
/// [`Options::spin`]: crate::Options::spin
#[derive(Debug)]
pub(crate) struct Pace {
    spin: Spin,
    /// When the last job ended.
    ended: Option<Instant>,
    /// The last job was sent at most [`STAY_AWAKE`] after the end of the one before.
    back_to_back: bool,
    /// A spinning thread was preempted: no spinning before this time.
    calm_from: Option<Instant>,
}

impl Pace {
    pub(crate) fn new(spin: Spin) -> Self {
        Pace {
            spin,
            ended: None,
            back_to_back: false,
            calm_from: None,
        }
    }

    /// A job sent at `sent` starts at `now`.
    pub(crate) fn started(&mut self, sent: Instant, now: Instant) {
        // Sent while the one before was still running: the pause is zero.
        self.back_to_back = self
            .ended
            .is_some_and(|e| sent.saturating_duration_since(e) <= STAY_AWAKE);
        if self.calm_from.is_some_and(|t| now >= t) {
            self.calm_from = None;
        }
    }

    /// The job ended at `at`.
    pub(crate) fn ended(&mut self, at: Instant) {
        self.ended = Some(at);
    }

    /// A spinning thread (the connection thread, or a task waiting for its answer) was
    /// preempted at `at`: with [`Spin::Adaptive`], no spinning for [`CONTENDED`].
    pub(crate) fn preempted(&mut self, at: Instant) {
        self.calm_from = Some(at + CONTENDED);
    }

    /// Whether to busy-wait now: give notice before commits, look for the next job before
    /// sleeping.
    pub(crate) fn spinning(&self) -> bool {
        match self.spin {
            Spin::Off => false,
            Spin::Always => true,
            Spin::Adaptive => self.back_to_back && self.calm_from.is_none(),
        }
    }

    /// How long to look for the next job before sleeping.
    pub(crate) fn stay_awake(&self) -> Duration {
        if self.spinning() {
            STAY_AWAKE
        } else {
            Duration::ZERO
        }
    }
}

/// What the connection thread wakes up for.
pub(crate) enum Next {
    /// A job.
    Job(Job),
    /// A nudge: upkeep to do.
    Nudge,
    /// The time it was given came with no job.
    Due,
    /// Every handle to the store is gone.
    Closed,
}

/// Waits for the next job until `due` (or for ever). Looks for it for `stay_awake` before
/// sleeping (zero: sleeps at once), and stops looking at once if the thread is preempted
/// meanwhile (then also returns `true`).
pub(crate) fn next_job(
    rx: &std_mpsc::Receiver<Work>,
    stay_awake: Duration,
    due: Option<Instant>,
    spins: &AtomicU64,
) -> (Next, bool) {
    let since = Instant::now();
    let mut last = since;
    let mut was_preempted = false;
    loop {
        match rx.try_recv() {
            Ok(work) => return (work.into(), false),
            Err(std_mpsc::TryRecvError::Disconnected) => return (Next::Closed, false),
            Err(std_mpsc::TryRecvError::Empty) => {
                if stay_awake.is_zero() {
                    break;
                }
                let now = Instant::now();
                if preempted(last, now) {
                    was_preempted = true;
                    break;
                }
                if now.saturating_duration_since(since) >= stay_awake {
                    break;
                }
                last = now;
                spun(spins);
            }
        }
    }
    let next = match due {
        None => rx.recv().map_or(Next::Closed, Next::from),
        Some(due) => match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Ok(work) => work.into(),
            Err(std_mpsc::RecvTimeoutError::Timeout) => Next::Due,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Next::Closed,
        },
    };
    (next, was_preempted)
}

impl From<Work> for Next {
    fn from(work: Work) -> Self {
        match work {
            Work::Job(job) => Next::Job(job),
            Work::Nudge => Next::Nudge,
        }
    }
}

/// How far commits have got. The connection thread counts them; a sync round, having synced
/// everything they wrote, records how many are durable.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Commits so far.
    pub(crate) committed: AtomicU64,
    /// Every commit up to this number is durable.
    pub(crate) durable: AtomicU64,
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
    /// transaction commits, and segments it empties are deleted once that is durable. (A
    /// segment left mostly dead is compacted at the connection thread's next turn.)
    pub(crate) fn write(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &mut Segments) -> Result<(), WriteError>,
    ) -> PersistenceResult<()> {
        let result = (|| -> Result<(), WriteError> {
            let tx = self.conn.transaction()?;
            f(&tx, &mut self.segments)?;
            self.segments.before_commit()?;
            if let Some(soon) = self.soon.take() {
                soon.soon();
            }
            WAL_PAGES.with(|p| p.set(-1));
            tx.commit()?;
            Ok(())
        })();
        let pages = WAL_PAGES.with(|p| p.get());
        if pages >= 0 {
            self.wal_pages = pages;
        }
        if let Err(e) = result {
            self.segments.rolled_back();
            return Err(e.into());
        }
        let commit = self.progress.committed.fetch_add(1, Ordering::AcqRel) + 1;
        let empty = self.segments.committed();
        // The operation is committed; a segment left behind is deleted later or on the next
        // open.
        let _ = self.segments.retire(&empty, commit);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_spin_follows_the_pace_of_jobs() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let mut p = Pace::new(Spin::Adaptive);
        assert!(!p.spinning(), "a new store does not spin");
        // The first job has nothing before it.
        p.started(t0, t0);
        assert!(!p.spinning());
        p.ended(t0 + us(100));
        // Sent 20 µs after the end of the one before: back to back.
        p.started(t0 + us(120), t0 + us(121));
        assert!(p.spinning());
        assert_eq!(p.stay_awake(), STAY_AWAKE);
        p.ended(t0 + us(200));
        // A pause longer than the window: sleeps at once again.
        p.started(t0 + us(200) + STAY_AWAKE + us(1), t0 + us(300));
        assert!(!p.spinning());
        assert_eq!(p.stay_awake(), Duration::ZERO);
        p.ended(t0 + us(400));
        // Sent while the one before was running: back to back.
        p.started(t0 + us(390), t0 + us(400));
        assert!(p.spinning());
        p.ended(t0 + us(500));
        // A pause of exactly the window still counts.
        p.started(t0 + us(500) + STAY_AWAKE, t0 + us(600));
        assert!(p.spinning());
        // A spinning thread was preempted: no spinning for a while, back to back or not.
        p.preempted(t0 + us(620));
        assert!(!p.spinning());
        p.ended(t0 + us(700));
        p.started(t0 + us(710), t0 + us(710));
        assert!(!p.spinning());
        assert_eq!(p.stay_awake(), Duration::ZERO);
        p.ended(t0 + us(800));
        let calm = t0 + us(620) + CONTENDED;
        p.started(calm - us(5), calm - us(5));
        assert!(!p.spinning());
        p.ended(calm);
        p.started(calm + us(1), calm + us(1));
        assert!(
            p.spinning(),
            "spins again once the machine had time to calm down"
        );

        for (spin, expected) in [(Spin::Off, false), (Spin::Always, true)] {
            let mut p = Pace::new(spin);
            assert_eq!(p.spinning(), expected);
            p.started(t0, t0);
            p.ended(t0 + us(10));
            p.started(t0 + us(11), t0 + us(11));
            assert_eq!(p.spinning(), expected);
            p.ended(t0 + us(20));
            p.started(t0 + us(10_000), t0 + us(10_000));
            assert_eq!(p.spinning(), expected);
            // Fixed settings do not adapt to contention.
            p.preempted(t0 + us(10_001));
            assert_eq!(p.spinning(), expected);
        }
    }

    #[test]
    fn a_pause_in_a_busy_wait_is_a_preemption() {
        let t0 = Instant::now();
        assert!(!preempted(t0, t0 + Duration::from_micros(1)));
        assert!(!preempted(t0, t0 + PREEMPTED));
        assert!(preempted(t0, t0 + PREEMPTED + Duration::from_micros(1)));
    }
}
