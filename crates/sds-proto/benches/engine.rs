#![allow(missing_docs)] // criterion_group! generates an undocumented function.
//! Micro-benchmarks of the hot paths: wrap, unwrap (in order), decode, bloom lookups on received
//! bytes. Run with `cargo bench -p sds-proto`. Per-operation cost must not grow with history or
//! buffer size, so wrap and unwrap are measured after 2,000 and after 20,000 prior messages.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use sds_proto::bloom::{BloomFilter, FilterView, IdHashes};
use sds_proto::engine::{Channel, Config};
use sds_proto::wire::{nim, Limits};

const T0: u64 = 1_700_000_000_000;

fn payload(i: usize) -> Bytes {
    Bytes::from((0..64).map(|j| ((i + j) % 256) as u8).collect::<Vec<u8>>())
}

fn sender_after(n: usize) -> (Channel, Vec<Bytes>) {
    let mut ch = Channel::new("bench".into(), "alice".into(), Config::default(), T0).unwrap();
    let wrapped = (0..n)
        .map(|i| {
            let b = ch.wrap(payload(i), format!("msg-{i}").into(), T0).unwrap();
            let _ = ch.take_store_ops();
            b
        })
        .collect();
    (ch, wrapped)
}

fn wrap(c: &mut Criterion) {
    for prior in [2_000usize, 20_000] {
        let (mut ch, _) = sender_after(prior);
        let mut i = prior;
        c.bench_function(&format!("wrap after {prior}"), |b| {
            b.iter(|| {
                i += 1;
                let bytes = ch.wrap(payload(i), format!("msg-{i}").into(), T0).unwrap();
                let _ = ch.take_store_ops();
                black_box(bytes)
            })
        });
    }
}

fn unwrap_in_order(c: &mut Criterion) {
    for prior in [2_000usize, 20_000] {
        let (mut sender, wrapped) = sender_after(prior);
        let mut receiver =
            Channel::new("bench".into(), "bob".into(), Config::default(), T0).unwrap();
        for b in &wrapped {
            receiver.unwrap(b.clone(), T0).unwrap();
            let _ = receiver.take_store_ops();
            while receiver.poll_event().is_some() {}
        }
        drop(wrapped);
        let mut i = prior;
        c.bench_function(&format!("unwrap in order after {prior}"), |b| {
            b.iter_batched(
                || {
                    // The next message, wrapped outside the measurement.
                    i += 1;
                    let bytes = sender
                        .wrap(payload(i), format!("msg-{i}").into(), T0)
                        .unwrap();
                    let _ = sender.take_store_ops();
                    bytes
                },
                |bytes| {
                    let r = receiver.unwrap(bytes, T0).unwrap();
                    let _ = receiver.take_store_ops();
                    while receiver.poll_event().is_some() {}
                    black_box(r)
                },
                BatchSize::SmallInput,
            )
        });
    }
}

fn codec(c: &mut Criterion) {
    let (_, wrapped) = sender_after(20);
    let msg = wrapped[19].clone();
    c.bench_function("decode default message (18.8 KB)", |b| {
        b.iter(|| black_box(nim::decode(&msg, &Limits::default()).unwrap()))
    });
    let decoded = nim::decode(&msg, &Limits::default()).unwrap();
    c.bench_function("encode default message (18.8 KB)", |b| {
        b.iter(|| black_box(nim::encode(&decoded)))
    });
    c.bench_function("extract_channel_id", |b| {
        b.iter(|| black_box(nim::extract_channel_id(&msg).unwrap()))
    });
}

fn bloom(c: &mut Criterion) {
    let mut f = BloomFilter::new(10_000, 0.001).unwrap();
    for i in 0..10_000 {
        f.insert(format!("id-{i}").as_bytes());
    }
    let bytes = f.serialize();
    let hashes = IdHashes::of(b"id-4242");
    c.bench_function("received filter: parse + lookup", |b| {
        b.iter(|| {
            let view = FilterView::parse(black_box(&bytes)).unwrap();
            black_box(view.contains_hashes(hashes))
        })
    });
    c.bench_function("id hashes (2 x FarmHash)", |b| {
        b.iter(|| black_box(IdHashes::of(black_box(b"msg-123456"))))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = wrap, unwrap_in_order, codec, bloom
}
criterion_main!(benches);
