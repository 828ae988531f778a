//! `sds`: command-line tools for Scalable Data Sync.
//!
//! * `sds wire decode` / `sds wire encode`: convert between wire bytes (hex) and the JSON
//!   message object of the golden vectors.
//! * `sds bloom`: build a bloom filter and print its parameters and serialization.
//! * `sds sim`: simulate a group on a lossy network and report delivery, acknowledgement,
//!   detection and consistency against the SDS requirements.
//! * `sds peer`: one participant driven line by line, for scripts and interop tests.
//! * `sds bench pipeline`: benchmark B1 (wrap N messages, unwrap them in some order).

mod bench_cmd;
mod bloom_cmd;
mod peer_cmd;
mod rng;
mod sim_cmd;
mod wire_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command-line tools for Scalable Data Sync (SDS): wire codec and bloom filters, byte-compatible
/// with nim-sds.
#[derive(Parser)]
#[command(name = "sds", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encode and decode SDS messages.
    #[command(subcommand)]
    Wire(wire_cmd::WireCommand),
    /// Build a bloom filter (nim-sds or spec profile) and print it as JSON.
    Bloom(bloom_cmd::BloomArgs),
    /// Simulate a group chat on a lossy network (virtual time) and report how SDS does.
    Sim(sim_cmd::SimArgs),
    /// Drive one participant with line commands on stdin, JSON replies on stdout
    /// (see docs/peer.md).
    Peer(peer_cmd::PeerArgs),
    /// Run a benchmark and print its result as one JSON line.
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
}

/// What a command reports back: its exit code, or an error for stderr.
pub(crate) type CmdResult = Result<ExitCode, String>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Wire(cmd) => wire_cmd::run(cmd),
        Command::Bloom(args) => bloom_cmd::run(args),
        Command::Bench(cmd) => bench_cmd::run(cmd),
        Command::Sim(args) => sim_cmd::run(args),
        Command::Peer(args) => peer_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("sds: error: {message}");
            ExitCode::from(2)
        }
    }
}
