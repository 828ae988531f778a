//! Golden vectors from js-waku `@waku/sds` 0.0.8 (see `tests/vectors/js-waku-sds/README.md`):
//! the spec profile's bloom filter and SDS-R arithmetic.

use std::path::PathBuf;

use sds_proto::bloom::spec::{SpecBloomFilter, SpecIdHashes};
use sds_proto::bloom::BloomParams;
use sds_proto::repair::spec;
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/js-waku-sds")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn params(options: &Value) -> BloomParams {
    BloomParams::with_k(
        options["capacity"].as_i64().unwrap(),
        options["errorRate"].as_f64().unwrap(),
        options["kHashes"].as_u64().unwrap_or(0) as u32,
        0,
    )
    .unwrap()
}

// BLOOM-12
#[test]
fn spec_bloom_filters_match_js_waku() {
    let v = load("bloom.json");
    for name in [
        "default",
        "small_capacity100_err0_01",
        "small_capacity100_err0_01_k4",
    ] {
        let case = &v[name];
        let p = params(&case["options"]);
        let derived = &case["derived"];
        assert_eq!(
            u64::from(p.k_hashes),
            derived["kHashes"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(p.m_bits, derived["totalBits"].as_u64().unwrap(), "{name}");
        assert_eq!(
            p.words() as u64,
            derived["words64"].as_u64().unwrap(),
            "{name}"
        );
        let mut f = SpecBloomFilter::with_params(p);
        for (item, expected) in case["positions"].as_object().unwrap() {
            let ours: Vec<u64> = SpecIdHashes::of(item.as_bytes())
                .positions(p.k_hashes, p.m_bits)
                .collect();
            let theirs: Vec<u64> = expected
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            assert_eq!(ours, theirs, "{name}: {item}");
        }
        // Either a list of ids or a pattern {pattern: "msg-{i}", from, to} (inclusive).
        let inserted: Vec<String> = match &case["inserted"] {
            Value::Array(ids) => ids
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect(),
            Value::Object(p) => {
                let pattern = p["pattern"].as_str().unwrap();
                let (from, to) = (p["from"].as_u64().unwrap(), p["to"].as_u64().unwrap());
                (from..=to)
                    .map(|i| pattern.replace("{i}", &i.to_string()))
                    .collect()
            }
            other => panic!("{name}: unexpected inserted {other}"),
        };
        assert!(!inserted.is_empty());
        for id in &inserted {
            f.insert(id.as_bytes());
        }
        let bytes = f.to_bytes();
        assert_eq!(
            bytes.len() as u64,
            derived["byteLength"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            hex::encode(&bytes),
            case["bytesHex"].as_str().unwrap(),
            "{name}"
        );
        let set: u32 = f.words().iter().map(|w| w.count_ones()).sum();
        assert_eq!(
            u64::from(set),
            case["setBitCount"].as_u64().unwrap(),
            "{name}"
        );
        let back = SpecBloomFilter::from_bytes(&bytes, p).unwrap();
        for (item, expected) in case["lookups"].as_object().unwrap() {
            assert_eq!(
                Some(back.contains(item.as_bytes())),
                expected.as_bool(),
                "{name}: {item}"
            );
        }
    }
    for case in v["hashNVectors"].as_array().unwrap() {
        let item = case["item"].as_str().unwrap();
        let m = case["maxValue"].as_u64().unwrap();
        let ours: Vec<u64> = SpecIdHashes::of(item.as_bytes()).positions(10, m).collect();
        let theirs: Vec<u64> = case["n0to9"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(ours, theirs, "hashN {item} {m}");
    }
}

// REPAIR-04
#[test]
fn spec_repair_arithmetic_matches_js_waku() {
    let v = load("repair_timing.json");
    let now = v["currentTime"].as_u64().unwrap();
    let t_min = v["defaults"]["tMin"].as_u64().unwrap();
    let t_max = v["defaults"]["tMax"].as_u64().unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        let p = r["participantId"].as_str().unwrap().as_bytes();
        let s = r["senderId"].as_str().unwrap_or("").as_bytes();
        let m = r["messageId"].as_str().unwrap().as_bytes();
        let mut pm = p.to_vec();
        pm.extend_from_slice(m);
        let dec = |k: &str| r[k].as_str().unwrap().parse::<u64>().unwrap();
        assert_eq!(
            spec::hash(&pm),
            dec("combinedHash_participant_message"),
            "{r}"
        );
        assert_eq!(spec::hash(p) ^ spec::hash(s), dec("xorDistance"), "{r}");
        assert_eq!(spec::hash(m), dec("hashMessageId"), "{r}");
        assert_eq!(
            now + spec::t_req_offset(p, m, t_min, t_max),
            r["tReq_default"].as_u64().unwrap(),
            "{r}"
        );
        assert_eq!(
            now + spec::t_resp_offset(p, s, m, t_max),
            r["tResp_default"].as_u64().unwrap(),
            "{r}"
        );
        assert_eq!(
            Some(spec::in_response_group(p, s, m, 5)),
            r["inResponseGroup_groups5"].as_bool(),
            "{r}"
        );
    }
}
