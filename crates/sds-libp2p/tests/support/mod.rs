//! Helpers shared by the network tests of sds-libp2p.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sds_libp2p::GossipFilter;
use sds_manager::ChannelId;

/// Drops about `percent` % of what it is shown, from a fixed seed (a 64-bit LCG).
pub fn lossy(seed: u64, percent: u64) -> GossipFilter {
    let state = AtomicU64::new(seed);
    Arc::new(move |_: &ChannelId, _: &[u8]| {
        let next = state
            .load(Ordering::Relaxed)
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state.store(next, Ordering::Relaxed);
        (next >> 33) % 100 >= percent
    })
}
