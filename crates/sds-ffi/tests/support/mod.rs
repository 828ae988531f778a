//! What the tests that link libsds share: where the library is, and building it once.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

/// target/<profile>: where cargo put libsds.a and libsds.so for this test run.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .to_path_buf()
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `cargo test` builds only what tests link against; the C library itself is built here, once,
/// with the same profile and target directory as the tests.
pub fn ensure_library() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let dir = target_dir();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "sds-ffi", "--lib"]);
        // The library the tests were built for: with the same features.
        if cfg!(feature = "encryption") {
            cmd.args(["--features", "encryption"]);
        }
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(root) = dir.parent() {
            cmd.arg("--target-dir").arg(root);
        }
        let status = cmd.status().expect("run cargo build for libsds");
        assert!(status.success(), "building libsds failed");
    });
}
