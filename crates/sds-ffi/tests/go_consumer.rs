//! Runs the Go consumer of libsds (`tests/go`, cgo, `go test -race`): results read after their
//! callback returned, events before results, one context hammered by goroutines, cleanup while
//! periodic tasks run.
//!
//! The Go toolchain is `$SDS_GO`, else `go` on PATH, else the one `scripts/go/setup.sh` installs
//! into `target/go`. Without one the test prints `SKIP go consumer test: …` and passes, unless
//! `SDS_REQUIRE_GO=1` (CI), where it fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{ensure_library, manifest_dir, target_dir};

/// `go version` of a candidate toolchain, or why it cannot be used.
fn go_version(go: &Path) -> Result<String, String> {
    let out = Command::new(go)
        .arg("version")
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", go.display()))?;
    if !out.status.success() {
        return Err(format!("{} version failed", go.display()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The Go toolchain to use, or why there is none.
fn find_go() -> Result<(PathBuf, String), String> {
    if let Some(go) = std::env::var_os("SDS_GO").filter(|v| !v.is_empty()) {
        let go = PathBuf::from(go);
        return go_version(&go)
            .map(|v| (go, v))
            .map_err(|e| format!("SDS_GO: {e}"));
    }
    let on_path = PathBuf::from("go");
    if let Ok(v) = go_version(&on_path) {
        return Ok((on_path, v));
    }
    let installed = target_dir()
        .parent()
        .map(|root| root.join("go/bin/go"))
        .filter(|p| p.exists());
    match installed {
        Some(go) => go_version(&go).map(|v| (go, v)),
        None => Err(
            "no Go toolchain (set SDS_GO, put go on PATH, or run scripts/go/setup.sh target/go)"
                .into(),
        ),
    }
}

#[test]
fn go_consumer_with_race_detector() {
    let (go, version) = match find_go() {
        Ok(found) => found,
        Err(reason) => {
            assert!(
                std::env::var("SDS_REQUIRE_GO").as_deref() != Ok("1"),
                "SDS_REQUIRE_GO=1 but {reason}"
            );
            println!("SKIP go consumer test: {reason}");
            return;
        }
    };
    ensure_library();
    let lib_dir = target_dir();
    assert!(
        lib_dir.join("libsds.so").exists(),
        "{} not built",
        lib_dir.join("libsds.so").display()
    );
    let scratch = lib_dir.join("go-consumer");
    let include = manifest_dir().join("include");
    let ld_path = match std::env::var_os("LD_LIBRARY_PATH") {
        Some(old) if !old.is_empty() => {
            let mut p = lib_dir.clone().into_os_string();
            p.push(":");
            p.push(old);
            p
        }
        _ => lib_dir.clone().into_os_string(),
    };
    println!(
        "{version}: go test -race in tests/go against {}",
        lib_dir.display()
    );
    let out = Command::new(&go)
        .args(["test", "-race", "-count=1", "-timeout=300s", "-v", "./..."])
        .current_dir(manifest_dir().join("tests/go"))
        .env("CGO_ENABLED", "1")
        .env("CGO_CFLAGS", format!("-g -O2 -I{}", include.display()))
        // The shared library, found at run time through the rpath (and LD_LIBRARY_PATH).
        .env(
            "CGO_LDFLAGS",
            format!("-L{0} -Wl,-rpath,{0}", lib_dir.display()),
        )
        .env("LD_LIBRARY_PATH", ld_path)
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOTELEMETRY", "off")
        // Nothing written to $HOME: caches and Go's config folder live under target/.
        .env("GOCACHE", scratch.join("cache"))
        .env("GOPATH", scratch.join("gopath"))
        .env("GOMODCACHE", scratch.join("gopath/pkg/mod"))
        .env("XDG_CONFIG_HOME", scratch.join("config"))
        .output()
        .expect("run go test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "go test -race failed:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("WARNING: DATA RACE"), "{stdout}");
}
