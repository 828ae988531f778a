//! `sds sim`'s report as text: the scenario in one line, what was delivered, a table of the
//! SDS requirements, and the traffic. Column widths follow the cells (in characters, so `·`
//! counts once), and a share is never shown as 100 % or 0 % unless it is exactly that.

use sds_sim::report::{Latency, Parameters};
use sds_sim::Report;

/// A number as the JSON report writes it (`10.0`, `0.25`).
pub(crate) fn num(x: f64) -> String {
    serde_json::Value::from(x).to_string()
}

/// A decimal number without float noise: `0.3 * 100.0` is written `30`, `12.5` stays.
pub(crate) fn plain(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// `part` of `whole` as a percentage, with as many decimals as it takes for a share that is
/// not all (or not none) to read as less than 100 % (more than 0 %): `99.9 %`, `99.99999 %`,
/// `100 %` only when `part == whole`. `-` without a whole.
pub(crate) fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        return "-".into();
    }
    if part >= whole {
        return "100 %".into();
    }
    if part == 0 {
        return "0 %".into();
    }
    let share = 100.0 * part as f64 / whole as f64;
    // Twelve decimals tell apart any two counts below 10^10.
    (1..=12)
        .map(|decimals| format!("{share:.decimals$}"))
        .find(|s| s.parse::<f64>().is_ok_and(|v| v > 0.0 && v < 100.0))
        .map(|s| format!("{s} %"))
        .unwrap_or_else(|| format!("{share} %"))
}

/// `part of whole (share)`, naming how many are missing when some are.
pub(crate) fn count_of(part: usize, whole: usize) -> String {
    let missing = whole.saturating_sub(part);
    if missing == 0 {
        format!("{part} of {whole} ({})", percent(part, whole))
    } else {
        format!(
            "{part} of {whole} ({}, {missing} missing)",
            percent(part, whole)
        )
    }
}

/// The count behind `fraction` of `whole` (the report keeps fractions of known wholes).
pub(crate) fn count_in(fraction: f64, whole: usize) -> usize {
    ((fraction * whole as f64).round().max(0.0) as usize).min(whole)
}

/// Bytes for people: B, kB, MB, GB (powers of 1000).
pub(crate) fn bytes(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e9 => format!("{:.1} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1} kB", n / 1e3),
        n => format!("{n} B"),
    }
}

/// How a requirement was met: `76.9 % (685 of 2965 not in time)`.
pub(crate) fn met(part: usize, whole: usize) -> String {
    let late = whole.saturating_sub(part);
    if whole == 0 {
        "-".into()
    } else if late == 0 {
        format!("{} of {whole}", percent(part, whole))
    } else {
        format!("{} ({late} of {whole} not in time)", percent(part, whole))
    }
}

