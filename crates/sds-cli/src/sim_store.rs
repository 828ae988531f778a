//! `sds sim --store sqlite:DIR`: the members' SQLite stores after the run. They can take
//! gigabytes (50 members restarting for 20 virtual minutes), so they are removed at the end,
//! with what the run created of DIR, unless `--keep-store` asks to keep them; either way stderr
//! says where they were and how much they took.

use std::path::{Path, PathBuf};

/// The directories of `dir`'s path that do not exist yet, deepest first: what creating `dir`
/// will create, and what removing the run's stores may remove again.
pub(crate) fn missing_dirs(dir: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .filter(|d| !d.as_os_str().is_empty())
        .take_while(|d| !d.exists())
        .map(Path::to_path_buf)
        .collect()
}

/// A byte count for people: `2.9 GB`, `840 kB`.
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1} GB", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.0} kB", n as f64 / 1e3),
        n => format!("{n} bytes"),
    }
}

/// After a run with stores in `dir`: keeps them and says so, or removes them and the
/// directories in `created` (deepest first) that are then empty, and says so.
pub(crate) fn finish(
    dir: &Path,
    participants: usize,
    keep: bool,
    created: &[PathBuf],
) -> Result<(), String> {
    let size = sds_sim::stores_size(dir, participants)
        .map_err(|e| format!("cannot measure the stores in {}: {e}", dir.display()))?;
    if keep {
        eprintln!(
            "sds sim: the members' stores are kept in {} ({} files p0000.db…, {})",
            dir.display(),
            participants,
            bytes(size)
        );
        return Ok(());
    }
    sds_sim::remove_stores(dir, participants)
        .map_err(|e| format!("cannot remove the stores in {}: {e}", dir.display()))?;
    // Only directories the run created, and only when empty: anything else stays.
    for d in created {
        if std::fs::remove_dir(d).is_err() {
            break;
        }
    }
    eprintln!(
        "sds sim: removed the members' stores from {} ({}); --keep-store keeps them",
        dir.display(),
        bytes(size)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(2_900_000_000), "2.9 GB");
        assert_eq!(bytes(844_000_000), "844.0 MB");
        assert_eq!(bytes(45_056), "45 kB");
        assert_eq!(bytes(12), "12 bytes");
    }

    #[test]
    fn only_directories_not_there_yet_count_as_created() {
        let base = std::env::temp_dir();
        let dir = base
            .join(format!("sds-missing-{}", std::process::id()))
            .join("a");
        assert_eq!(
            missing_dirs(&dir),
            [dir.clone(), dir.parent().unwrap().into()]
        );
        assert!(missing_dirs(&base).is_empty());
    }
}
