//! The `WakuMessage` envelope against js-waku itself (`@waku/core` 0.0.40, `@waku/proto`
//! 0.0.15): the bytes we encode equal the bytes js-waku's encoder and protobuf codec produce
//! for the same message, and js-waku decodes our bytes to the same fields.
//!
//! Runs only with `SDS_INTEROP=1` (`.ci/run` sets it) and when `node` is installed; otherwise it
//! prints a `SKIP` line saying why, past the test harness's capture, and passes without testing.
//! `scripts/interop/setup-waku.sh` installs the packages with npm into a scratch folder under
//! `target/`; `scripts/interop/waku_envelope.mjs` answers the requests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sds_libp2p::waku::{WakuMessage, DEFAULT_PUBSUB_TOPIC};

#[path = "../../sds-proto/tests/support/interop.rs"]
mod interop;

/// The folder with the packages installed, or `None` with a `SKIP` line printed. Set up once
/// per process: the tests run at the same time, and one must not rewrite the program while the
/// other runs it.
fn js_waku() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(set_up).clone()
}

fn set_up() -> Option<PathBuf> {
    if let Some(reason) = interop::skip_reason() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP waku_js: live js-waku comparison: {reason}"
        );
        return None;
    }
    Some(interop::install("setup-waku.sh", "js-waku-0.0.40"))
}

/// Sends `requests` to `waku_envelope.mjs`; its answer lines.
fn ask(dir: &Path, requests: &[String]) -> Vec<String> {
    let lines = interop::node_lines(dir, "waku_envelope.mjs", requests);
    assert_eq!(lines.len(), requests.len(), "one answer per request");
    lines
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Payloads of sizes around the varint length boundaries, filled from a fixed seed.
fn payloads() -> Vec<Vec<u8>> {
    let mut state = 7_u64;
    [1_usize, 2, 127, 128, 300, 16_383, 16_384, 70_000]
        .into_iter()
        .map(|len| {
            (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (state >> 33) as u8
                })
                .collect()
        })
        .collect()
}

const TOPICS: [&str; 3] = [
    "/sds/1/6c6f626279/proto",
    "/my-app/1/room-✓/proto",
    "/a/1/b/proto",
];

#[test]
fn envelopes_match_js_waku_byte_for_byte() {
    let Some(dir) = js_waku() else { return };
    let mut requests = Vec::new();
    let mut ours = Vec::new();
    for (i, payload) in payloads().iter().enumerate() {
        let topic = TOPICS[i % TOPICS.len()];
        // js-waku's encoder stamps milliseconds (as nanoseconds).
        let ms = 1_700_000_000_000_i64 + i as i64 * 977;
        requests.push(format!("encoder {} {topic} {ms}", hex(payload)));
        ours.push(format!(
            "{} {DEFAULT_PUBSUB_TOPIC}",
            hex(&WakuMessage::new(payload.clone(), topic, ms * 1_000_000).encode())
        ));
        // Any nanosecond timestamp, negative ones and the extremes included, and `meta`.
        // Not `i64::MIN`: @waku/proto 0.0.15 writes it as another number (its zigzag step
        // overflows there), where we write the varint of 2^64 - 1.
        for ns in [
            0_i64,
            1,
            -1,
            1_764_000_000_123_456_789,
            i64::MIN + 1,
            i64::MAX,
        ] {
            let meta = (i % 2 == 1).then(|| vec![i as u8; 64]);
            let meta_arg = meta.as_deref().map(hex).unwrap_or_else(|| "-".into());
            requests.push(format!("proto {} {topic} {ns} {meta_arg}", hex(payload)));
            let mut m = WakuMessage::new(payload.clone(), topic, ns);
            m.meta = meta;
            ours.push(hex(&m.encode()));
        }
    }
    let theirs = ask(&dir, &requests);
    for ((request, ours), theirs) in requests.iter().zip(&ours).zip(&theirs) {
        assert_eq!(ours, theirs, "for {:.80}", request);
    }
    eprintln!("{} envelopes equal to js-waku's", ours.len());
}

#[test]
fn js_waku_reads_our_envelopes() {
    let Some(dir) = js_waku() else { return };
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for (i, payload) in payloads().iter().enumerate() {
        let topic = TOPICS[i % TOPICS.len()];
        let ns = 1_764_000_000_123_456_789_i64 + i as i64;
        requests.push(format!(
            "decode {}",
            hex(&WakuMessage::new(payload.clone(), topic, ns).encode())
        ));
        expected.push(format!("{} {topic} 0 {ns} false", hex(payload)));
    }
    assert_eq!(ask(&dir, &requests), expected);
    // And what js-waku encodes, we read.
    let theirs = ask(
        &dir,
        &["encoder 0a0b /a/1/b/proto 1700000000123".to_string()],
    );
    let bytes = unhex(theirs[0].split(' ').next().expect("hex"));
    let m = WakuMessage::decode(&bytes).expect("decode js-waku's envelope");
    assert_eq!(
        m,
        WakuMessage::new(vec![0x0a, 0x0b], "/a/1/b/proto", 1_700_000_000_123_000_000)
    );
}
