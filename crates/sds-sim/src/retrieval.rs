//! Retrieval of missing messages from other members, as `sds-libp2p` does it over
//! `/sds/retrieve/1`: a member whose engine reports missing messages (`MissingDependencies`,
//! `MissingMessages`) asks another member for their bytes, and that member answers from its
//! log. The answer goes through `unwrap` like any copy from the bus.
//!
//! In the simulation:
//!
//! * a member that learns of a gap asks one latency later (drawn from the scenario's
//!   [`Network`](crate::Network)), of one other member drawn at random, for at most
//!   [`Retrieval::max_ids_per_request`] ids per request;
//! * the request and the answer each travel with the network's latency and loss, like a copy
//!   on the bus; an offline or hostile member does not answer;
//! * the member asked answers with the bytes of the ids its log holds, in the order asked,
//!   stopping before [`Retrieval::max_answer_bytes`] (but always with the first one it holds);
//! * an id is not asked for again before [`Retrieval::retry_after`], of another random member,
//!   and is given up after [`Retrieval::max_attempts`] asks; SDS-R and the engine's
//!   lost-dependency timeout still apply.
//!
//! Every member draws its retrieval choices from a generator of its own, so that a run without
//! retrieval is the same run as before it existed, and a run with it starts from the same
//! sends, losses and latencies ([`compare`] puts the two side by side).

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use sds_proto::engine::Channel;
use sds_proto::{Bytes, MessageId};

use crate::member::CHANNEL;
use crate::report::Report;
use crate::rng::Rng;
use crate::scenario::Scenario;
use crate::Error;

/// How members retrieve missing messages (the defaults are those of `sds-libp2p`'s
/// `RetrievalConfig`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Retrieval {
    /// Most message ids in one request (default 64); more due at once go in further requests,
    /// each to its own random member.
    pub max_ids_per_request: usize,
    /// Most bytes of messages in one answer (default 4 MiB); a member stops adding messages
    /// before it, but answers with the first one it holds whatever its size.
    pub max_answer_bytes: usize,
    /// Seconds before an id asked for is asked for again (default 2; JSON `retryAfterS`).
    #[serde(rename = "retryAfterS")]
    pub retry_after: f64,
    /// How often one id is asked for before the member gives up on it (default 10: with 5,
    /// 35–68 ids per default run were given up, mostly ids the members asked happened to lack
    /// yet, and waited for SDS-R; with 10, none, for 0.6 % more requests).
    pub max_attempts: u32,
    /// Most ids a member tracks at once (default 10,000): others are not asked for until
    /// room frees up.
    pub max_pending: usize,
}

impl Default for Retrieval {
    fn default() -> Self {
        Retrieval {
            max_ids_per_request: 64,
            max_answer_bytes: 4 << 20,
            retry_after: 2.0,
            max_attempts: 10,
            max_pending: 10_000,
        }
    }
}

impl Retrieval {
    /// Refuses impossible settings.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let refuse = |why: &str| Err(Error::Invalid(why.into()));
        if self.max_ids_per_request == 0 || self.max_ids_per_request > u16::MAX as usize {
            return refuse("retrieval: ids per request must be between 1 and 65535");
        }
        if !(self.retry_after.is_finite() && self.retry_after >= 0.001) {
            return refuse("retrieval: the retry interval must be at least 1 ms");
        }
        if self.max_attempts == 0 {
            return refuse("retrieval: at least one attempt per id");
        }
        if self.max_pending == 0 {
            return refuse("retrieval: at least one pending id");
        }
        Ok(())
    }

    /// The retry interval in milliseconds.
    pub(crate) fn retry_ms(&self) -> u64 {
        ((self.retry_after * 1000.0) as u64).max(1)
    }
}

/// What retrieval did during a run, in the report of a run with retrieval.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// The settings of the run.
    pub settings: Retrieval,
    /// Missing ids members started asking for (an id missing at several members counts once
    /// per member).
    pub tracked: u64,
    /// Requests sent (lost ones included).
    pub requests: u64,
    /// Ids in those requests.
    pub requested_ids: u64,
    /// Bytes of those requests, framed as `/sds/retrieve/1` frames them.
    pub request_bytes: u64,
    /// Answers sent (empty ones and lost ones included).
    pub answers: u64,
    /// Messages in those answers.
    pub answered_ids: u64,
    /// Bytes of those answers, framed as `/sds/retrieve/1` frames them.
    pub answer_bytes: u64,
    /// Messages from answers that the asking member lacked and took (delivered, or held for
    /// their own dependencies).
    pub retrieved: u64,
    /// Deliveries an answer set off at the asking member: the retrieved messages and those
    /// that waited for them.
    pub deliveries: u64,
    /// Ids given up after the last attempt.
    pub given_up: u64,
    /// Ids not asked for because the member already tracked as many as it may.
    pub not_tracked: u64,
    /// The most ids in one request.
    pub largest_request_ids: u64,
    /// The most messages in one answer.
    pub largest_answer_ids: u64,
    /// The most bytes in one answer.
    pub largest_answer_bytes: u64,
}

