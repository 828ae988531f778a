//! `sds bench …`: benchmark B1 (pipeline) of the project's benchmark definitions.

use std::process::ExitCode;
use std::time::Instant;

use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use sds_manager::{ManagerConfig, NoopPersistence, Notification, Persistence, ReliabilityManager};
use sds_proto::engine::{Channel, Config, Event};
use sds_proto::Bytes;
use sds_sqlite::{Durability, Options, Spin, SqliteStore};
use serde_json::{json, Value};

use crate::{key_from_file, CmdResult};
use sds_sim::Rng;

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// B1 (and B2 with --store sqlite:PATH): one sender wraps N messages, one receiver unwraps
    /// them in the given order.
    ///
    /// Prints one JSON line:
    /// {"n","order","store","spin","inline","durability","encrypted","wrapPerSec",
    /// "unwrapPerSec","wrapLatencyUs","unwrapLatencyUs","delivered","peakRssBytes"} (spin,
    /// inline, durability and encrypted: null without an SQLite store; the latencies,
    /// {"p50","p99","p999","max"} of single calls in microseconds: null without the manager).
    Pipeline(PipelineArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Arrival {
    /// msg-0 .. msg-(N-1).
    InOrder,
    /// A seeded shuffle.
    Random,
    /// msg-(N-1) down to msg-0.
    Reverse,
}

impl Arrival {
    fn name(self) -> &'static str {
        match self {
            Arrival::InOrder => "in-order",
            Arrival::Random => "random",
            Arrival::Reverse => "reverse",
        }
    }
}

#[derive(Args)]
pub(crate) struct PipelineArgs {
    /// Number of messages.
    #[arg(long, default_value_t = 20_000)]
    n: usize,
    /// Order in which the receiver gets the messages.
    #[arg(long, value_enum, default_value = "in-order")]
    order: Arrival,
    /// Seed of the random order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where state goes: `none` drives the protocol engine directly with no store (B1);
    /// `noop` and `sqlite:PATH` go through the async manager, with no-op persistence or with
    /// an SQLite database committed before each call returns (B2). The databases PATH (the
    /// sender's) and PATH.bob are deleted first if they exist, and left after the run.
    #[arg(long, default_value = "none")]
    store: StoreArg,
    /// No progress bar (drawn on stderr only when it is a terminal).
    #[arg(long)]
    quiet: bool,
    /// With `--store sqlite:PATH`: when the store's threads busy-wait (the store's
    /// `Options::spin`): never, only while operations come back to back, or after every one.
    #[arg(long, value_enum, default_value = "adaptive")]
    spin: SpinArg,
    /// With `--store sqlite:PATH`: the stores' durability (`Options::durability`): `normal`
    /// (the default: an operation is in the WAL when its call returns, durable against power
    /// loss at the next sync round) or `full` (an operation is on disk when its call returns).
    #[arg(long, value_enum, default_value = "normal")]
    durability: DurabilityArg,
    /// With `--store sqlite:PATH`: hand every operation to the store's connection thread, even
    /// when it could run on the caller's thread (the store's `Options::inline` off).
    #[arg(long)]
    no_inline: bool,
    /// With `--store sqlite:PATH`: encrypt both stores with the key in this file (see `sds peer
    /// --key-file`; needs a build with the feature `encryption`).
    #[arg(long, value_name = "PATH")]
    key_file: Option<std::path::PathBuf>,
}

/// A progress bar with the time left, on stderr, over the wraps then the unwraps of a run:
/// drawn only when stderr is a terminal, never on stdout, and moved every 256 messages so that
/// it costs the measured loops next to nothing.
struct Progress(Option<ProgressBar>);

