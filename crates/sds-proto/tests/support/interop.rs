//! Set-up shared by the live tests against JavaScript packages (`@waku/sds`, js-waku), included
//! by path from more than one crate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why the live interop tests do not run here (`SDS_INTEROP` is not `1`, or `node` is
/// missing), or `None` when they do.
#[allow(dead_code)]
pub fn skip_reason() -> Option<&'static str> {
    if std::env::var("SDS_INTEROP").as_deref() != Ok("1") {
        return Some("SDS_INTEROP is not 1 (SDS_INTEROP=1 runs it; .ci/run sets it)");
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("`node` is not installed");
    }
    None
}

/// Installs npm packages with `scripts/interop/<script>` into `<folder>` under the test's
/// scratch directory (the script does nothing when they are there already); the folder.
#[allow(dead_code)]
pub fn install(script: &str, folder: &str) -> PathBuf {
    // Every including crate lives in crates/<name>.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(folder);
    let status = Command::new("bash")
        .arg(root.join("scripts/interop").join(script))
        .arg(&dir)
        .status()
        .unwrap_or_else(|e| panic!("run scripts/interop/{script}: {e}"));
    assert!(status.success(), "scripts/interop/{script} failed");
    dir
}

/// Runs `node <script>` in `dir`, writes `requests` to it a line each, and returns its output
/// lines.
#[allow(dead_code)]
pub fn node_lines(dir: &Path, script: &str, requests: &[String]) -> Vec<String> {
    let mut child = Command::new("node")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn node");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for r in requests {
            writeln!(stdin, "{r}").expect("write request");
        }
    }
    let out = child.wait_with_output().expect("node output");
    assert!(out.status.success(), "{script} failed");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The folder holding the installed `@waku/sds` 0.0.8 and the interop programs, or `None`
/// (with the reason printed) when the live tests are off (`SDS_INTEROP` is not `1`) or `node`
/// is missing.
#[allow(dead_code)]
pub fn node_package() -> Option<PathBuf> {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: live @waku/sds interop: {reason}");
        return None;
    }
    Some(install("setup.sh", "waku-sds-0.0.8"))
}

/// Says on the terminal that `test` did not run, and why. The reason `node_package` gives goes
/// through `eprintln!`, which the test harness captures and shows only for failing tests, so a
/// skipped test looked like one that passed in no time; a write to the stderr handle itself is
/// not captured.
#[allow(dead_code)]
pub fn report_skip(test: &str) {
    let reason = skip_reason().unwrap_or("`node` is not installed");
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: live @waku/sds interop: {reason}"
    );
}
