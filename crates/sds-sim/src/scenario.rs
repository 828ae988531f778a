//! What to simulate: the group, its traffic, the network and the protocol settings, as one
//! plain struct whose defaults are those of `sds sim`.

use std::path::PathBuf;
use std::time::Duration;

use sds_proto::engine::Config;
use sds_proto::wire::Profile;

use crate::network::Network;
use crate::Error;

/// What a member is in a scenario.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// Follows the protocol and is measured in the report's honest section.
    #[default]
    Honest,
    /// A hostile member of this kind: left out of the report's honest section.
    Hostile(Hostility),
}

/// The kinds of hostile member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hostility {
    /// Behaves exactly as an honest member: hostile only in the report's accounting, a baseline
    /// against which kinds that attack can be compared.
    Conforming,
}

/// The parameters of one simulation run. The same scenario (seed included) gives the same
/// [`Report`](crate::Report), whatever the thread count.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Participants in the channel (at least 2).
    pub participants: usize,
    /// Mean seconds between two messages of one participant (S).
    pub send_interval: f64,
    /// Virtual seconds during which participants send.
    pub duration: f64,
    /// Keep only the earliest this many sends of the whole group (0: no limit; the duration
    /// still applies). A member offline at its send time skips that send.
    pub messages: usize,
    /// Virtual seconds simulated after the sending period, for repairs to finish.
    pub tail: f64,
    /// SDS-R T_min: seconds before a missing message may be requested.
    pub repair_t_min: f64,
    /// SDS-R T_max: the repair window in seconds.
    pub repair_t_max: f64,
    /// The bus between members: loss, latency, loss bursts.
    pub network: Network,
    /// Mean virtual seconds a participant stays online before going offline (0: never
    /// offline).
    pub churn_online: f64,
    /// Mean virtual seconds a participant stays offline.
    pub churn_offline: f64,
    /// Log entries each member keeps (0: enough for the group's traffic over two repair
    /// windows, between 1,000 and 10,000).
    pub history: usize,
    /// Repair on: SDS-R and the rebroadcasts prompted by members' filters.
    pub repair: bool,
    /// Rebroadcast a recent message when a member's bloom filter shows it lacks it (only with
    /// `repair`).
    pub filter_resend: bool,
    /// Every member sends every periodic sync, even when the channel is busy (otherwise only
    /// after a quiet sync interval, or with a repair request due).
    pub all_syncs: bool,
    /// Wire profile of every member.
    pub profile: Profile,
    /// Seed of every random choice.
    pub seed: u64,
    /// Persist every member's state in its own SQLite file in this directory; every operation
    /// is committed as it happens. What an earlier run left there is removed at the start; the
    /// files stay after the run ([`stores_size`](crate::stores_size) measures them,
    /// [`remove_stores`](crate::remove_stores) removes them).
    pub store: Option<PathBuf>,
    /// Mean virtual seconds between restarts of a member, which then comes back from its store
    /// (needs `store`; 0: no restarts).
    pub restart_rate: f64,
    /// Threads that run members in parallel (0: one per core, used for busy windows only;
    /// always 1 with a store). The report does not depend on it.
    pub threads: usize,
    /// The role of each member by index; members past its end are honest (empty: everyone).
    pub roles: Vec<Role>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            participants: 50,
            send_interval: 10.0,
            duration: 600.0,
            messages: 0,
            tail: 600.0,
            repair_t_min: 30.0,
            repair_t_max: 300.0,
            network: Network::default(),
            churn_online: 0.0,
            churn_offline: 30.0,
            history: 0,
            repair: true,
            filter_resend: true,
            all_syncs: false,
            profile: Profile::NimSds,
            seed: 1,
            store: None,
            restart_rate: 0.0,
            threads: 0,
            roles: Vec::new(),
        }
    }
}

impl Scenario {
    /// Virtual milliseconds the run covers: the sending period and the tail.
    pub fn span_ms(&self) -> u64 {
        (self.duration * 1000.0) as u64 + (self.tail * 1000.0) as u64
    }

    /// The role of member `p`.
    pub fn role(&self, p: usize) -> Role {
        self.roles.get(p).copied().unwrap_or_default()
    }

    /// Members with a hostile role.
    pub fn hostile_members(&self) -> usize {
        (0..self.participants)
            .filter(|&p| self.role(p) != Role::Honest)
            .count()
    }

    /// Refuses impossible settings.
    pub fn check(&self) -> Result<(), Error> {
        let refuse = |why: &str| Err(Error::Invalid(why.into()));
        let net = &self.network;
        if self.participants < 2 {
            return refuse("a simulation needs at least 2 participants");
        }
        if !(0.0..=1.0).contains(&net.loss) || !(0.0..=1.0).contains(&net.burst_loss) {
            return refuse("loss probabilities must be between 0 and 1");
        }
        if self.send_interval <= 0.0 || self.duration <= 0.0 || self.tail < 0.0 {
            return refuse("send interval and duration must be positive, tail not negative");
        }
        if net.latency_min > net.latency_max {
            return refuse("latency-min must not exceed latency-max");
        }
        if net.latency_min == 0 {
            return refuse("latency-min must be at least 1 ms");
        }
        if self.duration + self.tail > 40.0 * 86_400.0 {
            return refuse("duration and tail together must stay under 40 days");
        }
        if self.repair_t_min < 0.0 || self.repair_t_max < self.repair_t_min {
            return refuse("repair-t-max must be at least repair-t-min, both not negative");
        }
        if self.roles.len() > self.participants {
            return refuse("more roles than participants");
        }
        if self.participants - self.hostile_members() < 2 {
            return refuse("a simulation needs at least 2 honest participants");
        }
        if self.restart_rate > 0.0 && self.store.is_none() {
            return refuse("--restart-rate needs --store sqlite:DIR to restart from");
        }
        Ok(())
    }

    /// The log length of every member: `history`, or when 0 the group's traffic over two
    /// repair windows, between 1,000 and 10,000 (a message can only be repaired while someone
    /// still logs it).
    pub fn resolved_history(&self) -> usize {
        if self.history > 0 {
            self.history
        } else {
            let group_rate = self.participants as f64 / self.send_interval;
            ((group_rate * self.repair_t_max * 2.0).ceil() as usize).clamp(1_000, 10_000)
        }
    }

    /// The engine configuration of every member.
    pub(crate) fn config(&self) -> Config {
        let history = self.resolved_history();
        let ms = |s: f64| Duration::from_millis((s * 1000.0) as u64);
        Config::default()
            // Members never give up on a gap here: the report shows what repair achieves.
            .with_lost_dependency_timeout(None)
            .with_max_message_history(history)
            .with_max_known_ids(history.max(10_000))
            .with_repair_t_min(ms(self.repair_t_min))
            .with_repair_t_max(ms(self.repair_t_max))
            // The spec's recommendation: one response group per 128 participants.
            .with_num_response_groups((self.participants / 128 + 1) as u32)
            .with_quiet_sync(!self.all_syncs)
            // Long enough for the message to have reached a member before its next message.
            .with_filter_resend_after((self.filter_resend && self.repair).then_some(
                Duration::from_millis((2 * self.network.latency_max).max(1_000)),
            ))
            // In a large group nearly every rebroadcast misses someone: allow a few more rounds.
            .with_max_resend_attempts(10)
            .with_profile(self.profile)
    }

    /// Threads for the run's parallel windows.
    pub(crate) fn thread_count(&self) -> usize {
        if self.store.is_some() {
            // The stores are driven from one runtime.
            1
        } else if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
        .clamp(1, self.participants)
    }
}
