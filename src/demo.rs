//! `meridian demo`: the example deployment with real failovers a newcomer can watch.
//! Three small HTTP backends on 127.0.0.1:18081-18083 stand in for the regions' health
//! endpoints; the demo writes a copy of the configuration whose regions probe them
//! (aggressive thresholds, a 10 s cooldown, so it all happens within a minute), serves it
//! like `meridian serve`, and plays a short game day against eu-west's backend while a
//! line a second shows what a client in Great Britain is answered and why.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Config, Overrides};

/// First backend port; region k (in the files' order) is probed on `BASE_PORT + k`.
pub const BASE_PORT: u16 = 18081;
/// The demo's client: a /24 in Great Britain (nearest region: eu-west).
pub const CLIENT: [u8; 3] = [81, 2, 69];

/// A health endpoint that answers 200, or 503 while `failing`.
pub struct Backend {
    pub region: String,
    pub port: u16,
    pub failing: Arc<AtomicBool>,
}

impl Backend {
    pub fn start(region: &str, port: u16) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let failing = Arc::new(AtomicBool::new(false));
        let flag = failing.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let fail = flag.load(Ordering::Relaxed);
                std::thread::spawn(move || answer(conn, fail));
            }
        });
        Ok(Backend {
            region: region.to_string(),
            port,
            failing,
        })
    }
}

fn answer(mut conn: TcpStream, fail: bool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 2048];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 16 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
    let (status, body) = if fail {
        ("503 Service Unavailable", "failing\n")
    } else {
        ("200 OK", "ok\n")
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Writes the demo's configuration into `dir`: the policy files of `config` with every
/// region probing its backend, and a meridian.yaml pointing at the original zones and
/// GeoIP data. Returns the config path and the regions in port order.
pub fn write_config(config: &Config, dir: &Path) -> Result<(PathBuf, Vec<String>), String> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).map_err(|e| format!("{}: {e}", policies.display()))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&config.policies_dir)
        .map_err(|e| format!("{}: {e}", config.policies_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut regions = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut doc: serde_json::Value =
            serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        if let Some(list) = doc.get_mut("regions").and_then(|r| r.as_array_mut()) {
            for region in list.iter_mut() {
                let name = region
                    .get("name")
                    .and_then(|n| n.as_str())
                    .unwrap_or_default()
                    .to_string();
                let port = BASE_PORT + regions.len() as u16;
                if let Some(obj) = region.as_object_mut() {
                    obj.insert(
                        "endpoints".into(),
                        serde_json::json!([{
                            "name": "web", "probe": "http",
                            "address": format!("127.0.0.1:{port}"), "path": "/healthz",
                            "interval": "1s", "timeout": "500ms"
                        }]),
                    );
                    obj.insert(
                        "health".into(),
                        serde_json::json!({ "preset": "aggressive", "cooldown": "10s" }),
                    );
                }
                regions.push(name);
            }
        }
        // JSON is YAML: the policy loader reads it as it reads the original.
        let out = policies.join(file.file_name().unwrap_or_default());
        let json = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(&out, json).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    let listen: Vec<String> = config
        .startup
        .dns
        .listen
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    // Absolute paths: the copy lives elsewhere than the original.
    let abs = |p: &Path| {
        std::fs::canonicalize(p)
            .map(|p| format!("{:?}", p.display().to_string()))
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let latency = match &config.latency_table {
        Some(p) => abs(p)?,
        None => "null".to_string(),
    };
    let yaml = format!(
        "version: 1\ndns:\n  listen: [{}]\nhttp:\n  listen: \"{}\"\nzones: {}\npolicies: policies\ngeoip: {}\ngeo:\n  database: {}\n  latency: {latency}\nhealth:\n  state_file: null\n",
        listen.join(", "),
        config.startup.http_listen,
        abs(&config.zones_dir)?,
        abs(&config.geoip_dir)?,
        abs(&config.geo_database)?,
    );
    let path = dir.join("meridian.yaml");
    std::fs::write(&path, yaml).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, regions))
}

/// A query for `name` A with ECS for the demo's client /24.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend(id.to_be_bytes());
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    // OPT with EDNS Client Subnet: family 1, source /24, scope 0, three address bytes.
    q.extend([
        0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0,
    ]);
    q.extend(CLIENT);
    q
}

/// The first A record's address in a response.
fn first_a(resp: &[u8]) -> Option<[u8; 4]> {
    let get = |i: usize| resp.get(i).copied();
    let ancount = u16::from_be_bytes([get(6)?, get(7)?]);
    let mut i = 12;
    // Skip the question's name and type/class.
    while get(i)? != 0 {
        if get(i)? & 0xC0 == 0xC0 {
            i += 1;
            break;
        }
        i += usize::from(get(i)?) + 1;
    }
    i += 5;
    for _ in 0..ancount {
        // A name: labels or a pointer.
        loop {
            let b = get(i)?;
            if b & 0xC0 == 0xC0 {
                i += 2;
                break;
            }
            if b == 0 {
                i += 1;
                break;
            }
            i += usize::from(b) + 1;
        }
        let rtype = u16::from_be_bytes([get(i)?, get(i + 1)?]);
        let len = usize::from(u16::from_be_bytes([get(i + 8)?, get(i + 9)?]));
        if rtype == 1 && len == 4 {
            return Some([get(i + 10)?, get(i + 11)?, get(i + 12)?, get(i + 13)?]);
        }
        i += 10 + len;
    }
    None
}

