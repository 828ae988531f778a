//! `sds bloom …`

use std::process::ExitCode;

use clap::Args;
use sds_proto::bloom::spec::SpecBloomFilter;
use sds_proto::bloom::{BloomFilter, BloomParams};
use sds_proto::wire::Profile;
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
    /// Wire profile: `nim-sds` (nim hash, header with the parameters, little-endian words) or
    /// `spec` (murmur3, bare big-endian words, as @waku/sds).
    #[arg(long, default_value = "nim-sds")]
    profile: Profile,
}

pub(crate) fn run(args: BloomArgs) -> CmdResult {
    let params = BloomParams::with_k(
        args.capacity,
        args.error_rate,
        args.k,
        args.bits_per_element,
    )
    .map_err(|e| e.to_string())?;
    let out = match args.profile {
        Profile::NimSds => {
            let mut filter = BloomFilter::with_params(params);
            for id in &args.ids {
                filter.insert(id.as_bytes());
            }
            json!({
                "kHashes": filter.k_hashes(),
                "mBits": filter.m_bits(),
                "words": filter.word_count(),
                "serialized": hex::encode(filter.serialize()),
            })
        }
        Profile::Spec => {
            let mut filter = SpecBloomFilter::with_params(params);
            for id in &args.ids {
                filter.insert(id.as_bytes());
            }
            json!({
                "kHashes": filter.k_hashes(),
                "mBits": filter.m_bits(),
                "words": filter.words().len(),
                "serialized": hex::encode(filter.to_bytes()),
            })
        }
    };
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}
