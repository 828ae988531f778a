//! `sds sim --retrieval`: the scenario run without retrieval and with it (members asking a
//! random other member for what they miss, as `sds-libp2p` does over `/sds/retrieve/1`), the
//! outcomes side by side, as text or one JSON document ([`sds_sim::RetrievalComparison`]).

use std::path::Path;
use std::process::ExitCode;

use sds_sim::{Report, Retrieval, RetrievalComparison, Scenario};

use crate::sim_text::{bytes, count_in, percent, scenario_line, table};
use crate::CmdResult;

/// Runs `scenario` without and with retrieval and prints the comparison; `plot` is where to
/// draw the run with retrieval.
pub(crate) fn run(scenario: Scenario, json: bool, quiet: bool, plot: Option<&Path>) -> CmdResult {
    let with = Scenario {
        retrieval: Some(scenario.retrieval.clone().unwrap_or_default()),
        ..scenario
    };
    with.check().map_err(|e| e.to_string())?;
    let without = Scenario {
        retrieval: None,
        ..with.clone()
    };
    let (without, with_report) = crate::sim_pair::run_pair(
        (&without, "without retrieval"),
        (&with, "with retrieval"),
        !(quiet || json),
    )?;
    if let Some(path) = plot {
        std::fs::write(path, crate::plot::svg(&with_report)?)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let comparison = RetrievalComparison {
        without,
        with: with_report,
    };
    if json {
        let json = serde_json::to_string(&comparison).map_err(|e| e.to_string())?;
        println!("{json}");
    } else {
        print!("{}", text(&comparison));
    }
    Ok(ExitCode::SUCCESS)
}

/// The comparison as text: one row per outcome, without and with retrieval side by side.
pub(crate) fn text(c: &RetrievalComparison) -> String {
    let mut s = format!(
        "SDS simulation without and with retrieval: {}\n\n",
        scenario_line(&c.with.parameters)
    );
    type Cell = fn(&Report) -> String;
    let rows: [(&str, Cell); 8] = [
        ("deliveries", |r| {
            percent(r.deliveries, r.expected_deliveries)
        }),
        ("messages every member has", |r| {
            format!("{} of {}", r.messages_everywhere, r.messages_sent)
        }),
        ("every member has a message within 6·S", |r| {
            let e = &r.eventual_consistency;
            let sent = r.messages_sent;
            percent(
                count_in(e.fraction_consistent_within_requirement, sent),
                sent,
            )
        }),
        ("  median / p90 / p99", |r| {
            let l = &r.eventual_consistency.latency;
            let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.2}"));
            format!(
                "{} / {} / {}",
                f(l.median_send_intervals),
                f(l.p90_send_intervals),
                f(l.p99_send_intervals)
            )
        }),
        ("receiver detects a missed message within 3·S", |r| {
            let d = &r.missing_detection;
            let missed = r.missed_on_first_broadcast;
            percent(
                count_in(d.fraction_detected_within_requirement, missed),
                missed,
            )
        }),
        ("sender sees an acknowledgement within 1·S", |r| {
            let l = &r.acknowledgement.latency;
            let within = count_in(l.fraction_within_requirement.unwrap_or(0.0), l.count);
            percent(within, l.count)
        }),
        ("on the bus", |r| {
            format!(
                "{} broadcasts, {}",
                r.wire.transmissions,
                bytes(r.wire.bytes)
            )
        }),
        ("repair rebroadcasts / repair requests", |r| {
            format!("{} / {}", r.wire.repairs, r.wire.repair_requests)
        }),
    ];
    let mut cells: Vec<Vec<String>> = vec![vec![
        format!(
            "S = {} s",
            crate::sim_text::num(c.with.parameters.send_interval_s)
        ),
        "without retrieval".into(),
        "with retrieval".into(),
    ]];
    for (name, cell) in rows {
        cells.push(vec![name.into(), cell(&c.without), cell(&c.with)]);
    }
    s.push_str(&table(&cells, &[false, true, true]));
    s.push_str("  (median, p90, p99: time from the send to the last member, in multiples of S)\n");
    if let Some(r) = &c.with.retrieval {
        s.push('\n');
        s.push_str(&retrieval_lines(r));
    }
    s
}

/// What retrieval did, in a few lines.
fn retrieval_lines(r: &sds_sim::retrieval::Stats) -> String {
    let Retrieval {
        max_ids_per_request,
        max_answer_bytes,
        retry_after,
        max_attempts,
        ..
    } = &r.settings;
    format!(
        "  retrieval: {} missing ids tracked; {} requests ({} ids, {}), {} answers ({} messages, {})\n  \
         {} messages retrieved, {} deliveries set off; ids given up: {}, not tracked: {}\n  \
         at most {} ids in a request (limit {max_ids_per_request}), {} messages and {} in an answer (limit {})\n  \
         an id is asked for again after {} s, at most {max_attempts} times; requests and answers are not on the bus\n",
        r.tracked,
        r.requests,
        r.requested_ids,
        bytes(r.request_bytes),
        r.answers,
        r.answered_ids,
        bytes(r.answer_bytes),
        r.retrieved,
        r.deliveries,
        r.given_up,
        r.not_tracked,
        r.largest_request_ids,
        r.largest_answer_ids,
        bytes(r.largest_answer_bytes),
        bytes(*max_answer_bytes as u64),
        crate::sim_text::num(*retry_after),
    )
}