impl Progress {
    fn new(n: usize, quiet: bool) -> Progress {
        use std::io::IsTerminal as _;
        if quiet || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new(2 * n as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:>6} [{wide_bar}] {pos}/{len} messages, about {eta} left",
        ) {
            bar.set_style(style);
        }
        Progress(Some(bar))
    }

    /// Starts a phase (`wrap`, `unwrap`) at `done` messages of both phases.
    fn phase(&self, name: &'static str, done: usize) {
        if let Some(bar) = &self.0 {
            bar.set_message(name);
            bar.set_position(done as u64);
        }
    }

    /// `done` messages of both phases are done.
    fn at(&self, done: usize) {
        if done.is_multiple_of(256) {
            if let Some(bar) = &self.0 {
                bar.set_position(done as u64);
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// The `--durability` argument.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum DurabilityArg {
    /// `Durability::Normal`.
    Normal,
    /// `Durability::Full`.
    Full,
}

impl DurabilityArg {
    fn name(self) -> &'static str {
        match self {
            DurabilityArg::Normal => "normal",
            DurabilityArg::Full => "full",
        }
    }

    fn durability(self) -> Durability {
        match self {
            DurabilityArg::Normal => Durability::Normal,
            DurabilityArg::Full => Durability::Full,
        }
    }
}

/// The `--spin` argument.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum SpinArg {
    /// Never busy-wait.
    Off,
    /// Busy-wait only while operations arrive back to back (the store's default).
    Adaptive,
    /// Busy-wait after every operation.
    Always,
}

impl SpinArg {
    fn name(self) -> &'static str {
        match self {
            SpinArg::Off => "off",
            SpinArg::Adaptive => "adaptive",
            SpinArg::Always => "always",
        }
    }

    fn spin(self) -> Spin {
        match self {
            SpinArg::Off => Spin::Off,
            SpinArg::Adaptive => Spin::Adaptive,
            SpinArg::Always => Spin::Always,
        }
    }
}

/// The `--store` argument.
#[derive(Clone, Debug)]
pub(crate) enum StoreArg {
    None,
    Noop,
    Sqlite(std::path::PathBuf),
}

impl std::str::FromStr for StoreArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(StoreArg::None),
            "noop" => Ok(StoreArg::Noop),
            _ => match s.strip_prefix("sqlite:") {
                Some(path) if !path.is_empty() => Ok(StoreArg::Sqlite(path.into())),
                _ => Err(format!(
                    "unknown store {s:?} (expected none, noop or sqlite:PATH)"
                )),
            },
        }
    }
}

impl StoreArg {
    fn name(&self) -> String {
        match self {
            StoreArg::None => "none".into(),
            StoreArg::Noop => "noop".into(),
            StoreArg::Sqlite(p) => format!("sqlite:{}", p.display()),
        }
    }
}

pub(crate) fn run(cmd: BenchCommand) -> CmdResult {
    match cmd {
        BenchCommand::Pipeline(args) => pipeline(args),
    }
}

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The inputs of one B1/B2 run.
struct Workload {
    n: usize,
    config: Config,
    now: u64,
    payloads: Vec<Bytes>,
    ids: Vec<String>,
    order: Vec<usize>,
}

impl Workload {
    fn new(args: &PipelineArgs) -> Self {
        let n = args.n;
        // B1's configuration is the default one; the receiver's buffer bounds are raised to N
        // so that the reverse and random orders, which buffer almost everything, can complete.
        let config = Config::default()
            .with_max_incoming_buffer(n.max(1))
            .with_max_incoming_buffer_bytes(usize::MAX)
            .with_max_outgoing_buffer(n.max(1));
        let payloads = (0..n)
            .map(|i| Bytes::from((0..64).map(|j| ((i + j) % 256) as u8).collect::<Vec<u8>>()))
            .collect();
        let ids = (0..n).map(|i| format!("msg-{i}")).collect();
        let mut order: Vec<usize> = (0..n).collect();
        match args.order {
            Arrival::InOrder => {}
            Arrival::Reverse => order.reverse(),
            Arrival::Random => {
                let mut rng = Rng(args.seed);
                for i in (1..n).rev() {
                    let j = (rng.next() % (i as u64 + 1)) as usize;
                    order.swap(i, j);
                }
            }
        }
        Workload {
            n,
            config,
            now: 1_700_000_000_000,
            payloads,
            ids,
            order,
        }
    }
}

