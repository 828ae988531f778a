//! `sds sim`: options → [`Scenario`], [`sds_sim::run`], and the [`Report`] as text, JSON or a
//! plot. The simulation itself is the `sds-sim` crate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sds_proto::wire::Profile;
use sds_sim::{Network, Retrieval, Scenario};

use crate::CmdResult;

/// Options of `sds sim`.
#[derive(Args, Clone, Debug)]
pub(crate) struct SimArgs {
    /// Participants in the channel.
    #[arg(long, default_value_t = 50)]
    participants: usize,
    /// Mean seconds between two messages of one participant (S).
    #[arg(long, default_value_t = 10.0)]
    send_interval: f64,
    /// Virtual seconds during which participants send.
    #[arg(long, default_value_t = 600.0)]
    duration: f64,
    /// Keep only the earliest this many sends of the whole group (0: no limit; the duration
    /// still applies). A member offline at its send time skips that send.
    #[arg(long, default_value_t = 0)]
    messages: usize,
    /// Virtual seconds simulated after the sending period (--duration), for repairs to finish
    /// (the default is twice the default repair window T_max; it does not follow
    /// --repair-t-max).
    #[arg(long, default_value_t = 600.0)]
    tail: f64,
    /// SDS-R T_min: seconds before a missing message may be requested (spec: at least 30).
    #[arg(long, default_value_t = 30.0)]
    repair_t_min: f64,
    /// SDS-R T_max: the repair window in seconds (spec: 120 to 600).
    #[arg(long, default_value_t = 300.0)]
    repair_t_max: f64,
    /// Probability that a copy is lost on its way to one receiver.
    #[arg(long, default_value_t = 0.2)]
    loss: f64,
    /// Smallest one-way latency, in milliseconds.
    #[arg(long, default_value_t = 50)]
    latency_min: u64,
    /// Largest one-way latency, in milliseconds.
    #[arg(long, default_value_t = 500)]
    latency_max: u64,
    /// Every this many virtual seconds, a burst of heavier loss (0: none).
    #[arg(long, default_value_t = 0.0)]
    burst_every: f64,
    /// Length of a loss burst, in virtual seconds.
    #[arg(long, default_value_t = 5.0)]
    burst_length: f64,
    /// Loss probability during a burst.
    #[arg(long, default_value_t = 0.8)]
    burst_loss: f64,
    /// Mean virtual seconds a participant stays online before going offline (0: never
    /// offline).
    #[arg(long, default_value_t = 0.0)]
    churn_online: f64,
    /// Mean virtual seconds a participant stays offline.
    #[arg(long, default_value_t = 30.0)]
    churn_offline: f64,
    /// Log entries each member keeps (0: enough for the group's traffic over two repair
    /// windows, between 1,000 and 10,000 — a message can only be repaired while someone still
    /// logs it).
    #[arg(long, default_value_t = 0)]
    history: usize,
    /// Turn repair off: SDS-R and the rebroadcasts prompted by members' filters.
    #[arg(long)]
    no_repair: bool,
    /// Seconds after which a member gives up on a missing dependency and delivers what waited
    /// for it (0: never). Default 0, so that the report shows what repair achieves; with
    /// --adversary, 600, the engine's default (hostile junk could otherwise stall members).
    #[arg(long, value_name = "SECS")]
    lost_timeout: Option<f64>,
    /// Do not rebroadcast a recent message when a member's bloom filter shows it lacks it (then a
    /// lost message nobody cites any more can stay undetected).
    #[arg(long)]
    no_filter_resend: bool,
    /// Every member sends every periodic sync, even when the channel is busy (default: only
    /// after a quiet sync interval, or with a repair request due).
    #[arg(long)]
    all_syncs: bool,
    /// Wire profile of every member: `nim-sds` or `spec` (@waku/sds layout, filter and SDS-R
    /// arithmetic).
    #[arg(long, default_value = "nim-sds")]
    profile: Profile,
    /// Seed of every random choice: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Also draw the run into this SVG file: over virtual time, the share of (member, message)
    /// pairs delivered and the pairs still open.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bar (drawn on stderr only when it is a terminal, and not with --json).
    #[arg(long)]
    quiet: bool,
    /// Persist every member's state in SQLite files in this directory (`sqlite:DIR`, files
    /// p0000.db onwards, replaced if there); every operation is committed as it happens.
    #[arg(long)]
    store: Option<String>,
    /// Keep the members' stores (--store) after the run; by default they are removed at the
    /// end, with the directories the run created, and stderr says how much they took.
    #[arg(long, requires = "store")]
    keep_store: bool,
    /// Mean virtual seconds between restarts of a member, which then comes back from its store
    /// (needs --store; 0: no restarts).
    #[arg(long, default_value_t = 0.0)]
    restart_rate: f64,
    /// Threads that run members in parallel (0: one per core, used for busy windows only; 1 with
    /// --store). The report does not depend on it.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Members ask a random other member for the messages they miss, one latency after
    /// learning of the gap (as `sds-libp2p` does over /sds/retrieve/1): at most 64 ids per
    /// request, 4 MiB per answer, an id asked again after 2 s and at most 10 times; requests and
    /// answers meet the network's latency and loss. The scenario is run without and with it
    /// and both outcomes are reported side by side (--plot draws the run with it). With
    /// --adversary, both the clean and the attacked run have retrieval instead.
    #[arg(long)]
    retrieval: bool,
    #[command(flatten)]
    attack: crate::sim_attack::AttackArgs,
}

