//! An attacked run next to the same run without the attack: the same seed, the attacking
//! members silent instead ([`Scenario::clean`]). What the attack changed for the honest
//! members is the difference between the two reports' honest sections.

use serde::Serialize;

use crate::adversary::AttackSettings;
use crate::report::Report;
use crate::scenario::{Role, Scenario};
use crate::Error;

/// Two runs of one scenario: without and with its attacks.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// The kinds of the hostile members, by name, one per hostile member.
    pub adversaries: Vec<&'static str>,
    /// How much each attacking member sent at most.
    pub attack: AttackSettings,
    /// The run with the attacking members silent.
    pub clean: Report,
    /// The run with the attacks.
    pub attacked: Report,
    /// The honest members' completeness in the attacked run over that in the clean run.
    pub completeness_ratio: f64,
    /// Bytes honest members rebroadcast in the attacked run beyond those of the clean run, per
    /// byte the attacking members sent (none when they sent nothing).
    pub amplification: Option<f64>,
}

/// Honest completeness and rebroadcast bytes of a report (the whole group's completeness when
/// it has no honest section).
fn honest(r: &Report) -> (f64, u64) {
    match &r.honest {
        Some(h) => (h.outcomes.completeness, h.effects.rebroadcast_bytes),
        None => (r.completeness, 0),
    }
}

impl Comparison {
    /// Compares the reports of `scenario`'s clean run and of its attacked run.
    pub fn new(scenario: &Scenario, clean: Report, attacked: Report) -> Comparison {
        let adversaries = (0..scenario.participants)
            .filter_map(|p| match scenario.role(p) {
                Role::Hostile(h) => Some(h.name()),
                Role::Honest => None,
            })
            .collect();
        let (clean_completeness, clean_rebroadcast) = honest(&clean);
        let (attacked_completeness, attacked_rebroadcast) = honest(&attacked);
        let hostile_bytes = attacked
            .honest
            .as_ref()
            .map_or(0, |h| h.effects.hostile_bytes);
        let amplification = (hostile_bytes > 0).then(|| {
            attacked_rebroadcast.saturating_sub(clean_rebroadcast) as f64 / hostile_bytes as f64
        });
        Comparison {
            adversaries,
            attack: scenario.attack.clone(),
            completeness_ratio: if clean_completeness > 0.0 {
                attacked_completeness / clean_completeness
            } else {
                1.0
            },
            amplification,
            clean,
            attacked,
        }
    }
}

/// Runs `scenario` without its attacks ([`Scenario::clean`]) and with them, and compares the
/// two.
pub fn compare(scenario: &Scenario) -> Result<Comparison, Error> {
    let clean = crate::run(&scenario.clean())?;
    let attacked = crate::run(scenario)?;
    Ok(Comparison::new(scenario, clean, attacked))
}