/// The counters behind [`Stats`], added up over the member groups.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Counters {
    pub(crate) tracked: u64,
    pub(crate) requests: u64,
    pub(crate) requested_ids: u64,
    pub(crate) request_bytes: u64,
    pub(crate) answers: u64,
    pub(crate) answered_ids: u64,
    pub(crate) answer_bytes: u64,
    pub(crate) retrieved: u64,
    pub(crate) deliveries: u64,
    pub(crate) given_up: u64,
    pub(crate) not_tracked: u64,
    pub(crate) largest_request_ids: u64,
    pub(crate) largest_answer_ids: u64,
    pub(crate) largest_answer_bytes: u64,
}

impl Counters {
    pub(crate) fn add(&mut self, o: &Counters) {
        self.tracked += o.tracked;
        self.requests += o.requests;
        self.requested_ids += o.requested_ids;
        self.request_bytes += o.request_bytes;
        self.answers += o.answers;
        self.answered_ids += o.answered_ids;
        self.answer_bytes += o.answer_bytes;
        self.retrieved += o.retrieved;
        self.deliveries += o.deliveries;
        self.given_up += o.given_up;
        self.not_tracked += o.not_tracked;
        self.largest_request_ids = self.largest_request_ids.max(o.largest_request_ids);
        self.largest_answer_ids = self.largest_answer_ids.max(o.largest_answer_ids);
        self.largest_answer_bytes = self.largest_answer_bytes.max(o.largest_answer_bytes);
    }

    /// A request of `ids` is sent.
    pub(crate) fn request(&mut self, ids: &[MessageId]) {
        self.requests += 1;
        self.requested_ids += ids.len() as u64;
        self.request_bytes += request_size(ids) as u64;
        self.largest_request_ids = self.largest_request_ids.max(ids.len() as u64);
    }

    /// An answer of `messages` is sent.
    pub(crate) fn answer(&mut self, messages: &[Bytes]) {
        let size = answer_size(messages) as u64;
        self.answers += 1;
        self.answered_ids += messages.len() as u64;
        self.answer_bytes += size;
        self.largest_answer_ids = self.largest_answer_ids.max(messages.len() as u64);
        self.largest_answer_bytes = self.largest_answer_bytes.max(size);
    }

    pub(crate) fn stats(&self, settings: &Retrieval) -> Stats {
        Stats {
            settings: settings.clone(),
            tracked: self.tracked,
            requests: self.requests,
            requested_ids: self.requested_ids,
            request_bytes: self.request_bytes,
            answers: self.answers,
            answered_ids: self.answered_ids,
            answer_bytes: self.answer_bytes,
            retrieved: self.retrieved,
            deliveries: self.deliveries,
            given_up: self.given_up,
            not_tracked: self.not_tracked,
            largest_request_ids: self.largest_request_ids,
            largest_answer_ids: self.largest_answer_ids,
            largest_answer_bytes: self.largest_answer_bytes,
        }
    }
}

/// The bytes of a request for `ids` on the wire of `/sds/retrieve/1`: channel and ids, each
/// behind a 2-byte length, and a 2-byte count.
pub(crate) fn request_size(ids: &[MessageId]) -> usize {
    2 + CHANNEL.len() + 2 + ids.iter().map(|id| 2 + id.as_bytes().len()).sum::<usize>()
}

/// The bytes of an answer with `messages` on the wire of `/sds/retrieve/1`: a status byte, a
/// 4-byte count, and each message behind a 4-byte length.
pub(crate) fn answer_size(messages: &[Bytes]) -> usize {
    5 + messages.iter().map(|m| 4 + m.len()).sum::<usize>()
}

/// What member `ch` answers to a request for `ids`: the bytes of those its log holds, in the
/// order asked, stopping before `max_bytes` (but always with the first one it holds).
pub(crate) fn answer(ch: &Channel, ids: &[MessageId], max_bytes: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for id in ids {
        let Some(entry) = ch.log_entry(id) else {
            continue;
        };
        if entry.bytes.is_empty() {
            continue; // an id marked met, not a message
        }
        if !out.is_empty() && total.saturating_add(entry.bytes.len()) > max_bytes {
            break;
        }
        total = total.saturating_add(entry.bytes.len());
        out.push(entry.bytes.clone());
    }
    out
}

/// A member other than `me` among `n`, drawn from `rng`.
pub(crate) fn pick_peer(rng: &mut Rng, me: usize, n: usize) -> usize {
    let r = rng.range(0, n.saturating_sub(2) as u64) as usize;
    if r >= me {
        r + 1
    } else {
        r
    }
}

