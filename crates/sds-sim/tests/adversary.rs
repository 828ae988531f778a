//! Hostile members that attack: the honest members' outcomes stay within a few percent of the
//! same run without the attack, nothing is delivered out of causal order or twice, and what an
//! attack makes honest members hold or rebroadcast stays bounded. Where the engine has a
//! setting for the defence, the same check runs once more with it turned off and must fail
//! there: the measures can fail.

use sds_proto::engine::Config;
use sds_sim::report::Effects;
use sds_sim::{compare, AttackSettings, Comparison, Hostility, Network, Report, Role, Scenario};

/// Ten honest members and `hostile` more of these kinds, on a lossy network, with repair and
/// the engine's lost-dependency timeout (as `sds sim --adversary` runs); each attacking member
/// attacks five times a second for the two minutes of sending.
fn group(kinds: &[Hostility], hostile: usize) -> Scenario {
    Scenario {
        participants: 10 + hostile,
        send_interval: 10.0,
        duration: 120.0,
        tail: 900.0,
        lost_timeout: 600.0,
        network: Network {
            loss: 0.2,
            ..Network::default()
        },
        seed: 5,
        attack: AttackSettings {
            rate: 5.0,
            budget: 0,
        },
        ..Scenario::default()
    }
    .with_adversaries(kinds, hostile)
}

/// `scenario` with its engine configuration changed by `change`.
fn tuned(mut scenario: Scenario, change: impl FnOnce(&mut Config)) -> Scenario {
    let mut config = scenario.config();
    change(&mut config);
    scenario.engine = Some(config);
    scenario
}

fn effects(r: &Report) -> &Effects {
    &r.honest.as_ref().expect("an honest section").effects
}

/// Honest completeness within `tolerance` of the clean run's, nothing delivered out of causal
/// order or twice, and the attack really happened.
fn honest_outcomes_hold(c: &Comparison, tolerance: f64) {
    let (clean, attacked) = (effects(&c.clean), effects(&c.attacked));
    assert!(
        c.completeness_ratio >= 1.0 - tolerance,
        "{:?}: completeness ratio {}",
        c.adversaries,
        c.completeness_ratio
    );
    assert_eq!(attacked.order_violations, 0, "{:?}", c.adversaries);
    assert_eq!(attacked.duplicates_delivered, 0, "{:?}", c.adversaries);
    assert_eq!(clean.hostile_bytes, 0);
    assert!(attacked.hostile_bytes > 100_000, "{attacked:?}");
}

/// A few percent, as the requirement says.
const FEW_PERCENT: f64 = 0.03;

#[test]
fn the_clean_run_has_the_attackers_silent_and_the_same_honest_sends() {
    let s = group(&[Hostility::Flood, Hostility::Clock], 3);
    assert_eq!(s.role(9), Role::Honest);
    assert_eq!(s.role(10), Role::Hostile(Hostility::Flood));
    assert_eq!(s.role(11), Role::Hostile(Hostility::Clock));
    assert_eq!(s.role(12), Role::Hostile(Hostility::Flood));
    assert!(s.attacked());
    let clean = s.clean();
    assert!(!clean.attacked());
    assert_eq!(clean.hostile_members(), 3);
    assert_eq!(clean.role(11), Role::Hostile(Hostility::Silent));
    let c = compare(&s).unwrap();
    assert_eq!(c.adversaries, ["flood", "clock", "flood"]);
    assert_eq!(c.clean, sds_sim::run(&clean).unwrap());
    assert_eq!(c.attacked, sds_sim::run(&s).unwrap());
    // Honest members send at the same times in both runs.
    let sent = |r: &Report| r.honest.as_ref().unwrap().outcomes.messages_sent;
    assert_eq!(sent(&c.clean), sent(&c.attacked));
    assert!(sent(&c.clean) > 100);
    // The clean run is complete among honest members; nobody sent anything hostile.
    assert_eq!(c.clean.honest.as_ref().unwrap().outcomes.completeness, 1.0);
    assert_eq!(effects(&c.clean).hostile_broadcasts, 0);
    assert!(c.amplification.is_some());
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["attacked"]["honest"]["members"], 10);
    assert!(json["attacked"]["honest"]["effects"]["hostileBytes"].as_u64() > Some(0));
    assert_eq!(json["attack"]["rate"], 5.0);
}