impl SimArgs {
    /// The scenario these options describe.
    fn scenario(&self) -> Result<Scenario, String> {
        let store = match self.store.as_deref() {
            None => None,
            Some(spec) => Some(
                spec.strip_prefix("sqlite:")
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("unknown store {spec:?} (expected sqlite:DIR)"))?,
            ),
        };
        Ok(Scenario {
            participants: self.participants,
            send_interval: self.send_interval,
            duration: self.duration,
            messages: self.messages,
            tail: self.tail,
            repair_t_min: self.repair_t_min,
            repair_t_max: self.repair_t_max,
            network: Network {
                loss: self.loss,
                latency_min: self.latency_min,
                latency_max: self.latency_max,
                burst_every: self.burst_every,
                burst_length: self.burst_length,
                burst_loss: self.burst_loss,
            },
            churn_online: self.churn_online,
            churn_offline: self.churn_offline,
            history: self.history,
            repair: !self.no_repair,
            lost_timeout: self
                .lost_timeout
                .unwrap_or(self.attack.default_lost_timeout()),
            filter_resend: !self.no_filter_resend,
            all_syncs: self.all_syncs,
            profile: self.profile,
            seed: self.seed,
            store,
            restart_rate: self.restart_rate,
            threads: self.threads,
            retrieval: self.retrieval.then(Retrieval::default),
            ..Scenario::default()
        })
    }
}

pub(crate) fn run(args: SimArgs) -> CmdResult {
    let scenario = args.scenario()?;
    if args.attack.active() {
        let plot = args.plot.as_deref();
        return crate::sim_attack::run(&args.attack, scenario, args.json, args.quiet, plot);
    }
    let created = scenario
        .store
        .as_deref()
        .map(crate::sim_store::missing_dirs)
        .unwrap_or_default();
    let finish_stores = || match &scenario.store {
        Some(dir) => {
            crate::sim_store::finish(dir, scenario.participants, args.keep_store, &created)
        }
        None => Ok(()),
    };
    if args.retrieval {
        let plot = args.plot.as_deref();
        let result = crate::sim_retrieval::run(scenario.clone(), args.json, args.quiet, plot);
        // The stores go (or stay) whatever the outcome; the run's error is the one to report.
        let finished = finish_stores();
        return result.and_then(|code| finished.map(|()| code));
    }
    let mut bar: Option<ProgressBar> = None;
    let show_progress = !(args.quiet || args.json);
    let report = sds_sim::run_with_progress(&scenario, |at_s| {
        if !show_progress {
            return;
        }
        let bar = bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(scenario.span_ms() / 1_000);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} virtual {pos}/{len} s [{wide_bar}] {elapsed}, about {eta} left",
            ) {
                bar.set_style(style);
            }
            bar
        });
        bar.set_position(at_s);
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            // The run's error is the one to report; the stores go (or stay) all the same.
            let _ = finish_stores();
            return Err(e.to_string());
        }
    };
    if let Some(path) = &args.plot {
        std::fs::write(path, crate::plot::svg(&report)?)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if args.json {
        let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
        println!("{json}");
    } else {
        print!("{}", crate::sim_text::render(&report));
    }
    finish_stores()?;
    Ok(ExitCode::SUCCESS)
}
