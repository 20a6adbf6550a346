//! One plain-HTTP/1.1 exchange for a probe, written by hand because it is the checker's
//! hot path: at 2,000 endpoints a second, reqwest's per-request machinery (request
//! builder, connector service stack, hyper's dispatch task) cost about as much CPU as
//! the connection itself (`bench/checker.py`; figures in docs/performance.md). This
//! writes one prebuilt request and parses the response head with `httparse`, the parser
//! hyper uses. HTTPS probes stay on reqwest: TLS is where a well-kept stack matters.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The request bytes for `method path` with these headers; `Connection: close` so the
/// server ends the body of a response without framing.
pub fn request(
    method: &str,
    path: &str,
    host: &str,
    user_agent: &str,
    headers: &[(String, String)],
) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
    {
        r.push_str(&format!("User-Agent: {user_agent}\r\n"));
    }
    r.push_str("Accept: */*\r\nConnection: close\r\n");
    for (name, value) in headers {
        r.push_str(&format!("{name}: {value}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// What a probe expects of the response.
pub struct Expect<'a> {
    /// Empty: any status from 200 to 399.
    pub status: &'a [u16],
    /// Looked for in the first `max_body` bytes of the (de-chunked) body.
    pub body: Option<&'a str>,
    pub max_body: usize,
    /// HEAD: the response has no body whatever its headers say.
    pub head: bool,
}

/// Connects, sends `request`, and says whether the response meets `expect`. The
/// caller's timeout bounds it.
pub async fn exchange(addr: SocketAddr, request: &[u8], expect: &Expect<'_>) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(1024);
    let (status, framing, head_len) = loop {
        if read_more(&mut stream, &mut buf).await == 0 {
            return false;
        }
        match parse_head(&buf) {
            Head::Partial if buf.len() < MAX_HEAD => continue,
            Head::Partial | Head::Invalid => return false,
            // 100 Continue and the like precede the real response.
            Head::Interim(len) => {
                buf.drain(..len);
                continue;
            }
            Head::Complete {
                status,
                framing,
                len,
            } => break (status, framing, len),
        }
    };
    let status_ok = if expect.status.is_empty() {
        (200..400).contains(&status)
    } else {
        expect.status.contains(&status)
    };
    if !status_ok {
        return false;
    }
    let Some(needle) = expect.body else {
        return true;
    };
    let framing = if expect.head || status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        framing
    };
    buf.drain(..head_len);
    let Some(body) = read_body(&mut stream, buf, framing, expect.max_body).await else {
        return false;
    };
    body.windows(needle.len().max(1))
        .any(|w| w == needle.as_bytes())
}

/// The most of a response head read before giving up on it.
const MAX_HEAD: usize = 64 * 1024;
/// As many header lines as hyper accepts.
const MAX_HEADERS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug, PartialEq, Eq)]
enum Head {
    Partial,
    Invalid,
    Interim(usize),
    Complete {
        status: u16,
        framing: Framing,
        len: usize,
    },
}

fn parse_head(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Invalid,
    };
    let Some(status) = resp.code else {
        return Head::Invalid;
    };
    if (100..200).contains(&status) && status != 101 {
        return Head::Interim(len);
    }
    let mut framing = Framing::UntilClose;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if h.value.to_ascii_lowercase().ends_with(b"chunked") {
                framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let Some(n) = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            else {
                return Head::Invalid;
            };
            framing = Framing::Length(n);
        }
    }
    Head::Complete {
        status,
        framing,
        len,
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(n) => {
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            n
        }
        Err(_) => 0,
    }
}

