//! Operations against the real binary: metrics checked by promtool and scraped by a real
//! Prometheus, the status page rendered by headless Chromium, the admin API's token,
//! drains, hot reloads (good and bad, SIGHUP and API), and dnsperf across 20 reloads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;

const TOKEN: &str = "s3cret-token";

fn uk_answer(m: &Meridian, name: &str) -> String {
    let r = ecs_ask(m.addr, name, RecordType::A, UK, 24);
    if r.answers.is_empty() {
        format!("{:?}", r.metadata.response_code)
    } else {
        rdatas(&r).join(",")
    }
}

fn metric(m: &Meridian, line_prefix: &str) -> f64 {
    let (_, text) = http(m.http, "GET", "/metrics", &[], "");
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn metrics_pass_promtool_and_a_real_prometheus_reads_them_back() {
    let m = Meridian::start(&example_config());
    uk_answer(&m, "www.example.com.");
    let (code, text) = http(m.http, "GET", "/metrics", &[], "");
    assert_eq!(code, 200);
    for name in [
        "meridian_region_healthy{region=\"eu-west\"} 1",
        "meridian_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\",transport=\"udp\",zone=\"example.com.\"}",
        "meridian_policy_answers_total{policy=\"www.example.com.\",region=\"eu-west\"} 1",
        "meridian_config_reloads_total{result=\"success\"} 1",
        "meridian_geoip_build_epoch",
        "meridian_build_info{version=",
    ] {
        assert!(text.contains(name), "missing {name} in:\n{text}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes Meridian every second; read a series back.
    let dir = tempfile::tempdir().unwrap();
    let web = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{ scrape_interval: 1s }}\nscrape_configs:\n  - job_name: meridian\n    static_configs: [ {{ targets: [\"{}\"] }} ]\n",
            m.http
        ),
    )
    .unwrap();
    let _prom = Process(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus)"),
    );
    let web: std::net::SocketAddr = format!("127.0.0.1:{web}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(web).is_ok() {
            let (_, body) = http(
                web,
                "GET",
                "/api/v1/query?query=meridian_region_healthy%7Bregion%3D%22eu-west%22%7D",
                &[],
                "",
            );
            if body.contains("\"eu-west\"") && body.contains("\"1\"]") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never read meridian_region_healthy back"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_status_page_renders_in_headless_chromium() {
    let m = Meridian::start(&example_config());
    uk_answer(&m, "www.example.com.");
    let (code, html) = http(m.http, "GET", "/status", &[], "");
    assert_eq!(code, 200);
    for s in [
        "us-east",
        "eu-west",
        "ap-south",
        "<svg",
        "Answer shares",
        "Recent transitions",
    ] {
        assert!(html.contains(s), "{s} missing from the status page");
    }
    let (code, json) = http(m.http, "GET", "/api/v1/status", &[], "");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["regions"].as_array().unwrap().len(), 3);
    assert_eq!(v["ready"], true);

    let artefacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let shot = artefacts.join("status.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1100,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://{}/status", m.http))
        .output()
        .expect("chromium (Debian package chromium)");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "no screenshot ({size} bytes): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("status page screenshot: {}", shot.display());
}

#[test]
fn admin_writes_need_the_token_and_a_drain_moves_a_client_until_undrained() {
    let d = example_copy();
    let m = Meridian::start_with(
        &d.path().join("meridian.yaml"),
        &[],
        &[("MERIDIAN_ADMIN_TOKEN", TOKEN)],
    );
    assert_eq!(uk_answer(&m, "www.example.com."), "198.51.100.10");
    let body = r#"{"reason":"game day"}"#;
    let drain = "/api/v1/regions/eu-west/drain";
    assert_eq!(http(m.http, "POST", drain, &[], body).0, 401);
    assert_eq!(
        http(
            m.http,
            "POST",
            drain,
            &[("Authorization", "Bearer wrong")],
            body
        )
        .0,
        401
    );
    assert_eq!(
        http(m.http, "POST", drain, &[("Authorization", TOKEN)], body).0,
        401,
        "scheme required"
    );
    assert_eq!(
        uk_answer(&m, "www.example.com."),
        "198.51.100.10",
        "refused writes change nothing"
    );
    let auth = format!("Bearer {TOKEN}");
    let (code, resp) = http(m.http, "POST", drain, &[("Authorization", &auth)], body);
    assert_eq!(code, 200, "{resp}");
    assert_eq!(
        uk_answer(&m, "www.example.com."),
        "192.0.2.10",
        "drained: the next nearest"
    );
    let (_, status) = http(m.http, "GET", "/api/v1/status", &[], "");
    assert!(
        status.contains("game day") && status.contains("\"drain\""),
        "{status}"
    );
    assert_eq!(
        metric(
            &m,
            "meridian_override{endpoint=\"\",kind=\"drain\",region=\"eu-west\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&m, "meridian_region_healthy{region=\"eu-west\"}"),
        0.0
    );
    // The CLI wrapper, the way an operator types it.
    let out = Command::new(BIN)
        .args([
            "admin",
            "undrain",
            "eu-west",
            "--http-listen",
            &m.http.to_string(),
            "--config",
        ])
        .arg(d.path().join("meridian.yaml"))
        .env("MERIDIAN_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        uk_answer(&m, "www.example.com."),
        "198.51.100.10",
        "undrained: back"
    );
    assert_eq!(
        http(
            m.http,
            "POST",
            "/api/v1/regions/nowhere/drain",
            &[("Authorization", &auth)],
            ""
        )
        .0,
        404
    );
    assert_eq!(
        http(
            m.http,
            "POST",
            "/api/v1/regions/eu-west/explode",
            &[("Authorization", &auth)],
            ""
        )
        .0,
        404
    );
    // explain over HTTP, the same as `meridian query`.
    let (code, e) = http(
        m.http,
        "GET",
        "/api/v1/explain?name=www.example.com&client=81.2.69.0/24",
        &[],
        "",
    );
    assert_eq!(code, 200);
    assert!(
        e.contains("\"eu-west\"") && e.contains("\"ecs_scope\":18"),
        "{e}"
    );
}

#[test]
fn without_a_token_writes_are_disabled() {
    let d = example_copy();
    let m = Meridian::start(&d.path().join("meridian.yaml"));
    let (code, body) = http(
        m.http,
        "POST",
        "/api/v1/reload",
        &[("Authorization", "Bearer anything")],
        "",
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(http(m.http, "GET", "/ready", &[], "").0, 200);
    assert_eq!(http(m.http, "GET", "/live", &[], "").0, 200);
}

#[test]
fn a_broken_policy_file_keeps_the_old_answers_and_counts_a_failure_and_a_fixed_one_reloads() {
    let d = example_copy();
    let config = d.path().join("meridian.yaml");
    let m = Meridian::start_with(&config, &[], &[("MERIDIAN_ADMIN_TOKEN", TOKEN)]);
    assert_eq!(uk_answer(&m, "www.example.com."), "198.51.100.10");
    let policy = d.path().join("policies/example.yaml");
    let good = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        good.replace(
            "method: nearest\n    ttl: 30\n\n  # The lowest",
            "method: nearest\n    regions: [mars-1]\n    ttl: 30\n\n  # The lowest",
        ),
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &m.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&m, "meridian_config_reloads_total{result=\"failure\"}") != 1.0 {
        assert!(
            Instant::now() < deadline,
            "failure not counted; log:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        uk_answer(&m, "www.example.com."),
        "198.51.100.10",
        "old configuration still serving"
    );
    assert!(m.log().contains("unknown region \"mars-1\""), "{}", m.log());
    // Through the API the errors come back with FILE:LINE:COL.
    let auth = format!("Bearer {TOKEN}");
    let (code, body) = http(
        m.http,
        "POST",
        "/api/v1/reload",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(code, 422);
    assert!(
        body.contains("example.yaml:") && body.contains("mars-1"),
        "{body}"
    );
    // A fixed file with a real change reloads and the next answer has it.
    std::fs::write(
        &policy,
        good.replace(
            "  - name: www.example.com\n    method: nearest",
            "  - name: www.example.com\n    method: failover\n    regions: [ap-south, us-east]",
        ),
    )
    .unwrap();
    let (code, body) = http(
        m.http,
        "POST",
        "/api/v1/reload",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("policy www.example.com."),
        "the diff names what changed: {body}"
    );
    assert_eq!(uk_answer(&m, "www.example.com."), "203.0.113.10");
    assert_eq!(
        metric(&m, "meridian_config_reloads_total{result=\"success\"}"),
        2.0
    );
}

#[test]
fn logs_are_json_lines_with_log_format_json() {
    let m = Meridian::start_with(&example_config(), &["--log-format", "json"], &[]);
    let log = m.log();
    let first = log.lines().next().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert!(v["fields"]["message"].is_string(), "{first}");
}

#[test]
fn dnsperf_across_twenty_reloads_gets_every_answer() {
    let d = example_copy();
    let m = Meridian::start_with(
        &d.path().join("meridian.yaml"),
        &[],
        &[("MERIDIAN_ADMIN_TOKEN", TOKEN)],
    );
    let queries = d.path().join("queries.txt");
    std::fs::write(
        &queries,
        "www.example.com A\nexample.com MX\nmulti.example.com A\napi.example.com A\nfast.example.com AAAA\nexample.com SOA\ntxt.example.com TXT\n",
    )
    .unwrap();
    // Size the run to cover 20 reloads (a reload re-reads the GeoIP database: slower in
    // a debug build).
    let auth = format!("Bearer {TOKEN}");
    let t = Instant::now();
    assert_eq!(
        http(
            m.http,
            "POST",
            "/api/v1/reload",
            &[("Authorization", &auth)],
            ""
        )
        .0,
        200
    );
    let per_reload = t.elapsed() + Duration::from_millis(100);
    let seconds = (per_reload * 20).as_secs() + 3;
    let perf = Command::new("dnsperf")
        .args([
            "-s",
            "127.0.0.1",
            "-p",
            &m.addr.port().to_string(),
            "-l",
            &seconds.to_string(),
            "-Q",
            "2000",
            "-c",
            "4",
            "-d",
        ])
        .arg(&queries)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dnsperf (Debian package dnsperf)");
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..20 {
        let (code, body) = http(
            m.http,
            "POST",
            "/api/v1/reload",
            &[("Authorization", &auth)],
            "",
        );
        assert_eq!(code, 200, "reload {i}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = perf.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    dnsperf_every_answer_noerror(&text, 5_000);
    assert_eq!(
        metric(&m, "meridian_config_reloads_total{result=\"success\"}"),
        22.0
    );
}

#[test]
fn a_reload_that_changes_dns_listen_says_a_restart_is_required_and_keeps_serving() {
    let d = example_copy();
    let config = d.path().join("meridian.yaml");
    let (dns, dns2, web) = (free_port(), free_port(), free_port());
    let write = |port: u16| {
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text
            .lines()
            .map(|l| match l.trim_start() {
                t if t.starts_with("listen: [") => format!("  listen: [\"127.0.0.1:{port}\"]"),
                t if t.starts_with("listen: \"") => format!("  listen: \"127.0.0.1:{web}\""),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&config, text + "\nhealth:\n  state_file: null\n").unwrap();
    };
    write(dns);
    let log = d.path().join("meridian.log");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("MERIDIAN_ADMIN_TOKEN", TOKEN)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{dns}").parse().unwrap();
    let probe = query_bytes("www.example.com.", RecordType::A, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while try_udp(addr, &probe, Duration::from_millis(200)).is_none() {
        assert!(Instant::now() < deadline, "not serving");
    }
    // The file now asks for another DNS port: everything else reloads, the socket can't.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(&format!(":{dns}\""), &format!(":{dns2}\"")),
    )
    .unwrap();
    let http_addr: std::net::SocketAddr = format!("127.0.0.1:{web}").parse().unwrap();
    let auth = format!("Bearer {TOKEN}");
    let (code, body) = http(
        http_addr,
        "POST",
        "/api/v1/reload",
        &[("Authorization", &auth)],
        "",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"restart_required\":[\"dns.listen\"]"),
        "{body}"
    );
    assert!(body.contains("restart required: dns.listen"), "{body}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("restart required: dns.listen"), "{log}");
}

#[test]
fn check_reports_every_mistake_in_meridian_yaml_with_line_and_column() {
    let d = example_copy();
    let config = d.path().join("meridian.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace("tcp_idle_timeout: 10s", "tcp_idle_timeout: ten seconds")
        .replace("edns_udp_size: 1232", "edns_udp_size: 100")
        .replace("listen: \"127.0.0.1:9153\"", "listen: \"localhost\"");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("meridian.yaml:"))
        .collect();
    assert_eq!(lines.len(), 3, "{err}");
    for l in &lines {
        let pos: Vec<&str> = l.split(':').skip(1).take(2).collect();
        assert!(
            pos.iter().all(|p| p.parse::<u32>().is_ok()),
            "FILE:LINE:COL: {l}"
        );
    }
    for key in ["edns_udp_size", "tcp_idle_timeout", "http.listen"] {
        assert!(err.contains(key), "{key} missing: {err}");
    }
}

#[test]
fn a_drain_for_a_while_ends_by_itself_and_keeps_its_deadline_across_a_restart() {
    let d = example_copy();
    let start = || {
        Meridian::start_with(
            &d.path().join("meridian.yaml"),
            &[],
            &[("MERIDIAN_ADMIN_TOKEN", TOKEN)],
        )
    };
    let m = start();
    let drain = |m: &Meridian, lasts: &str| {
        let out = Command::new(BIN)
            .args([
                "admin", "drain", "eu-west", "--for", lasts, "--reason", "deploy",
            ])
            .args(["--http-listen", &m.http.to_string(), "--config"])
            .arg(d.path().join("meridian.yaml"))
            .env("MERIDIAN_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = drain(&m, "3s");
    assert!(ok && text.contains("\"for_seconds\":3"), "{text}");
    assert_eq!(uk_answer(&m, "www.example.com."), "192.0.2.10", "drained");
    let (_, status) = http(m.http, "GET", "/api/v1/status", &[], "");
    assert!(status.contains("\"until\":"), "{status}");
    let (_, page) = http(m.http, "GET", "/status", &[], "");
    assert!(page.contains("s left)"), "the page shows the time left");
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        uk_answer(&m, "www.example.com."),
        "198.51.100.10",
        "the drain ended by itself"
    );
    assert!(m.log().contains("region override expired"), "{}", m.log());
    assert_eq!(
        metric(
            &m,
            "meridian_health_transitions_total{endpoint=\"\",from=\"down\",reason=\"override_cleared\",region=\"eu-west\",to=\"up\"}"
        ),
        1.0
    );
    // A longer one survives a restart with its deadline, and a bad duration is refused.
    let (ok, _) = drain(&m, "1h");
    assert!(ok);
    let (ok, text) = drain(&m, "soon");
    assert!(
        !ok && text.contains("soon") && text.contains("expected number"),
        "{text}"
    );
    drop(m);
    let state = std::fs::read_to_string(d.path().join("meridian.state.json")).unwrap();
    assert!(state.contains("\"until\""), "{state}");
    let m = start();
    assert_eq!(
        uk_answer(&m, "www.example.com."),
        "192.0.2.10",
        "still drained after a restart"
    );
}
