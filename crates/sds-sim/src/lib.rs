//! A deterministic discrete-event simulation of one SDS channel shared by many participants,
//! in virtual time, over the sans-IO engine of `sds-proto`.
//!
//! A [`Scenario`] (group size, traffic, [`Network`], protocol settings, seed) goes in; a
//! [`Report`] comes out: delivery, acknowledgement, detection of missed messages and eventual
//! consistency measured against the SDS requirements, and what went over the wire. The same
//! scenario gives the same report, whatever the thread count.
//!
//! ```
//! let scenario = sds_sim::Scenario {
//!     participants: 5,
//!     duration: 30.0,
//!     tail: 60.0,
//!     ..sds_sim::Scenario::default()
//! };
//! let report = sds_sim::run(&scenario).unwrap();
//! assert_eq!(report.expected_deliveries, report.messages_sent * 4);
//! ```
//!
//! Modules by concept: [`network`] (loss, latency, bursts), `member` (one simulated
//! participant), [`scenario`] (the parameters), `run` (the event loop and its parallel
//! windows), [`report`] (the outcome as data), `store` (SQLite members and restarts),
//! [`adversary`] (hostile members that craft wire bytes), `watch` (what an honest member goes
//! through among them), [`compare`](mod@compare) (an attacked run next to the same run without the attack),
//! [`retrieval`] (members asking one another for missing messages, and a run with it next to
//! the same run without).

pub mod adversary;
mod clock;
pub mod compare;
mod member;
pub mod network;
pub mod report;
pub mod retrieval;
mod rng;
mod run;
pub mod scenario;
mod store;
mod watch;

pub use adversary::AttackSettings;
pub use compare::{compare, Comparison};
pub use network::Network;
pub use report::Report;
pub use retrieval::{compare as compare_retrieval, Comparison as RetrievalComparison, Retrieval};
pub use rng::Rng;
pub use scenario::{Hostility, Role, Scenario};
pub use store::{remove_stores, stores_size};

/// Why a run did not happen or did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The scenario is impossible (see [`Scenario::check`]).
    #[error("{0}")]
    Invalid(String),
    /// Setting up or running failed: a store, a member's engine.
    #[error("{0}")]
    Failed(String),
}

/// Runs a scenario to its end and reports on it.
pub fn run(scenario: &Scenario) -> Result<Report, Error> {
    run_with_progress(scenario, |_| {})
}

/// [`run`], telling `progress` now and then the virtual second the run has reached (out of
/// [`Scenario::span_ms`] / 1000).
pub fn run_with_progress(
    scenario: &Scenario,
    mut progress: impl FnMut(u64),
) -> Result<Report, Error> {
    let mut sim = run::Sim::new(scenario)?;
    sim.run(&mut progress)?;
    Ok(sim.report())
}
