//! The JSON configuration of `SdsNewReliabilityManagerWithConfig`.

use std::time::Duration;

use sds_manager::Config;
use serde_json::Value;

/// A database to keep the state in.
#[derive(Debug, Clone)]
pub struct Database {
    /// Its path.
    pub path: String,
    /// How hard commits try to survive.
    pub durability: sds_sqlite::Durability,
    /// The key of an encrypted database (`databaseKey`).
    pub key: Option<sds_sqlite::StoreKey>,
}

/// The participant id, the database (if any) and the engine settings of a configuration.
pub fn engine_config(v: &Value) -> Result<(String, Option<Database>, Config), String> {
    let obj = match v {
        Value::Null => return Ok((String::new(), None, Config::default())),
        Value::Object(o) => o,
        _ => return Err("configuration must be a JSON object".into()),
    };
    let mut c = Config::default();
    let participant = match obj.get("participantId") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("participantId must be a string".into()),
    };
    let durability = match obj.get("databaseDurability") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "normal" => Some(sds_sqlite::Durability::Normal),
        Some(Value::String(s)) if s == "full" => Some(sds_sqlite::Durability::Full),
        Some(_) => return Err("databaseDurability must be \"normal\" or \"full\"".into()),
    };
    let key = match obj.get("databaseKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            sds_sqlite::StoreKey::from_hex(s)
                .map_err(|e| format!("databaseKey (hexadecimal digits): {e}"))?,
        ),
        Some(_) => return Err("databaseKey must be a string of hexadecimal digits".into()),
    };
    let database = match obj.get("databasePath") {
        None | Some(Value::Null) if durability.is_some() => {
            return Err("databaseDurability needs databasePath".into())
        }
        None | Some(Value::Null) if key.is_some() => {
            return Err("databaseKey needs databasePath".into())
        }
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Database {
            path: s.clone(),
            durability: durability.unwrap_or_default(),
            key,
        }),
        Some(_) => return Err("databasePath must be a string".into()),
    };
    for (key, value) in obj {
        let n = || {
            value
                .as_u64()
                .ok_or(format!("{key} must be a non-negative integer"))
        };
        let ms = || n().map(Duration::from_millis);
        match key.as_str() {
            // Manager settings: see `held_budget`.
            "participantId" | "databasePath" | "databaseDurability" | "databaseKey"
            | "maxHeldBytes" => {}
            "bloomCapacity" => {
                c.bloom_capacity = value.as_i64().ok_or("bloomCapacity must be an integer")?
            }
            "bloomErrorRate" => {
                c.bloom_error_rate = value.as_f64().ok_or("bloomErrorRate must be a number")?
            }
            "maxMessageHistory" => c.max_message_history = n()? as usize,
            "maxCausalHistory" => c.max_causal_history = n()? as usize,
            "resendIntervalMs" => c.resend_interval = ms()?,
            "possiblyAckedResendIntervalMs" => c.possibly_acked_resend_interval = ms()?,
            "maxResendAttempts" => c.max_resend_attempts = n()? as u32,
            "possibleAckThreshold" => c.possible_ack_threshold = n()? as u32,
            "syncIntervalMs" => c.sync_interval = ms()?,
            "quietSync" => {
                c.quiet_sync = value.as_bool().ok_or("quietSync must be true or false")?
            }
            "filterResendAfterMs" => c.filter_resend_after = Some(ms()?).filter(|t| !t.is_zero()),
            "lostDependencyTimeoutMs" => {
                c.lost_dependency_timeout = Some(ms()?).filter(|t| !t.is_zero())
            }
            "maxClockLeadMs" => c.max_clock_lead = ms()?,
            "maxIncomingBuffer" => c.max_incoming_buffer = n()? as usize,
            "maxOutgoingBuffer" => c.max_outgoing_buffer = n()? as usize,
            "repairTMinMs" => c.repair_t_min = ms()?,
            "repairTMaxMs" => c.repair_t_max = ms()?,
            "numResponseGroups" => c.num_response_groups = n()? as u32,
            "maxRepairRequests" => c.max_repair_requests = n()? as usize,
            "repairCooldownMs" => c.repair_cooldown = Some(ms()?),
            "maxRepairBytes" => c.max_repair_bytes = n()?,
            "lamportUnit" => {
                c.lamport_unit = Some(
                    value
                        .as_str()
                        .ok_or("lamportUnit must be \"seconds\" or \"milliseconds\"")?
                        .parse()?,
                )
            }
            other => return Err(format!("unknown setting {other:?}")),
        }
    }
    Ok((participant, database, c))
}

