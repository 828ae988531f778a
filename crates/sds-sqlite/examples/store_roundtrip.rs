//! Measures the floor of the SQLite store: round trips to its thread with a read transaction,
//! and the smallest write transaction. `cargo run --release -p sds-sqlite --example store_roundtrip`.
use sds_manager::persistence::Persistence;
use sds_sqlite::SqliteStore;
use std::time::Instant;

fn main() {
    let dir = std::env::temp_dir().join("sds-hop");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(dir.join("h.db")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = "c".into();
        let n = 5000;
        let t = Instant::now();
        for _ in 0..n {
            store.load_channel(&"nothing".into()).await.unwrap();
        }
        println!(
            "load (read tx) round trips: {:.0}/s",
            n as f64 / t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        for i in 0..n {
            store.save_lamport(&c, i).await.unwrap();
        }
        println!(
            "save_lamport (write tx): {:.0}/s",
            n as f64 / t.elapsed().as_secs_f64()
        );
    });
}