/// One missing message a member asks for.
#[derive(Debug)]
struct Pending {
    attempts: u32,
    due: u64,
}

/// One member's side of retrieval: the ids it asks for, and its own generator.
#[derive(Debug)]
pub(crate) struct Retriever {
    pending: HashMap<MessageId, Pending>,
    /// The pending ids in the order they went missing (the map's order is not reproducible).
    order: VecDeque<MessageId>,
    /// No pending id is due before this (it may be earlier than the earliest due).
    earliest: Option<u64>,
    /// The time of the member's queued retrieval round, if one is queued.
    pub(crate) round_at: Option<u64>,
    /// The member's generator for retrieval: whom to ask, and the fate of its requests and
    /// answers.
    pub(crate) rng: Rng,
}

impl Retriever {
    pub(crate) fn new(rng: Rng) -> Self {
        Retriever {
            pending: HashMap::new(),
            order: VecDeque::new(),
            earliest: None,
            round_at: None,
            rng,
        }
    }

    /// Ids being asked for.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// `id` is missing: ask for it at `due`, unless it is tracked already. Returns whether it
    /// is newly tracked, or none when it cannot be (`max_pending` reached).
    pub(crate) fn missing(
        &mut self,
        id: &MessageId,
        due: u64,
        settings: &Retrieval,
    ) -> Option<bool> {
        if self.pending.contains_key(id) {
            return Some(false);
        }
        if self.pending.len() >= settings.max_pending {
            return None;
        }
        self.pending
            .insert(id.clone(), Pending { attempts: 0, due });
        self.order.push_back(id.clone());
        self.earliest = Some(self.earliest.map_or(due, |e| e.min(due)));
        Some(true)
    }

    /// The member has `id` now (or gave up on it): stop asking.
    pub(crate) fn done(&mut self, id: &MessageId) {
        if self.pending.remove(id).is_some() {
            // The id stays in `order` until the next round skips it; keep that bounded.
            if self.order.len() > 2 * self.pending.len() + 64 {
                let pending = &self.pending;
                self.order.retain(|id| pending.contains_key(id));
            }
        }
    }

    /// When the next round is due, if any id is pending.
    pub(crate) fn next_round(&self) -> Option<u64> {
        self.earliest
    }

    /// A round at `now`: the ids due, in the order they went missing, each counted as one more
    /// attempt and due again after the retry interval; ids `held` says the member has are
    /// dropped, and so are those asked for `max_attempts` times (counted in `given_up`).
    pub(crate) fn take_due(
        &mut self,
        now: u64,
        settings: &Retrieval,
        held: impl Fn(&MessageId) -> bool,
        given_up: &mut u64,
    ) -> Vec<MessageId> {
        let retry = settings.retry_ms();
        let mut due = Vec::new();
        let mut earliest: Option<u64> = None;
        let mut keep = VecDeque::with_capacity(self.order.len());
        while let Some(id) = self.order.pop_front() {
            let Some(p) = self.pending.get_mut(&id) else {
                continue; // done
            };
            if p.due > now {
                earliest = Some(earliest.map_or(p.due, |e| e.min(p.due)));
                keep.push_back(id);
                continue;
            }
            if held(&id) {
                self.pending.remove(&id);
                continue;
            }
            if p.attempts >= settings.max_attempts {
                self.pending.remove(&id);
                *given_up += 1;
                continue;
            }
            p.attempts += 1;
            p.due = now + retry;
            earliest = Some(earliest.map_or(p.due, |e| e.min(p.due)));
            due.push(id.clone());
            keep.push_back(id);
        }
        self.order = keep;
        self.earliest = earliest;
        due
    }

    /// The member is offline at `now`: every id due waits until the retry interval has passed,
    /// without counting as an attempt.
    pub(crate) fn postpone(&mut self, now: u64, settings: &Retrieval) {
        let later = now + settings.retry_ms();
        for p in self.pending.values_mut() {
            if p.due <= now {
                p.due = later;
            }
        }
        self.earliest = self.pending.values().map(|p| p.due).min();
    }

    /// Forgets every id (the member restarted: what it was asking for was in its memory).
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
        self.order.clear();
        self.earliest = None;
    }
}

/// One scenario run without retrieval and with it: the same seed, so the same sends, and the
/// same losses and latencies on the bus until retrieval changes what members send.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// The run without retrieval.
    pub without: Report,
    /// The run with retrieval (its report has the `retrieval` section).
    pub with: Report,
}

