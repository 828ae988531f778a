//! What to simulate: the group, its traffic, the network and the protocol settings, as one
//! plain struct whose defaults are those of `sds sim`.

use std::path::PathBuf;
use std::time::Duration;

use sds_proto::engine::Config;
use sds_proto::wire::Profile;

use crate::adversary::AttackSettings;
use crate::network::Network;
use crate::retrieval::Retrieval;
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

/// The kinds of hostile member. Every kind but [`Conforming`](Hostility::Conforming) runs no
/// protocol: it listens to the bus, never sends a message of its own and never helps with
/// repair, and the attacking kinds craft wire bytes outside any engine (see
/// [`AttackSettings`] for their rate and budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hostility {
    /// Behaves exactly as an honest member: hostile only in the report's accounting, a baseline
    /// against which kinds that attack can be compared.
    Conforming,
    /// Listens and never sends: the stand-in for an attacking member in the clean run an
    /// attack is compared with ([`Scenario::clean`]).
    Silent,
    /// Junk content messages under fresh ids, each citing many messages that do not exist:
    /// they wait for ever and fill the incoming buffers.
    Flood,
    /// Bursts of junk content messages under fresh ids that cite nothing: delivered
    /// everywhere, they crowd honest messages out of logs and causal histories, so that honest
    /// messages come to depend on junk that no log keeps long enough to be repaired.
    Junk,
    /// Pairs of messages citing each other: never deliverable.
    Cycles,
    /// Lamport timestamps far in the future, and `i64::MAX`.
    Clock,
    /// Honest messages seen on the bus sent again (as they were, and re-encoded under another
    /// timestamp), between bursts of syncs under fresh ids meant to flush duplicate detection.
    Replay,
    /// Syncs carrying SDS-R repair requests for many of the largest honest messages seen,
    /// naming their true senders or a chosen member as sender.
    RepairAmplification,
    /// Messages on a fresh channel id each time.
    ChannelSpam,
    /// One id, two contents: each half of the group gets one of them.
    Equivocation,
}

impl Hostility {
    /// The kinds that attack, in the order `sds sim --adversary` lists them.
    pub const ATTACKS: [Hostility; 8] = [
        Hostility::Flood,
        Hostility::Junk,
        Hostility::Cycles,
        Hostility::Clock,
        Hostility::Replay,
        Hostility::RepairAmplification,
        Hostility::ChannelSpam,
        Hostility::Equivocation,
    ];

    /// The kind's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Hostility::Conforming => "conforming",
            Hostility::Silent => "silent",
            Hostility::Flood => "flood",
            Hostility::Junk => "junk",
            Hostility::Cycles => "cycles",
            Hostility::Clock => "clock",
            Hostility::Replay => "replay",
            Hostility::RepairAmplification => "repair-amplification",
            Hostility::ChannelSpam => "channel-spam",
            Hostility::Equivocation => "equivocation",
        }
    }

    /// Whether a member of this kind sends crafted bytes.
    pub fn attacks(self) -> bool {
        !matches!(self, Hostility::Conforming | Hostility::Silent)
    }
}

impl std::fmt::Display for Hostility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Hostility {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let all = [Hostility::Conforming, Hostility::Silent]
            .into_iter()
            .chain(Hostility::ATTACKS);
        all.clone().find(|h| h.name() == s).ok_or_else(|| {
            let names: Vec<&str> = all.map(Hostility::name).collect();
            format!("unknown adversary {s:?} (known: {})", names.join(", "))
        })
    }
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
    /// Seconds after which a member gives up on a missing dependency and delivers what waited
    /// for it (the engine's lost-dependency timeout; 0: never, so that the report shows what
    /// repair alone achieves).
    pub lost_timeout: f64,
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
    /// How much the attacking members send.
    pub attack: AttackSettings,
    /// The engine configuration of every member, instead of the one derived from the settings
    /// above ([`Scenario::config`]); for runs with a defence turned down or off.
    pub engine: Option<Config>,
    /// Members ask other members for the messages they miss, with these settings (none: no
    /// retrieval, only what SDS and SDS-R do on the bus). See [`retrieval`](crate::retrieval).
    pub retrieval: Option<Retrieval>,
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
            lost_timeout: 0.0,
            filter_resend: true,
            all_syncs: false,
            profile: Profile::NimSds,
            seed: 1,
            store: None,
            restart_rate: 0.0,
            threads: 0,
            roles: Vec::new(),
            attack: AttackSettings::default(),
            engine: None,
            retrieval: None,
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

    /// Whether a member attacks.
    pub fn attacked(&self) -> bool {
        (0..self.participants).any(|p| matches!(self.role(p), Role::Hostile(h) if h.attacks()))
    }

    /// Makes the last `count` members hostile, of the `kinds` in turn (the other roles are
    /// honest): several kinds attack at once when `count` is at least their number.
    pub fn with_adversaries(mut self, kinds: &[Hostility], count: usize) -> Scenario {
        let count = count.min(self.participants);
        self.roles = vec![Role::Honest; self.participants - count];
        self.roles
            .extend(kinds.iter().cycle().take(count).map(|&k| Role::Hostile(k)));
        self
    }

    /// The same scenario without the attacks: every attacking member is
    /// [`Silent`](Hostility::Silent) instead. Honest members send at the same times, and every
    /// broadcast among them meets the same losses and latencies until the attack changes what
    /// they send; the honest outcomes of the two runs compare.
    pub fn clean(&self) -> Scenario {
        let mut clean = self.clone();
        for role in &mut clean.roles {
            if matches!(role, Role::Hostile(h) if h.attacks()) {
                *role = Role::Hostile(Hostility::Silent);
            }
        }
        clean
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
        if self.lost_timeout.is_nan() || self.lost_timeout < 0.0 {
            return refuse("the lost timeout must not be negative");
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
        if !(self.attack.rate > 0.0 && self.attack.rate <= 1_000.0) {
            return refuse("the hostile rate must be above 0 and at most 1000 per second");
        }
        if let Some(retrieval) = &self.retrieval {
            retrieval.check()?;
        }
        if let Some(config) = &self.engine {
            config
                .validate()
                .map_err(|e| Error::Invalid(e.to_string()))?;
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

    /// The engine configuration of every member: [`engine`](Self::engine) if set, otherwise
    /// derived from the other settings.
    pub fn config(&self) -> Config {
        if let Some(config) = &self.engine {
            return config.clone();
        }
        let history = self.resolved_history();
        let ms = |s: f64| Duration::from_millis((s * 1000.0) as u64);
        Config::default()
            // By default members never give up on a gap: the report shows what repair achieves.
            .with_lost_dependency_timeout(
                (self.lost_timeout > 0.0)
                    .then(|| ms(self.lost_timeout).max(Duration::from_millis(1))),
            )
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
