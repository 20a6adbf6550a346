//! Shared by the black-box tests: start the real `meridian` binary on a free loopback
//! port and talk DNS to it over real sockets with hickory-proto as the client.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod httpd;
pub mod netns;
pub mod nsd;
pub mod unbound;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};

pub const BIN: &str = env!("CARGO_BIN_EXE_meridian");

/// A port free for both UDP and TCP on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Meridian {
    pub child: Child,
    pub addr: SocketAddr,
    /// The HTTP surface (/metrics, /status, /api/v1).
    pub http: SocketAddr,
    pub dir: PathBuf,
    pub stderr_path: PathBuf,
}

impl Drop for Meridian {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Meridian {
    /// Starts `meridian serve` with `config` (a meridian.yaml) and waits until it answers.
    pub fn start(config: &Path) -> Meridian {
        Self::start_with(config, &[], &[])
    }

    /// Starts with extra arguments and environment variables. The ports are picked
    /// free, and picked again if another process took one before the server bound it.
    pub fn start_with(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Meridian {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let dir = config.parent().unwrap().to_path_buf();
            let stderr_path = std::env::temp_dir().join(format!("meridian-test-{port}.log"));
            let child = Command::new(BIN)
                .args(["serve", "--config"])
                .arg(config)
                .args(["--dns-listen", &addr.to_string()])
                .args(["--http-listen", &http.to_string()])
                .args(args)
                .env_remove("MERIDIAN_ADMIN_TOKEN")
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr_path).unwrap())
                .spawn()
                .expect("start meridian");
            let mut m = Meridian {
                child,
                addr,
                http,
                dir,
                stderr_path,
            };
            match m.answers_or_exits() {
                Ok(()) => return m,
                Err(log)
                    if attempt < 5 && (log.contains("in use") || log.contains("cannot listen")) =>
                {
                    continue;
                }
                Err(log) => panic!("meridian did not answer; log:\n{log}"),
            }
        }
    }

    /// Waits until the server answers (`Ok`) or exits (`Err` with its log).
    fn answers_or_exits(&mut self) -> Result<(), String> {
        // Loading the shipped GeoIP database takes a few seconds in a debug build.
        let deadline = Instant::now() + Duration::from_secs(60);
        let probe = query_bytes("ready.invalid.", RecordType::A, None);
        while Instant::now() < deadline {
            if try_udp(self.addr, &probe, Duration::from_millis(200)).is_some() {
                return Ok(());
            }
            if self.child.try_wait().ok().flatten().is_some() {
                return Err(self.log());
            }
        }
        Err(self.log())
    }

    /// Starts `meridian serve` with DNS and HTTP on the given addresses.
    pub fn start_at(config: &Path, dns: SocketAddr, http: SocketAddr) -> Meridian {
        let m = Self::spawn_at(config, dns, http);
        m.wait_ready();
        m
    }

    /// Like `start_at`, without waiting for it to answer (instances that wait for each
    /// other are spawned together).
    pub fn spawn_at(config: &Path, dns: SocketAddr, http: SocketAddr) -> Meridian {
        let dir = config.parent().unwrap().to_path_buf();
        let stderr_path = dir.join("meridian.log");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .args(["--dns-listen", &dns.to_string()])
            .args(["--http-listen", &http.to_string()])
            .env_remove("MERIDIAN_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&stderr_path)
                    .unwrap(),
            )
            .spawn()
            .expect("start meridian");
        Meridian {
            child,
            addr: dns,
            http,
            dir,
            stderr_path,
        }
    }

    pub fn wait_ready(&self) {
        // Loading the shipped GeoIP database takes a few seconds in a debug build.
        let deadline = Instant::now() + Duration::from_secs(60);
        let probe = query_bytes("ready.invalid.", RecordType::A, None);
        while Instant::now() < deadline {
            if try_udp(self.addr, &probe, Duration::from_millis(200)).is_some() {
                return;
            }
        }
        panic!("meridian did not answer; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The value of the first `/metrics` line starting with `series`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = http(self.http, "GET", "/metrics", &[], "");
        body.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn udp(&self, name: &str, rtype: RecordType) -> Message {
        udp(self.addr, &query_bytes(name, rtype, Some(1232)))
    }
}

/// A directory with meridian.yaml and a zones/ folder holding the given files.
pub fn deployment(zones: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones")).unwrap();
    for (name, text) in zones {
        std::fs::write(dir.path().join("zones").join(name), text).unwrap();
    }
    std::fs::write(
        dir.path().join("meridian.yaml"),
        "version: 1\ndns:\n  udp_sockets_per_address: 2\n  tcp_idle_timeout: 2s\n",
    )
    .unwrap();
    dir
}

/// The repository's own example deployment (README quick start).
pub fn example_config() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/meridian.yaml"))
}

