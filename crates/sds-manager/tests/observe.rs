//! What the manager records through the `metrics` facade (its own test binary: the recorder is
//! process-wide).

use std::collections::HashMap;
use std::sync::Arc;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use sds_manager::{ManagerConfig, MemoryPersistence, ReliabilityManager};

#[tokio::test]
async fn operations_are_counted_and_timed() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let alice = ReliabilityManager::new(
        "alice",
        ManagerConfig::default(),
        Arc::new(MemoryPersistence::new()),
    )
    .unwrap();
    let bob = ReliabilityManager::new(
        "bob",
        ManagerConfig::default(),
        Arc::new(MemoryPersistence::new()),
    )
    .unwrap();
    bob.join_channel("c").await.unwrap();
    let m1 = alice
        .wrap_outgoing_message(&b"one"[..], "m1", "c")
        .await
        .unwrap();
    let m2 = alice
        .wrap_outgoing_message(&b"two"[..], "m2", "c")
        .await
        .unwrap();
    bob.unwrap_received_message(m2.clone()).await.unwrap();
    bob.unwrap_received_message(m1.clone()).await.unwrap();
    bob.unwrap_received_message(m1.clone()).await.unwrap();

    let mut counters: HashMap<String, u64> = HashMap::new();
    let mut gauges: HashMap<String, f64> = HashMap::new();
    let mut batches = 0;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<String> = key.labels().map(|l| l.value().to_string()).collect();
        let name = if labels.is_empty() {
            key.name().to_string()
        } else {
            format!("{}{{{}}}", key.name(), labels.join(","))
        };
        match value {
            DebugValue::Counter(c) => {
                counters.insert(name, c);
            }
            DebugValue::Gauge(g) => {
                gauges.insert(name, g.into_inner());
            }
            DebugValue::Histogram(h) if name == "sds_store_batch_seconds" => batches = h.len(),
            DebugValue::Histogram(_) => {}
        }
    }
    assert_eq!(counters["sds_sent_total"], 2);
    assert_eq!(counters["sds_received_total{buffered}"], 1);
    assert_eq!(counters["sds_received_total{delivered}"], 1);
    assert_eq!(counters["sds_received_total{duplicate}"], 1);
    assert_eq!(counters["sds_delivered_total"], 2);
    assert_eq!(counters["sds_missing_dependencies_total"], 1);
    let wire = (m1.len() + m2.len()) as u64;
    assert_eq!(counters["sds_bytes_out_total"], wire);
    assert_eq!(counters["sds_bytes_in_total"], wire + m1.len() as u64);
    // Two wraps and the three unwraps that changed something (the duplicate stores nothing).
    assert!(batches >= 4, "{batches} batches timed");
    // Alice's two unacknowledged messages and bob's two logged, plus alice's own log.
    assert_eq!(gauges["sds_outgoing_unacknowledged"], 2.0);
    assert_eq!(gauges["sds_incoming_buffered"], 0.0);
    assert_eq!(gauges["sds_log_entries"], 4.0);
}
