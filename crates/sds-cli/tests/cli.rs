//! The `sds` binary against the nim-sds golden vectors (kept in the sds-proto crate).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn sds(args: &[&str], stdin: Option<&str>) -> Output {
    sds_with_stdout(args, stdin, Stdio::piped())
}

/// Runs `sds args`, feeding it `stdin`, with its standard output going to `stdout`.
fn sds_with_stdout(args: &[&str], stdin: Option<&str>, stdout: Stdio) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sds"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sds");
    {
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    child.wait_with_output().expect("wait for sds")
}

fn vectors(name: &str) -> Value {
    vectors_of("nim-sds", name)
}

fn vectors_of(implementation: &str, name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sds-proto/tests/vectors")
        .join(implementation)
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("vector file")).expect("json")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The decode result without the error's free-text keys (`msg`, `note`, ...), which are not part
/// of what is compared.
fn comparable(mut v: Value) -> Value {
    if let Some(err) = v.get_mut("error").and_then(Value::as_object_mut) {
        err.retain(|k, _| matches!(k.as_str(), "kind" | "protoError" | "field" | "defect"));
    }
    v
}

#[test]
fn wire_decode_prints_the_vectors_decode_results() {
    let v = vectors("sds_message_codec.json");
    let mut cases: Vec<(&str, &Value)> = Vec::new();
    for c in v["encode"].as_array().unwrap() {
        cases.push((c["encoded"].as_str().unwrap(), &c["decode"]));
    }
    for group in ["legacy", "malformed"] {
        for c in v[group].as_array().unwrap() {
            cases.push((c["input"].as_str().unwrap(), &c["result"]));
        }
    }
    assert_eq!(cases.len(), 15 + 8 + 29);
    for (input, expected) in cases {
        // The empty input can only be given through stdin.
        let out = if input.is_empty() {
            sds(&["wire", "decode", "-"], Some(""))
        } else {
            sds(&["wire", "decode", input], None)
        };
        let accepted = expected["accepted"].as_bool().unwrap();
        assert_eq!(
            out.status.code(),
            Some(if accepted { 0 } else { 1 }),
            "{input}"
        );
        assert_eq!(
            comparable(stdout_json(&out)),
            comparable(expected.clone()),
            "{input}"
        );
    }
}

#[test]
fn wire_encode_reads_message_objects() {
    let v = vectors("sds_message_codec.json");
    for c in v["encode"].as_array().unwrap() {
        let out = sds(&["wire", "encode"], Some(&c["input"].to_string()));
        assert!(out.status.success(), "{}", c["name"]);
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().trim(),
            c["encoded"].as_str().unwrap(),
            "{}",
            c["name"]
        );
    }
}

