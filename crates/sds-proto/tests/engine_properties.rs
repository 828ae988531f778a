//! Invariants of the engine under arbitrary arrival orders (property tests): the log stays
//! sorted by (lamport, id); nothing is delivered twice; every delivered message's dependencies
//! were delivered first; once everything has arrived, every receiver's log is the same.

use std::collections::HashSet;

use bytes::Bytes;
use proptest::prelude::*;
use sds_proto::engine::{Channel, Config, Event};
use sds_proto::wire::nim;
use sds_proto::{HistoryEntry, SdsMessage};

const T0: u64 = 1_700_000_000_000;

/// A random causal graph: message i cites some of the messages before it.
#[derive(Debug, Clone)]
struct Graph {
    /// (lamport, dependencies) per message.
    messages: Vec<(i64, Vec<usize>)>,
}

fn graph() -> impl Strategy<Value = Graph> {
    (1usize..40).prop_flat_map(|n| {
        let per_message = (0..n)
            .map(|i| {
                let deps = if i == 0 {
                    Just(Vec::new()).boxed()
                } else {
                    prop::collection::vec(0..i, 0..4).boxed()
                };
                (0i64..50, deps)
            })
            .collect::<Vec<_>>();
        per_message.prop_map(|messages| Graph { messages })
    })
}

fn wire(g: &Graph) -> Vec<Bytes> {
    g.messages
        .iter()
        .enumerate()
        .map(|(i, (lamport, deps))| {
            let msg = SdsMessage {
                message_id: format!("m{i}").into(),
                lamport_timestamp: *lamport,
                causal_history: deps
                    .iter()
                    .map(|d| HistoryEntry::new(format!("m{d}")))
                    .collect(),
                channel_id: "c".into(),
                content: Bytes::from(format!("payload {i}")),
                sender_id: format!("p{}", i % 3).into(),
                ..SdsMessage::default()
            };
            Bytes::from(nim::encode(&msg))
        })
        .collect()
}

/// Feeds `order` (indices, possibly repeated) to a fresh receiver and checks the invariants on
/// the way; returns the final log.
fn receive(g: &Graph, bytes: &[Bytes], order: &[usize]) -> Result<Vec<String>, TestCaseError> {
    let config = Config::default().with_lost_dependency_timeout(None);
    let mut ch = Channel::new("c".into(), "receiver".into(), config, T0).unwrap();
    let mut delivered: Vec<usize> = Vec::new();
    let mut seen: HashSet<usize> = HashSet::new();
    for &i in order {
        ch.unwrap(bytes[i].clone(), T0).unwrap();
        let _ = ch.take_store_ops();
        while let Some(e) = ch.poll_event() {
            if let Event::MessageReady { message_id, .. } = e {
                let idx: usize = message_id.to_string()[1..].parse().unwrap();
                prop_assert!(seen.insert(idx), "m{idx} delivered twice");
                for d in &g.messages[idx].1 {
                    prop_assert!(
                        seen.contains(d),
                        "m{idx} delivered before its dependency m{d}"
                    );
                }
                delivered.push(idx);
            }
        }
        let keys: Vec<(i64, Vec<u8>)> = ch
            .log()
            .map(|e| (e.lamport_timestamp, e.message_id.as_bytes().to_vec()))
            .collect();
        prop_assert!(keys.windows(2).all(|w| w[0] < w[1]), "log out of order");
    }
    prop_assert_eq!(
        delivered.len(),
        g.messages.len(),
        "not everything delivered"
    );
    prop_assert!(ch.incoming().is_empty());
    Ok(ch.log().map(|e| e.message_id.to_string()).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
    ))]

    #[test]
    fn any_arrival_order_converges(
        g in graph(),
        seed_a in any::<u64>(),
        seed_b in any::<u64>(),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        let bytes = wire(&g);
        let n = bytes.len();
        let shuffle = |seed: u64| {
            let mut order: Vec<usize> = (0..n).collect();
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            order
        };
        let mut order_a = shuffle(seed_a);
        for d in &dups {
            let at = d.index(order_a.len() + 1);
            let which = order_a[d.index(n)];
            order_a.insert(at, which);
        }
        let log_a = receive(&g, &bytes, &order_a)?;
        let log_b = receive(&g, &bytes, &shuffle(seed_b))?;
        prop_assert_eq!(log_a, log_b);
    }
}
