//! Golden vectors from nim-sds (see `tests/vectors/nim-sds/README.md`): codec, Nim string hash,
//! bloom filter and rolling bloom filter. Every expected value is read from the vector files.

use std::path::PathBuf;

use bytes::Bytes;
use sds_proto::bloom::{hash_n, BloomFilter, BloomParams, FilterView, RollingBloomFilter};
use sds_proto::json::{
    channel_result_to_json, decode_error_to_json, message_from_json, message_to_json,
};
use sds_proto::nim_hash::{nim_hash, nim_hash_concat};
use sds_proto::repair::{in_response_group, t_req_offset, t_resp_offset};
use sds_proto::wire::{nim, Limits};
use sds_proto::MessageId;
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/nim-sds")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn str_of(v: &Value) -> &str {
    v.as_str().expect("string")
}

/// Checks one decode result of the vectors (`{accepted, decoded?, error?, extractChannelId}`)
/// against our decoder. Returns whether the input was accepted.
fn check_decode(name: &str, input: &[u8], expected: &Value) -> bool {
    let bytes = Bytes::copy_from_slice(input);
    let got = nim::decode(&bytes, &Limits::default());
    let accepted = expected["accepted"].as_bool().expect("accepted");
    match (&got, accepted) {
        (Ok(msg), true) => {
            assert_eq!(message_to_json(msg), expected["decoded"], "{name}: decoded");
        }
        (Err(e), false) => {
            let ours = decode_error_to_json(e);
            let theirs = &expected["error"];
            // Same error kind, and the same proto error / field / defect name.
            for key in ["kind", "protoError", "field", "defect"] {
                assert_eq!(ours.get(key), theirs.get(key), "{name}: error.{key}: {e}");
            }
        }
        (got, _) => panic!("{name}: nim-sds accepted={accepted}, we got {got:?}"),
    }
    assert_eq!(
        channel_result_to_json(nim::extract_channel_id(input)),
        expected["extractChannelId"],
        "{name}: extractChannelId"
    );
    accepted
}

