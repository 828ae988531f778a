//! Live exchange between the real `@waku/sds` 0.0.8 `MessageChannel` and `sds peer --profile
//! spec` through pipes (`scripts/interop/exchange.mjs`): out-of-order arrival, delivery in
//! causal order, acknowledgements both ways and an SDS-R repair answered by @waku/sds.
//!
//! Runs only with `SDS_INTEROP=1` (`.ci/run` sets it) and when `node` is installed; otherwise
//! it prints a `SKIP` line saying why, past the test harness's capture, and passes without
//! testing.

use std::process::Command;

use serde_json::Value;

#[path = "../../sds-proto/tests/support/interop.rs"]
mod interop;
use interop::{node_package, report_skip};

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

#[test]
fn live_exchange_with_a_waku_sds_message_channel() {
    let Some(dir) = node_package() else {
        return report_skip("live_exchange_with_a_waku_sds_message_channel");
    };
    let out = Command::new("node")
        .arg("exchange.mjs")
        .arg(env!("CARGO_BIN_EXE_sds"))
        .current_dir(&dir)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "exchange.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let alice = strings(&r["aliceIds"]);
    // alice's third message first: buffered, waiting for the two before it; then all three
    // delivered in order.
    assert_eq!(r["firstKind"], "buffered");
    assert_eq!(strings(&r["firstMissing"]), alice[..2]);
    assert_eq!(strings(&r["bobDelivered"]), alice);
    // bob's reply: @waku/sds delivers it and takes it as acknowledging all three.
    assert_eq!(strings(&r["aliceDelivered"]), ["b1"]);
    assert_eq!(strings(&r["aliceAcknowledged"]), alice);
    // alice's next message acknowledges bob's.
    assert_eq!(strings(&r["bobAcknowledged"]), ["b1"]);
    // Repair: bob lacks a5, asks with its next message; @waku/sds rebroadcasts it once and bob
    // delivers a5, then the a6 that waited for it.
    let a5 = r["a5"].as_str().unwrap();
    assert_eq!(strings(&r["bobMissing"]), [a5]);
    assert_eq!(r["rebroadcastCount"], 1);
    let after = strings(&r["bobDeliveredAfterRepair"]);
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], a5);
    let history = strings(&r["bobHistory"]);
    assert_eq!(history.len(), 8);
    assert!(history.ends_with(&[after[0], after[1], "b2"]));
}
