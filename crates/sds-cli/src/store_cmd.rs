//! `sds store check|repair PATH`: an SQLite store's rows against their message bytes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};

use crate::{key_from_file, CmdResult};

/// `sds store …`.
#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Read every message row back from its bytes and report; changes nothing (exit 0 when the
    /// store is whole, 1 when something is damaged or the directory is not the database's).
    Check {
        /// The database file (its message bytes are in PATH-messages).
        path: PathBuf,
        /// The key of an encrypted store (see `sds peer --key-file`).
        #[arg(long, value_name = "KEY_PATH")]
        key_file: Option<PathBuf>,
    },
    /// Check, then quarantine the damaged messages: their entries are left out of loads, their
    /// rows stay. Deletes nothing. The store must not be open elsewhere.
    Repair {
        /// The database file.
        path: PathBuf,
        /// The key of an encrypted store (see `sds peer --key-file`).
        #[arg(long, value_name = "KEY_PATH")]
        key_file: Option<PathBuf>,
    },
}

fn report_json(r: &sds_sqlite::CheckReport) -> Value {
    json!({
        "path": r.path.display().to_string(),
        "clean": r.is_clean(),
        "messages": r.messages,
        "segmentBytes": r.segment_bytes,
        "damaged": r.damaged.messages.iter().map(|m| json!({
            "channelId": m.channel.to_string(),
            "messageId": m.message_id.to_string(),
            "segment": m.segment,
            "problem": format!("{:?}", m.kind),
        })).collect::<Vec<_>>(),
        "quarantined": r.quarantined,
        "mismatch": r.mismatch,
        "unreferencedSegments": r.unreferenced,
        "keptAside": r.kept_aside,
    })
}

pub(crate) fn run(cmd: StoreCommand) -> CmdResult {
    match cmd {
        StoreCommand::Check { path, key_file } => {
            let report = match key_from_file(key_file.as_deref())? {
                None => sds_sqlite::check(&path),
                Some(key) => sds_sqlite::check_with_key(&path, &key),
            }
            .map_err(|e| e.to_string())?;
            println!("{}", report_json(&report));
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        StoreCommand::Repair { path, key_file } => {
            let report = match key_from_file(key_file.as_deref())? {
                None => sds_sqlite::repair(&path),
                Some(key) => sds_sqlite::repair_with_key(&path, &key),
            }
            .map_err(|e| e.to_string())?;
            println!("{}", report_json(&report));
            Ok(ExitCode::SUCCESS)
        }
    }
}
