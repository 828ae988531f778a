//! The simulation's behaviour: reproducibility, what repair achieves, restarts from stores,
//! the spec profile, refused settings and the report's JSON form.

use sds_proto::wire::Profile;
use sds_sim::{Error, Network, Report, Scenario};

fn run(scenario: &Scenario) -> Report {
    sds_sim::run(scenario).expect("the scenario runs")
}

/// A 12-member group for 90 s (plus a 10-minute tail) at this loss.
fn small(loss: f64, seed: u64) -> Scenario {
    Scenario {
        participants: 12,
        duration: 90.0,
        tail: 600.0,
        network: Network {
            loss,
            ..Network::default()
        },
        seed,
        ..Scenario::default()
    }
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let a = run(&small(0.2, 7));
    let b = run(&small(0.2, 7));
    assert_eq!(a, b);
    let c = run(&small(0.2, 8));
    assert!(a.deliveries > 0);
    assert_ne!(a, c, "another seed, another run");
}

#[test]
fn the_report_does_not_depend_on_the_thread_count() {
    // Enough members that windows are run on several threads, with churn and loss bursts.
    let base = Scenario {
        participants: 150,
        duration: 60.0,
        tail: 120.0,
        churn_online: 40.0,
        network: Network {
            burst_every: 30.0,
            ..Network::default()
        },
        seed: 11,
        ..Scenario::default()
    };
    let one = run(&Scenario {
        threads: 1,
        ..base.clone()
    });
    for threads in [2, 3] {
        let many = run(&Scenario {
            threads,
            ..base.clone()
        });
        assert_eq!(one, many, "{threads} threads");
    }
    assert!(one.messages_sent > 500);
}

#[test]
fn repair_closes_every_gap_up_to_30_percent_loss() {
    for (loss, seed) in [(0.2, 3), (0.3, 4), (0.3, 5)] {
        let base = small(loss, seed);
        let with = run(&base);
        let without = run(&Scenario {
            repair: false,
            ..base
        });
        assert!(with.missed_on_first_broadcast > 0);
        assert!(with.wire.repairs + with.wire.resends > 0);
        assert_eq!(
            with.deliveries, with.expected_deliveries,
            "loss {loss}, seed {seed}: every member has every message"
        );
        assert_eq!(with.completeness, 1.0);
        assert_eq!(with.missing_detection.undetected, 0);
        assert!(
            without.completeness < 1.0,
            "without repair, loss {loss} leaves gaps"
        );
        assert_eq!(without.wire.repairs, 0);
    }
}

#[test]
fn a_lost_message_received_again_counts_as_detected_even_while_it_waits() {
    // A member that lost a message and then receives a copy that must wait for its own
    // dependencies holds it: that copy is not reported missing, and needs no detecting.
    let r = run(&small(0.2, 3));
    assert_eq!(r.missing_detection.undetected, 0);
    assert_eq!(
        r.missing_detection.fraction_detected_within_requirement, 1.0,
        "{:?}",
        r.missing_detection
    );
}

#[test]
fn without_filter_resends_late_messages_can_go_undetected() {
    // A message delivered late is logged at its old lamport position and no longer cited, so a
    // member that lost it may never learn it exists: only the sender's look at filters helps.
    let base = Scenario {
        participants: 40,
        duration: 60.0,
        tail: 600.0,
        seed: 2,
        ..Scenario::default()
    };
    let with = run(&base);
    let without = run(&Scenario {
        filter_resend: false,
        ..base
    });
    let undetected = |r: &Report| r.missing_detection.undetected;
    println!(
        "undetected with filter resends {}, without {}",
        undetected(&with),
        undetected(&without)
    );
    assert!(undetected(&without) > 0);
    assert_eq!(undetected(&with), 0);
    assert_eq!(with.completeness, 1.0);
}

#[test]
fn a_message_limit_stops_the_sends() {
    let r = run(&Scenario {
        messages: 40,
        ..small(0.2, 1)
    });
    assert_eq!(r.messages_sent, 40);
    assert_eq!(r.parameters.message_limit, 40);
    assert_eq!(r.completeness, 1.0);
}

