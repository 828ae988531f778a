//! `sds`: Scalable Data Sync from the command line.
//!
//! * `sds sim`: simulate a group on a lossy network and report delivery, acknowledgement,
//!   detection and consistency against the SDS requirements.
//! * `sds peer`: one participant driven line by line, for scripts and interop tests.
//! * `sds chat`: a group chat over libp2p, its state in SQLite (cargo feature `chat`, on by
//!   default).
//! * `sds bench pipeline`: benchmarks B1 and B2 (wrap N messages, unwrap them in some order).
//! * `sds wire decode` / `sds wire encode`: convert between wire bytes (hex) and the JSON
//!   message object of the golden vectors; `sds wire repair-timing`: SDS-R timing.
//! * `sds bloom`: build a bloom filter and print its parameters and serialization.
//! * `sds store check|repair PATH`: an SQLite store's rows against their message bytes.
//!
//! `--key-file PATH` opens an encrypted SQLite store (`sds peer`, `sds store`, `sds bench
//! pipeline`); it needs a build with the feature `encryption`.
//!
//! Output to a closed pipe (`sds … | head`) ends the process quietly: see
//! `restore_default_sigpipe`.

mod bench_cmd;
mod bloom_cmd;
#[cfg(feature = "chat")]
mod chat_cmd;
mod peer_cmd;
mod plot;
mod sim_attack;
mod sim_cmd;
mod sim_pair;
mod sim_retrieval;
mod sim_store;
mod sim_text;
mod store_cmd;
mod wire_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Scalable Data Sync (SDS, SDS-R) from the command line: simulate a group on a lossy network,
/// drive one participant, run benchmarks, encode, decode and inspect messages and bloom
/// filters in the wire formats of nim-sds and @waku/sds, and check SQLite stores.
#[derive(Parser)]
#[command(name = "sds", version, propagate_version = true)]
struct Cli {
    /// Log the library's events to stderr, filtered like RUST_LOG (for example `info`,
    /// `sds=debug`); without it, RUST_LOG alone turns logging on.
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Sends the library's `tracing` output to stderr when `--log` or RUST_LOG asks for it.
fn init_logging(filter: Option<&str>) -> Result<(), String> {
    let filter = match filter {
        Some(f) => {
            tracing_subscriber::EnvFilter::try_new(f).map_err(|e| format!("--log {f:?}: {e}"))?
        }
        None => match std::env::var("RUST_LOG") {
            Ok(f) if !f.is_empty() => tracing_subscriber::EnvFilter::try_new(&f)
                .map_err(|e| format!("RUST_LOG {f:?}: {e}"))?,
            _ => return Ok(()),
        },
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init()
        .map_err(|e| format!("cannot start logging: {e}"))
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a group chat on a lossy network (virtual time) and report how SDS does.
    Sim(sim_cmd::SimArgs),
    /// Drive one participant with line commands on stdin, JSON replies on stdout
    /// (see docs/peer.md).
    ///
    /// Its state goes to SQLite files in the working directory unless --store says otherwise;
    /// the `ready` line on stderr names them.
    Peer(Box<peer_cmd::PeerArgs>),
    /// Chat with others over libp2p (TCP, QUIC; mDNS on the LAN): lines typed are sent,
    /// delivered messages print in causal order; state in SQLite under --data.
    #[cfg(feature = "chat")]
    Chat(chat_cmd::ChatArgs),
    /// Run a benchmark and print its result as one JSON line.
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
    /// Encode and decode SDS messages (hex and JSON) and compute SDS-R repair timing.
    #[command(subcommand)]
    Wire(wire_cmd::WireCommand),
    /// Build a bloom filter (nim-sds or spec profile) and print it as JSON.
    Bloom(bloom_cmd::BloomArgs),
    /// Check an SQLite store's rows against their message bytes, or quarantine the damaged.
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
}

/// Restores the default action of SIGPIPE, which the Rust runtime sets to "ignore" before `main`.
///
/// Writing to a pipe whose reader has gone (`sds … | head`) then ends the process at once and
/// quietly, as it ends `cat` or `seq`, the shell reporting status 141, instead of `println!`
/// panicking with "failed printing to stdout: Broken pipe". One call here covers every
/// subcommand, every thread and every way of writing stdout, present and future, where a
/// helper mapping `BrokenPipe` to an exit would have to wrap each write and would miss the
/// `println!`s it was not put around. Nothing is lost by dying there: the reader no longer
/// wants the output, and the SQLite stores survive a process ending at any point.
#[cfg(unix)]
#[allow(unsafe_code)]
fn restore_default_sigpipe() {
    // SAFETY: `signal` with SIG_DFL installs no handler, so no Rust code runs in signal
    // context; it is called first thing in `main`, before any other thread exists, and nothing
    // in this program relies on SIGPIPE being ignored (it opens no sockets, spawns no children).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// What a command reports back: its exit code, or an error for stderr.
pub(crate) type CmdResult = Result<ExitCode, String>;

/// The key of an encrypted SQLite store, from `--key-file PATH`: the file's bytes as they are,
/// at least 16 (for example `head -c 32 /dev/urandom > sds.key`).
pub(crate) fn key_from_file(
    path: Option<&std::path::Path>,
) -> Result<Option<sds_sqlite::StoreKey>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    let bytes = std::fs::read(path).map_err(|e| format!("--key-file {}: {e}", path.display()))?;
    sds_sqlite::StoreKey::new(bytes)
        .map(Some)
        .map_err(|e| format!("--key-file {}: {e}", path.display()))
}

fn main() -> ExitCode {
    #[cfg(unix)]
    restore_default_sigpipe();
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log.as_deref()) {
        eprintln!("sds: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Wire(cmd) => wire_cmd::run(cmd),
        Command::Bloom(args) => bloom_cmd::run(args),
        Command::Bench(cmd) => bench_cmd::run(cmd),
        Command::Sim(args) => sim_cmd::run(args),
        Command::Peer(args) => peer_cmd::run(*args),
        #[cfg(feature = "chat")]
        Command::Chat(args) => chat_cmd::run(args),
        Command::Store(cmd) => store_cmd::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("sds: error: {message}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    /// The `sds …` command lines of the README's shell blocks (after a `|`, and the
    /// `cargo run … --` form), each as its words.
    fn readme_commands() -> Vec<Vec<String>> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut shell = false;
        let mut commands = Vec::new();
        for line in readme.lines() {
            if let Some(fence) = line.strip_prefix("```") {
                shell = !shell && fence == "sh";
                continue;
            }
            let command = line.rsplit('|').next().unwrap_or(line);
            let command = command.split(" #").next().unwrap_or(command).trim();
            let command = match command.split_once("cargo run --release -p sds-cli -- ") {
                Some((_, args)) => format!("sds {args}"),
                None => command.to_string(),
            };
            if shell && command.starts_with("sds ") {
                commands.push(command.split_whitespace().map(String::from).collect());
            }
        }
        commands
    }

    // Every `sds` command the README shows is accepted as written: the options it names exist
    // and its values parse. (tests/cli.rs runs the quick ones.)
    #[test]
    fn the_readme_commands_parse_as_written() {
        let commands = readme_commands();
        assert!(commands.len() >= 15, "{commands:?}");
        for words in &commands {
            if let Err(e) = super::Cli::try_parse_from(words) {
                panic!("README: {}: {e}", words.join(" "));
            }
        }
        assert!(commands
            .iter()
            .any(|c| c.starts_with(&["sds".into(), "sim".into()])));
        let encode = ["sds", "wire", "encode"].map(String::from);
        assert!(commands.iter().any(|c| c.starts_with(&encode)));
    }
}