#[test]
fn bloom_prints_nim_sds_parameters_and_bytes() {
    let v = vectors("bloom_filter.json");
    for f in v["filters"].as_array().unwrap() {
        let p = &f["params"];
        let mut args = vec![
            "bloom".to_string(),
            p["capacity"].to_string(),
            p["errorRate"].to_string(),
            format!("--k={}", p["k"]),
        ];
        if p["forceNBitsPerElem"].as_u64() != Some(0) {
            args.push(format!("--bits-per-element={}", p["forceNBitsPerElem"]));
        }
        for id in f["inserted"].as_array().unwrap() {
            args.push(id.as_str().unwrap().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sds(&args, None);
        assert!(out.status.success(), "{p}");
        let got = stdout_json(&out);
        assert_eq!(got["kHashes"], f["kHashes"], "{p}");
        assert_eq!(got["mBits"], f["mBits"], "{p}");
        assert_eq!(got["words"], f["words"], "{p}");
        assert_eq!(got["serialized"], f["serializedAfterInsert"], "{p}");
    }
}

#[test]
fn repair_timing_matches_the_sds_r_vectors() {
    let v = vectors("sds_r.json");
    for c in v["vectors"].as_array().unwrap() {
        let args: Vec<String> = [
            "wire".to_string(),
            "repair-timing".to_string(),
            c["participantId"].as_str().unwrap().to_string(),
            c["senderId"].as_str().unwrap().to_string(),
            c["messageId"].as_str().unwrap().to_string(),
            c["tMinMs"].to_string(),
            c["tMaxMs"].to_string(),
            c["numResponseGroups"].to_string(),
        ]
        .into();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sds(&args, None);
        assert!(out.status.success(), "{c}");
        let got = stdout_json(&out);
        assert_eq!(got["tReqMs"], c["tReqMs"], "{c}");
        assert_eq!(got["tRespMs"], c["tRespMs"], "{c}");
        assert_eq!(got["inGroup"], c["isInResponseGroup"], "{c}");
    }
}

#[test]
fn bad_input_is_a_clear_error_not_a_crash() {
    let cases: [(&[&str], Option<&str>, &str); 6] = [
        (&["wire", "decode", "xyz"], None, "not hex"),
        (&["wire", "encode"], Some("{"), "not valid JSON"),
        (
            &["wire", "encode"],
            Some("{\"messageId\":\"m\"}"),
            "lamportTimestamp",
        ),
        (&["bloom", "0", "0.01"], None, "capacity"),
        (&["bloom", "-5", "0.01"], None, "capacity"),
        (&["bloom", "10", "1.5"], None, "error rate"),
    ];
    for (args, stdin, needle) in cases {
        let out = sds(args, stdin);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn arbitrary_bytes_never_crash_decode() {
    // A fixed pseudo-random sequence (xorshift), so failures reproduce.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for round in 0..64 {
        let len = (round * 7) % 97;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let out = sds(&["wire", "decode", "-"], Some(&hex::encode(&bytes)));
        let code = out.status.code();
        assert!(matches!(code, Some(0) | Some(1)), "{bytes:02x?}: {code:?}");
        let v = stdout_json(&out);
        assert_eq!(v["accepted"] == true, code == Some(0));
    }
}

#[test]
fn bench_pipeline_delivers_everything_on_every_store() {
    let dir = std::env::temp_dir().join(format!("sds-cli-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite:{}", dir.join("b2.db").display());
    for store in ["none", "noop", db.as_str()] {
        for order in ["in-order", "random", "reverse"] {
            let out = sds(
                &[
                    "bench", "pipeline", "--n", "60", "--order", order, "--store", store,
                ],
                None,
            );
            assert!(
                out.status.success(),
                "{store} {order}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v = stdout_json(&out);
            assert_eq!(v["delivered"], 60, "{store} {order}");
            assert_eq!(v["order"], order);
            assert!(v["wrapPerSec"].as_f64().unwrap() > 0.0);
            // Call latencies through the manager: ordered percentiles of 60 calls each.
            for key in ["wrapLatencyUs", "unwrapLatencyUs"] {
                let l = &v[key];
                if store == "none" {
                    assert!(l.is_null(), "{key} without the manager: {l}");
                    continue;
                }
                let at = |q: &str| l[q].as_u64().unwrap_or_else(|| panic!("{key} {q}: {l}"));
                assert!(at("p50") <= at("p99") && at("p99") <= at("p999"), "{l}");
                assert!(at("p999") <= at("max") && at("max") > 0, "{l}");
            }
        }
    }
    for spin in ["off", "adaptive", "always"] {
        let out = sds(
            &[
                "bench", "pipeline", "--n", "60", "--store", &db, "--spin", spin,
            ],
            None,
        );
        assert!(out.status.success(), "{spin}");
        let v = stdout_json(&out);
        assert_eq!(v["delivered"], 60, "{spin}");
        assert_eq!(v["spin"], spin);
        assert_eq!(v["inline"], true);
    }
    let out = sds(
        &[
            "bench",
            "pipeline",
            "--n",
            "60",
            "--store",
            &db,
            "--no-inline",
        ],
        None,
    );
    assert!(out.status.success());
    let v = stdout_json(&out);
    assert_eq!(v["delivered"], 60);
    assert_eq!(v["inline"], false);
    assert_eq!(v["durability"], "normal");
    let out = sds(
        &[
            "bench",
            "pipeline",
            "--n",
            "30",
            "--store",
            &db,
            "--durability",
            "full",
        ],
        None,
    );
    assert!(out.status.success());
    let v = stdout_json(&out);
    assert_eq!(v["delivered"], 30);
    assert_eq!(v["durability"], "full");
    assert_eq!(v["inline"], false, "FULL operations are handed over");
    // B2's default N in reverse order: every message waits, 20,000 of them with their bloom
    // filters, more than the manager's default budget of held bytes (512 MiB), which the
    // benchmark lifts as it lifts the engine's buffer bounds.
    let out = sds(
        &[
            "bench", "pipeline", "--n", "20000", "--order", "reverse", "--store", "noop",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_json(&out)["delivered"], 20_000);
    let bad = sds(&["bench", "pipeline", "--store", "nosuch"], None);
    assert_eq!(bad.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_is_available_everywhere() {
    for args in [
        &["--help"][..],
        &["wire", "--help"],
        &["wire", "decode", "--help"],
        &["wire", "encode", "--help"],
        &["wire", "repair-timing", "--help"],
        &["bench", "pipeline", "--help"],
        &["bloom", "--help"],
        &["sim", "--help"],
        &["peer", "--help"],
        &["store", "check", "--help"],
        &["store", "repair", "--help"],
    ] {
        let out = sds(args, None);
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
}

// WIRE-14, WIRE-16: `--profile spec` speaks the layout of the @waku/sds vectors.
#[test]
fn spec_profile_wire_tools_match_the_js_vectors() {
    let v = vectors_of("js-waku-sds", "messages.json");
    let mut checked = 0;
    for c in v["vectors"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let hex = c["hex"].as_str().unwrap();
        if name.starts_with("channel_") {
            continue; // bloom filters recorded as digests; covered by sds-proto's js_vectors
        }
        let out = sds(&["wire", "decode", "--profile", "spec", hex], None);
        let got = stdout_json(&out);
        if c["protoDecodeError"].is_null() {
            assert!(out.status.success(), "{name}: {got}");
            assert_eq!(got["decoded"]["class"], c["decoded"]["class"], "{name}");
            if !c["input"].is_null() {
                // Decoding and re-encoding gives back the vector's bytes.
                let again = sds(
                    &["wire", "encode", "--profile", "spec"],
                    Some(&got["decoded"].to_string()),
                );
                assert!(again.status.success(), "{name}");
                assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), hex, "{name}");
                let from_input = sds(
                    &["wire", "encode", "--profile", "spec"],
                    Some(&c["input"].to_string()),
                );
                assert_eq!(
                    String::from_utf8_lossy(&from_input.stdout).trim(),
                    hex,
                    "{name}"
                );
            }
        } else {
            assert!(!out.status.success(), "{name}");
            assert_eq!(got["accepted"], false, "{name}");
            // The nim-sds profile takes the same bytes.
            let nim = sds(&["wire", "decode", hex], None);
            assert!(nim.status.success(), "{name}");
        }
        checked += 1;
    }
    assert_eq!(checked, 16);
}

// REPAIR-04 through the CLI.
#[test]
fn spec_profile_repair_timing_matches_the_js_vectors() {
    let v = vectors_of("js-waku-sds", "repair_timing.json");
    let now = v["currentTime"].as_u64().unwrap();
    let rows = v["rows"].as_array().expect("rows");
    assert!(!rows.is_empty());
    for r in rows {
        let args: Vec<String> = vec![
            "wire".into(),
            "repair-timing".into(),
            "--profile".into(),
            "spec".into(),
            r["participantId"].as_str().unwrap().into(),
            r["senderId"].as_str().unwrap_or("").into(),
            r["messageId"].as_str().unwrap().into(),
            v["defaults"]["tMin"].to_string(),
            v["defaults"]["tMax"].to_string(),
            "5".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sds(&args, None);
        assert!(out.status.success(), "{r}");
        let got = stdout_json(&out);
        assert_eq!(
            now + got["tReqMs"].as_u64().unwrap(),
            r["tReq_default"],
            "{r}"
        );
        assert_eq!(
            now + got["tRespMs"].as_u64().unwrap(),
            r["tResp_default"],
            "{r}"
        );
        assert_eq!(got["inGroup"], r["inResponseGroup_groups5"], "{r}");
    }
}

// BLOOM-12 through the CLI: `sds bloom --profile spec` matches @waku/sds's filters.
#[test]
fn spec_profile_bloom_matches_the_js_vectors() {
    let v = vectors_of("js-waku-sds", "bloom.json");
    for name in ["small_capacity100_err0_01", "small_capacity100_err0_01_k4"] {
        let case = &v[name];
        let o = &case["options"];
        let mut args: Vec<String> = vec![
            "bloom".into(),
            "--profile".into(),
            "spec".into(),
            o["capacity"].to_string(),
            o["errorRate"].to_string(),
        ];
        if let Some(k) = o.get("kHashes") {
            args.extend(["--k".to_string(), k.to_string()]);
        }
        args.extend(
            case["inserted"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sds(&args, None);
        assert!(out.status.success(), "{name}");
        let got = stdout_json(&out);
        assert_eq!(got["kHashes"], case["derived"]["kHashes"], "{name}");
        assert_eq!(got["mBits"], case["derived"]["totalBits"], "{name}");
        assert_eq!(got["words"], case["derived"]["words64"], "{name}");
        assert_eq!(got["serialized"], case["bytesHex"], "{name}");
    }
}

/// Runs `sds args` with `stdin` and its stdout a pipe whose reader is already gone, the state
/// `sds … | head` reaches once `head` has its lines: any write to stdout meets a broken pipe.
#[cfg(unix)]
fn sds_into_a_closed_pipe(args: &[&str], stdin: Option<&str>) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    sds_with_stdout(args, stdin, writer.into())
}

// `sds … | head`: every subcommand, however it writes stdout, ends quietly when the reader has
// gone — ended by SIGPIPE as `cat` or `seq` are (the shell's status 141), with nothing on
// stderr: no "failed printing to stdout: Broken pipe" panic, no error message.
#[cfg(unix)]
#[test]
fn every_subcommand_ends_quietly_when_its_reader_has_gone() {
    use std::os::unix::process::ExitStatusExt;
    const SIGPIPE: i32 = 13;

    let v = vectors("sds_message_codec.json");
    let hex = v["encode"][0]["encoded"]
        .as_str()
        .expect("an encoded vector");
    let message = r#"{"messageId":"m1","lamportTimestamp":1,"channelId":"ch","content":"6869"}"#;
    let cases: [(&[&str], Option<&str>); 8] = [
        (&["wire", "decode", hex], None),
        (&["wire", "decode", "-"], Some(hex)),
        (&["wire", "encode"], Some(message)),
        (
            &[
                "wire",
                "repair-timing",
                "alice",
                "bob",
                "m1",
                "30000",
                "300000",
                "1",
            ],
            None,
        ),
        (&["bloom", "1000", "0.01", "m1", "m2"], None),
        (
            &["bench", "pipeline", "--n", "200", "--order", "random"],
            None,
        ),
        (
            &[
                "sim",
                "--quiet",
                "--participants",
                "3",
                "--duration",
                "30",
                "--tail",
                "30",
            ],
            None,
        ),
        (&["peer", "--store", "none"], Some("state\n")),
    ];
    for (args, stdin) in cases {
        let out = sds_into_a_closed_pipe(args, stdin);
        // Nothing on stderr but `sds peer`'s ready line.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.starts_with("sds peer: ready {"))
            .collect();
        assert!(said.is_empty(), "sds {args:?} wrote to stderr: {stderr}");
        assert_eq!(
            out.status.signal(),
            Some(SIGPIPE),
            "sds {args:?} did not end at its first write to the closed pipe: {:?}",
            out.status
        );
    }
}

// `sds --help` says what the command does today, not only its first wire tools.
#[test]
fn help_names_what_the_command_does() {
    let out = sds(&["--help"], None);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf-8");
    let about = help.lines().next().unwrap_or_default();
    for word in [
        "simulate",
        "participant",
        "benchmarks",
        "decode",
        "bloom filters",
        "SQLite stores",
    ] {
        assert!(about.contains(word), "{word:?} missing from {about:?}");
    }
    for command in ["sim", "peer", "bench", "wire", "bloom", "store"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} missing from {help}"
        );
    }
}

/// `sds store check` reports a store's damage without changing it; `repair` quarantines the
/// damaged messages and deletes nothing.
#[test]
fn store_check_reports_damage_and_repair_quarantines_it() {
    let dir = std::env::temp_dir().join(format!("sds-store-cmd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("peer.db");
    let store = format!("sqlite:{}", db.display());
    let out = sds(
        &["peer", "--participant", "alice", "--store", &store],
        Some("wrap chat m1 6869\nwrap chat m2 6869\nquit\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = db.to_str().unwrap();
    let clean = sds(&["store", "check", path], None);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    assert_eq!(stdout_json(&clean)["messages"], 2);

    // One byte of m1's bytes flipped in its segment file.
    let segment = std::fs::read_dir(dir.join("peer.db-messages"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let damaged = sds(&["store", "check", path], None);
    assert_eq!(damaged.status.code(), Some(1));
    let report = stdout_json(&damaged);
    assert_eq!(report["damaged"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["damaged"][0]["problem"], "Checksum");
    let repaired = sds(&["store", "repair", path], None);
    assert!(
        repaired.status.success(),
        "{}",
        String::from_utf8_lossy(&repaired.stderr)
    );
    let after = sds(&["store", "check", path], None);
    assert!(after.status.success());
    assert_eq!(stdout_json(&after)["quarantined"], 1);
    assert_eq!(stdout_json(&after)["messages"], 2, "nothing deleted");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `sds args` with its stderr a terminal (a pseudo-terminal 100 columns wide) and stdout a
/// pipe; returns stdout and what reached the terminal.
#[cfg(unix)]
#[allow(unsafe_code)]
fn sds_on_a_terminal(args: &[&str]) -> (Output, String) {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two new descriptors into `master` and `slave`; the name and
    // termios pointers may be null and `size` outlives the call.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned by nothing else.
    let (mut terminal, stderr) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    };
    let child = Command::new(env!("CARGO_BIN_EXE_sds"))
        .args(args)
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn sds");
    // Read the terminal while sds runs (it would block on a full one); reading ends with an
    // error once the last copy of the other side is closed, when sds exits.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = terminal.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let out = child.wait_with_output().expect("wait for sds");
    (out, reader.join().expect("terminal reader"))
}

// A progress bar with the time left on a terminal, and only there: the output on stdout is the
// same JSON either way (with stderr a pipe, nothing at all goes to stderr: see
// every_subcommand_ends_quietly_when_its_reader_has_gone).
#[cfg(unix)]
#[test]
fn long_commands_show_progress_on_a_terminal() {
    for (args, phase) in [
        (
            &[
                "bench", "pipeline", "--n", "5000", "--order", "reverse", "--store", "noop",
            ][..],
            "wrap",
        ),
        (
            &["sim", "--json", "--participants", "10", "--duration", "60"][..],
            "",
        ),
    ] {
        let (out, terminal) = sds_on_a_terminal(args);
        assert!(out.status.success(), "sds {args:?}: {terminal}");
        let v = stdout_json(&out);
        assert!(v.is_object());
        if args[0] == "sim" {
            // --json: no bar.
            assert!(
                !terminal.contains("left"),
                "sds {args:?} drew: {terminal:?}"
            );
            continue;
        }
        assert!(
            terminal.contains(phase) && terminal.contains("left") && terminal.contains("messages"),
            "sds {args:?} drew: {terminal:?}"
        );
    }
    let (out, terminal) = sds_on_a_terminal(&["sim", "--participants", "10", "--duration", "60"]);
    assert!(out.status.success());
    assert!(
        terminal.contains("virtual") && terminal.contains("left"),
        "sds sim drew: {terminal:?}"
    );
    let (_, terminal) = sds_on_a_terminal(&["bench", "pipeline", "--n", "5000", "--quiet"]);
    assert!(terminal.is_empty(), "--quiet drew: {terminal:?}");
}

/// `--key-file`: `sds peer` keeps its store encrypted, `sds store` and `sds bench pipeline`
/// open it with the key; without the key, or with another, the store is refused, never read as
/// empty. A build without the feature `encryption` refuses the option clearly.
#[test]
fn key_file_encrypts_the_store_and_is_needed_to_open_it() {
    let dir = std::env::temp_dir().join(format!("sds-key-file-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("sds.key");
    std::fs::write(&key, [0x5au8; 32]).unwrap();
    let other = dir.join("other.key");
    std::fs::write(&other, [0xa5u8; 32]).unwrap();
    let short = dir.join("short.key");
    std::fs::write(&short, b"too short\n").unwrap();
    let (key, other, short) = (
        key.to_str().unwrap(),
        other.to_str().unwrap(),
        short.to_str().unwrap(),
    );
    let db = dir.join("peer.db");
    let path = db.to_str().unwrap();
    let store = format!("sqlite:{path}");
    let peer = |key: &str| {
        sds(
            &[
                "peer",
                "--participant",
                "alice",
                "--store",
                &store,
                "--key-file",
                key,
            ],
            Some("wrap chat m1 6869\nquit\n"),
        )
    };
    let short_key = sds(&["store", "check", path, "--key-file", short], None);
    assert_eq!(short_key.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short_key.stderr).contains("at least 16 bytes"));

    let out = peer(key);
    if !cfg!(feature = "encryption") {
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no encryption"), "{err}");
        assert!(!db.exists(), "a store was created");
        std::fs::remove_dir_all(&dir).unwrap();
        return;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clean = sds(&["store", "check", path, "--key-file", key], None);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    assert_eq!(stdout_json(&clean)["messages"], 1);
    for (args, what) in [
        (vec!["store", "check", path], "give its key"),
        (
            vec!["store", "check", path, "--key-file", other],
            "key is wrong",
        ),
        (
            vec!["store", "repair", path, "--key-file", other],
            "key is wrong",
        ),
    ] {
        let out = sds(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(what), "{args:?}: {err}");
    }
    let wrong = peer(other);
    assert_eq!(wrong.status.code(), Some(2));
    // The message is still there for the right key.
    let again = sds(
        &[
            "peer",
            "--participant",
            "alice",
            "--store",
            &store,
            "--key-file",
            key,
        ],
        Some("state chat\nquit\n"),
    );
    assert!(again.status.success());
    let state = String::from_utf8_lossy(&again.stdout);
    assert!(state.contains("m1"), "{state}");

    let bench_db = format!("sqlite:{}", dir.join("b2.db").display());
    let out = sds(
        &[
            "bench",
            "pipeline",
            "--n",
            "40",
            "--store",
            &bench_db,
            "--key-file",
            key,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = stdout_json(&out);
    assert_eq!(v["encrypted"], true);
    assert_eq!(v["delivered"], 40);
    std::fs::remove_dir_all(&dir).unwrap();
}