#[test]
fn the_budget_caps_what_an_attacker_sends() {
    let s = Scenario {
        attack: AttackSettings {
            rate: 5.0,
            budget: 50_000,
        },
        ..group(&[Hostility::Junk], 1)
    };
    let r = sds_sim::run(&s).unwrap();
    let sent = effects(&r).hostile_bytes;
    assert!(sent <= 50_000 && sent > 40_000, "{sent}");
}

#[test]
fn a_flood_of_messages_waiting_for_nothing_stays_within_the_buffer_bound() {
    const BOUND: usize = 2 << 20;
    let s = tuned(group(&[Hostility::Flood], 1), |c| {
        c.max_incoming_buffer_bytes = BOUND;
    });
    let c = compare(&s).unwrap();
    honest_outcomes_hold(&c, FEW_PERCENT);
    let e = effects(&c.attacked);
    // Over 600 flood messages of about 33 KiB each as charged: the buffer gave way, to the
    // flooder's messages. (Those still waiting when the lost-dependency timeout came are
    // delivered without what they cite, in order.)
    assert!(e.evicted > 1_000, "{e:?}");
    // What a member holds: the buffer's bound, plus its SDS-R requests (at most
    // `max_repair_buffer` entries of a few hundred bytes here).
    let allowance = s.config().max_repair_buffer * 512;
    assert!(e.peak_held_bytes as usize <= BOUND + allowance, "{e:?}");
    // Without the bound (turned up out of reach) the same flood holds far more: the check above
    // would fail.
    let unbounded = tuned(s, |c| c.max_incoming_buffer_bytes = 1 << 40);
    let r = sds_sim::run(&unbounded).unwrap();
    assert!(effects(&r).peak_held_bytes as usize > 4 * (BOUND + allowance));
}

#[test]
fn junk_is_delivered_and_the_lost_dependency_timeout_keeps_honest_messages_coming() {
    // With the engine's default timeout, an honest message that came to depend on junk
    // nobody logs any more is delivered once the junk is declared lost.
    let s = group(&[Hostility::Junk], 1);
    assert_eq!(
        s.config().lost_dependency_timeout,
        Config::default().lost_dependency_timeout
    );
    let c = compare(&s).unwrap();
    honest_outcomes_hold(&c, FEW_PERCENT);
    assert!(effects(&c.attacked).hostile_delivered > 10_000);
    // Members that never give up on a gap wait for ever.
    let waiting = Scenario {
        lost_timeout: 0.0,
        ..s
    };
    let c = compare(&waiting).unwrap();
    assert!(c.completeness_ratio < 0.5, "{}", c.completeness_ratio);
}

#[test]
fn dependency_cycles_expire_and_give_way_in_a_full_buffer() {
    // A pair held whole waits for itself: it expires at the lost-dependency timeout. (A
    // member that lost one of the two holds a message citing one it lacks, like any other:
    // that one is declared lost and the message delivered, in order.)
    let c = compare(&group(&[Hostility::Cycles], 1)).unwrap();
    honest_outcomes_hold(&c, FEW_PERCENT);
    let e = effects(&c.attacked);
    assert!(e.expired > 5_000, "{e:?}");
    assert!(e.hostile_delivered < e.expired / 2, "{e:?}");
    // In a buffer they fill, the oldest give way to honest messages. (A message whose partner
    // gave way no longer waits for a message held: at the timeout the partner is declared
    // lost and the message delivered without it, in order.)
    let s = tuned(group(&[Hostility::Cycles], 1), |c| {
        c.max_incoming_buffer = 200
    });
    let c = compare(&s).unwrap();
    honest_outcomes_hold(&c, FEW_PERCENT);
    assert!(
        effects(&c.attacked).evicted > 1_000,
        "{:?}",
        effects(&c.attacked)
    );
}