/// Runs `scenario` without retrieval and with it (its own settings, or the defaults when it
/// has none), and puts the two reports side by side.
pub fn compare(scenario: &Scenario) -> Result<Comparison, Error> {
    let with = Scenario {
        retrieval: Some(scenario.retrieval.clone().unwrap_or_default()),
        ..scenario.clone()
    };
    let without = Scenario {
        retrieval: None,
        ..scenario.clone()
    };
    with.check()?;
    Ok(Comparison {
        without: crate::run(&without)?,
        with: crate::run(&with)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<MessageId> {
        names.iter().map(|n| MessageId::from(*n)).collect()
    }

    #[test]
    fn an_id_is_asked_again_only_after_the_retry_interval_then_given_up() {
        let settings = Retrieval {
            max_attempts: 3,
            ..Retrieval::default()
        };
        let retry = settings.retry_ms();
        let mut r = Retriever::new(Rng(1));
        let mut given_up = 0;
        assert_eq!(r.missing(&MessageId::from("a"), 100, &settings), Some(true));
        assert_eq!(
            r.missing(&MessageId::from("a"), 50, &settings),
            Some(false),
            "tracked once"
        );
        assert_eq!(r.next_round(), Some(100));
        assert!(r
            .take_due(99, &settings, |_| false, &mut given_up)
            .is_empty());
        assert_eq!(
            r.take_due(100, &settings, |_| false, &mut given_up),
            ids(&["a"])
        );
        assert_eq!(r.next_round(), Some(100 + retry));
        assert!(r
            .take_due(100 + retry - 1, &settings, |_| false, &mut given_up)
            .is_empty());
        let mut t = 100;
        for _ in 1..3 {
            t += retry;
            assert_eq!(
                r.take_due(t, &settings, |_| false, &mut given_up),
                ids(&["a"])
            );
        }
        assert_eq!(given_up, 0);
        assert!(r
            .take_due(t + retry, &settings, |_| false, &mut given_up)
            .is_empty());
        assert_eq!(given_up, 1, "given up after three attempts");
        assert_eq!(r.pending(), 0);
        assert_eq!(r.next_round(), None);
    }

    #[test]
    fn ids_held_or_done_are_not_asked_for_and_tracking_is_bounded() {
        let settings = Retrieval {
            max_pending: 3,
            ..Retrieval::default()
        };
        let mut r = Retriever::new(Rng(1));
        for id in ["a", "b", "c"] {
            assert_eq!(r.missing(&MessageId::from(id), 10, &settings), Some(true));
        }
        assert_eq!(
            r.missing(&MessageId::from("d"), 10, &settings),
            None,
            "full"
        );
        r.done(&MessageId::from("a"));
        let held = MessageId::from("b");
        let mut given_up = 0;
        let due = r.take_due(10, &settings, |id| *id == held, &mut given_up);
        assert_eq!(due, ids(&["c"]));
        assert_eq!(r.pending(), 1);
        assert_eq!(
            r.missing(&MessageId::from("d"), 10, &settings),
            Some(true),
            "room again"
        );
    }

    #[test]
    fn an_offline_member_postpones_without_spending_attempts() {
        let settings = Retrieval {
            max_attempts: 1,
            ..Retrieval::default()
        };
        let mut r = Retriever::new(Rng(1));
        r.missing(&MessageId::from("a"), 10, &settings);
        r.missing(&MessageId::from("b"), 50_000, &settings);
        r.postpone(10, &settings);
        assert_eq!(r.next_round(), Some(10 + settings.retry_ms()));
        let mut given_up = 0;
        let due = r.take_due(
            10 + settings.retry_ms(),
            &settings,
            |_| false,
            &mut given_up,
        );
        assert_eq!(due, ids(&["a"]));
        assert_eq!(r.next_round(), Some(10 + 2 * settings.retry_ms()));
        r.clear();
        assert_eq!(r.next_round(), None);
    }

    #[test]
    fn a_peer_is_never_the_asking_member_and_every_other_is_drawn() {
        let mut rng = Rng(5);
        for me in 0..4 {
            let mut seen = [false; 4];
            for _ in 0..200 {
                let q = pick_peer(&mut rng, me, 4);
                assert_ne!(q, me);
                seen[q] = true;
            }
            assert_eq!(seen.iter().filter(|s| **s).count(), 3, "member {me}");
        }
        assert_eq!(pick_peer(&mut rng, 0, 2), 1);
        assert_eq!(pick_peer(&mut rng, 1, 2), 0);
    }

    #[test]
    fn sizes_follow_the_retrieve_framing() {
        // u16 channel length, "sim", u16 count, then u16 length + id each.
        assert_eq!(
            request_size(&ids(&["ab", "c"])),
            2 + 3 + 2 + (2 + 2) + (2 + 1)
        );
        // status, u32 count, then u32 length + bytes each.
        let messages = [Bytes::from_static(b"xyz"), Bytes::new()];
        assert_eq!(answer_size(&messages), 5 + (4 + 3) + 4);
    }
}
