//! `sds bloom …`

use std::process::ExitCode;

use clap::Args;
use sds_proto::bloom::{BloomFilter, BloomParams};
use serde_json::json;

use crate::CmdResult;

#[derive(Args)]
pub(crate) struct BloomArgs {
    /// Number of elements the filter is sized for (at least 1).
    #[arg(allow_negative_numbers = true)]
    capacity: i64,
    /// Target false-positive rate, strictly between 0 and 1 (for example 0.001).
    error_rate: f64,
    /// Ids to insert, in order.
    ids: Vec<String>,
    /// Number of hash functions; 0 computes the optimal number (nim-sds `k`).
    #[arg(long, default_value_t = 0)]
    k: u32,
    /// Force the bits per element when --k is given (nim-sds `forceNBitsPerElem`).
    #[arg(long, default_value_t = 0, requires = "k")]
    bits_per_element: u32,
}

pub(crate) fn run(args: BloomArgs) -> CmdResult {
    let params = BloomParams::with_k(
        args.capacity,
        args.error_rate,
        args.k,
        args.bits_per_element,
    )
    .map_err(|e| e.to_string())?;
    let mut filter = BloomFilter::with_params(params);
    for id in &args.ids {
        filter.insert(id.as_bytes());
    }
    let out = json!({
        "kHashes": filter.k_hashes(),
        "mBits": filter.m_bits(),
        "words": filter.word_count(),
        "serialized": hex::encode(filter.serialize()),
    });
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}
