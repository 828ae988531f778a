//! Property tests of the nim-sds codec and the bloom-filter reader (WIRE-04, HOSTILE-05).
//!
//! Case counts default to 10,000 per property; `PROPTEST_CASES` overrides them.

use bytes::Bytes;
use proptest::prelude::*;
use sds_proto::bloom::{BloomFilter, FilterView};
use sds_proto::wire::spec::{self, SpecHistoryEntry, SpecMessage};
use sds_proto::wire::{nim, DecodeError, Limits};
use sds_proto::{HistoryEntry, SdsMessage};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn id<T: From<Vec<u8>> + std::fmt::Debug>(max: usize) -> impl Strategy<Value = T> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(T::from)
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn entry() -> impl Strategy<Value = HistoryEntry> {
    (id(40), bytes(40), id(20)).prop_map(|(message_id, retrieval_hint, sender_id)| HistoryEntry {
        message_id,
        retrieval_hint,
        sender_id,
    })
}

prop_compose! {
    fn message()(
        message_id in id(64),
        lamport_timestamp in 0..=i64::MAX,
        causal_history in prop::collection::vec(entry(), 0..12),
        channel_id in id(32),
        content in bytes(300),
        bloom_filter in bytes(200),
        sender_id in id(32),
        repair_request in prop::collection::vec(entry(), 0..4),
    ) -> SdsMessage {
        SdsMessage {
            message_id,
            lamport_timestamp,
            causal_history,
            channel_id,
            content,
            bloom_filter,
            sender_id,
            repair_request,
        }
    }
}

/// Arbitrary bytes, plus mutations of valid encodings (which reach deeper into the decoder
/// than uniformly random bytes do).
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (
            message(),
            any::<prop::sample::Index>(),
            any::<u8>(),
            any::<bool>()
        )
            .prop_map(|(m, at, byte, truncate)| {
                let mut b = nim::encode(&m);
                let i = at.index(b.len());
                if truncate {
                    b.truncate(i);
                } else {
                    b[i] = byte;
                }
                b
            }),
    ]
}

fn filter_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (
            1i64..200,
            prop::sample::select(vec![0.1, 0.01, 0.001]),
            any::<prop::sample::Index>(),
            any::<u8>()
        )
            .prop_map(|(cap, err, at, byte)| {
                let mut b = BloomFilter::new(cap, err)
                    .expect("valid params")
                    .serialize();
                let i = at.index(b.len());
                b[i] = byte;
                b
            }),
    ]
}

fn spec_entry() -> impl Strategy<Value = SpecHistoryEntry> {
    (
        id(40),
        proptest::option::of(bytes(40)),
        proptest::option::of(id(12)),
    )
        .prop_map(|(message_id, retrieval_hint, sender_id)| SpecHistoryEntry {
            message_id,
            retrieval_hint,
            sender_id,
        })
}

prop_compose! {
    fn spec_message()(
        sender_id in id(12),
        message_id in id(40),
        channel_id in id(12),
        lamport_timestamp in proptest::option::of(any::<u64>()),
        causal_history in proptest::collection::vec(spec_entry(), 0..6),
        bloom_filter in proptest::option::of(bytes(64)),
        repair_request in proptest::collection::vec(spec_entry(), 0..4),
        content in proptest::option::of(bytes(64)),
    ) -> SpecMessage {
        SpecMessage {
            sender_id,
            message_id,
            channel_id,
            lamport_timestamp,
            causal_history,
            bloom_filter,
            repair_request,
            content,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    // WIRE-14
    #[test]
    fn spec_decode_inverts_encode(m in spec_message()) {
        let encoded = spec::encode(&m);
        prop_assert_eq!(encoded.len(), spec::encoded_len(&m));
        prop_assert_eq!(spec::decode(&Bytes::from(encoded.clone()), &Limits::default()), Ok(m.clone()));
        prop_assert_eq!(spec::extract_channel_id(&encoded), Ok(m.channel_id.as_bytes()));
    }

    #[test]
    fn spec_decode_never_panics(b in hostile_bytes()) {
        let r = spec::decode(&Bytes::from(b.clone()), &Limits::default());
        if let Ok(m) = r {
            let again = spec::decode(&Bytes::from(spec::encode(&m)), &Limits::default());
            prop_assert_eq!(again, Ok(m));
        }
        let _ = spec::extract_channel_id(&b);
    }

    #[test]
    fn decode_inverts_encode(m in message()) {
        let encoded = nim::encode(&m);
        prop_assert_eq!(encoded.len(), nim::encoded_len(&m));
        let decoded = nim::decode(&Bytes::from(encoded.clone()), &Limits::default());
        prop_assert_eq!(decoded, Ok(m.clone()));
        prop_assert_eq!(nim::extract_channel_id(&encoded), Ok(m.channel_id.as_bytes()));
    }

    #[test]
    fn decode_never_panics(b in hostile_bytes()) {
        let r = nim::decode(&Bytes::from(b.clone()), &Limits::default());
        // Whatever is accepted re-encodes to something that decodes to the same message.
        if let Ok(m) = r {
            let again = nim::decode(&Bytes::from(nim::encode(&m)), &Limits::default());
            prop_assert_eq!(again, Ok(m));
        }
        let _ = nim::extract_channel_id(&b);
    }

    #[test]
    fn filter_parse_never_panics(b in filter_bytes(), probe in id::<sds_proto::MessageId>(24)) {
        if let Ok(view) = FilterView::parse(&b) {
            // Lookups on any accepted header stay in bounds and agree with the owned copy.
            prop_assert_eq!(view.contains(probe.as_bytes()), view.to_filter().contains(probe.as_bytes()));
        }
    }

    #[test]
    fn decode_respects_limits(m in message(), max_history in 0usize..12) {
        let limits = Limits::default().with_max_causal_history(max_history);
        let r = nim::decode(&Bytes::from(nim::encode(&m)), &limits);
        if m.causal_history.len() > max_history {
            let is_limit_error = matches!(r, Err(DecodeError::LimitExceeded { .. }));
            prop_assert!(is_limit_error);
        } else {
            prop_assert_eq!(r, Ok(m));
        }
    }
}
