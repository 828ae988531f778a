//! `sds sim --adversary KIND[,KIND…]`: the scenario with hostile members that attack, run
//! once with their attacks and once with them silent; the honest members' outcomes of the two
//! runs side by side, as text or one JSON document ([`sds_sim::Comparison`]).

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use sds_sim::report::Honest;
use sds_sim::{AttackSettings, Comparison, Hostility, Scenario};

use crate::sim_text::bytes;
use crate::CmdResult;

/// The options of `sds sim` about hostile members.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct AttackArgs {
    /// Hostile members that attack, of these kinds (comma-separated; several attack at once):
    /// flood, junk, cycles, clock, replay, repair-amplification, channel-spam, equivocation.
    /// The same run with them silent is reported next to it.
    #[arg(long, value_delimiter = ',', value_name = "KIND[,KIND…]")]
    adversary: Vec<Hostility>,
    /// Hostile members among the participants, of the kinds in turn (default: one per kind);
    /// they are the last members.
    #[arg(long, value_name = "N")]
    hostile: Option<usize>,
    /// Attacks per second of each hostile member, during the sending period (an attack is one
    /// crafted message, or the few that go together).
    #[arg(long, default_value_t = 1.0)]
    hostile_rate: f64,
    /// Bytes each hostile member sends at most (0: no limit).
    #[arg(long, default_value_t = 0)]
    hostile_budget: u64,
}

impl AttackArgs {
    /// Whether hostile members were asked for.
    pub(crate) fn active(&self) -> bool {
        !self.adversary.is_empty() || self.hostile.is_some()
    }

    /// The lost-dependency timeout when none is given: the engine's default (600 s) with
    /// hostile members, whose junk would otherwise stall honest members for good; never
    /// without them.
    pub(crate) fn default_lost_timeout(&self) -> f64 {
        if self.active() {
            sds_proto::engine::Config::default()
                .lost_dependency_timeout
                .map_or(0.0, |t| t.as_secs_f64())
        } else {
            0.0
        }
    }

    /// `scenario` with the hostile members.
    fn apply(&self, scenario: Scenario) -> Result<Scenario, String> {
        if self.adversary.is_empty() {
            return Err("--hostile needs --adversary KIND".into());
        }
        let count = self.hostile.unwrap_or(self.adversary.len());
        if count == 0 {
            return Err("--hostile must be at least 1".into());
        }
        if count > scenario.participants {
            return Err(format!(
                "--hostile {count} exceeds the {} participants",
                scenario.participants
            ));
        }
        Ok(Scenario {
            attack: AttackSettings {
                rate: self.hostile_rate,
                budget: self.hostile_budget,
            },
            ..scenario
        }
        .with_adversaries(&self.adversary, count))
    }
}

/// Runs `scenario` with the hostile members of `args` and without their attacks, and prints
/// the comparison; `plot` is where to draw the attacked run.
pub(crate) fn run(
    args: &AttackArgs,
    scenario: Scenario,
    json: bool,
    quiet: bool,
    plot: Option<&Path>,
) -> CmdResult {
    let attacked = args.apply(scenario)?;
    attacked.check().map_err(|e| e.to_string())?;
    let (clean, report) = crate::sim_pair::run_pair(
        (&attacked.clean(), "clean"),
        (&attacked, "attacked"),
        !(quiet || json),
    )?;
    if let Some(path) = plot {
        std::fs::write(path, crate::plot::svg(&report)?)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let comparison = Comparison::new(&attacked, clean, report);
    if json {
        let json = serde_json::to_string(&comparison).map_err(|e| e.to_string())?;
        println!("{json}");
    } else {
        print!("{}", text(&attacked, &comparison));
    }
    Ok(ExitCode::SUCCESS)
}

/// The comparison as text: one row per honest outcome, clean and attacked side by side.
fn text(scenario: &Scenario, c: &Comparison) -> String {
    let mut s = String::new();
    let p = &c.attacked.parameters;
    let mut kinds: Vec<&str> = c.adversaries.clone();
    kinds.sort_unstable();
    kinds.dedup();
    let hostile = scenario.hostile_members();
    let _ = writeln!(
        s,
        "SDS simulation under attack: {} honest and {hostile} hostile {} ({}), {} attacks per second each{}, {} participants, one message every {} s each for {} s (+{} s tail), loss {} %, seed {}",
        p.participants - hostile,
        if hostile == 1 { "member" } else { "members" },
        kinds.join(", "),
        c.attack.rate,
        if c.attack.budget > 0 {
            format!(" within {}", bytes(c.attack.budget))
        } else {
            String::new()
        },
        p.participants,
        p.send_interval_s,
        p.duration_s,
        p.tail_s,
        p.loss * 100.0,
        p.seed
    );
    let (Some(clean), Some(attacked)) = (&c.clean.honest, &c.attacked.honest) else {
        return s;
    };
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  honest members                                 clean       attacked"
    );
    let mut row = |name: &str, f: &dyn Fn(&Honest) -> String| {
        let _ = writeln!(s, "  {name:<40} {:>12}   {:>12}", f(clean), f(attacked));
    };
    let pct = |x: f64| format!("{:.2} %", 100.0 * x);
    row("completeness", &|h| pct(h.outcomes.completeness));
    row("messages every honest member has", &|h| {
        format!("{}", h.outcomes.messages_everywhere)
    });
    row("every honest member has one within 6·S", &|h| {
        pct(h
            .outcomes
            .eventual_consistency
            .fraction_consistent_within_requirement)
    });
    row("deliveries out of causal order", &|h| {
        h.effects.order_violations.to_string()
    });
    row("deliveries of a message delivered before", &|h| {
        h.effects.duplicates_delivered.to_string()
    });
    row("hostile messages delivered", &|h| {
        h.effects.hostile_delivered.to_string()
    });
    row("ids delivered with different contents", &|h| {
        h.effects.divergent_ids.to_string()
    });
    row("most bytes one member held for others", &|h| {
        bytes(h.effects.peak_held_bytes)
    });
    row("bytes rebroadcast (resends, repairs)", &|h| {
        bytes(h.effects.rebroadcast_bytes)
    });
    row("refused: clock / channel / other", &|h| {
        let e = &h.effects;
        format!(
            "{} / {} / {}",
            e.refused_clock, e.refused_channel, e.refused_other
        )
    });
    row("conflicts / stale", &|h| {
        format!("{} / {}", h.effects.conflicts, h.effects.stale)
    });
    row("dropped: evicted / expired", &|h| {
        format!("{} / {}", h.effects.evicted, h.effects.expired)
    });
    row("clock lead at the end", &|h| {
        format!("{:.0} s", h.effects.clock_lead_s)
    });
    let _ = writeln!(s);
    let e = &attacked.effects;
    let _ = writeln!(
        s,
        "  hostile: {} broadcasts, {}; honest completeness attacked/clean {:.4}; bytes rebroadcast beyond the clean run per hostile byte {}",
        e.hostile_broadcasts,
        bytes(e.hostile_bytes),
        c.completeness_ratio,
        c.amplification
            .map_or_else(|| "-".into(), |a| format!("{a:.2}"))
    );
    s
}
