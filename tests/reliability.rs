//! Input that once stopped the health checker for good, sent as an operator would: an
//! override "for" longer than any clock, and a drain posted with curl's defaults. The
//! checker must refuse the first with a 400 naming the field and the limit, take the
//! second, and keep working: regions still leave and return, nothing restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;

const TOKEN: &str = "reliability-token";

/// A POST with the body and content type given (`None`: no Content-Type header).
fn post(addr: SocketAddr, path: &str, content_type: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = content_type {
        req.push_str(&format!("Content-Type: {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

#[test]
fn an_override_longer_than_any_clock_is_refused_and_the_checker_keeps_working() {
    let d = example_copy();
    let m = Meridian::start_with(
        &d.path().join("meridian.yaml"),
        &[],
        &[("MERIDIAN_ADMIN_TOKEN", TOKEN)],
    );
    let drain = "/api/v1/regions/eu-west/drain";
    for huge in ["300000000000y", "500y", "367days"] {
        let (code, body) = post(
            m.http,
            drain,
            Some("application/json"),
            &format!(r#"{{"for": "{huge}"}}"#),
        );
        assert_eq!(code, 400, "{huge}: {body}");
        assert!(body.contains("for"), "names the field: {body}");
    }
    let (code, body) = post(
        m.http,
        drain,
        Some("application/json"),
        r#"{"for": "500y"}"#,
    );
    assert!(body.contains("366d"), "names the limit: {body} ({code})");

    // The checker still takes orders and still moves answers.
    let (code, body) = post(m.http, drain, Some("application/json"), r#"{"for": "1h"}"#);
    assert_eq!(code, 200, "{body}");
    let status = http(m.http, "GET", "/api/v1/status", &[], "");
    assert_eq!(status.0, 200, "{}", status.1);
    assert!(status.1.contains(r#""override":{"kind":"drain""#) || status.1.contains("drain"));
    assert_eq!(http(m.http, "GET", "/ready", &[], "").0, 200);
    assert_eq!(
        m.metric("meridian_health_checker_restarts_total"),
        Some(0.0)
    );

    // curl -X POST -d '{"reason":"x"}' sends form-encoded: read as JSON all the same.
    let (code, body) = post(
        m.http,
        "/api/v1/regions/eu-west/undrain",
        Some("application/x-www-form-urlencoded"),
        r#"{"reason":"x"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = post(m.http, drain, None, r#"{"reason":"no content type"}"#);
    assert_eq!(code, 200, "{body}");
    let (code, body) = post(m.http, drain, Some("text/xml"), "<drain/>");
    assert_eq!(code, 415, "{body}");
    assert!(
        body.contains("application/json"),
        "names the type expected: {body}"
    );
    let (code, body) = post(m.http, drain, Some("application/json"), "{not json");
    assert_eq!(code, 400, "{body}");
}
