//! The example deployment signed: whatever health view the checker publishes, every
//! answer a policy gives under it was signed by `prepare` before the view was
//! published (none is signed on the query path), and the zone's data is signed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::IpAddr;
use std::sync::atomic::Ordering;

mod common;

use meridian::config::{Config, Overrides};
use meridian::dns::handler::PolicyAnswers;
use meridian::dnssec::keys::{self, Algorithm, Role, Timing};
use meridian::health::{Effective, HealthView, RegionHealth, RegionIds};
use meridian::iana::Rtype;
use meridian::snapshot::Snapshot;
use meridian::zone::lookup::{Dynamic, DynamicAnswers};

fn signed_example() -> (tempfile::TempDir, Snapshot) {
    let dir = common::example_copy();
    // us-east with two addresses: a view that withholds one gives an RRset that the
    // all-live view does not.
    let p = dir.path().join("policies/example.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains("a: [192.0.2.10]"));
    std::fs::write(
        &p,
        text.replace("a: [192.0.2.10]", "a: [192.0.2.10, 192.0.2.11]"),
    )
    .unwrap();
    let now = meridian::dnssec::now();
    let timing = Timing {
        publish: Some(now),
        activate: Some(now),
        inactive: None,
        delete: None,
    };
    let g = keys::generate(
        "example.com",
        Algorithm::EcdsaP256Sha256,
        Role::Combined,
        timing,
        now,
    )
    .unwrap();
    let k = dir.path().join("keys");
    std::fs::create_dir(&k).unwrap();
    std::fs::write(k.join(format!("{}.key", g.base)), g.public_text).unwrap();
    std::fs::write(k.join(format!("{}.private", g.base)), g.private_text).unwrap();
    let config = Config::load(&dir.path().join("meridian.yaml"), &Overrides::default()).unwrap();
    let built = Snapshot::build(&config, &mut RegionIds::default(), &Default::default())
        .unwrap_or_else(|e| panic!("{e:?}"));
    (dir, built.snapshot)
}

#[test]
fn every_answer_of_every_health_view_is_signed_before_it_is_served() {
    let (_dir, snap) = signed_example();
    assert!(snap.dnssec.is_signed());
    let regions: Vec<u32> = snap.policies.regions.iter().map(|r| r.id).collect();
    let clients: Vec<Option<IpAddr>> = [
        "81.2.69.1",
        "1.0.16.1",
        "8.8.8.8",
        "85.214.0.1",
        "2001:4860::1",
        "41.0.0.1",
        "200.0.0.1",
        "203.0.113.7",
    ]
    .iter()
    .map(|c| c.parse().ok())
    .chain([None])
    .collect();
    let inline_before = meridian::dnssec::INLINE_SIGNED.load(Ordering::Relaxed);
    let mut checked = 0;
    // Every region up or down, and each region's addresses all, some or none live.
    for down in 0..(1u32 << regions.len()) {
        for live in [u64::MAX, 0b01, 0b10, 0] {
            let mut view = HealthView::default();
            for (i, &id) in regions.iter().enumerate() {
                let state = if down & (1 << i) != 0 {
                    Effective::Down
                } else {
                    Effective::Up
                };
                let mut h = RegionHealth::new(state, None);
                if i == 0 {
                    h.live = live;
                }
                view.put(id, h);
            }
            snap.dnssec.prepare(&snap.policies, &view);
            for p in 0..snap.policies.policies.len() as u32 {
                for qtype in [Rtype::A, Rtype::AAAA] {
                    for &client in &clients {
                        let mut answers = PolicyAnswers {
                            snapshot: &snap,
                            health: &view,
                            client,
                            scope: 0,
                            tally: None,
                            dnssec: true,
                        };
                        let name = &snap.policies.policies[p as usize].name;
                        match answers.answer(p, qtype, name) {
                            Dynamic::Records { sigs, rdata, .. } => {
                                assert!(sigs.is_some_and(|s| !s.is_empty()), "{rdata:?}");
                                checked += 1;
                            }
                            Dynamic::Cname { sigs, .. } => {
                                assert!(sigs.is_some_and(|s| !s.is_empty()));
                                checked += 1;
                            }
                            Dynamic::NoData | Dynamic::ServFail | Dynamic::NxDomain => {}
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 1000, "{checked}");
    assert_eq!(
        meridian::dnssec::INLINE_SIGNED.load(Ordering::Relaxed),
        inline_before,
        "an answer was signed on the query path"
    );
}

#[test]
fn zone_data_is_signed_and_the_apex_publishes_the_key() {
    let (_dir, snap) = signed_example();
    let zone = snap.zones.iter().next().unwrap();
    assert!(zone.signed);
    let apex = zone.apex_node().unwrap();
    let dnskey = apex.rrset(Rtype::DNSKEY).unwrap();
    assert_eq!(dnskey.rdata.len(), 1);
    assert_eq!(dnskey.sigs.len(), 1);
    for set in apex.rrsets.iter() {
        assert_eq!(set.sigs.len(), 1, "{:?} unsigned", set.rtype);
    }
    // A delegation: DS signed, NS not (RFC 4035 2.2); glue below it not signed.
    let lab = zone
        .nodes
        .iter()
        .find(|(k, _)| k.starts_with(b"\x03lab\x07"))
        .map(|(_, n)| n)
        .unwrap();
    assert!(lab.rrset(Rtype::NS).unwrap().sigs.is_empty());
    assert_eq!(lab.rrset(Rtype::DS).unwrap().sigs.len(), 1);
    let glue = zone
        .nodes
        .iter()
        .find(|(k, _)| k.starts_with(b"\x02ns\x03lab\x07"))
        .map(|(_, n)| n)
        .unwrap();
    assert!(glue.rrsets.iter().all(|s| s.sigs.is_empty()));
    // The negative SOA carries the SOA's signatures.
    assert_eq!(zone.negative_soa.sigs.len(), 1);
}
