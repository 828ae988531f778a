//! Builds the C test program against libsds.a with the system C compiler and runs it; checks
//! that the header declares exactly the functions the library exports.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

/// target/<profile>: where cargo put libsds.a and libsds.so for this test run.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .to_path_buf()
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `cargo test` builds only what tests link against; the C library itself is built here, once,
/// with the same profile and target directory as the tests.
fn ensure_library() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let dir = target_dir();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "sds-ffi", "--lib"]);
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

fn build_c_test() -> PathBuf {
    let out = std::env::temp_dir().join(format!("sds_c_test_{}", std::process::id()));
    ensure_library();
    let lib = target_dir().join("libsds.a");
    assert!(lib.exists(), "{} not built", lib.display());
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .arg(manifest_dir().join("tests/c/test_libsds.c"))
        .arg("-I")
        .arg(manifest_dir().join("include"))
        .args(["-Wall", "-Werror", "-O1", "-g", "-o"])
        .arg(&out)
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm"])
        .status()
        .expect("run the C compiler");
    assert!(status.success(), "C test program did not compile");
    out
}

#[test]
fn c_program_exercises_every_function() {
    let exe = build_c_test();
    let out = Command::new(&exe).output().expect("run the C test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    let _ = std::fs::remove_file(&exe);
    assert!(out.status.success(), "C test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");
}

#[test]
fn header_declares_exactly_the_exported_functions() {
    ensure_library();
    let header = std::fs::read_to_string(manifest_dir().join("include/libsds.h")).unwrap();
    let mut declared: Vec<String> = header
        .lines()
        .filter(|l| !l.trim_start().starts_with("//") && !l.contains("typedef"))
        .filter_map(|l| {
            let start = l.find("Sds")?;
            let rest = &l[start..];
            let end = rest.find('(')?;
            Some(rest[..end].to_string())
        })
        .collect();
    declared.sort();
    let nm = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(target_dir().join("libsds.so"))
        .output()
        .expect("run nm");
    assert!(nm.status.success());
    let mut exported: Vec<String> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (_, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
            (kind == "T" && name.starts_with("Sds")).then(|| name.to_string())
        })
        .collect();
    exported.sort();
    assert_eq!(declared, exported);
    assert_eq!(declared.len(), 11);
}