/// Rows of cells as aligned text, each line indented by two spaces; columns `right` are
/// aligned right, the others left; trailing spaces dropped.
pub(crate) fn table(rows: &[Vec<String>], right: &[bool]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(" ");
        for (c, cell) in row.iter().enumerate() {
            let pad = " ".repeat(widths[c] - cell.chars().count());
            line.push_str(if c == 0 { " " } else { "   " });
            if right.get(c).copied().unwrap_or(false) {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The scenario of a report in one line: `50 participants, one message every 10.0 s each …`.
pub(crate) fn scenario_line(p: &Parameters) -> String {
    format!(
        "{} participants, one message every {} s each for {} s (+{} s tail), loss {} %, latency {}–{} ms, repair {} (T_min {} s, T_max {} s), history {}, seed {}",
        p.participants,
        num(p.send_interval_s),
        num(p.duration_s),
        num(p.tail_s),
        plain(p.loss * 100.0),
        p.latency_ms[0],
        p.latency_ms[1],
        if p.repair { "on" } else { "off" },
        num(p.repair_t_min_s),
        num(p.repair_t_max_s),
        p.history,
        p.seed
    )
}

/// The report as the text `sds sim` prints.
pub(crate) fn render(r: &Report) -> String {
    let mut s = format!("SDS simulation: {}\n\n", scenario_line(&r.parameters));
    let p = &r.parameters;
    let sent = r.messages_sent;
    s.push_str(&table(
        &[
            vec!["messages sent".into(), sent.to_string()],
            vec![
                "deliveries".into(),
                count_of(r.deliveries, r.expected_deliveries),
            ],
            vec![
                "messages every member has".into(),
                count_of(r.messages_everywhere, sent),
            ],
            vec![
                "messages never acknowledged".into(),
                r.acknowledgement.never_acknowledged.to_string(),
            ],
        ],
        &[],
    ));
    s.push('\n');
    let ack = &r.acknowledgement.latency;
    let detection = &r.missing_detection;
    let consistency = &r.eventual_consistency;
    let missed = r.missed_on_first_broadcast;
    let row = |name: &str, lat: &Latency, met_by: String| {
        let f = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
        vec![
            name.to_string(),
            f(lat.median_send_intervals),
            f(lat.p90_send_intervals),
            f(lat.p99_send_intervals),
            met_by,
        ]
    };
    s.push_str(&table(
        &[
            vec![
                format!("requirement (S = {} s)", num(p.send_interval_s)),
                "median".into(),
                "p90".into(),
                "p99".into(),
                "met by".into(),
            ],
            row(
                "sender sees an acknowledgement within 1·S",
                ack,
                met(
                    count_in(ack.fraction_within_requirement.unwrap_or(0.0), ack.count),
                    ack.count,
                ),
            ),
            row(
                "receiver detects a missed message within 3·S",
                &detection.latency,
                met(
                    count_in(detection.fraction_detected_within_requirement, missed),
                    missed,
                ),
            ),
            row(
                "every member has a message within 6·S",
                &consistency.latency,
                met(
                    count_in(consistency.fraction_consistent_within_requirement, sent),
                    sent,
                ),
            ),
        ],
        &[false, true, true, true, false],
    ));
    s.push_str("  (median, p90, p99: time from the send, in multiples of S)\n\n");
    let wire = &r.wire;
    s.push_str(&format!(
        "  on the wire: {} broadcasts, {:.1} MB, {:.0} bytes per delivery; {} resends, {} repair rebroadcasts, {} syncs, {} repair requests\n",
        wire.transmissions,
        wire.bytes as f64 / 1e6,
        wire.bytes_per_delivery,
        wire.resends,
        wire.repairs,
        wire.syncs,
        wire.repair_requests
    ));
    s.push_str(&format!(
        "  copies lost on first broadcast: {missed}; never detected as missing: {}\n",
        detection.undetected
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_short_of_all_never_reads_as_all() {
        assert_eq!(percent(9_989_999, 9_990_000), "99.99999 %");
        assert_eq!(percent(2964, 2965), "99.97 %");
        assert_eq!(percent(1, 3), "33.3 %");
        assert_eq!(percent(5, 5), "100 %");
        assert_eq!(percent(1, 10_000_000), "0.00001 %");
        assert_eq!(percent(0, 7), "0 %");
        assert_eq!(percent(0, 0), "-");
        assert_eq!(
            count_of(9_989_999, 9_990_000),
            "9989999 of 9990000 (99.99999 %, 1 missing)"
        );
        assert_eq!(count_of(12, 12), "12 of 12 (100 %)");
        assert_eq!(met(2280, 2965), "76.9 % (685 of 2965 not in time)");
        assert_eq!(met(4, 4), "100 % of 4");
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_counted_in_characters() {
        let rows = [
            vec!["a·b·c".to_string(), "1".into(), "x".into()],
            vec!["abcdefg".to_string(), "22.5".into(), "yy".into()],
        ];
        assert_eq!(
            table(&rows, &[false, true, false]),
            "  a·b·c        1   x\n  abcdefg   22.5   yy\n"
        );
    }

    #[test]
    fn loss_is_written_without_float_noise() {
        assert_eq!(plain(0.3 * 100.0), "30");
        assert_eq!(plain(12.5), "12.5");
        assert_eq!(plain(0.0), "0");
    }
}
