//! The sending side of an event queue that never holds up the task that fills it.

use tokio::sync::mpsc;

/// Sends events into a bounded queue that the application reads. An event that does not fit
/// is counted instead of waited for, and the count goes first, as a lag event, once there is
/// room again: the node's and a reliable channel's tasks never stop for a slow reader.
pub(crate) struct LossySender<E> {
    tx: mpsc::Sender<E>,
    missed: u64,
    lagged: fn(u64) -> E,
}

impl<E> LossySender<E> {
    /// Sends into `tx`; `lagged` makes the event that says how many were missed.
    pub(crate) fn new(tx: mpsc::Sender<E>, lagged: fn(u64) -> E) -> Self {
        LossySender {
            tx,
            missed: 0,
            lagged,
        }
    }

    /// Queues `event`, after the count of those missed since the last one that fitted.
    pub(crate) fn emit(&mut self, event: E) {
        if self.missed > 0 {
            if self.tx.try_send((self.lagged)(self.missed)).is_err() {
                self.missed += 1;
                return;
            }
            self.missed = 0;
        }
        if self.tx.try_send(event).is_err() {
            self.missed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Ev {
        Data(u32),
        Lagged(u64),
    }

    #[test]
    fn events_that_do_not_fit_are_counted_and_the_count_comes_first() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut events = LossySender::new(tx, Ev::Lagged);
        for i in 0..4 {
            events.emit(Ev::Data(i));
        }
        // Two fitted, two were missed.
        assert_eq!(rx.try_recv(), Ok(Ev::Data(0)));
        // One place free: the count takes it, and the next event is missed in its turn.
        events.emit(Ev::Data(4));
        assert_eq!(rx.try_recv(), Ok(Ev::Data(1)));
        assert_eq!(rx.try_recv(), Ok(Ev::Lagged(2)));
        assert!(rx.try_recv().is_err());
        // Room for both: the count of one, then the event.
        events.emit(Ev::Data(5));
        assert_eq!(rx.try_recv(), Ok(Ev::Lagged(1)));
        assert_eq!(rx.try_recv(), Ok(Ev::Data(5)));
        assert!(rx.try_recv().is_err());
        // Nothing missed since: no count.
        events.emit(Ev::Data(6));
        assert_eq!(rx.try_recv(), Ok(Ev::Data(6)));
    }
}
