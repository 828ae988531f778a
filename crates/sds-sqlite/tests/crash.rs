//! Crash safety: a child process runs a mixed workload against a database file and is killed
//! with SIGKILL at random moments, 30 times. After each kill the database is reopened and
//! checked: every delivery the child announced is in the log, no operation is half-applied, the
//! lamport clock never went backwards; finally the workload resumes and converges.
//!
//! The child is this test binary itself, running the ignored `crash_child` test with the
//! database path in `SDS_CRASH_DB`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sds_manager::persistence::Persistence;
use sds_manager::{
    Bytes, Config, Event, ManagerConfig, MessageId, Notification, ReliabilityManager,
};
use sds_proto::engine::Channel;
use sds_sqlite::{Options, SqliteStore};

const T0: u64 = 1_700_000_000_000;
const ALICE_MESSAGES: usize = 300;
/// Messages sent to the scratch channel before it is removed.
const SCRATCH: usize = 12;

/// splitmix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Alice's messages, the same in every process: each cites her previous ones.
fn alice_messages() -> Vec<Bytes> {
    let mut alice = Channel::new("c".into(), "alice".into(), Config::default(), T0).unwrap();
    (0..ALICE_MESSAGES)
        .map(|i| {
            let b = alice
                .wrap(
                    Bytes::from(format!("alice {i}")),
                    format!("a{i}").into(),
                    T0 + i as u64,
                )
                .unwrap();
            let _ = alice.take_store_ops();
            b
        })
        .collect()
}

fn config() -> ManagerConfig {
    // Bob takes alice's messages on any channel, as a tool would.
    ManagerConfig::default()
        .with_unjoined_channels(sds_manager::UnjoinedChannels::Accept { max: 16 })
        .with_engine(
            Config::default()
                .with_max_message_history(100_000)
                .with_max_known_ids(100_000)
                .with_resend_interval(Duration::from_millis(40))
                .with_possibly_acked_resend_interval(Duration::from_millis(80))
                .with_max_resend_attempts(3)
                .with_sync_interval(Duration::from_millis(60))
                .with_repair_t_min(Duration::from_millis(20))
                .with_repair_t_max(Duration::from_millis(200)),
        )
}

/// Small message segments (about a dozen messages each), so segments rotate, empty, get
/// deleted and compacted while the process is being killed. Built with the crate feature
/// `encryption`, the store is encrypted.
fn open(path: &Path) -> SqliteStore {
    let options = Options {
        segment_bytes: 256 * 1024,
        key: cfg!(feature = "encryption").then(|| sds_sqlite::StoreKey::new([5u8; 32]).unwrap()),
        ..Options::default()
    };
    SqliteStore::open_with_options(path, options).unwrap()
}

fn manager(path: &Path) -> ReliabilityManager {
    let store = open(path);
    ReliabilityManager::new("bob", config(), Arc::new(store)).unwrap()
}

/// The workload: alice's messages in a random order (with repeats), interleaved with own sends,
/// marks, a scratch channel created and removed, and the periodic tasks running underneath.
/// Every delivery is printed ("ready <id>") once its operation has returned, i.e. is durable.
async fn run_workload(path: &Path, seed: u64, rounds: usize) {
    let m = manager(path);
    let mut rx = m.subscribe();
    m.start_periodic_tasks().await;
    let alice = alice_messages();
    let mut rng = seed;
    let out = std::io::stdout();
    for k in 0..rounds {
        let i = (next(&mut rng) % ALICE_MESSAGES as u64) as usize;
        let _ = m.unwrap_received_message(alice[i].clone()).await;
        match k % 11 {
            3 => {
                let id = format!("b-{seed}-{k}");
                let _ = m.wrap_outgoing_message(&b"from bob"[..], id, "c").await;
            }
            6 => {
                let target = format!("a{}", next(&mut rng) % ALICE_MESSAGES as u64);
                let _ = m
                    .mark_dependencies_met(&[MessageId::from(target)], "c")
                    .await;
            }
            9 => {
                // Bytes that die in bulk: segments empty out (deleted) or hold mostly dead
                // bytes (compacted). Removed first too, in case a kill left a previous
                // round's messages: at most SCRATCH are ever there.
                let _ = m.remove_channel("scratch").await;
                for j in 0..SCRATCH {
                    let _ = m
                        .wrap_outgoing_message(&b"tmp"[..], format!("s{k}-{j}"), "scratch")
                        .await;
                }
                let _ = m.remove_channel("scratch").await;
            }
            _ => {}
        }
        let mut lock = out.lock();
        while let Ok(n) = rx.try_recv() {
            if let Notification::Event(Event::MessageReady { message_id, .. }) = n {
                let _ = writeln!(lock, "ready {message_id}");
            }
        }
        let _ = lock.flush();
    }
    m.cleanup().await;
}

