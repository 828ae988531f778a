//! Four `sds chat` processes on localhost TCP: scripted sends, one process killed (SIGKILL)
//! and restarted from its database mid-run; messages sent while it was down must reach it,
//! and at the end every process must print the same history.

#![cfg(feature = "chat")]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The whole test must finish well within a minute; each wait below takes from this.
const BUDGET: Duration = Duration::from_secs(45);

struct Chat {
    name: String,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Chat {
    fn start(name: &str, dir: &Path, peer: Option<&str>) -> Chat {
        Chat::start_with(name, dir, peer, &[])
    }

    fn start_with(name: &str, dir: &Path, peer: Option<&str>, extra: &[&str]) -> Chat {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sds"));
        command.args([
            "chat",
            "--name",
            name,
            "--channel",
            "room",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--sync-interval",
            "300",
            "--resend-interval",
            "1000",
        ]);
        command.arg("--data").arg(dir.join(name));
        if let Some(peer) = peer {
            command.args(["--peer", peer]);
        }
        command.args(extra);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sds chat");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Chat {
            name: name.to_string(),
            child,
            stdin,
            lines,
        }
    }

    fn write(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Reads lines until one starts with `prefix`; returns it.
    fn expect(&mut self, prefix: &str, deadline: Instant) -> String {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: no line starting with {prefix:?} in time", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{}: exited before printing {prefix:?}", self.name)
                }
            }
        }
    }

    /// The address it listens on, from its `listening` line.
    fn address(&mut self, deadline: Instant) -> String {
        let line = self.expect("listening /ip4/127.0.0.1/", deadline);
        line["listening ".len()..].to_string()
    }

    /// The history it prints for `/history`.
    fn history(&mut self, deadline: Instant) -> Vec<String> {
        self.write("/history");
        self.expect("history-begin", deadline);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("{}: history cut short: {e}", self.name));
            if let Some(n) = line.strip_prefix("history-end ") {
                assert_eq!(n.parse::<usize>().unwrap(), lines.len());
                return lines;
            }
            lines.push(line);
        }
    }

    fn say(&mut self, texts: &[String]) {
        for text in texts {
            self.write(text);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn quit(mut self) {
        self.write("/quit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("{} did not quit", self.name);
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn texts(name: &str, from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("{name} says {i}")).collect()
}

fn fresh_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn four_chats_one_killed_and_restarted_end_with_the_same_history() {
    let start = Instant::now();
    let deadline = start + BUDGET;
    let dir = fresh_dir();
    let mut a = Chat::start("a", &dir, None);
    let hub = a.address(deadline);
    let mut b = Chat::start("b", &dir, Some(&hub));
    let mut c = Chat::start("c", &dir, Some(&hub));
    let mut d = Chat::start("d", &dir, Some(&hub));
    for chat in [&mut b, &mut c, &mut d] {
        chat.expect("peer-connected", deadline);
    }

    // Round 1: everyone talks.
    for chat in [&mut a, &mut b, &mut c, &mut d] {
        let name = chat.name.clone();
        chat.say(&texts(&name, 0, 5));
    }
    // c sees everyone's first round before it dies (so what it misses is only what follows).
    loop {
        if c.history(deadline).len() == 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // c dies without warning; the others talk on.
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    drop(c);
    for chat in [&mut a, &mut b, &mut d] {
        let name = chat.name.clone();
        chat.say(&texts(&name, 5, 10));
    }

    // c comes back on its database, and everyone says a little more.
    let mut c = Chat::start("c", &dir, Some(&hub));
    let resumed = c.expect("resumed ", deadline);
    assert!(resumed.starts_with("resumed 20 messages"), "{resumed}");
    c.expect("peer-connected", deadline);
    for chat in [&mut a, &mut b, &mut c, &mut d] {
        let name = chat.name.clone();
        chat.say(&texts(&name, 10, 12));
    }

    // Everyone ends with the same 43 messages, in the same order.
    let expected = 20 + 15 + 8;
    let histories = loop {
        let histories: Vec<Vec<String>> = [&mut a, &mut b, &mut c, &mut d]
            .into_iter()
            .map(|chat| chat.history(deadline))
            .collect();
        if histories[0].len() == expected && histories.iter().all(|h| *h == histories[0]) {
            break histories;
        }
        assert!(
            Instant::now() < deadline,
            "histories never converged: sizes {:?}",
            histories.iter().map(Vec::len).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // What was said while c was down reached c.
    for name in ["a", "b", "d"] {
        for text in texts(name, 5, 10) {
            let line = format!("{name}: {text}");
            assert!(
                histories[2].iter().any(|h| h.ends_with(&line)),
                "c lacks {line}"
            );
        }
    }
    for chat in [a, b, c, d] {
        chat.quit();
    }
    eprintln!("converged in {:?}", start.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--waku`: two chats speaking Waku relay (envelopes, a content topic for the room) talk.
#[test]
fn two_chats_over_waku_relay_framing_talk() {
    let deadline = Instant::now() + BUDGET;
    // Not `fresh_dir`: the other test of this process uses that one at the same time.
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chat-waku-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let waku = ["--waku", "--content-topic", "/chat-test/1/room/proto"];
    let mut a = Chat::start_with("a", &dir, None, &waku);
    assert_eq!(
        a.expect("waku ", deadline),
        "waku /waku/2/rs/0/0 /chat-test/1/room/proto"
    );
    let hub = a.address(deadline);
    let mut b = Chat::start_with("b", &dir, Some(&hub), &waku);
    b.expect("peer-connected", deadline);
    b.say(&texts("b", 0, 2));
    a.say(&texts("a", 0, 2));
    for chat in [&mut a, &mut b] {
        let mut history = chat.history(deadline);
        while history.len() < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            history = chat.history(deadline);
        }
        assert_eq!(history.len(), 4, "{}: {history:?}", chat.name);
    }
    a.quit();
    b.quit();
    let _ = std::fs::remove_dir_all(&dir);
}
