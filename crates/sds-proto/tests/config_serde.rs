//! `Config` from and to configuration files (the `serde` feature).

use std::time::Duration;

use sds_proto::engine::{Config, LamportUnit};
use sds_proto::wire::Profile;

#[test]
fn a_partial_config_file_fills_in_the_defaults() {
    let config: Config = serde_json::from_str(
        r#"{
            "resend_interval": "10s",
            "repair_t_min": "1m 30s",
            "lost_dependency_timeout": null,
            "max_resend_attempts": 3,
            "profile": "spec",
            "lamport_unit": "seconds",
            "limits": { "max_message_size": 65536 }
        }"#,
    )
    .unwrap();
    let mut expected = Config::default()
        .with_resend_interval(Duration::from_secs(10))
        .with_repair_t_min(Duration::from_secs(90))
        .with_lost_dependency_timeout(None)
        .with_max_resend_attempts(3)
        .with_profile(Profile::Spec)
        .with_lamport_unit(Some(LamportUnit::Seconds));
    expected.limits.max_message_size = 65_536;
    assert_eq!(config, expected);
}

#[test]
fn every_setting_round_trips_and_times_read_as_durations() {
    let config = Config::default().with_filter_resend_after(Some(Duration::from_millis(1_500)));
    let text = serde_json::to_string(&config).unwrap();
    assert!(text.contains(r#""sync_interval":"30s""#), "{text}");
    assert!(
        text.contains(r#""filter_resend_after":"1s 500ms""#),
        "{text}"
    );
    assert!(text.contains(r#""profile":"nim-sds""#), "{text}");
    let back: Config = serde_json::from_str(&text).unwrap();
    assert_eq!(back, config);
}

#[test]
fn a_misspelt_or_malformed_setting_is_an_error() {
    let typo = serde_json::from_str::<Config>(r#"{ "resend_intervall": "10s" }"#);
    assert!(typo.unwrap_err().to_string().contains("resend_intervall"));
    assert!(serde_json::from_str::<Config>(r#"{ "sync_interval": 30 }"#).is_err());
    assert!(serde_json::from_str::<Config>(r#"{ "profile": "nim" }"#).is_err());
}