/// `maxHeldBytes` of a configuration: the manager's budget of bytes held on behalf of remote
/// members across channels (`None`: the default).
pub fn held_budget(v: &Value) -> Result<Option<usize>, String> {
    match v.get("maxHeldBytes") {
        None | Some(Value::Null) => Ok(None),
        Some(n) => match n.as_u64() {
            Some(n) if n > 0 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            _ => Err("maxHeldBytes must be a positive integer".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_keys_reach_the_engine() {
        let v: Value = serde_json::from_str(
            r#"{"participantId":"alice","syncIntervalMs":5000,"quietSync":true,"filterResendAfterMs":2000}"#,
        )
        .unwrap();
        let (participant, database, c) = engine_config(&v).unwrap();
        assert_eq!(participant, "alice");
        assert!(database.is_none());
        assert_eq!(c.sync_interval, Duration::from_secs(5));
        assert!(c.quiet_sync);
        assert_eq!(c.filter_resend_after, Some(Duration::from_secs(2)));
        let lead: Value = serde_json::from_str(r#"{"maxClockLeadMs":60000}"#).unwrap();
        assert_eq!(
            engine_config(&lead).unwrap().2.max_clock_lead,
            Duration::from_secs(60)
        );
        let off: Value = serde_json::from_str(r#"{"filterResendAfterMs":0}"#).unwrap();
        assert_eq!(engine_config(&off).unwrap().2.filter_resend_after, None);
        let wrong: Value = serde_json::from_str(r#"{"quietSync":1}"#).unwrap();
        assert!(engine_config(&wrong).is_err());
        // The clock counts seconds, as nim-sds does, unless asked otherwise (LAMPORT-07).
        assert_eq!(c.clock_unit(), sds_proto::engine::LamportUnit::Seconds);
        let ms: Value = serde_json::from_str(r#"{"lamportUnit":"milliseconds"}"#).unwrap();
        assert_eq!(
            engine_config(&ms).unwrap().2.clock_unit(),
            sds_proto::engine::LamportUnit::Milliseconds
        );
        for bad in [r#"{"lamportUnit":"hours"}"#, r#"{"lamportUnit":1}"#] {
            assert!(engine_config(&serde_json::from_str(bad).unwrap()).is_err());
        }
    }

    #[test]
    fn the_held_bytes_budget_is_a_positive_integer() {
        let budget = |json: &str| {
            let v: Value = serde_json::from_str(json).unwrap();
            engine_config(&v)?;
            held_budget(&v)
        };
        assert_eq!(budget(r#"{"maxHeldBytes":1048576}"#), Ok(Some(1_048_576)));
        assert_eq!(budget(r#"{}"#), Ok(None));
        for bad in [
            r#"{"maxHeldBytes":0}"#,
            r#"{"maxHeldBytes":-1}"#,
            r#"{"maxHeldBytes":"1"}"#,
        ] {
            assert!(budget(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn database_durability_is_normal_unless_asked_and_needs_a_path() {
        let db = |json: &str| {
            engine_config(&serde_json::from_str(json).unwrap())
                .map(|x| x.1.map(|d| (d.path, d.durability, d.key.is_some())))
        };
        use sds_sqlite::Durability::{Full, Normal};
        assert_eq!(
            db(r#"{"databasePath":"a.db"}"#).unwrap(),
            Some(("a.db".into(), Normal, false))
        );
        assert_eq!(
            db(r#"{"databasePath":"a.db","databaseDurability":"full"}"#).unwrap(),
            Some(("a.db".into(), Full, false))
        );
        assert!(db(r#"{"databasePath":"a.db","databaseDurability":"fast"}"#).is_err());
        assert!(db(r#"{"databaseDurability":"full"}"#).is_err());
    }

    #[test]
    fn a_database_key_is_hexadecimal_and_needs_a_path() {
        let db = |json: &str| engine_config(&serde_json::from_str(json).unwrap()).map(|x| x.1);
        let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let d = db(&format!(
            r#"{{"databasePath":"a.db","databaseKey":"{key}"}}"#
        ))
        .unwrap()
        .unwrap();
        assert_eq!(d.path, "a.db");
        assert!(d.key.is_some());
        // Never shown, also not in a configuration error.
        assert!(!format!("{d:?}").contains("0011"));
        for (json, why) in [
            (
                format!(r#"{{"databaseKey":"{key}"}}"#),
                "needs databasePath",
            ),
            (
                r#"{"databasePath":"a.db","databaseKey":"not hex at all, but long enough"}"#.into(),
                "hexadecimal",
            ),
            (
                r#"{"databasePath":"a.db","databaseKey":"0011"}"#.into(),
                "at least 16 bytes",
            ),
            (
                r#"{"databasePath":"a.db","databaseKey":42}"#.into(),
                "must be a string",
            ),
        ] {
            let err = db(&json).unwrap_err();
            assert!(err.contains(why), "{json}: {err}");
        }
    }
}
