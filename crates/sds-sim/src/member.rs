//! One simulated participant: its engine and everything random or scheduled about it.

use sds_proto::engine::{Channel, Config};

use crate::adversary::Adversary;
use crate::clock::T0;
use crate::retrieval::Retriever;
use crate::rng::Rng;
use crate::watch::Watch;
use crate::Error;

/// The channel every member is on.
pub(crate) const CHANNEL: &str = "sim";

/// Something that happens to one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Own {
    Send,
    Timer,
    Offline,
    Online,
    Restart,
    /// An attacking member's next attack.
    Attack,
    /// A member's next round of retrieval requests.
    Retrieve,
}

/// One participant. Each member draws from its own generators, so a run does not depend on how
/// members are spread over threads.
pub(crate) struct Member {
    pub(crate) ch: Channel,
    pub(crate) rng: Rng,
    pub(crate) online: bool,
    /// Earliest pending timer event.
    pub(crate) timer_at: Option<u64>,
    /// Remaining send times, soonest last.
    pub(crate) sends: Vec<u64>,
    /// Messages sent so far (the suffix of the next id).
    pub(crate) sent: u64,
    /// Numbers this member's outputs: with the member index it orders them independently of
    /// threads.
    pub(crate) counter: u64,
    /// A hostile member that runs no protocol (silent or attacking): its engine stays idle.
    pub(crate) idle: bool,
    /// What it attacks with, when it attacks.
    pub(crate) adversary: Option<Box<Adversary>>,
    /// What it goes through, when honest in a group with hostile members.
    pub(crate) watch: Option<Box<Watch>>,
    /// What it asks other members for, when the scenario has retrieval.
    pub(crate) retriever: Option<Box<Retriever>>,
}

impl Member {
    /// Member `p`, online at the start, with its send times; `repair` gives it a participant id
    /// (SDS-R needs one).
    pub(crate) fn new(
        p: usize,
        mut sends: Vec<u64>,
        config: &Config,
        seed: u64,
        repair: bool,
    ) -> Result<Self, Error> {
        let id = if repair {
            format!("p{p:04}")
        } else {
            String::new()
        };
        let mut ch = Channel::new(CHANNEL.into(), id.into(), config.clone(), T0)
            .map_err(|e| Error::Failed(e.to_string()))?;
        let mut rng = member_rng(seed, p, 1);
        // Stagger the periodic syncs.
        ch.schedule_sync_at(Some(
            T0 + rng.range(0, config.sync_interval.as_millis() as u64),
        ));
        sends.sort_unstable_by(|a, b| b.cmp(a));
        Ok(Member {
            ch,
            rng,
            online: true,
            timer_at: None,
            sends,
            sent: 0,
            counter: 0,
            idle: false,
            adversary: None,
            watch: None,
            retriever: None,
        })
    }
}

/// The generator of member `p`'s stream `stream` (0: its sends, 1: everything else, 2: its
/// attacks, 3: its retrieval).
pub(crate) fn member_rng(seed: u64, p: usize, stream: u64) -> Rng {
    let mut mix = Rng(seed
        ^ (p as u64).wrapping_mul(0xa076_1d64_78bd_642f)
        ^ stream.wrapping_mul(0xe703_7ed1_a0b4_28db));
    Rng(mix.next())
}

/// Every member's send times, fixed in advance from its own generator, before
/// `end_of_sends`; a positive `limit` keeps the earliest that many overall.
pub(crate) fn send_schedule(
    participants: usize,
    send_interval: f64,
    seed: u64,
    end_of_sends: u64,
    limit: usize,
) -> Vec<Vec<u64>> {
    let mut schedule: Vec<(u64, usize)> = Vec::new();
    for p in 0..participants {
        let mut rng = member_rng(seed, p, 0);
        let mut t = T0;
        loop {
            t += ((rng.exp(send_interval) * 1000.0) as u64).max(1);
            if t >= end_of_sends {
                break;
            }
            schedule.push((t, p));
        }
    }
    if limit > 0 {
        schedule.sort_unstable();
        schedule.truncate(limit);
    }
    let mut sends: Vec<Vec<u64>> = vec![Vec::new(); participants];
    for &(t, p) in &schedule {
        sends[p].push(t);
    }
    sends
}
