//! Unbound (Debian package `unbound`, installed by `tests/run.sh`) as the resolver in
//! front of a server under test: example.com stubbed to it, client subnets forwarded
//! (ECS), answers cached; validating when given a trust anchor.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use super::{Process, free_port, query_bytes, try_udp};

pub struct Unbound {
    _process: Process,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

/// Starts Unbound with its files in `dir`, example.com stubbed to `server`; validating
/// with `anchor` (a DNSKEY line) when given. Returns once it answers.
pub fn start(dir: &Path, server: SocketAddr, anchor: Option<&str>) -> Unbound {
    let port = free_port();
    let log = dir.join("unbound.log");
    let conf = dir.join("unbound.conf");
    let (modules, trust) = match anchor {
        Some(a) => (
            "subnetcache validator iterator",
            format!("  trust-anchor: \"{a}\"\n"),
        ),
        None => ("subnetcache iterator", String::new()),
    };
    std::fs::write(
        &conf,
        format!(
            r#"server:
  interface: 127.0.0.1
  port: {port}
  do-ip6: no
  do-not-query-localhost: no
  module-config: "{modules}"
  send-client-subnet: 127.0.0.1
  client-subnet-always-forward: yes
{trust}  access-control: 127.0.0.0/8 allow
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: "{log}"
  verbosity: 1
  val-log-level: 2
  qname-minimisation: no
  target-fetch-policy: "0 0 0 0 0"
  prefetch: no
stub-zone:
  name: "example.com"
  stub-addr: {ip}@{sport}
remote-control:
  control-enable: no
"#,
            dir = dir.display(),
            log = log.display(),
            ip = server.ip(),
            sport = server.port(),
        ),
    )
    .unwrap();
    let child = Command::new("unbound")
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unbound (apt install unbound)");
    let u = Unbound {
        _process: Process(child),
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let probe = query_bytes("example.com.", RecordType::SOA, Some(1232));
    while Instant::now() < deadline {
        if try_udp(u.addr, &probe, Duration::from_millis(300)).is_some() {
            return u;
        }
    }
    panic!("unbound did not start");
}
