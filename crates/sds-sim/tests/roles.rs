//! Member roles: hostile members are left out of the report's honest section, and a scenario
//! without them reports exactly what it did before roles existed.

use sds_sim::{Hostility, Network, Role, Scenario};

/// The scenario of `data/report-before-roles.json`, which is the output of
/// `sds sim --json --quiet --participants 6 --duration 60 --tail 120 --seed 3 --churn-online 30`
/// built from commit 09c1e0d, before the simulator had roles (or its own crate), with the keys
/// in multiples of S renamed since (`medianS` → `medianSendIntervals`, and likewise `p90`, `p99`
/// and `requirement`); no value changed.
fn before_roles() -> Scenario {
    Scenario {
        participants: 6,
        duration: 60.0,
        tail: 120.0,
        seed: 3,
        churn_online: 30.0,
        ..Scenario::default()
    }
}

#[test]
fn zero_hostile_members_give_the_report_of_before() {
    let before = include_str!("data/report-before-roles.json").trim_end();
    for roles in [Vec::new(), vec![Role::Honest; 6]] {
        let scenario = Scenario {
            roles,
            ..before_roles()
        };
        assert_eq!(scenario.hostile_members(), 0);
        let report = sds_sim::run(&scenario).unwrap();
        assert_eq!(report.honest, None);
        assert_eq!(serde_json::to_string(&report).unwrap(), before);
    }
}

#[test]
fn the_honest_section_leaves_hostile_members_out() {
    let base = Scenario {
        participants: 12,
        duration: 90.0,
        tail: 600.0,
        network: Network {
            loss: 0.2,
            ..Network::default()
        },
        seed: 3,
        ..Scenario::default()
    };
    let all_honest = sds_sim::run(&base).unwrap();
    let hostile = Role::Hostile(Hostility::Conforming);
    let scenario = Scenario {
        roles: vec![hostile, Role::Honest, hostile],
        ..base
    };
    assert_eq!(scenario.role(0), hostile);
    assert_eq!(scenario.role(1), Role::Honest);
    assert_eq!(scenario.role(11), Role::Honest);
    assert_eq!(scenario.hostile_members(), 2);
    let r = sds_sim::run(&scenario).unwrap();
    // Conforming members follow the protocol: the run itself is the all-honest one.
    let honest = r.honest.clone().expect("an honest section");
    assert_eq!(
        sds_sim::Report {
            honest: None,
            ..r.clone()
        },
        all_honest
    );
    assert_eq!(honest.members, 10);
    let o = &honest.outcomes;
    assert!(o.messages_sent > 0 && o.messages_sent < r.messages_sent);
    assert_eq!(o.expected_deliveries, o.messages_sent * 9);
    // With repair every member has every message, so every honest one has every honest one's.
    assert_eq!(r.completeness, 1.0);
    assert_eq!(o.deliveries, o.expected_deliveries);
    assert_eq!(o.completeness, 1.0);
    assert_eq!(o.messages_everywhere, o.messages_sent);
    assert!(o.missed_on_first_broadcast > 0);
    assert!(o.missed_on_first_broadcast < r.missed_on_first_broadcast);
    assert_eq!(o.missing_detection.undetected, 0);
    assert_eq!(
        o.acknowledgement.latency.count,
        o.messages_sent - o.acknowledgement.never_acknowledged
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["honest"]["members"], 10);
    assert_eq!(json["honest"]["outcomes"]["completeness"], 1.0);
}

#[test]
fn a_scenario_needs_two_honest_members_and_no_more_roles_than_members() {
    let hostile = Role::Hostile(Hostility::Conforming);
    let s = |roles: Vec<Role>| Scenario {
        participants: 3,
        roles,
        ..Scenario::default()
    };
    assert!(s(vec![hostile]).check().is_ok());
    assert!(s(vec![hostile, hostile]).check().is_err());
    assert!(s(vec![Role::Honest; 4]).check().is_err());
    assert!(s(vec![Role::Honest; 3]).check().is_ok());
}
