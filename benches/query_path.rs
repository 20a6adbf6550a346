//! Regression guards for the query path (`cargo bench`): the decision function alone, and
//! one whole request (parse → lookup with a policy decision → encode), on the shipped
//! example deployment and its GeoIP database. Throughput against peers is measured by
//! `bench/run.py`, not here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use meridian::config::{Config, Overrides};
use meridian::dns::handler::{self, Transport};
use meridian::health::RegionIds;
use meridian::policy::decide;
use meridian::snapshot::Snapshot;

fn snapshot() -> Snapshot {
    let config = Config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("meridian.yaml"),
        &Overrides::default(),
    )
    .unwrap();
    Snapshot::build(&config, &mut RegionIds::default())
        .unwrap()
        .snapshot
}

/// `www.example.com A` with ECS for `a.b.c.0/24`.
fn query(a: u8, b: u8, c: u8) -> Vec<u8> {
    let mut p = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    p.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
    p.extend_from_slice(&[
        0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0, a, b, c,
    ]);
    p
}

fn benches(c: &mut Criterion) {
    let snap = snapshot();
    let health = snap.static_health();
    let policy = &snap.policies.policies[0];
    let clients: Vec<std::net::IpAddr> = (0..256u32)
        .map(|i| std::net::Ipv4Addr::from(0x5100_0000 + (i << 12)).into())
        .collect();
    let mut i = 0usize;
    c.bench_function("decide nearest (ECS client, 1M-network table)", |b| {
        b.iter(|| {
            i = (i + 1) % clients.len();
            black_box(decide::decide(
                &snap.policies,
                &health,
                policy,
                1,
                Some(clients[i]),
            ))
        })
    });
    let packets: Vec<Vec<u8>> = (0..256u32)
        .map(|i| query(81, (i % 200) as u8 + 1, 69))
        .collect();
    let mut out = Vec::with_capacity(4096);
    let peer = "127.0.0.1".parse().unwrap();
    let mut j = 0usize;
    c.bench_function("handle: parse + policy answer + encode", |b| {
        b.iter(|| {
            j = (j + 1) % packets.len();
            black_box(
                handler::handle(
                    &snap,
                    &health,
                    &packets[j],
                    peer,
                    Transport::Udp,
                    false,
                    &mut out,
                )
                .is_some(),
            )
        })
    });
    let static_q = {
        let mut p = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(b"\x04mail\x07example\x03com\x00\x00\x01\x00\x01");
        p
    };
    c.bench_function("handle: static A", |b| {
        b.iter(|| {
            black_box(
                handler::handle(
                    &snap,
                    &health,
                    &static_q,
                    peer,
                    Transport::Udp,
                    false,
                    &mut out,
                )
                .is_some(),
            )
        })
    });
}

criterion_group!(query_path, benches);
criterion_main!(query_path);
