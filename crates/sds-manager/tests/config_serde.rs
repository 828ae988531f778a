//! `ManagerConfig` from a configuration file (the `serde` feature).

use std::time::Duration;

use sds_manager::{Config, ManagerConfig, UnjoinedChannels};

#[test]
fn a_manager_config_file_with_engine_settings_and_defaults_for_the_rest() {
    let config: ManagerConfig = serde_json::from_str(
        r#"{
            "max_channels": 16,
            "unjoined_channels": { "accept": { "max": 8 } },
            "engine": { "sync_interval": "10s" }
        }"#,
    )
    .unwrap();
    let expected = ManagerConfig::default()
        .with_max_channels(16)
        .with_unjoined_channels(UnjoinedChannels::Accept { max: 8 })
        .with_engine(Config::default().with_sync_interval(Duration::from_secs(10)));
    assert_eq!(config, expected);
    let refuse: ManagerConfig =
        serde_json::from_str(r#"{ "unjoined_channels": "refuse" }"#).unwrap();
    assert_eq!(refuse, ManagerConfig::default());
    assert!(serde_json::from_str::<ManagerConfig>(r#"{ "max_channel": 1 }"#).is_err());
}
