//! Two `sds peer` processes exchanging messages through pipes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::Value;

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Kept open: the peer may still write to it.
    _stderr: BufReader<ChildStderr>,
    /// The object of the `ready` line on stderr.
    ready: Value,
    /// What stderr said before it.
    before_ready: Vec<String>,
}

impl Peer {
    fn start(participant: &str) -> Peer {
        Peer::start_with(participant, &[])
    }

    fn start_with(participant: &str, options: &[&str]) -> Peer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sds"));
        command
            .args(["peer", "--participant", participant])
            .args(options);
        if !options.contains(&"--store") {
            // Not the default file in the working directory: every test starts afresh.
            command.args(["--store", "none"]);
        }
        Peer::spawn(command)
    }

    /// Starts the peer and waits for its `ready` line on stderr.
    fn spawn(mut command: Command) -> Peer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sds peer");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut before_ready = Vec::new();
        let ready = loop {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "no ready line: {before_ready:?}"
            );
            match line.trim_end().strip_prefix("sds peer: ready ") {
                Some(object) => break serde_json::from_str(object).expect("a JSON object"),
                None => before_ready.push(line.trim_end().to_string()),
            }
        };
        Peer {
            child,
            stdin,
            stdout,
            _stderr: stderr,
            ready,
            before_ready,
        }
    }

    fn send(&mut self, command: &str) -> Value {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{command}: {e}: {line}"))
    }

    fn ok(&mut self, command: &str) -> Value {
        let v = self.send(command);
        assert_eq!(v["ok"], true, "{command}: {v}");
        v
    }

    fn quit(mut self) {
        writeln!(self.stdin, "quit").unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

fn events(v: &Value, kind: &str) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == kind)
        .map(|e| e["messageId"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_peers_exchange_out_of_order_and_acknowledge() {
    let mut alice = Peer::start("alice");
    let mut bob = Peer::start_with("bob", &["--store", "memory"]);
    alice.ok("hint m1 hex:aa55");
    let m1 = alice.ok("wrap chat m1 6f6e65")["bytes"]
        .as_str()
        .unwrap()
        .to_string();
    let m2 = alice.ok("wrap chat m2 74776f")["bytes"]
        .as_str()
        .unwrap()
        .to_string();

    // m2 first: bob reports m1 missing, with alice's hint for it.
    let r = bob.ok(&format!("unwrap {m2}"));
    assert_eq!(r["content"], "74776f");
    assert_eq!(r["channelId"], "chat");
    assert_eq!(r["missingDeps"][0]["messageId"], "m1");
    assert_eq!(r["missingDeps"][0]["retrievalHint"], "aa55");
    assert_eq!(events(&r, "missingDependencies"), ["m2"]);
    // m1 arrives: delivered, then m2.
    let r = bob.ok(&format!("unwrap {m1}"));
    assert_eq!(events(&r, "messageReady"), ["m1", "m2"]);
    assert_eq!(
        bob.ok("history chat")["history"],
        serde_json::json!(["m1", "m2"])
    );
    // The store reads them back after the first delivery's sequence.
    let first = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "messageReady")
        .unwrap()["sequence"]
        .as_u64()
        .unwrap();
    let log = bob.ok(&format!("log chat {first}"));
    assert_eq!(log["messages"][0]["messageId"], "m2");
    assert_eq!(log["messages"][0]["content"], "74776f");
    assert_eq!(log["messages"][0]["senderId"], "alice");
    assert_eq!(bob.ok("log chat 0 1")["messages"][0]["messageId"], "m1");
    assert_eq!(bob.send("log chat x")["ok"], false);

    // bob's reply cites both: alice hears they were received.
    let empty = bob.send("wrap chat b1 -");
    assert_eq!(empty["ok"], false, "empty content is refused");
    let b1 = bob.ok("wrap chat b1 616e73776572")["bytes"]
        .as_str()
        .unwrap()
        .to_string();
    let r = alice.ok(&format!("unwrap {b1}"));
    assert_eq!(events(&r, "messageSent"), ["m1", "m2"]);
    assert_eq!(events(&r, "messageReady"), ["b1"]);
    let state = alice.ok("state chat");
    assert_eq!(state["outgoing"], serde_json::json!([]));

    // Errors are replies, not crashes.
    assert_eq!(alice.send("unwrap zz")["ok"], false);
    assert_eq!(alice.send("frobnicate")["ok"], false);
    assert_eq!(alice.send("wrap onlyonearg")["ok"], false);
    alice.quit();
    bob.quit();
}

// EPH-01..04 through `sds peer --profile spec`; EPH-03 on the default profile.
#[test]
fn spec_peers_exchange_ephemeral_messages() {
    let mut a = Peer::start_with("alice", &["--profile", "spec"]);
    let mut b = Peer::start_with("bob", &["--profile", "spec"]);
    let sent = a.ok("ephemeral ch e1 747970696e67");
    let got = b.ok(&format!("unwrap {}", sent["bytes"].as_str().unwrap()));
    assert_eq!(got["kind"], "ephemeral");
    assert_eq!(got["content"], "747970696e67");
    let evs = got["events"].as_array().unwrap();
    assert_eq!(evs.len(), 1, "{got}");
    assert_eq!(evs[0]["event"], "ephemeral");
    assert_eq!(evs[0]["senderId"], "alice");
    assert_eq!(evs[0]["content"], "747970696e67");
    // Nothing was kept on either side.
    assert_eq!(b.ok("history ch")["history"], serde_json::json!([]));
    assert_eq!(a.ok("state ch")["outgoing"], serde_json::json!([]));
    // Empty content is refused.
    assert_eq!(a.send("ephemeral ch e2 -")["ok"], false);
    a.quit();
    b.quit();

    let mut nim = Peer::start("carol");
    let refused = nim.send("ephemeral ch e3 6869");
    assert_eq!(refused["ok"], false);
    assert!(
        refused["error"].as_str().unwrap().contains("spec"),
        "{refused}"
    );
    nim.quit();
}

#[test]
fn by_default_a_peer_keeps_its_state_in_the_working_directory() {
    let dir = std::env::temp_dir().join(format!("sds-peer-default-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let start = |options: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sds"));
        command
            .args(["peer", "--participant", "dora/1"])
            .args(options)
            .current_dir(&dir);
        Peer::spawn(command)
    };
    // The first run syncs every operation; either durability reads the same file.
    let mut dora = start(&["--durability", "full"]);
    // Its first screen says where state goes, and the ready line names every path it keeps.
    assert!(
        dora.before_ready
            .iter()
            .any(|l| l.contains("no --store given") && l.contains("working directory")),
        "{:?}",
        dora.before_ready
    );
    let real = dir.canonicalize().unwrap();
    let db = real.join("sds-peer-dora_1.db");
    assert_eq!(dora.ready["participant"], "dora/1");
    assert_eq!(dora.ready["store"], format!("sqlite:{}", db.display()));
    let named: Vec<std::path::PathBuf> = dora.ready["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().into())
        .collect();
    dora.ok("wrap chat m1 6869");
    // While the peer runs, the directory holds what the ready line names and nothing else.
    let mut present: Vec<std::path::PathBuf> = std::fs::read_dir(&real)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    present.sort();
    let mut expected = named.clone();
    expected.sort();
    assert_eq!(present, expected);
    dora.quit();
    // The participant id names the file, made safe for a file name.
    assert_eq!(named[0], db);
    assert!(db.exists());
    assert!(real.join("sds-peer-dora_1.db-messages").is_dir());
    let mut dora = start(&[]);
    let history = dora.ok("history chat");
    assert_eq!(history["history"], serde_json::json!(["m1"]), "{history}");
    dora.quit();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A line that is not UTF-8, or longer than the limit, gets an error reply; the peer goes on.
#[test]
fn the_ready_line_names_the_store_and_what_it_keeps() {
    let p = Peer::start("alice");
    assert_eq!(
        p.ready,
        serde_json::json!({"participant": "alice", "store": "none", "paths": []})
    );
    assert!(p.before_ready.is_empty(), "{:?}", p.before_ready);
    p.quit();
    let p = Peer::start_with("", &["--store", "memory"]);
    assert_eq!(p.ready["store"], "memory");
    assert_eq!(p.ready["participant"], "");
    p.quit();
}

#[test]
fn bad_lines_get_an_error_reply_and_the_peer_goes_on() {
    let mut p = Peer::start_with("bob", &["--max-line-bytes", "1000"]);
    p.stdin.write_all(b"wrap chat m1 \xff\xfe\n").unwrap();
    let v = p.send("state chat");
    // The reply to the bad line comes first.
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("UTF-8"), "{v}");
    let mut line = String::new();
    p.stdout.read_line(&mut line).unwrap();
    let state: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(state["ok"], true, "{state}");
    let long = format!("wrap chat m2 {}", "61".repeat(2_500));
    let v = p.send(&long);
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("too long"), "{v}");
    p.ok("wrap chat m3 6869");
    p.quit();
}