#[test]
fn the_timeline_covers_the_run() {
    let r = run(&Scenario {
        participants: 5,
        duration: 30.0,
        tail: 30.0,
        ..Scenario::default()
    });
    let t = &r.timeline;
    assert_eq!(t.span_ms, 60_000);
    // One sample a second (the run is shorter than 400 s), and one at the end.
    assert_eq!(t.samples.first().map(|s| s.at_ms), Some(0));
    assert_eq!(t.samples.last().map(|s| s.at_ms), Some(60_000));
    assert!(t.samples.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    let last = t.samples.last().unwrap();
    assert_eq!(last.sent_so_far, r.messages_sent);
    // Every pair is delivered or open; the senders' own copies count as delivered.
    assert_eq!(
        last.delivered_pairs + last.open_gaps,
        (r.messages_sent * 5) as u64
    );
    assert_eq!(
        last.delivered_pairs,
        (r.deliveries + r.messages_sent) as u64
    );
}

#[test]
fn impossible_settings_are_refused() {
    let d = Scenario::default();
    for s in [
        Scenario {
            participants: 1,
            ..d.clone()
        },
        Scenario {
            network: Network {
                loss: 1.5,
                ..Network::default()
            },
            ..d.clone()
        },
        Scenario {
            network: Network {
                latency_min: 900,
                latency_max: 100,
                ..Network::default()
            },
            ..d.clone()
        },
        Scenario {
            repair_t_min: 60.0,
            repair_t_max: 30.0,
            ..d.clone()
        },
        Scenario {
            restart_rate: 20.0,
            ..d.clone()
        },
    ] {
        assert!(matches!(sds_sim::run(&s), Err(Error::Invalid(_))), "{s:?}");
        assert!(s.check().is_err());
    }
    assert_eq!(d.check(), Ok(()));
}

#[test]
fn members_restarted_from_their_stores_keep_up() {
    let dir = std::env::temp_dir().join(format!("sds-sim-store-{}", std::process::id()));
    let restarted = run(&Scenario {
        participants: 8,
        duration: 60.0,
        tail: 300.0,
        repair_t_min: 5.0,
        repair_t_max: 30.0,
        seed: 5,
        store: Some(dir.clone()),
        restart_rate: 20.0,
        ..Scenario::default()
    });
    assert!(restarted.wire.restarts > 10);
    assert!(dir.join("p0000.db").exists());
    let missing = restarted.expected_deliveries - restarted.deliveries;
    let undetected = restarted.missing_detection.undetected;
    assert!(
        missing <= undetected,
        "restarts lose nothing that could be repaired"
    );
    assert!(restarted.completeness >= 0.99);
    // The stores stay after the run, and can be measured and removed, leaving what else the
    // directory holds.
    let size = sds_sim::stores_size(&dir, 8).unwrap();
    assert!(size > 100_000, "{size} bytes");
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    sds_sim::remove_stores(&dir, 8).unwrap();
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notes.txt"]);
    assert_eq!(sds_sim::stores_size(&dir, 8).unwrap(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

// The spec profile end to end: members speak the @waku/sds layout and still converge.
#[test]
fn the_spec_profile_converges_like_nim_sds() {
    let base = Scenario {
        repair_t_min: 5.0,
        repair_t_max: 30.0,
        ..small(0.2, 3)
    };
    let nim = run(&base);
    let spec = run(&Scenario {
        profile: Profile::Spec,
        ..base
    });
    assert_eq!(spec.parameters.profile, "spec");
    assert_eq!(nim.parameters.profile, "nim-sds");
    assert!(spec.missed_on_first_broadcast > 0);
    let completeness = spec.completeness;
    assert!(completeness >= 0.99, "spec completeness {completeness}");
    // Different layout and hashes: the runs are not byte-identical.
    assert_ne!(spec.wire.bytes, nim.wire.bytes);
}

#[test]
fn the_json_form_has_the_documented_fields_in_order() {
    let r = run(&Scenario {
        participants: 3,
        duration: 20.0,
        tail: 20.0,
        ..Scenario::default()
    });
    let v = serde_json::to_value(&r).unwrap();
    let keys =
        |v: &serde_json::Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(
        keys(&v),
        [
            "parameters",
            "messagesSent",
            "deliveries",
            "expectedDeliveries",
            "completeness",
            "messagesEverywhere",
            "acknowledgement",
            "missedOnFirstBroadcast",
            "missingDetection",
            "eventualConsistency",
            "wire",
        ]
    );
    assert_eq!(
        keys(&v["parameters"]),
        [
            "participants",
            "sendIntervalS",
            "durationS",
            "messageLimit",
            "tailS",
            "loss",
            "latencyMs",
            "burstEveryS",
            "churnOnlineS",
            "repair",
            "profile",
            "repairTMinS",
            "repairTMaxS",
            "history",
            "seed",
        ]
    );
    assert_eq!(
        keys(&v["acknowledgement"]["latency"]),
        [
            "count",
            "medianMs",
            "p90Ms",
            "p99Ms",
            "medianSendIntervals",
            "p90SendIntervals",
            "p99SendIntervals",
            "requirementSendIntervals",
            "fractionWithinRequirement",
        ]
    );
    assert_eq!(
        keys(&v["wire"]),
        [
            "transmissions",
            "bytes",
            "bytesPerDelivery",
            "resends",
            "restarts",
            "repairs",
            "repairRequests",
            "syncs",
        ]
    );
    assert_eq!(v["parameters"]["latencyMs"], serde_json::json!([50, 500]));
    assert_eq!(v["parameters"]["profile"], "nim-sds");
    // The default history: the group's traffic over two repair windows, at least 1,000.
    assert_eq!(v["parameters"]["history"], 1000);
    assert_eq!(
        v["acknowledgement"]["latency"]["requirementSendIntervals"],
        1.0
    );
}
