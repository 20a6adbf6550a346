//! Geo rules fed from CIDR files (`cidrs_file:`): clients in a listed network get the
//! rule's regions, the file is re-read on reload, and a bad line is an error at
//! FILE:LINE (a reload with it keeps the running answers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;

const ZONE: &str = "$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
";

fn answer(m: &Meridian, client: &str) -> String {
    first_rdata(&ecs_ask(
        m.addr,
        "www.example.test.",
        RecordType::A,
        client,
        24,
    ))
}

#[test]
fn a_cidrs_file_routes_its_networks_and_is_reloaded_with_everything_else() {
    let dir = common::deployment(&[("example.test", ZONE)]);
    with_shipped_geoip(dir.path());
    std::fs::create_dir_all(dir.path().join("policies/nets")).unwrap();
    std::fs::write(
        dir.path().join("policies/web.yaml"),
        "version: 1
regions:
  - { name: us-east, location: { lat: 39.04, lon: -77.49 }, a: [192.0.2.10] }
  - { name: office, location: { lat: 52.52, lon: 13.40 }, a: [203.0.113.10] }
policies:
  - name: www.example.test
    method: geo
    geo:
      rules:
        - { cidrs_file: nets/office.txt, regions: [office] }
      default: [us-east]
",
    )
    .unwrap();
    let office = dir.path().join("policies/nets/office.txt");
    std::fs::write(
        &office,
        "# the offices\n81.2.69.0/24   # London\n\n2001:db8::/32\n",
    )
    .unwrap();
    let m = Meridian::start(&dir.path().join("meridian.yaml"));
    assert_eq!(answer(&m, "81.2.69.0"), "203.0.113.10", "in the file");
    assert_eq!(answer(&m, "8.8.8.0"), "192.0.2.10", "not in it");

    // A bad line: `check` names it, and a reload keeps the running answers.
    std::fs::write(&office, "81.2.69.0/24\n8.8.8.0/24\n10.1.2.3/8\nnope\n").unwrap();
    let text = check_errors(&dir.path().join("meridian.yaml"));
    assert!(
        text.contains("office.txt:3:") && text.contains("host bits"),
        "{text}"
    );
    assert!(
        text.contains("office.txt:4:") && text.contains("\"nope\""),
        "{text}"
    );
    let pid = m.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        answer(&m, "8.8.8.0"),
        "192.0.2.10",
        "the bad file did not apply"
    );

    // Fixed, with 8.8.8.0/24 added: reloaded, it routes there too.
    std::fs::write(&office, "81.2.69.0/24\n8.8.8.0/24\n").unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    let start = Instant::now();
    while answer(&m, "8.8.8.0") != "203.0.113.10" {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", m.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // A missing file is an error naming it where the policy names it.
    std::fs::remove_file(&office).unwrap();
    let text = check_errors(&dir.path().join("meridian.yaml"));
    assert!(
        text.contains("web.yaml:10:") && text.contains("office.txt"),
        "{text}"
    );
}
