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
use meridian::dns::request::{self, Parsed};
use meridian::health::RegionIds;
use meridian::iana::Rtype;
use meridian::policy::decide;
use meridian::snapshot::Snapshot;

fn snapshot() -> Snapshot {
    let config = Config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("meridian.yaml"),
        &Overrides::default(),
    )
    .unwrap();
    Snapshot::build(&config, &mut RegionIds::default(), &Default::default())
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
                Rtype::A,
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
                    None,
                    &mut out,
                )
                .is_some(),
            )
        })
    });
    // What response rate limiting adds per UDP response when it is on (off, it is one
    // branch): the kind from the header, a keyed hash and a compare-and-swap.
    let rrl = meridian::dns::rrl::Rrl::new(meridian::dns::rrl::RrlConfig {
        responses_per_second: 20,
        window_seconds: 15,
        slip: 2,
        ipv4_prefix: 24,
        ipv6_prefix: 56,
        exempt: Vec::new(),
    })
    .unwrap();
    let sources: Vec<std::net::IpAddr> = (0..1000u32)
        .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)).into())
        .collect();
    let response = out.clone();
    let (mut k, mut limited) = (0usize, 0u64);
    c.bench_function("rrl: account one response (1 000 sources)", |b| {
        b.iter(|| {
            k = (k + 1) % sources.len();
            let kind = meridian::dns::rrl::Kind::of(&response);
            black_box(rrl.action(sources[k], kind, &response, rrl.now(), &mut limited))
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
                    None,
                    &mut out,
                )
                .is_some(),
            )
        })
    });
}

/// A deployment of `policies` policies over `regions` regions (each policy nearest over
/// its own few regions) on the shipped GeoIP database, written to `dir`.
fn scale_config(dir: &Path, policies: usize, regions: usize) -> Config {
    use std::fmt::Write;
    std::fs::create_dir_all(dir.join("zones")).unwrap();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("zones/scale.example"),
        "$TTL 300\n@ SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ NS ns1\nns1 A 192.0.2.53\n",
    )
    .unwrap();
    let mut y = String::from("version: 1\nregions:\n");
    for r in 0..regions {
        let (lat, lon) = ((r * 37 % 120) as f64 - 50.0, (r * 73 % 360) as f64 - 180.0);
        writeln!(
            y,
            "  - {{ name: r{r}, location: {{ lat: {lat}, lon: {lon} }}, a: [192.0.2.{}] }}",
            r % 250 + 1
        )
        .unwrap();
    }
    y.push_str("policies:\n");
    for p in 0..policies {
        let picks: Vec<String> = (0..2 + p % 7)
            .map(|k| format!("r{}", (p * 31 + k * 17) % regions))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        writeln!(
            y,
            "  - {{ name: p{p}.scale.example, method: nearest, regions: [{}] }}",
            picks.join(", ")
        )
        .unwrap();
    }
    std::fs::write(dir.join("policies/scale.yaml"), y).unwrap();
    let geoip = Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip");
    std::fs::write(
        dir.join("meridian.yaml"),
        format!(
            "version: 1\nzones: zones\npolicies: policies\ngeoip: {}\ngeo:\n  latency: null\n",
            geoip.display()
        ),
    )
    .unwrap();
    Config::load(&dir.join("meridian.yaml"), &Overrides::default()).unwrap()
}

/// Issue 6's scale: the whole load (zones, policy files, GeoIP database, compile) of
/// 10 000 policies over 100 regions, against the same load with one policy.
fn load(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    for policies in [1usize, 10_000] {
        let config = scale_config(&dir.path().join(policies.to_string()), policies, 100);
        group.bench_function(format!("{policies} policies over 100 regions"), |b| {
            b.iter(|| {
                black_box(
                    Snapshot::build(&config, &mut RegionIds::default(), &Default::default())
                        .is_ok(),
                )
            })
        });
    }
    group.finish();
}

/// A query for `name` (wire form) with ECS for the /24 of `client`.
fn ecs_query(name: &[u8], client: u32) -> Vec<u8> {
    let mut p = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    p.extend_from_slice(name);
    p.extend_from_slice(&[0, 1, 0, 1]);
    let [a, b, c, _] = client.to_be_bytes();
    p.extend_from_slice(&[
        0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0, a, b, c,
    ]);
    p
}

/// Issue 6's scale on the query path: every query another policy's name and another
/// client, over 10 000 policies, against the same stream of clients for one name. The
/// difference is what a cold policy costs (its name, its route, its counters).
fn at_scale(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = scale_config(dir.path(), 10_000, 100);
    let scale = Snapshot::build(&config, &mut RegionIds::default(), &Default::default())
        .unwrap()
        .snapshot;
    let small = snapshot();
    let client = |i: u32| {
        let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        (x as u32 % 0xDF00_0000) + 0x0100_0000 // 1.0.0.0 – 223.255.255.255
    };
    let wire = |text: &str| {
        let mut w = Vec::new();
        for label in text.split('.') {
            w.push(label.len() as u8);
            w.extend_from_slice(label.as_bytes());
        }
        w.push(0);
        w
    };
    let n = 40_000u32;
    let many: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            ecs_query(
                &wire(&format!("p{}.scale.example", (i * 7919) % 10_000)),
                client(i),
            )
        })
        .collect();
    let one: Vec<Vec<u8>> = (0..n)
        .map(|i| ecs_query(&wire("www.example.com"), client(i)))
        .collect();
    let peer = "127.0.0.1".parse().unwrap();
    let mut out = Vec::with_capacity(4096);
    let mut tally = handler::AnswerTally::default();
    let mut group = c.benchmark_group("handle, ECS from spread clients");
    for (label, snap, packets) in [
        ("1 policy", &small, &one),
        ("10 000 policies, each query another", &scale, &many),
    ] {
        let health = snap.static_health();
        let mut j = 0usize;
        group.bench_function(label, |b| {
            b.iter(|| {
                j = (j + 1) % packets.len();
                let r = handler::handle(
                    snap,
                    &health,
                    &packets[j],
                    peer,
                    Transport::Udp,
                    Some(&mut tally),
                    &mut out,
                );
                if j.is_multiple_of(32) {
                    tally.apply(snap, &health);
                }
                black_box(r.is_some())
            })
        });
        // As the UDP loop answers: batches of 32, with and without reading each batch
        // ahead first (`handler::warm`). Times are per batch.
        for read_ahead in [false, true] {
            let mut j = 0usize;
            let name = format!(
                "{label}, batches of 32{}",
                if read_ahead { ", read ahead" } else { "" }
            );
            group.bench_function(name, |b| {
                b.iter(|| {
                    j = (j + 32) % (packets.len() - 32);
                    let batch: Vec<Parsed<'_>> = packets[j..j + 32]
                        .iter()
                        .map(|p| request::parse(p))
                        .collect();
                    if read_ahead {
                        handler::warm(snap, batch.iter().filter_map(Parsed::as_query));
                    }
                    let mut answered = 0;
                    for p in batch {
                        let r = handler::handle_parsed(
                            snap,
                            &health,
                            p,
                            peer,
                            Transport::Udp,
                            Some(&mut tally),
                            &mut out,
                        );
                        answered += usize::from(r.is_some());
                    }
                    tally.apply(snap, &health);
                    black_box(answered)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(query_path, benches, at_scale, load);
criterion_main!(query_path);
