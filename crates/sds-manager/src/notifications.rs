//! What the manager tells the application: any number of subscribers, each with a bounded
//! queue of its own.
//!
//! Lag policy: a subscriber that does not keep up loses the newest notifications once its queue
//! is full, and is told so in order: [`Notification::Lagged`] stands where they would have been.
//! Operations never wait for a subscriber. An application that must not miss a delivery reads
//! at the pace of its operations (as the C ABI and `sds peer` do, after each one) or subscribes
//! with a capacity above the largest burst one operation can produce.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::Notification;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct State {
    items: VecDeque<Notification>,
    /// Notifications dropped since the last `Lagged` was queued.
    missed: u64,
    waker: Option<Waker>,
    /// The manager is gone: nothing more will come.
    closed: bool,
}

struct Queue {
    capacity: usize,
    state: Mutex<State>,
}

impl Queue {
    /// Queues `n`, or counts it missed when the queue is full. A pending `Lagged` goes first.
    fn push(state: &mut State, capacity: usize, n: Notification) {
        if state.missed > 0 {
            if state.items.len() + 2 > capacity {
                state.missed += 1;
                return;
            }
            let missed = std::mem::take(&mut state.missed);
            state.items.push_back(Notification::Lagged { missed });
        }
        if state.items.len() >= capacity {
            state.missed += 1;
        } else {
            state.items.push_back(n);
        }
    }
}

/// The manager's side: publishes to every live subscriber.
#[derive(Default)]
pub(crate) struct Hub {
    subscribers: Mutex<Vec<Arc<Queue>>>,
}

impl Hub {
    /// A new subscriber that keeps at most `capacity` notifications (at least 2).
    pub(crate) fn subscribe(&self, capacity: usize) -> Subscription {
        let queue = Arc::new(Queue {
            capacity: capacity.max(2),
            state: Mutex::new(State::default()),
        });
        lock(&self.subscribers).push(queue.clone());
        Subscription { queue }
    }

    /// Hands `notifications`, in order, to every subscriber.
    pub(crate) fn publish(&self, notifications: impl IntoIterator<Item = Notification>) {
        let mut subscribers = lock(&self.subscribers);
        // A dropped subscription leaves only our reference.
        subscribers.retain(|q| Arc::strong_count(q) > 1);
        if subscribers.is_empty() {
            return;
        }
        let mut wakers = Vec::new();
        let mut notifications = notifications.into_iter().peekable();
        while let Some(n) = notifications.next() {
            let last = notifications.peek().is_none();
            for q in subscribers.iter() {
                let mut state = lock(&q.state);
                // Cheap: message bytes and ids are shared, not copied.
                Queue::push(&mut state, q.capacity, n.clone());
                if last {
                    if let Some(w) = state.waker.take() {
                        wakers.push(w);
                    }
                }
            }
        }
        drop(subscribers);
        for w in wakers {
            w.wake();
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        for q in lock(&self.subscribers).iter() {
            let mut state = lock(&q.state);
            state.closed = true;
            if let Some(w) = state.waker.take() {
                w.wake();
            }
        }
    }
}

/// Why [`Subscription::try_recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing queued now.
    #[error("no notification queued")]
    Empty,
    /// The manager is gone and everything queued has been read.
    #[error("the manager is gone")]
    Closed,
}

/// One subscriber's notifications, in the order the manager published them: a
/// [`Stream`](futures_core::Stream), or read with [`recv`](Self::recv) and
/// [`try_recv`](Self::try_recv). Holds at most the capacity it was created with (see the
/// [lag policy](crate::ReliabilityManager::subscribe)). Dropping it unsubscribes.
pub struct Subscription {
    queue: Arc<Queue>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.queue.state);
        f.debug_struct("Subscription")
            .field("queued", &state.items.len())
            .field("capacity", &self.queue.capacity)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next notification, waiting for one; `None` once the manager is gone and everything
    /// queued has been read.
    ///
    /// This method is cancel safe: a notification is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<Notification> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next notification if one is queued.
    pub fn try_recv(&mut self) -> Result<Notification, TryRecvError> {
        let mut state = lock(&self.queue.state);
        match Self::take(&mut state) {
            Some(n) => Ok(n),
            None if state.closed => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Polls for the next notification (see [`recv`](Self::recv)).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        let mut state = lock(&self.queue.state);
        if let Some(n) = Self::take(&mut state) {
            return Poll::Ready(Some(n));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn take(state: &mut State) -> Option<Notification> {
        if let Some(n) = state.items.pop_front() {
            return Some(n);
        }
        (state.missed > 0).then(|| Notification::Lagged {
            missed: std::mem::take(&mut state.missed),
        })
    }
}

impl futures_core::Stream for Subscription {
    type Item = Notification;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        self.get_mut().poll_recv(cx)
    }
}