/// Phase timings and deliveries.
struct Outcome {
    wrap_secs: f64,
    unwrap_secs: f64,
    delivered: usize,
    /// How long single wrap and unwrap calls took, in microseconds (through the manager).
    latencies: Option<(Vec<u64>, Vec<u64>)>,
}

/// Percentiles of call times, in microseconds: what a caller waits for one call.
fn latency_json(mut us: Vec<u64>) -> Value {
    us.sort_unstable();
    let at = |q: f64| {
        let i = ((us.len() as f64 - 1.0) * q).round() as usize;
        us.get(i).copied()
    };
    json!({"p50": at(0.5), "p99": at(0.99), "p999": at(0.999), "max": us.last()})
}

/// B1: the engine alone, store operations dropped.
fn run_engine(w: Workload, progress: &Progress) -> Result<Outcome, String> {
    let new_channel = |who: &str| {
        Channel::new("bench".into(), who.into(), w.config.clone(), w.now).map_err(|e| e.to_string())
    };
    let mut alice = new_channel("alice")?;
    let mut bob = new_channel("bob")?;
    let mut wrapped = Vec::with_capacity(w.n);
    progress.phase("wrap", 0);
    let start = Instant::now();
    for (i, payload) in w.payloads.into_iter().enumerate() {
        let bytes = alice
            .wrap(payload, w.ids[i].as_str().into(), w.now)
            .map_err(|e| format!("wrap {}: {e}", w.ids[i]))?;
        drop(alice.take_store_ops());
        while alice.poll_event().is_some() {}
        wrapped.push(bytes);
        progress.at(i + 1);
    }
    let wrap_secs = start.elapsed().as_secs_f64();
    let mut delivered = 0usize;
    progress.phase("unwrap", w.n);
    let start = Instant::now();
    for (k, &i) in w.order.iter().enumerate() {
        bob.unwrap(wrapped[i].clone(), w.now)
            .map_err(|e| format!("unwrap {}: {e}", w.ids[i]))?;
        drop(bob.take_store_ops());
        while let Some(e) = bob.poll_event() {
            if matches!(e, Event::MessageReady { .. }) {
                delivered += 1;
            }
        }
        progress.at(w.n + k + 1);
    }
    Ok(Outcome {
        wrap_secs,
        unwrap_secs: start.elapsed().as_secs_f64(),
        delivered,
        latencies: None,
    })
}

