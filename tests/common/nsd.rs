//! NSD (Debian package `nsd`, installed by `.ci/run`) as a reference server and as a
//! real secondary of Meridian.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

use super::{query_bytes, try_udp};

pub struct Nsd(pub Child);

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn nsd_binary() -> Option<String> {
    ["/usr/sbin/nsd", "/usr/bin/nsd"]
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
}

/// The `server:` part of an nsd.conf: loopback on `port`, everything under `dir`.
pub fn nsd_server(dir: &Path, zones: &Path, port: u16) -> String {
    format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  zonesdir: \"{z}\"\n  database: \"\"\n  username: \"\"\n  chroot: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  hide-version: yes\n  hide-identity: yes\n  verbosity: 1\nremote-control:\n  control-enable: no\n",
        z = zones.display(),
        d = dir.display()
    )
}

/// Starts NSD with `conf` and waits until it answers `zone`'s SOA (for a secondary:
/// until the first transfer is in).
pub fn run_nsd(dir: &Path, conf: &str, port: u16, zone: &str) -> Nsd {
    let conf_path = dir.join("nsd.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut nsd = Nsd(
        Command::new(nsd_binary().expect("nsd (apt-get install nsd)"))
            .args(["-d", "-c"])
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("nsd.stderr")).unwrap())
            .spawn()
            .expect("start nsd"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let probe = query_bytes(zone, RecordType::SOA, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(r) = try_udp(addr, &probe, Duration::from_millis(200))
            && Message::from_vec(&r)
                .map(|m| !m.answers.is_empty())
                .unwrap_or(false)
        {
            return nsd;
        }
    }
    let _ = nsd.0.kill();
    panic!(
        "nsd did not come up: {}{}",
        std::fs::read_to_string(dir.join("nsd.stderr")).unwrap_or_default(),
        std::fs::read_to_string(dir.join("nsd.log")).unwrap_or_default()
    );
}