/// Up to `max` bytes of the body (what follows the head is in `buf` already); `None`
/// if the framing is broken.
async fn read_body(
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
    framing: Framing,
    max: usize,
) -> Option<Vec<u8>> {
    match framing {
        Framing::Length(n) => {
            let want = n.min(max);
            while buf.len() < want {
                if read_more(stream, &mut buf).await == 0 {
                    return None;
                }
            }
            buf.truncate(want);
            Some(buf)
        }
        Framing::UntilClose => {
            while buf.len() < max && read_more(stream, &mut buf).await > 0 {}
            buf.truncate(max);
            Some(buf)
        }
        Framing::Chunked => {
            let mut body = Vec::new();
            loop {
                match dechunk(&buf, &mut body, max) {
                    Dechunk::Done => return Some(body),
                    Dechunk::Invalid => return None,
                    Dechunk::More(consumed) => {
                        buf.drain(..consumed);
                        if read_more(stream, &mut buf).await == 0 {
                            return None;
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Dechunk {
    /// The last chunk, or `max` bytes of body.
    Done,
    Invalid,
    /// `buf`'s first bytes were whole chunks (moved to the body); more are needed.
    More(usize),
}

/// Moves the whole chunks at the start of `buf` into `body`.
fn dechunk(buf: &[u8], body: &mut Vec<u8>, max: usize) -> Dechunk {
    let mut at = 0;
    loop {
        if body.len() >= max {
            body.truncate(max);
            return Dechunk::Done;
        }
        let rest = buf.get(at..).unwrap_or_default();
        let (size_len, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete((l, s))) => (l, s),
            Ok(httparse::Status::Partial) => return Dechunk::More(at),
            Err(_) => return Dechunk::Invalid,
        };
        if size == 0 {
            return Dechunk::Done;
        }
        let Ok(size) = usize::try_from(size) else {
            return Dechunk::Invalid;
        };
        // Data and its CRLF.
        let end = size_len.saturating_add(size);
        match rest.get(size_len..end) {
            Some(data) if rest.len() >= end.saturating_add(2) => {
                body.extend_from_slice(data);
                at += end + 2;
            }
            // A chunk larger than `max`: what has arrived is enough to decide.
            _ if body.len() + rest.len().saturating_sub(size_len) >= max => {
                body.extend_from_slice(rest.get(size_len..).unwrap_or_default());
                body.truncate(max);
                return Dechunk::Done;
            }
            _ => return Dechunk::More(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_framed_as_hyper_would() {
        let cases: &[(&[u8], Head)] = &[
            (b"HTTP/1.1 200 OK\r\n", Head::Partial),
            (b"HTTP/1.1 2xx OK\r\n\r\n", Head::Invalid),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
                Head::Interim(25),
            ),
            (
                b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy",
                Head::Complete {
                    status: 503,
                    framing: Framing::Length(4),
                    len: 40,
                },
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
                Head::Complete {
                    status: 200,
                    framing: Framing::Chunked,
                    len: 72,
                },
            ),
            (
                b"HTTP/1.0 200 OK\r\n\r\n",
                Head::Complete {
                    status: 200,
                    framing: Framing::UntilClose,
                    len: 19,
                },
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                Head::Invalid,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                &parse_head(input),
                want,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn chunks_are_joined_and_cut_at_the_limit() {
        let mut body = Vec::new();
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", &mut body, 100),
            Dechunk::Done
        );
        assert_eq!(body, b"abcde");
        let mut body = Vec::new();
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nd", &mut body, 100),
            Dechunk::More(8)
        );
        assert_eq!(body, b"abc");
        let mut body = Vec::new();
        assert_eq!(dechunk(b"ff\r\nabcdef", &mut body, 4), Dechunk::Done);
        assert_eq!(body, b"abcd");
        assert_eq!(dechunk(b"zz\r\n", &mut Vec::new(), 4), Dechunk::Invalid);
    }

    #[test]
    fn a_request_names_the_host_and_asks_to_close() {
        let r = request("GET", "/healthz", "127.0.0.1:8080", "meridian", &[]);
        assert_eq!(
            r,
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: meridian\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let own = [("user-agent".to_string(), "x".to_string())];
        let r = String::from_utf8(request("HEAD", "/", "h", "meridian", &own)).unwrap();
        assert!(
            !r.contains("meridian") && r.contains("user-agent: x\r\n"),
            "{r}"
        );
    }

    /// A local server answering each connection with the next scripted response, in
    /// pieces, as real servers split them.
    async fn serve(responses: Vec<Vec<&'static [u8]>>) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for pieces in responses {
                let (mut s, _) = l.accept().await.unwrap();
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req).await;
                for p in pieces {
                    s.write_all(p).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn responses_are_judged_by_status_and_body_however_they_are_framed() {
        let get = request("GET", "/", "h", "meridian", &[]);
        let expect = |status: &'static [u16], body: Option<&'static str>| Expect {
            status,
            body,
            max_body: 64,
            head: false,
        };
        let cases: Vec<(Vec<&'static [u8]>, Expect<'static>, bool)> = vec![
            (
                vec![b"HTTP/1.1 204 No Content\r\n\r\n"],
                expect(&[], None),
                true,
            ),
            (
                vec![b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"],
                expect(&[], None),
                false,
            ),
            (
                vec![b"HTTP/1.1 418 Teapot\r\n\r\n"],
                expect(&[418], None),
                true,
            ),
            // The needle straddles two chunks and two reads.
            (
                vec![
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nall s",
                    b"ys\r\n5\r\ntems \r\n2\r\ngo\r\n0\r\n\r\n",
                ],
                expect(&[], Some("systems go")),
                true,
            ),
            (
                vec![
                    b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nstatus:",
                    b" bad",
                ],
                expect(&[], Some("status: ok")),
                false,
            ),
            (
                vec![
                    b"HTTP/1.1 100 Continue\r\n\r\n",
                    b"HTTP/1.0 200 OK\r\n\r\nstatus: ok",
                ],
                expect(&[], Some("status: ok")),
                true,
            ),
            // Past `max_body`: not looked at.
            (
                vec![b"HTTP/1.0 200 OK\r\n\r\n", &[b'x'; 100], b"status: ok"],
                expect(&[], Some("status: ok")),
                false,
            ),
            // The connection ends before the promised body.
            (
                vec![b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstatus: ok"],
                expect(&[], Some("status: ok")),
                false,
            ),
            (vec![b"SSH-2.0-OpenSSH\r\n\r\n"], expect(&[], None), false),
            (vec![], expect(&[], None), false),
        ];
        let n = cases.len();
        let (responses, checks): (Vec<_>, Vec<_>) =
            cases.into_iter().map(|(r, e, ok)| (r, (e, ok))).unzip();
        let addr = serve(responses).await;
        for (i, (e, want)) in checks.iter().enumerate() {
            assert_eq!(exchange(addr, &get, e).await, *want, "case {i} of {n}");
        }
    }
}
