//! `sds sim` on the command line: options reach the scenario, the report is rendered as text,
//! JSON or a plot, and impossible settings end with status 2. The simulation's behaviour is
//! tested in `crates/sds-sim/tests/`.

use std::process::{Command, Output};

use serde_json::Value;

fn sds(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sds"))
        .args(args)
        .output()
        .expect("run sds")
}

fn report(args: &[&str]) -> Value {
    let mut all = vec!["sim", "--json", "--quiet"];
    all.extend_from_slice(args);
    let out = sds(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

#[test]
fn every_option_reaches_the_report() {
    let r = report(&[
        "--participants",
        "4",
        "--send-interval",
        "5",
        "--duration",
        "20",
        "--tail",
        "30",
        "--messages",
        "10",
        "--loss",
        "0.1",
        "--latency-min",
        "20",
        "--latency-max",
        "80",
        "--burst-every",
        "7",
        "--churn-online",
        "50",
        "--repair-t-min",
        "10",
        "--repair-t-max",
        "40",
        "--history",
        "1500",
        "--profile",
        "spec",
        "--no-repair",
        "--lost-timeout",
        "90",
        "--seed",
        "9",
    ]);
    let p = &r["parameters"];
    assert_eq!(p["participants"], 4);
    assert_eq!(p["sendIntervalS"], 5.0);
    assert_eq!(p["durationS"], 20.0);
    assert_eq!(p["tailS"], 30.0);
    assert_eq!(p["messageLimit"], 10);
    assert_eq!(p["loss"], 0.1);
    assert_eq!(p["latencyMs"], serde_json::json!([20, 80]));
    assert_eq!(p["burstEveryS"], 7.0);
    assert_eq!(p["churnOnlineS"], 50.0);
    assert_eq!(p["repairTMinS"], 10.0);
    assert_eq!(p["repairTMaxS"], 40.0);
    assert_eq!(p["history"], 1500);
    assert_eq!(p["profile"], "spec");
    assert_eq!(p["repair"], false);
    assert_eq!(p["seed"], 9);
    assert_eq!(p["lostTimeoutS"], 90.0);
    // Without a timeout (the default) the key is left out.
    assert!(
        report(&["--participants", "3", "--duration", "10", "--tail", "0"])["parameters"]
            .get("lostTimeoutS")
            .is_none()
    );
    assert!(r["messagesSent"].as_u64().unwrap() <= 10);
    assert_eq!(r["wire"]["repairs"], 0);
}

#[test]
fn the_text_report_names_the_scenario_and_the_requirements() {
    let out = sds(&[
        "sim",
        "--quiet",
        "--participants",
        "5",
        "--duration",
        "30",
        "--tail",
        "30",
        "--seed",
        "4",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(
            "SDS simulation: 5 participants, one message every 10.0 s each for 30.0 s (+30.0 s tail), loss 20 %, latency 50–500 ms, repair on (T_min 30.0 s, T_max 300.0 s), history 1000, seed 4\n"
        ),
        "{text}"
    );
    for line in [
        "  messages sent ",
        "  deliveries ",
        "  sender sees an acknowledgement within 1·S",
        "  receiver detects a missed message within 3·S",
        "  every member has a message within 6·S",
        "  on the wire: ",
        "  copies lost on first broadcast: ",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    // The requirement table lines up: every column starts (labels, "met by") or ends (the
    // numbers) at the same character in the header and in each row.
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("  requirement"))
        .take(4)
        .collect();
    assert!(rows[3].contains("within 6·S"), "{text}");
    let spans: Vec<Vec<(usize, usize)>> = rows.iter().map(|l| cells(l)).collect();
    for row in &spans {
        assert_eq!(row.len(), 5, "{text}");
        assert_eq!(row[0].0, 2, "{text}");
        for c in 1..4 {
            assert_eq!(row[c].1, spans[0][c].1, "column {c} in {text}");
        }
        assert_eq!(row[4].0, spans[0][4].0, "met by in {text}");
    }
}

/// The (start, end) character offsets of the cells of a table line: cells are separated by
/// two spaces or more.
fn cells(line: &str) -> Vec<(usize, usize)> {
    let chars: Vec<char> = line.chars().collect();
    let mut cells = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == ' ' {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !(chars[i] == ' ' && chars.get(i + 1).is_none_or(|c| *c == ' ')) {
            i += 1;
        }
        cells.push((start, i));
    }
    cells
}

#[test]
fn a_missing_delivery_is_never_rounded_away() {
    // A tail too short for repair: a few (member, message) pairs stay missing.
    let out = sds(&[
        "sim",
        "--quiet",
        "--participants",
        "8",
        "--duration",
        "60",
        "--tail",
        "20",
        "--loss",
        "0.1",
        "--seed",
        "6",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("  deliveries"))
        .unwrap_or_else(|| panic!("{text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let (got, of): (usize, usize) = (words[1].parse().unwrap(), words[3].parse().unwrap());
    assert!(got < of, "this scenario should lose something: {line}");
    assert!(
        line.ends_with(&format!(" %, {} missing)", of - got)),
        "{line}"
    );
}

#[test]
fn plot_writes_an_svg() {
    let dir = std::env::temp_dir().join(format!("sds-sim-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("run.svg");
    let out = sds(&[
        "sim",
        "--quiet",
        "--participants",
        "5",
        "--duration",
        "30",
        "--tail",
        "30",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("deliveries"), "{text}");
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg"), "{drawn}");
    // The chart itself is tested in the sds binary's plot module; here, that it is the one.
    for text in [
        "sds sim: 5 participants",
        "virtual time (s)",
        "open pairs (right axis)",
    ] {
        assert!(drawn.contains(text), "{text:?} in {drawn}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn impossible_settings_are_refused() {
    for args in [
        &["sim", "--participants", "1"][..],
        &["sim", "--loss", "1.5"],
        &["sim", "--latency-min", "900", "--latency-max", "100"],
        &["sim", "--repair-t-min", "60", "--repair-t-max", "30"],
        &["sim", "--store", "postgres:db"],
        &["sim", "--restart-rate", "20"],
        &["sim", "--keep-store"],
    ] {
        let out = sds(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

/// A small run with restarts from SQLite stores in `store`, and more options.
fn run_with_stores(store: &std::path::Path, more: &[&str]) -> Output {
    let spec = format!("sqlite:{}", store.display());
    let mut args = vec![
        "sim",
        "--quiet",
        "--participants",
        "4",
        "--duration",
        "40",
        "--tail",
        "30",
        "--store",
        &spec,
        "--restart-rate",
        "30",
    ];
    args.extend_from_slice(more);
    let out = sds(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_members_stores_are_removed_at_the_end_unless_kept() {
    let base = std::env::temp_dir().join(format!("sds-sim-stores-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);

    // A directory the run creates, two levels deep: all of it goes, and stderr says so.
    let created = base.join("new").join("stores");
    let out = run_with_stores(&created, &[]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("removed the members' stores") && said.contains("--keep-store"),
        "{said}"
    );
    assert!(!base.join("new").exists());

    // A directory that was there: the stores go, what else it held stays.
    let mine = base.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "mine").unwrap();
    run_with_stores(&mine, &["--json"]);
    let left: Vec<_> = std::fs::read_dir(&mine)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notes.txt"]);

    // --keep-store keeps them, and says where and how much.
    let kept = base.join("kept");
    let out = run_with_stores(&kept, &["--keep-store"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("kept in") && said.contains(&kept.display().to_string()),
        "{said}"
    );
    for p in 0..4 {
        assert!(kept.join(format!("p{p:04}.db")).exists());
        assert!(kept.join(format!("p{p:04}.db-messages")).is_dir());
    }
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn adversaries_are_run_against_the_clean_run() {
    let small = [
        "--participants",
        "8",
        "--duration",
        "60",
        "--tail",
        "300",
        "--seed",
        "3",
        "--hostile-rate",
        "4",
    ];
    let mut args = small.to_vec();
    args.extend(["--adversary", "flood,clock", "--hostile", "3"]);
    let c = report(&args);
    assert_eq!(
        c["adversaries"],
        serde_json::json!(["flood", "clock", "flood"])
    );
    assert_eq!(c["attack"]["rate"], 4.0);
    for run in ["clean", "attacked"] {
        assert_eq!(c[run]["parameters"]["participants"], 8);
        // Members give up on a gap after the engine's default timeout, with hostile ones.
        assert_eq!(c[run]["parameters"]["lostTimeoutS"], 600.0);
        assert_eq!(c[run]["honest"]["members"], 5);
    }
    let (clean, attacked) = (&c["clean"]["honest"], &c["attacked"]["honest"]);
    assert_eq!(clean["effects"]["hostileBytes"], 0);
    assert!(attacked["effects"]["hostileBytes"].as_u64().unwrap() > 10_000);
    assert!(attacked["effects"]["refusedClock"].as_u64().unwrap() > 100);
    let ratio = c["completenessRatio"].as_f64().unwrap();
    let expected = attacked["outcomes"]["completeness"].as_f64().unwrap()
        / clean["outcomes"]["completeness"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 1e-12);
    assert!(c["amplification"].is_number());

    // As text: the honest outcomes side by side.
    let mut text_args = vec!["sim", "--quiet", "--adversary", "repair-amplification"];
    text_args.extend_from_slice(&small);
    let out = sds(&text_args);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("SDS simulation under attack: 7 honest and 1 hostile member (repair-amplification), 4 attacks per second each, 8 participants,"),
        "{text}"
    );
    for line in [
        "  honest members                                 clean       attacked\n",
        "  completeness                                 100.00 %",
        "  deliveries out of causal order                      0              0\n",
        "  deliveries of a message delivered before            0              0\n",
        "  most bytes one member held for others ",
        "  hostile: ",
        "bytes rebroadcast beyond the clean run per hostile byte ",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
}

#[test]
fn impossible_adversaries_are_refused() {
    for args in [
        &["sim", "--adversary", "meteor"][..],
        &["sim", "--hostile", "2"],
        &["sim", "--adversary", "flood", "--hostile", "0"],
        &["sim", "--participants", "3", "--adversary", "flood,clock"],
        &["sim", "--adversary", "flood", "--hostile-rate", "0"],
        &["sim", "--lost-timeout", "-1"],
    ] {
        let out = sds(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn retrieval_is_reported_next_to_the_same_run_without_it() {
    let small = [
        "--participants",
        "12",
        "--duration",
        "90",
        "--tail",
        "120",
        "--loss",
        "0.3",
        "--seed",
        "2",
    ];
    let mut args = vec!["--retrieval"];
    args.extend(small);
    let both = report(&args);
    let mut keys: Vec<&str> = both
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["with", "without"]);
    // The run without is `sds sim` without the flag, byte for byte.
    assert_eq!(both["without"], report(&small));
    assert!(both["without"].get("retrieval").is_none());
    let stats = &both["with"]["retrieval"];
    assert!(stats["requests"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["settings"]["maxIdsPerRequest"], 64);
    let within = |r: &Value| {
        r["eventualConsistency"]["fractionConsistentWithinRequirement"]
            .as_f64()
            .unwrap()
    };
    assert!(within(&both["with"]) > within(&both["without"]));

    let mut text_args = vec!["sim", "--quiet", "--retrieval"];
    text_args.extend(small);
    let out = sds(&text_args);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("SDS simulation without and with retrieval: 12 participants"),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("every member has a message within 6·S")
        })
        .unwrap_or_else(|| panic!("{text}"));
    // Both shares, as the JSON has them (all messages within 6·S with retrieval here).
    let without = format!("{:.1} %", 100.0 * within(&both["without"]));
    assert_eq!(within(&both["with"]), 1.0);
    assert!(
        row.contains(&without) && row.trim_end().ends_with("100 %"),
        "{row}"
    );
    assert!(text.contains("  retrieval: "), "{text}");
}