// LAMPORT-07: the default (nim-sds) profile counts seconds, as nim-sds does; the unit can be set.
#[test]
fn the_clock_counts_seconds_on_the_nim_sds_profile_unless_told_otherwise() {
    let lamport_after_a_wrap = |options: &[&str]| {
        let mut p = Peer::start_with("alice", options);
        p.ok("wrap chat m1 6869");
        let l = p.ok("state chat")["lamport"].as_i64().unwrap();
        p.quit();
        l
    };
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let seconds = lamport_after_a_wrap(&[]);
    assert!(
        (now_s..now_s + 60).contains(&seconds),
        "{seconds} vs {now_s}"
    );
    let ms = lamport_after_a_wrap(&["--lamport-unit", "milliseconds"]);
    assert!((now_s * 1_000..(now_s + 60) * 1_000).contains(&ms), "{ms}");
    let spec = lamport_after_a_wrap(&["--profile", "spec"]);
    assert!(
        (now_s * 1_000..(now_s + 60) * 1_000).contains(&spec),
        "{spec}"
    );
    let refused = Command::new(env!("CARGO_BIN_EXE_sds"))
        .args(["peer", "--store", "none", "--lamport-unit", "hours"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        refused.stdout.is_empty(),
        "an unknown unit is refused at start"
    );
    assert!(!String::from_utf8_lossy(&refused.stderr).contains("ready"));
    assert!(!refused.status.success());
}

// SYNC-06: what a received sync cites and we lack is reported, like a message's missing
// dependencies.
#[test]
fn a_received_sync_reports_what_it_cites_and_we_lack() {
    let mut alice = Peer::start("alice");
    let mut bob = Peer::start("bob");
    alice.ok("hint m1 hex:aa55");
    alice.ok("wrap chat m1 6f6e65");
    let sync = alice.ok("sync chat")["bytes"].as_str().unwrap().to_string();
    let r = bob.ok(&format!("unwrap {sync}"));
    assert_eq!(r["kind"], "sync");
    assert_eq!(r["missingDeps"][0]["messageId"], "m1");
    assert_eq!(r["missingDeps"][0]["retrievalHint"], "aa55");
    let reported: Vec<&Value> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "missingMessages")
        .collect();
    assert_eq!(reported.len(), 1, "{r}");
    assert_eq!(reported[0]["messageId"], r["messageId"]);
    assert_eq!(reported[0]["missingDeps"][0]["messageId"], "m1");
    alice.quit();
    bob.quit();
}

