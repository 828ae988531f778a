//! The answer of the connection thread to one job, with an early notice.
//!
//! Waking a task whose thread sleeps costs tens of microseconds on some machines (a virtual
//! CPU that halts when idle) — a quarter of an operation. So, while the store spins (see
//! [`Spin`](crate::Spin)), the connection thread says *soon* just before it commits: the task
//! wakes while the commit runs and, finding the answer not there yet, waits for it busily
//! ([`SPIN`]) before it sleeps again. The wait is bounded, and only follows the notice, so a
//! task never spins on a long operation; when the store does not spin no notice is given and a
//! task never spins at all.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long a task that got the notice waits for the answer before sleeping.
pub(crate) const SPIN: Duration = Duration::from_micros(60);

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    soon: bool,
    /// The job was dropped without an answer.
    abandoned: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The notice, as the connection thread holds it while a job runs.
pub(crate) trait Soon: Send + Sync {
    /// The answer is about to be ready: wake the task now.
    fn soon(&self);
}

impl<T: Send> Soon for Shared<T> {
    fn soon(&self) {
        let waker = {
            let mut s = self.lock();
            s.soon = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The sending side: answers once; dropped unanswered, tells the task so.
pub(crate) struct Answer<T: Send> {
    shared: Arc<Shared<T>>,
    sent: bool,
}

impl<T: Send + 'static> Answer<T> {
    /// The notice handle for the connection thread.
    pub fn soon_handle(&self) -> Arc<dyn Soon> {
        self.shared.clone()
    }

    /// Delivers the answer.
    pub fn send(mut self, value: T) {
        self.sent = true;
        let waker = {
            let mut s = self.shared.lock();
            s.value = Some(value);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T: Send> Drop for Answer<T> {
    fn drop(&mut self) {
        if !self.sent {
            let waker = {
                let mut s = self.shared.lock();
                s.abandoned = true;
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// The waiting side: resolves to the answer, or `None` if the job was dropped unanswered.
pub(crate) struct Reply<T> {
    shared: Arc<Shared<T>>,
    /// Turns of the busy-wait so far.
    pub(crate) spins: u64,
    /// The busy-wait was cut short: the thread was preempted (the machine's CPUs are busy).
    pub(crate) preempted: bool,
}

/// A new answer/reply pair.
pub(crate) fn pair<T: Send>() -> (Answer<T>, Reply<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            value: None,
            waker: None,
            soon: false,
            abandoned: false,
        }),
    });
    (
        Answer {
            shared: shared.clone(),
            sent: false,
        },
        Reply {
            shared,
            spins: 0,
            preempted: false,
        },
    )
}

impl<T> Future for Reply<T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let since = Instant::now();
        let mut last = since;
        loop {
            let mut s = self.shared.lock();
            if let Some(v) = s.value.take() {
                return Poll::Ready(Some(v));
            }
            if s.abandoned {
                return Poll::Ready(None);
            }
            if s.soon {
                let now = Instant::now();
                let cut = crate::connection::preempted(last, now);
                if now.saturating_duration_since(since) < SPIN && !cut {
                    drop(s);
                    last = now;
                    self.spins += 1;
                    std::hint::spin_loop();
                    continue;
                }
                // Waited once after the notice: sleep until the answer's wake-up.
                s.soon = false;
                if cut {
                    drop(s);
                    self.preempted = true;
                    continue;
                }
            }
            match &mut s.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_answer_arrives_with_or_without_a_notice() {
        let (a, r) = pair::<u32>();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            a.soon_handle().soon();
            std::thread::sleep(Duration::from_millis(5));
            a.send(7);
        });
        assert_eq!(r.await, Some(7));
        t.join().unwrap();
        let (a, r) = pair::<u32>();
        a.send(8);
        assert_eq!(r.await, Some(8));
    }

    #[tokio::test]
    async fn a_job_dropped_unanswered_ends_the_wait() {
        let (a, r) = pair::<u32>();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            drop(a);
        });
        assert_eq!(r.await, None);
        t.join().unwrap();
    }
}