pub fn query_msg(name: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

pub fn query_bytes(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    query_msg(name, rtype, edns).to_vec().unwrap()
}

pub fn try_udp(addr: SocketAddr, packet: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(timeout)).unwrap();
    sock.send_to(packet, addr).ok()?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

pub fn udp_raw(addr: SocketAddr, packet: &[u8]) -> Vec<u8> {
    for _ in 0..3 {
        if let Some(r) = try_udp(addr, packet, Duration::from_secs(2)) {
            return r;
        }
    }
    panic!("no UDP answer from {addr}");
}

pub fn udp(addr: SocketAddr, packet: &[u8]) -> Message {
    Message::from_vec(&udp_raw(addr, packet)).unwrap()
}

pub fn tcp_exchange(stream: &mut TcpStream, packet: &[u8]) -> Vec<u8> {
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    stream.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).unwrap();
    buf
}

pub fn tcp(addr: SocketAddr, packet: &[u8]) -> Message {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    Message::from_vec(&tcp_exchange(&mut s, packet)).unwrap()
}

/// A plain HTTP/1.0 request to the server's HTTP surface: (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A copy of the shipped example deployment in a temporary folder, to edit freely.
pub fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["zones", "policies", "geoip"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    std::fs::copy(root.join("meridian.yaml"), dir.path().join("meridian.yaml")).unwrap();
    dir
}

/// Puts the shipped GeoIP database in `dir/geoip/`, so a test deployment's policies load.
pub fn with_shipped_geoip(dir: &Path) {
    std::fs::create_dir_all(dir.join("geoip")).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/geoip/geo-whois-asn-country.mmdb"
        ),
        dir.join("geoip/geo-whois-asn-country.mmdb"),
    )
    .unwrap();
}

/// `meridian check --config CONFIG`, which must fail: the errors it printed.
#[allow(dead_code)] // each test binary uses part of the helpers
pub fn check_errors(config: &Path) -> String {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "check passed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A helper process (Prometheus, openssl s_server) killed when the test ends.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A stand-in for Prometheus's HTTP API: every instant query returns `value`.
#[allow(dead_code)] // each test binary uses part of the helpers
pub struct FakePrometheus {
    pub addr: std::net::SocketAddr,
    value: std::sync::Arc<std::sync::Mutex<String>>,
}

#[allow(dead_code)]
impl FakePrometheus {
    pub fn start() -> FakePrometheus {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let value = std::sync::Arc::new(std::sync::Mutex::new("0".to_string()));
        let v = value.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let body = format!(
                    "{{\"status\":\"success\",\"data\":{{\"resultType\":\"vector\",\"result\":[{{\"metric\":{{}},\"value\":[1795000000,\"{}\"]}}]}}}}",
                    v.lock().unwrap()
                );
                let _ = s.write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                        .as_bytes(),
                );
            }
        });
        FakePrometheus { addr, value }
    }

    pub fn set(&self, v: &str) {
        *self.value.lock().unwrap() = v.to_string();
    }
}

/// Whether this run is CI's (`.ci/run` sets `MERIDIAN_CI`): there a test that cannot
/// run is a failure, so a green run means every test ran.
pub fn under_ci() -> bool {
    std::env::var_os("MERIDIAN_CI").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Skips the calling test for `reason` (a missing tool, no root): says so, and fails
/// under CI. Call as `return skip("...")`.
pub fn skip(reason: &str) {
    assert!(
        !under_ci(),
        "skipped under CI ({reason}): .ci/run installs every tool and runs as root"
    );
    eprintln!("skipped: {reason}");
}

/// A client in Great Britain, as the tests' ECS subnet (the shipped GeoIP database puts
/// it there).
pub const UK: &str = "81.2.69.0";

/// A query for `name` carrying `client/len` as EDNS Client Subnet, over UDP.
pub fn ecs_ask(addr: SocketAddr, name: &str, rtype: RecordType, client: &str, len: u8) -> Message {
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    let mut q = query_msg(name, rtype, None);
    let mut e = Edns::new();
    e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
        client.parse().unwrap(),
        len,
        0,
    )));
    q.set_edns(e);
    udp(addr, &q.to_vec().unwrap())
}

/// The answer section's RDATAs as text.
pub fn rdatas(r: &Message) -> Vec<String> {
    r.answers.iter().map(|a| a.data.to_string()).collect()
}

/// The first answer's RDATA as text, empty for none.
pub fn first_rdata(r: &Message) -> String {
    r.answers
        .first()
        .map(|a| a.data.to_string())
        .unwrap_or_default()
}

/// The ECS scope of an answer, 255 without ECS.
pub fn ecs_scope(r: &Message) -> u8 {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match r.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet)) {
        Some(EdnsOption::Subnet(s)) => s.scope_prefix(),
        _ => 255,
    }
}

/// dnsperf's report (its stdout): requires more than `min_sent` queries sent, none
/// lost, every answer NOERROR; returns how many were sent.
pub fn dnsperf_every_answer_noerror(text: &str, min_sent: u64) -> u64 {
    let sent: u64 = text
        .lines()
        .find(|l| l.trim_start().starts_with("Queries sent:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(sent > min_sent, "dnsperf sent too few queries:\n{text}");
    assert!(
        text.contains("Queries lost:         0 ("),
        "every query answered:\n{text}"
    );
    assert!(
        text.contains(&format!("NOERROR {sent} (100.00%)")),
        "every answer NOERROR:\n{text}"
    );
    sent
}