// REPAIR-13 through `sds peer`: one rebroadcast is one `transmit` of kind `repair` — what a
// driver broadcasts — and one `repairReady`, which only informs (docs/peer.md). A driver that
// broadcasts the transmits and nothing else sends the repair once, and it arrives.
#[test]
fn a_repair_is_broadcast_once_through_its_transmit() {
    let fast_repair = ["--repair-t-min", "0", "--repair-t-max", "1"];
    let mut alice = Peer::start_with("alice", &fast_repair);
    let mut bob = Peer::start_with("bob", &fast_repair);
    let m1 = alice.ok("wrap chat m1 6f6e65")["bytes"]
        .as_str()
        .unwrap()
        .to_string();
    let m2 = alice.ok("wrap chat m2 74776f")["bytes"]
        .as_str()
        .unwrap()
        .to_string();
    // bob lost m1; m2 tells him, and his next message asks for it.
    assert_eq!(
        events(&bob.ok(&format!("unwrap {m2}")), "missingDependencies"),
        ["m2"]
    );
    std::thread::sleep(std::time::Duration::from_millis(5));
    let b1 = bob.ok("wrap chat b1 6869")["bytes"]
        .as_str()
        .unwrap()
        .to_string();
    alice.ok(&format!("unwrap {b1}"));
    // alice, the original sender, answers at her next sweep.
    let swept = alice.ok("sweep");
    let all = swept["events"].as_array().unwrap();
    let transmits: Vec<&Value> = all
        .iter()
        .filter(|e| e["event"] == "transmit" && e["kind"] == "repair")
        .collect();
    assert_eq!(transmits.len(), 1, "{swept}");
    assert_eq!(transmits[0]["messageId"], "m1");
    assert_eq!(transmits[0]["bytes"], m1.as_str());
    let informed: Vec<&Value> = all.iter().filter(|e| e["event"] == "repairReady").collect();
    assert_eq!(informed.len(), 1, "{swept}");
    assert_eq!(informed[0]["messageId"], "m1");
    // The driver broadcasts the transmit: bob delivers m1, then m2.
    for t in &transmits {
        let r = bob.ok(&format!("unwrap {}", t["bytes"].as_str().unwrap()));
        assert_eq!(events(&r, "messageReady"), ["m1", "m2"]);
    }
    alice.quit();
    bob.quit();
}

/// `--metrics ADDR` serves the library's metrics as Prometheus text.
#[test]
fn metrics_are_served_as_prometheus_text() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut p = Peer::start_with("alice", &["--metrics", &addr]);
    p.ok("wrap chat m1 6869");
    p.ok("wrap chat m2 6869");
    let mut body = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            use std::io::Read;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                .unwrap();
            body.clear();
            let _ = s.read_to_string(&mut body);
            if body.contains("sds_sent_total") {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(body.contains("sds_sent_total 2"), "{body}");
    p.quit();
}

/// `--log` shows the library's events on stderr: here a message buffered for a missing
/// dependency, inside the operation's span.
#[test]
fn log_shows_the_librarys_events_on_stderr() {
    let mut alice = Peer::start("alice");
    alice.ok("wrap chat m1 6f6e65");
    let m2 = alice.ok("wrap chat m2 74776f")["bytes"]
        .as_str()
        .unwrap()
        .to_string();
    alice.quit();
    let mut bob = Command::new(env!("CARGO_BIN_EXE_sds"))
        .args([
            "--log",
            "sds=debug",
            "peer",
            "--participant",
            "bob",
            "--store",
            "none",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(bob.stdin.take().unwrap(), "unwrap {m2}").unwrap();
    let out = bob.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dependencies missing"), "{stderr}");
    assert!(stderr.contains("op=\"unwrap\""), "{stderr}");
}
