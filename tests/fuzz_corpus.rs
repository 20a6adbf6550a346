//! Replays the fuzzers' checked-in corpus (`fuzz/corpus/<target>/`, seeds and what the
//! fuzzers kept) and every input that ever crashed or hung (`fuzz/artifacts/<target>/`)
//! through the same functions the fuzz targets run (`meridian::fuzzing`), so a
//! regression fails `cargo test` without the fuzzer. `fuzz/run.sh` runs the fuzzers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            let name = e.path().display().to_string();
            let result = std::panic::catch_unwind(|| f(&data));
            assert!(result.is_ok(), "{target}: {name} fails");
            n += 1;
        }
    }
    n
}

macro_rules! target {
    ($name:ident) => {
        #[test]
        fn $name() {
            let n = replay(stringify!($name), meridian::fuzzing::$name);
            assert!(n > 0, "no corpus for {}", stringify!($name));
        }
    };
}

target!(request);
target!(zone_file);
target!(policy_file);
target!(tenants_csv);
target!(config_file);
target!(ecs);
target!(geoip);
target!(gossip);
target!(admin_body);
target!(state_file);

/// Writes the seeds that are generated rather than copied (`cargo test --test
/// fuzz_corpus -- --ignored write_seeds`): queries, ECS options, a small GeoIP database,
/// gossip values.
#[test]
#[ignore]
fn write_seeds() {
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    use hickory_proto::rr::{Name, RecordType};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let query = |name: &str, t: RecordType, edns: bool, ecs: Option<&str>| {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.metadata.recursion_desired = false;
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            if let Some(net) = ecs {
                e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                    net.parse().unwrap(),
                    24,
                    0,
                )));
            }
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    };
    let seeds = [
        (
            "www-a",
            query("www.example.com.", RecordType::A, false, None),
        ),
        (
            "www-aaaa-ecs",
            query(
                "www.example.com.",
                RecordType::AAAA,
                true,
                Some("81.2.69.0"),
            ),
        ),
        (
            "apex-any",
            query("example.com.", RecordType::ANY, true, None),
        ),
        (
            "apex-soa",
            query("example.com.", RecordType::SOA, false, None),
        ),
        (
            "nx",
            query("nope.example.com.", RecordType::TXT, true, None),
        ),
        ("axfr", query("example.com.", RecordType::AXFR, false, None)),
        (
            "other-zone",
            query("example.org.", RecordType::A, false, None),
        ),
        (
            "multi",
            query("multi.example.com.", RecordType::A, true, Some("8.8.8.0")),
        ),
    ];
    for (n, bytes) in seeds {
        std::fs::write(root.join("request").join(n), bytes).unwrap();
    }
    for (n, bytes) in [
        ("v4-24", vec![0, 1, 24, 0, 81, 2, 69]),
        ("v6-56", vec![0, 2, 56, 0, 0x20, 1, 0x0d, 0xb8, 0, 0, 0]),
        ("source-0", vec![0, 1, 0, 0]),
        ("bad-family", vec![0, 9, 24, 0, 1, 2, 3]),
        ("scope-set", vec![0, 1, 24, 8, 1, 2, 3]),
    ] {
        std::fs::write(root.join("ecs").join(n), bytes).unwrap();
    }
    let mut w = mmdb_writer::Writer::new("GeoIP2-Country");
    w.insert_value(
        "192.0.2.0/24".parse::<ipnet::IpNet>().unwrap(),
        mmdb_writer::Value::map([(
            "country",
            mmdb_writer::Value::map([("iso_code", mmdb_writer::Value::from("IE"))]),
        )]),
    )
    .unwrap();
    std::fs::write(root.join("geoip/country.mmdb"), w.to_bytes().unwrap()).unwrap();
    let mut s = meridian::cluster::auth::Sealer::new(b"fuzzing-key-0123456789", 7);
    std::fs::write(
        root.join("gossip/sealed"),
        s.seal(b"hello", ([192, 0, 2, 1], 7946).into()),
    )
    .unwrap();
    std::fs::write(root.join("gossip/verdict"), "down 0.500 812.0 1764650000").unwrap();
    std::fs::write(
        root.join("gossip/override"),
        r#"{"state":{"kind":"drain","reason":"x","since":1,"fraction":0.3},"stamp":5,"by":"ns1"}"#,
    )
    .unwrap();
}
