//! `sds bench …`: benchmark B1 (pipeline) of the project's benchmark definitions.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};
use sds_proto::engine::{Channel, Config, Event};
use sds_proto::Bytes;
use serde_json::json;

use crate::CmdResult;

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// B1: one sender wraps N messages, one receiver unwraps them in the given order.
    ///
    /// Prints one JSON line:
    /// {"n","order","wrapPerSec","unwrapPerSec","delivered","peakRssBytes"}.
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
}

pub(crate) fn run(cmd: BenchCommand) -> CmdResult {
    match cmd {
        BenchCommand::Pipeline(args) => pipeline(args),
    }
}

/// splitmix64: a small, well-known generator; enough for a reproducible shuffle.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn pipeline(args: PipelineArgs) -> CmdResult {
    let n = args.n;
    // B1's configuration is the default one; the receiver's buffer bounds are raised to N so
    // that the reverse and random orders, which buffer almost everything, can complete.
    let config = Config {
        max_incoming_buffer: n.max(1),
        max_incoming_buffer_bytes: usize::MAX,
        max_outgoing_buffer: n.max(1),
        ..Config::default()
    };
    let now = 1_700_000_000_000u64;
    let new_channel = |who: &str| {
        Channel::new("bench".into(), who.into(), config.clone(), now).map_err(|e| e.to_string())
    };
    let mut alice = new_channel("alice")?;
    let mut bob = new_channel("bob")?;

    let payloads: Vec<Bytes> = (0..n)
        .map(|i| Bytes::from((0..64).map(|j| ((i + j) % 256) as u8).collect::<Vec<u8>>()))
        .collect();
    let ids: Vec<String> = (0..n).map(|i| format!("msg-{i}")).collect();

    let mut wrapped = Vec::with_capacity(n);
    let start = Instant::now();
    for (i, payload) in payloads.into_iter().enumerate() {
        let bytes = alice
            .wrap(payload, ids[i].as_str().into(), now)
            .map_err(|e| format!("wrap {}: {e}", ids[i]))?;
        drop(alice.take_store_ops());
        while alice.poll_event().is_some() {}
        wrapped.push(bytes);
    }
    let wrap_secs = start.elapsed().as_secs_f64();

    let mut order: Vec<usize> = (0..n).collect();
    match args.order {
        Arrival::InOrder => {}
        Arrival::Reverse => order.reverse(),
        Arrival::Random => {
            let mut state = args.seed;
            for i in (1..n).rev() {
                let j = (splitmix(&mut state) % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
        }
    }

    let mut delivered = 0usize;
    let start = Instant::now();
    for &i in &order {
        bob.unwrap(wrapped[i].clone(), now)
            .map_err(|e| format!("unwrap {}: {e}", ids[i]))?;
        drop(bob.take_store_ops());
        while let Some(e) = bob.poll_event() {
            if matches!(e, Event::MessageReady { .. }) {
                delivered += 1;
            }
        }
    }
    let unwrap_secs = start.elapsed().as_secs_f64();

    let out = json!({
        "n": n,
        "order": args.order.name(),
        "wrapPerSec": (n as f64 / wrap_secs).round(),
        "unwrapPerSec": (n as f64 / unwrap_secs).round(),
        "delivered": delivered,
        "peakRssBytes": peak_rss_bytes(),
    });
    println!("{out}");
    drop(wrapped);
    if delivered == n {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(format!("only {delivered} of {n} messages were delivered"))
    }
}