#[test]
fn far_future_clocks_are_refused() {
    let s = group(&[Hostility::Clock], 1);
    let c = compare(&s).unwrap();
    honest_outcomes_hold(&c, FEW_PERCENT);
    let e = effects(&c.attacked);
    assert!(e.refused_clock > 1_000, "{e:?}");
    assert_eq!(e.hostile_delivered, 0);
    let day = 86_400.0;
    assert!(e.clock_lead_s <= day, "{e:?}");
    // Without the bound on the clock's lead the far-future messages are taken, and honest
    // clocks run ten years ahead: the check above would fail.
    let open = tuned(s, |c| {
        c.max_clock_lead = std::time::Duration::from_millis(i64::MAX as u64)
    });
    let r = sds_sim::run(&open).unwrap();
    assert!(effects(&r).clock_lead_s > 365.0 * day, "{:?}", effects(&r));
}

#[test]
fn replays_are_never_delivered_twice() {
    let c = compare(&group(&[Hostility::Replay], 1)).unwrap();
    honest_outcomes_hold(&c, FEW_PERCENT);
    let e = effects(&c.attacked);
    assert!(e.hostile_broadcasts > 2_000, "{e:?}");
    assert_eq!(e.hostile_delivered, 0);
}

/// Bytes honest members may rebroadcast per byte of repair requests, beyond what they
/// rebroadcast without the attack.
const AMPLIFICATION_BOUND: f64 = 25.0;

#[test]
fn repair_requests_amplify_within_a_bound() {
    let s = group(&[Hostility::RepairAmplification], 1);
    let c = compare(&s).unwrap();
    honest_outcomes_hold(&c, FEW_PERCENT);
    let amplification = c.amplification.unwrap();
    assert!(amplification < AMPLIFICATION_BOUND, "{amplification}");
    // Honoring every id of a request, again and again, without a byte budget: the bound would
    // not hold.
    let open = tuned(s, |c| {
        c.max_repair_requests = c.limits.max_repair_request;
        c.repair_cooldown = Some(std::time::Duration::from_millis(1));
        c.max_repair_bytes = u64::MAX;
    });
    let c = compare(&open).unwrap();
    assert!(
        c.amplification.unwrap() > 2.0 * AMPLIFICATION_BOUND,
        "{:?}",
        c.amplification
    );
}

#[test]
fn messages_for_other_channels_are_refused_and_hold_nothing() {
    let c = compare(&group(&[Hostility::ChannelSpam], 1)).unwrap();
    honest_outcomes_hold(&c, FEW_PERCENT);
    let (clean, attacked) = (effects(&c.clean), effects(&c.attacked));
    assert!(attacked.refused_channel > 1_000, "{attacked:?}");
    assert_eq!(attacked.hostile_delivered, 0);
    // Nothing of them is held, and nothing else changed.
    assert_eq!(attacked.peak_held_bytes, clean.peak_held_bytes);
    assert_eq!(attacked.rebroadcast_bytes, clean.rebroadcast_bytes);
}

#[test]
fn an_equivocating_sender_splits_the_group_without_duplicates_or_disorder() {
    let c = compare(&group(&[Hostility::Equivocation], 1)).unwrap();
    honest_outcomes_hold(&c, FEW_PERCENT);
    let e = effects(&c.attacked);
    // SDS cannot tell which content is the true one: each half delivers its own, and a member
    // offered the other one reports a conflict.
    assert!(e.divergent_ids > 100, "{e:?}");
    assert!(e.conflicts > 100, "{e:?}");
}

#[test]
fn every_kind_at_once() {
    let c = compare(&group(&Hostility::ATTACKS, 8)).unwrap();
    honest_outcomes_hold(&c, FEW_PERCENT);
}

#[test]
fn attacks_do_not_depend_on_the_thread_count() {
    let s = group(&Hostility::ATTACKS, 8);
    let one = sds_sim::run(&Scenario {
        threads: 1,
        ..s.clone()
    })
    .unwrap();
    let three = sds_sim::run(&Scenario { threads: 3, ..s }).unwrap();
    assert_eq!(one, three);
}