fn status(http: SocketAddr) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&http, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /api/v1/status HTTP/1.0\r\nHost: {http}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
}

/// Plays the game day and prints a line a second; returns when it is over (the server
/// keeps serving).
pub fn play(dns: SocketAddr, http: SocketAddr, backends: &[Backend], region: &str) {
    let sock = match UdpSocket::bind("127.0.0.1:0") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo: {e}");
            return;
        }
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(500)));
    let ask = |id: u16| -> Option<[u8; 4]> {
        sock.send_to(&query(id, "www.example.com"), dns).ok()?;
        let mut buf = [0u8; 1500];
        let n = sock.recv(&mut buf).ok()?;
        first_a(buf.get(..n)?)
    };
    let started = Instant::now();
    while ask(1).is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            eprintln!("demo: the server did not answer on {dns}");
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let Some(target) = backends.iter().find(|b| b.region == region) else {
        eprintln!("demo: no region {region} to fail");
        return;
    };
    // (second, failing) — fail, come back (held by the cooldown), fail, come back.
    let timeline = [(5u64, true), (15, false), (30, true), (38, false)];
    println!(
        "demo: {}'s health endpoint (127.0.0.1:{}) fails at 5 s, returns at 15 s, fails at 30 s, returns at 38 s",
        region, target.port
    );
    println!(
        "demo: asking for www.example.com A every second as a client in 81.2.69.0/24 (Great Britain)"
    );
    let t0 = Instant::now();
    for second in 0..=55u64 {
        for &(at, fail) in &timeline {
            if at == second {
                target.failing.store(fail, Ordering::Relaxed);
                println!(
                    "demo: -- {region}'s backend now answers {} --",
                    if fail { "503" } else { "200" }
                );
            }
        }
        let answer = ask(second as u16 + 2)
            .map(|a| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]))
            .unwrap_or_else(|| "no answer".into());
        let st = status(http);
        let states: Vec<String> = st
            .as_ref()
            .and_then(|s| s["regions"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let name = r["region"].as_str().unwrap_or("?");
                let state = r["effective"].as_str().unwrap_or("?");
                let endpoint = st
                    .as_ref()
                    .and_then(|s| s["endpoints"].as_array().cloned())
                    .unwrap_or_default()
                    .into_iter()
                    .find(|e| e["region"] == name);
                let cooldown = endpoint
                    .as_ref()
                    .and_then(|e| e["cooldown_remaining_seconds"].as_u64())
                    .unwrap_or(0);
                let oks = endpoint
                    .as_ref()
                    .and_then(|e| e["consecutive_successes"].as_u64())
                    .unwrap_or(0);
                match (state, cooldown, oks) {
                    ("down", c, _) if c > 0 => format!("{name} down (cooldown {c}s)"),
                    // Past the cooldown, the recovery thresholds still have to be met.
                    ("down", _, n) if n > 0 => format!("{name} down (recovering: {n} ok in a row)"),
                    _ => format!("{name} {state}"),
                }
            })
            .collect();
        let region_of = st
            .as_ref()
            .and_then(|_| regions_by_address(&answer))
            .unwrap_or("");
        println!(
            "{second:>4}s  GB client -> {answer:<15} {region_of:<9} | {}",
            states.join(", ")
        );
        let next = t0 + Duration::from_secs(second + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    println!(
        "demo: done. Still serving: dig @{} -p {} www.example.com +subnet=81.2.69.0/24, http://{}/status; Ctrl-C stops",
        dns.ip(),
        dns.port(),
        http
    );
}

/// The example deployment's region for an answered address (for the demo's lines).
fn regions_by_address(a: &str) -> Option<&'static str> {
    match a {
        "192.0.2.10" => Some("us-east"),
        "198.51.100.10" => Some("eu-west"),
        "203.0.113.10" => Some("ap-south"),
        _ => None,
    }
}

/// Serves a copy of `config` whose regions probe local backends, and plays the game
/// day against eu-west while printing what a client in Great Britain is answered.
pub fn run(config: &Config) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("meridian-demo-{}", std::process::id()));
    let (path, regions) = write_config(config, &dir).map_err(|e| anyhow::anyhow!(e))?;
    let backends = regions
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let port = BASE_PORT + k as u16;
            Backend::start(r, port).map_err(|e| {
                anyhow::anyhow!("cannot listen on 127.0.0.1:{port} for {r}'s backend: {e}")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dns = config
        .startup
        .dns
        .listen
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("no DNS listen address"))?;
    let http = config.startup.http_listen;
    tracing::info!(config = %path.display(), "demo: serving the example deployment with local backends");
    std::thread::spawn(move || play(dns, http, &backends, "eu-west"));
    let written = Config::load(&path, &Overrides::default()).map_err(|errors| {
        for e in &errors {
            tracing::error!("{e}");
        }
        anyhow::anyhow!(
            "{} errors in the demo's configuration {}",
            errors.len(),
            path.display()
        )
    })?;
    crate::serve::run(written, &path, &Overrides::default())
}