/// B1 with no-op persistence, or B2, through the async manager: every call commits its batch
/// before it returns.
fn run_manager(
    w: Workload,
    store: &StoreArg,
    progress: &Progress,
    options: Options,
) -> Result<Outcome, String> {
    let persistence = |who: &str| -> Result<Arc<dyn Persistence>, String> {
        Ok(match store {
            StoreArg::Sqlite(path) => {
                let file = if who == "alice" {
                    path.clone()
                } else {
                    let mut p = path.clone().into_os_string();
                    p.push(format!(".{who}"));
                    p.into()
                };
                sds_sqlite::remove_database(&file)
                    .map_err(|e| format!("cannot remove {}: {e}", file.display()))?;
                Arc::new(
                    SqliteStore::open_with_options(&file, options.clone())
                        .map_err(|e| e.to_string())?,
                )
            }
            _ => Arc::new(NoopPersistence),
        })
    };
    // As the engine's buffer bounds (Workload::new), the manager's budget of held bytes is lifted:
    // reverse and random orders at B2's N hold more than its default 512 MiB.
    let config = ManagerConfig::default()
        .with_engine(w.config.clone())
        .with_max_held_bytes(usize::MAX);
    let alice = ReliabilityManager::new("alice", config.clone(), persistence("alice")?)
        .map_err(|e| e.to_string())?;
    let bob =
        ReliabilityManager::new("bob", config, persistence("bob")?).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        // Room for every delivery of the run: one unwrap may deliver all that waited.
        let mut events = bob.subscribe_with_capacity(w.n + 1_024);
        bob.join_channel("bench")
            .await
            .map_err(|e| format!("join: {e}"))?;
        let mut wrapped = Vec::with_capacity(w.n);
        let (mut wrap_us, mut unwrap_us) = (Vec::with_capacity(w.n), Vec::with_capacity(w.n));
        progress.phase("wrap", 0);
        let start = Instant::now();
        for (i, payload) in w.payloads.into_iter().enumerate() {
            let call = Instant::now();
            let bytes = alice
                .wrap_outgoing_message(payload, w.ids[i].as_str(), "bench")
                .await
                .map_err(|e| format!("wrap {}: {e}", w.ids[i]))?;
            wrap_us.push(call.elapsed().as_micros() as u64);
            wrapped.push(bytes);
            progress.at(i + 1);
        }
        let wrap_secs = start.elapsed().as_secs_f64();
        let mut delivered = 0usize;
        progress.phase("unwrap", w.n);
        let start = Instant::now();
        for (k, &i) in w.order.iter().enumerate() {
            let call = Instant::now();
            bob.unwrap_received_message(wrapped[i].clone())
                .await
                .map_err(|e| format!("unwrap {}: {e}", w.ids[i]))?;
            unwrap_us.push(call.elapsed().as_micros() as u64);
            while let Ok(n) = events.try_recv() {
                if matches!(n, Notification::Event(Event::MessageReady { .. })) {
                    delivered += 1;
                }
            }
            progress.at(w.n + k + 1);
        }
        Ok(Outcome {
            wrap_secs,
            unwrap_secs: start.elapsed().as_secs_f64(),
            delivered,
            latencies: Some((wrap_us, unwrap_us)),
        })
    })
}

fn pipeline(args: PipelineArgs) -> CmdResult {
    let n = args.n;
    let w = Workload::new(&args);
    let progress = Progress::new(n, args.quiet);
    let outcome = match &args.store {
        StoreArg::None => run_engine(w, &progress)?,
        store => run_manager(
            w,
            store,
            &progress,
            Options {
                durability: args.durability.durability(),
                spin: args.spin.spin(),
                inline: !args.no_inline,
                key: key_from_file(args.key_file.as_deref())?,
                ..Options::default()
            },
        )?,
    };
    drop(progress);
    let (wrap_latency, unwrap_latency) = match outcome.latencies {
        Some((wrap, unwrap)) => (Some(latency_json(wrap)), Some(latency_json(unwrap))),
        None => (None, None),
    };
    let out = json!({
        "n": n,
        "order": args.order.name(),
        "store": args.store.name(),
        // Only the SQLite store has threads that may spin.
        "spin": matches!(args.store, StoreArg::Sqlite(_)).then(|| args.spin.name()),
        // Only NORMAL operations run inline (`Options::inline`).
        "inline": matches!(args.store, StoreArg::Sqlite(_))
            .then_some(!args.no_inline && matches!(args.durability, DurabilityArg::Normal)),
        "durability": matches!(args.store, StoreArg::Sqlite(_)).then(|| args.durability.name()),
        "encrypted": matches!(args.store, StoreArg::Sqlite(_)).then_some(args.key_file.is_some()),
        "wrapPerSec": (n as f64 / outcome.wrap_secs).round(),
        "unwrapPerSec": (n as f64 / outcome.unwrap_secs).round(),
        "wrapLatencyUs": wrap_latency,
        "unwrapLatencyUs": unwrap_latency,
        "delivered": outcome.delivered,
        "peakRssBytes": peak_rss_bytes(),
    });
    println!("{out}");
    if outcome.delivered == n {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(format!(
            "only {} of {n} messages were delivered",
            outcome.delivered
        ))
    }
}
