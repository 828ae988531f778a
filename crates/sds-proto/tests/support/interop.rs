//! Set-up shared by the live @waku/sds tests (included by path from more than one crate).

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// The folder holding the installed `@waku/sds` 0.0.8 and the interop programs, or `None`
/// (with the reason printed) when the live tests are off (`SDS_INTEROP` is not `1`) or `node`
/// is missing.
pub fn node_package() -> Option<PathBuf> {
    if std::env::var("SDS_INTEROP").as_deref() != Ok("1") {
        eprintln!("SKIPPED: live @waku/sds interop (set SDS_INTEROP=1 to run it; .ci/run does)");
        return None;
    }
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED: live @waku/sds interop: `node` is not installed");
        return None;
    }
    // Both including crates live in crates/<name>.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("waku-sds-0.0.8");
    let status = Command::new("bash")
        .arg(root.join("scripts/interop/setup.sh"))
        .arg(&dir)
        .status()
        .expect("run scripts/interop/setup.sh");
    assert!(status.success(), "installing @waku/sds failed");
    Some(dir)
}

/// Says on the terminal that `test` did not run, and why. The reason `node_package` gives goes
/// through `eprintln!`, which the test harness captures and shows only for failing tests, so a
/// skipped test looked like one that passed in no time; a write to the stderr handle itself is
/// not captured.
pub fn report_skip(test: &str) {
    let reason = if std::env::var("SDS_INTEROP").as_deref() != Ok("1") {
        "SDS_INTEROP is not 1 (SDS_INTEROP=1 runs it; .ci/run sets it)"
    } else {
        "`node` is not installed"
    };
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: live @waku/sds interop: {reason}"
    );
}