// WIRE-01 .. WIRE-04, WIRE-11
#[test]
fn codec_encode_cases_are_byte_exact() {
    let v = load("sds_message_codec.json");
    let cases = v["encode"].as_array().expect("encode cases");
    assert_eq!(cases.len(), 15);
    for case in cases {
        let name = str_of(&case["name"]);
        let msg = message_from_json(&case["input"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let encoded = nim::encode(&msg);
        assert_eq!(
            hex::encode(&encoded),
            str_of(&case["encoded"]),
            "{name}: encode"
        );
        assert_eq!(nim::encoded_len(&msg), encoded.len(), "{name}: encoded_len");
        let accepted = check_decode(name, &encoded, &case["decode"]);
        if accepted {
            let back = nim::decode(&Bytes::from(encoded), &Limits::default()).unwrap();
            assert_eq!(
                back == msg,
                case["roundtripEqual"] == true,
                "{name}: roundtrip"
            );
        }
    }
}

// WIRE-05 .. WIRE-09, WIRE-11, HOSTILE-05
#[test]
fn codec_legacy_and_malformed_cases_match_nim_sds() {
    let v = load("sds_message_codec.json");
    let mut n = 0;
    for group in ["legacy", "malformed"] {
        for case in v[group].as_array().expect("cases") {
            let name = str_of(&case["name"]);
            check_decode(name, &unhex(&case["input"]), &case["result"]);
            n += 1;
        }
    }
    assert_eq!(n, 8 + 29);
}

#[test]
fn nim_string_hash_matches_all_vectors() {
    let v = load("nim_hash.json");
    let vectors = v["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 48);
    for case in vectors {
        let input = unhex(&case["inputHex"]);
        assert_eq!(input.len() as u64, case["len"].as_u64().unwrap());
        let h = nim_hash(&input);
        assert_eq!(Some(h), case["hash"].as_i64(), "hash({:?})", case["input"]);
        assert_eq!(format!("{:016x}", h as u64), str_of(&case["hashU64Hex"]));
        assert_eq!(
            Some(nim_hash_concat(&input, b" b")),
            case["hashWithSpaceB"].as_i64(),
            "hash({:?} & \" b\")",
            case["input"]
        );
    }
}

// BLOOM-01, BLOOM-02, BLOOM-04, BLOOM-05
#[test]
fn bloom_filters_match_nim_sds() {
    let v = load("bloom_filter.json");
    let filters = v["filters"].as_array().expect("filters");
    assert_eq!(filters.len(), 6);
    for f in filters {
        let p = &f["params"];
        let label = p.to_string();
        let params = BloomParams::with_k(
            p["capacity"].as_i64().unwrap(),
            p["errorRate"].as_f64().unwrap(),
            p["k"].as_u64().unwrap() as u32,
            p["forceNBitsPerElem"].as_u64().unwrap() as u32,
        )
        .unwrap_or_else(|e| panic!("{label}: {e}"));
        let mut bf = BloomFilter::with_params(params);
        assert_eq!(
            u64::from(bf.k_hashes()),
            f["kHashes"].as_u64().unwrap(),
            "{label}"
        );
        assert_eq!(bf.m_bits(), f["mBits"].as_u64().unwrap(), "{label}");
        assert_eq!(
            bf.word_count() as u64,
            f["words"].as_u64().unwrap(),
            "{label}"
        );
        assert_eq!(bf.to_string(), str_of(&f["toString"]), "{label}");
        assert_eq!(
            bf.serialize(),
            unhex(&f["serializedEmpty"]),
            "{label}: empty"
        );

        for hi in f["hashIndices"].as_array().unwrap() {
            let item = str_of(&hi["item"]).as_bytes();
            let ours: Vec<u64> = sds_proto::bloom::IdHashes::of(item)
                .positions(bf.k_hashes(), bf.m_bits())
                .collect();
            let theirs: Vec<u64> = hi["indices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            assert_eq!(ours, theirs, "{label}: positions of {:?}", hi["item"]);
        }

        let inserted: Vec<&str> = f["inserted"]
            .as_array()
            .unwrap()
            .iter()
            .map(str_of)
            .collect();
        for id in &inserted {
            bf.insert(id.as_bytes());
        }
        let serialized = bf.serialize();
        assert_eq!(
            serialized,
            unhex(&f["serializedAfterInsert"]),
            "{label}: after insert"
        );
        assert_eq!(bf.count_ones(), f["setBitsAfterInsert"].as_u64().unwrap());

        let view = FilterView::parse(&serialized).expect("own serialization parses");
        for (id, expected) in inserted.iter().zip(f["lookupInserted"].as_array().unwrap()) {
            assert_eq!(
                Value::Bool(bf.contains(id.as_bytes())),
                *expected,
                "{label}: {id}"
            );
            assert_eq!(
                Value::Bool(view.contains(id.as_bytes())),
                *expected,
                "{label}: {id}"
            );
        }
        let mut false_positives = Vec::new();
        for probe in f["lookupNotInserted"].as_array().unwrap() {
            let item = str_of(&probe["item"]);
            let hit = bf.contains(item.as_bytes());
            assert_eq!(Value::Bool(hit), probe["result"], "{label}: {item}");
            assert_eq!(view.contains(item.as_bytes()), hit, "{label}: view {item}");
            if hit {
                false_positives.push(Value::String(item.to_string()));
            }
        }
        assert_eq!(
            Value::Array(false_positives),
            f["falsePositives"],
            "{label}"
        );

        let rt = &f["roundtrip"];
        let back = BloomFilter::deserialize(&serialized).expect("roundtrip");
        assert_eq!(back.capacity(), rt["capacity"].as_u64().unwrap());
        assert_eq!(back.error_rate(), rt["errorRate"].as_f64().unwrap());
        assert_eq!(u64::from(back.k_hashes()), rt["kHashes"].as_u64().unwrap());
        assert_eq!(back.m_bits(), rt["mBits"].as_u64().unwrap());
        assert_eq!(back.bit_bytes() == bf.bit_bytes(), rt["wordsEqual"] == true);
    }

    for case in v["hashN"].as_array().unwrap() {
        let got = hash_n(
            str_of(&case["item"]).as_bytes(),
            case["n"].as_u64().unwrap() as u32,
            case["maxValue"].as_u64().unwrap(),
        );
        assert_eq!(got, case["result"].as_u64(), "hashN {case}");
    }
}

// BLOOM-06
#[test]
fn rolling_filter_init_matches_nim_sds() {
    let v = load("rolling_bloom_filter.json");
    for init in v["inits"].as_array().unwrap() {
        let r = RollingBloomFilter::new(
            init["capacityArg"].as_i64().unwrap(),
            init["errorRateArg"].as_f64().unwrap(),
        )
        .unwrap();
        let label = init.to_string();
        assert_eq!(r.capacity(), init["capacity"].as_u64().unwrap(), "{label}");
        assert_eq!(
            r.min_capacity() as u64,
            init["minCapacity"].as_u64().unwrap(),
            "{label}"
        );
        assert_eq!(
            r.max_capacity() as u64,
            init["maxCapacity"].as_u64().unwrap(),
            "{label}"
        );
        let f = r.filter();
        assert_eq!(
            f.capacity(),
            init["filterCapacity"].as_u64().unwrap(),
            "{label}"
        );
        assert_eq!(
            f.error_rate(),
            init["filterErrorRate"].as_f64().unwrap(),
            "{label}"
        );
        assert_eq!(
            u64::from(f.k_hashes()),
            init["kHashes"].as_u64().unwrap(),
            "{label}"
        );
        assert_eq!(f.m_bits(), init["mBits"].as_u64().unwrap(), "{label}");
    }
}

// BLOOM-07, BLOOM-08
#[test]
fn rolling_filter_cases_match_nim_sds() {
    let v = load("rolling_bloom_filter.json");
    for case in v["cases"].as_array().unwrap() {
        let init = &case["init"];
        let mut r = RollingBloomFilter::new(
            init["capacityArg"].as_i64().unwrap(),
            init["errorRateArg"].as_f64().unwrap(),
        )
        .unwrap();
        let pattern = str_of(&case["idPattern"]);
        let prefix = &pattern[..pattern.find('<').unwrap()];
        let n = case["n"].as_u64().unwrap() as usize;
        let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();

        let mut lens = Vec::new();
        let mut cleaned = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if r.add(MessageId::from(id.as_str())) {
                cleaned.push(Value::from(i));
            }
            lens.push(Value::from(r.len()));
        }
        assert_eq!(
            Value::Array(cleaned),
            case["cleanedAtAddIndex"],
            "{pattern}"
        );
        if let Some(expected) = case.get("messagesLenAfterEachAdd") {
            assert_eq!(&Value::Array(lens), expected, "{pattern}");
        }
        let kept: Vec<&str> = r.ids().map(|id| id.as_str().unwrap()).collect();
        assert_eq!(
            kept.len() as u64,
            case["finalMessagesLen"].as_u64().unwrap()
        );
        assert_eq!(kept.first().copied(), case["finalFirstMessage"].as_str());
        assert_eq!(kept.last().copied(), case["finalLastMessage"].as_str());
        if let Some(expected) = case.get("finalMessages") {
            let expected: Vec<&str> = expected.as_array().unwrap().iter().map(str_of).collect();
            assert_eq!(kept, expected, "{pattern}");
        }

        let ff = &case["finalFilter"];
        let f = r.filter();
        assert_eq!(f.capacity(), ff["capacity"].as_u64().unwrap(), "{pattern}");
        assert_eq!(
            f.error_rate(),
            ff["errorRate"].as_f64().unwrap(),
            "{pattern}"
        );
        assert_eq!(
            u64::from(f.k_hashes()),
            ff["kHashes"].as_u64().unwrap(),
            "{pattern}"
        );
        assert_eq!(f.m_bits(), ff["mBits"].as_u64().unwrap(), "{pattern}");
        assert_eq!(
            f.word_count() as u64,
            ff["words"].as_u64().unwrap(),
            "{pattern}"
        );
        if let Some(expected) = case.get("finalSerializedFilter") {
            assert_eq!(f.serialize(), unhex(expected), "{pattern}");
        }

        let first_kept = case["firstKeptIndex"].as_u64().unwrap() as usize;
        let mut evicted_hits = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let hit = r.contains(id.as_bytes());
            if i >= first_kept {
                assert!(hit, "{pattern}: kept id {id} must be found");
            } else if hit {
                evicted_hits.push(Value::String(id.clone()));
            }
        }
        if let Some(expected) = case.get("containedByIndex") {
            let ours: Vec<Value> = ids
                .iter()
                .map(|id| Value::Bool(r.contains(id.as_bytes())))
                .collect();
            assert_eq!(&Value::Array(ours), expected, "{pattern}");
        }
        assert_eq!(Value::Array(evicted_hits), case["evictedButStillContained"]);
        let never: Vec<Value> = (0..50)
            .map(|i| format!("never-{i}"))
            .filter(|id| r.contains(id.as_bytes()))
            .map(Value::String)
            .collect();
        assert_eq!(
            Value::Array(never),
            case["neverAddedButContained(never-0..never-49)"]
        );
    }
}

// REPAIR-01, REPAIR-02, REPAIR-03
#[test]
fn sds_r_timing_matches_nim_sds() {
    let v = load("sds_r.json");
    for case in v["vectors"].as_array().unwrap() {
        let p = str_of(&case["participantId"]).as_bytes();
        let s = str_of(&case["senderId"]).as_bytes();
        let m = str_of(&case["messageId"]).as_bytes();
        let t_min = case["tMinMs"].as_i64().unwrap();
        let t_max = case["tMaxMs"].as_i64().unwrap();
        let groups = case["numResponseGroups"].as_i64().unwrap();
        assert_eq!(
            Some(t_req_offset(p, m, t_min, t_max)),
            case["tReqMs"].as_i64(),
            "{case}"
        );
        assert_eq!(
            Some(t_resp_offset(p, s, m, t_max)),
            case["tRespMs"].as_i64(),
            "{case}"
        );
        assert_eq!(
            Some(in_response_group(p, s, m, groups)),
            case["isInResponseGroup"].as_bool(),
            "{case}"
        );
    }
}

#[test]
fn sds_r_base_hashes_match_nim_sds() {
    let v = load("sds_r.json");
    let vectors = v["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 22);
    for case in vectors {
        let p = str_of(&case["participantId"]).as_bytes();
        let s = str_of(&case["senderId"]).as_bytes();
        let m = str_of(&case["messageId"]).as_bytes();
        let d = &case["debug"];
        assert_eq!(
            Some(nim_hash_concat(p, m)),
            d["hashParticipantPlusMessage"].as_i64()
        );
        assert_eq!(
            Some(nim_hash_concat(s, m)),
            d["hashSenderPlusMessage"].as_i64()
        );
        assert_eq!(Some(nim_hash(p)), d["hashParticipant"].as_i64());
        assert_eq!(Some(nim_hash(s)), d["hashSender"].as_i64());
        assert_eq!(Some(nim_hash(m)), d["hashMessage"].as_i64());
    }
}