#[test]
#[ignore = "run by crash_test in a child process"]
fn crash_child() {
    let Ok(path) = std::env::var("SDS_CRASH_DB") else {
        return;
    };
    let seed: u64 = std::env::var("SDS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run_workload(Path::new(&path), seed, usize::MAX));
}

/// What must hold in the database after any crash.
async fn check(path: &Path, announced: &[String], min_lamport: i64) -> i64 {
    let store = open(path);
    let snap = store.load_channel(&"c".into()).await.unwrap();
    let logged: std::collections::HashSet<String> = snap
        .log
        .iter()
        .filter(|e| !e.is_met_marker())
        .map(|e| e.message_id.to_string())
        .collect();
    for id in announced {
        assert!(
            logged.contains(id),
            "announced delivery of {id} is not in the log"
        );
    }
    for e in &snap.outgoing {
        assert!(
            logged.contains(&e.message_id.to_string()),
            "outgoing {} without its log entry",
            e.message_id
        );
    }
    for e in &snap.incoming {
        assert!(
            !logged.contains(&e.message_id.to_string()),
            "{} both buffered and logged",
            e.message_id
        );
    }
    let lamport = snap.lamport.unwrap_or(i64::MIN);
    assert!(
        lamport >= min_lamport,
        "lamport went back from {min_lamport} to {lamport}"
    );
    // The scratch channel: at most one round's sends, each with its log entry (a removal is
    // all or nothing).
    let scratch = store.load_channel(&"scratch".into()).await.unwrap();
    assert!(scratch.outgoing.len() <= SCRATCH);
    assert_eq!(scratch.outgoing.len(), scratch.log.len());
    for (o, l) in scratch.outgoing.iter().zip(&scratch.log) {
        assert_eq!(o.message_id, l.message_id);
        assert_eq!(o.bytes, l.bytes);
    }
    lamport
}

#[test]
fn crash_test() {
    let dir: PathBuf = std::env::temp_dir().join(format!("sds-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("sds.db");
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = 0x5eed_u64;
    let mut lamport = i64::MIN;
    let mut kills = 0;
    let mut announced_total = 0;
    for run in 0..30u64 {
        let mut child = Command::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SDS_CRASH_DB", &db)
            .env("SDS_CRASH_SEED", (run + 1).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let seen = seen.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(id) = line.strip_prefix("ready ") {
                        seen.lock().unwrap().push(id.to_string());
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(80 + next(&mut rng) % 320));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        reader.join().unwrap();
        let announced = seen.lock().unwrap().clone();
        announced_total += announced.len();
        lamport = rt.block_on(check(&db, &announced, lamport));
    }
    assert!(kills >= 30, "only {kills} kills");
    assert!(
        announced_total > 0,
        "the child never got to deliver anything"
    );
    // Resume without interruption: every message of alice ends up delivered.
    rt.block_on(async {
        let m = manager(&db);
        for b in alice_messages() {
            m.unwrap_received_message(b).await.unwrap();
        }
        let log = m.get_log("c").await.unwrap();
        for i in 0..ALICE_MESSAGES {
            let id = format!("a{i}");
            assert!(
                log.iter().any(|e| e.message_id == id.as_str()),
                "{id} missing"
            );
        }
        assert!(m.get_incoming("c").await.unwrap().is_empty());
        check(&db, &[], lamport).await;
    });
    println!("{kills} kills, {announced_total} announced deliveries checked");
    let _ = std::fs::remove_dir_all(&dir);
}
