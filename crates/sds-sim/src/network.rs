//! The network model: one broadcast bus on which each copy is lost independently, with a
//! uniform one-way latency and, optionally, periodic bursts of heavier loss.

use crate::clock::T0;
use crate::rng::Rng;

/// How the bus between members behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// Probability that a copy is lost on its way to one receiver.
    pub loss: f64,
    /// Smallest one-way latency, in milliseconds (at least 1: it is the length of the parallel
    /// windows).
    pub latency_min: u64,
    /// Largest one-way latency, in milliseconds.
    pub latency_max: u64,
    /// Every this many virtual seconds, a burst of heavier loss (0: none).
    pub burst_every: f64,
    /// Length of a loss burst, in virtual seconds.
    pub burst_length: f64,
    /// Loss probability during a burst.
    pub burst_loss: f64,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            loss: 0.2,
            latency_min: 50,
            latency_max: 500,
            burst_every: 0.0,
            burst_length: 5.0,
            burst_loss: 0.8,
        }
    }
}

impl Network {
    /// The loss probability of a copy sent at virtual time `t`.
    pub(crate) fn loss_at(&self, t: u64) -> f64 {
        if self.burst_every > 0.0 {
            let period = (self.burst_every * 1000.0) as u64;
            let length = (self.burst_length * 1000.0) as u64;
            if period > 0 && (t - T0) % period < length {
                return self.burst_loss;
            }
        }
        self.loss
    }

    /// The fate of one broadcast from `from` at `now` to the other `n - 1` members, drawn from
    /// the sender's generator: the (arrival time, receiver) pairs soonest first, and the
    /// receivers whose copy was lost.
    pub(crate) fn broadcast(
        &self,
        rng: &mut Rng,
        from: usize,
        n: usize,
        now: u64,
    ) -> (Vec<(u64, usize)>, Vec<usize>) {
        let loss = self.loss_at(now);
        let (lo, hi) = (self.latency_min, self.latency_max);
        let mut arrivals = Vec::with_capacity(n);
        let mut lost = Vec::new();
        for to in 0..n {
            if to == from {
                continue;
            }
            if rng.unit() < loss {
                lost.push(to);
                continue;
            }
            arrivals.push((now + rng.range(lo, hi), to));
        }
        arrivals.sort_unstable();
        (arrivals, lost)
    }

    /// The fate of one copy sent from one member to one other at `now` (a retrieval request or
    /// answer), drawn from `rng`: its arrival time, or none when it is lost.
    pub(crate) fn unicast(&self, rng: &mut Rng, now: u64) -> Option<u64> {
        if rng.unit() < self.loss_at(now) {
            return None;
        }
        Some(now + self.latency(rng))
    }

    /// One one-way latency drawn from `rng`, in milliseconds.
    pub(crate) fn latency(&self, rng: &mut Rng) -> u64 {
        rng.range(self.latency_min, self.latency_max)
    }
}
