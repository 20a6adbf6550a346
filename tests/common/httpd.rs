//! A tiny HTTP health endpoint on 127.0.0.1 that fails in real ways on demand: 200,
//! 503, connection refused (listener closed), hang, slow, reset (RST), or flapping
//! between 200 and 503 on every other request.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Ok = 0,
    Unavailable = 1,
    Refuse = 2,
    Hang = 3,
    Slow = 4,
    Reset = 5,
    Flap = 6,
}

pub struct Httpd {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    pub requests: Arc<AtomicU64>,
    /// Requests whose User-Agent holds one of these get a 503 whatever the mode.
    fail_agents: Arc<Mutex<Vec<String>>>,
    /// Every User-Agent seen.
    pub agents: Arc<Mutex<std::collections::BTreeSet<String>>>,
    /// Every request line seen (`GET /healthz HTTP/1.1`).
    pub requests_seen: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

impl Drop for Httpd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

type Seen = Mutex<std::collections::BTreeSet<String>>;

fn serve(mut s: TcpStream, mode: Mode, n: u64, fail: &[String], agents: &Seen, lines: &Seen) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 2048];
    let got = s.read(&mut buf).unwrap_or(0);
    let request = String::from_utf8_lossy(&buf[..got]).to_string();
    let agent = request
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    agents.lock().unwrap().insert(agent.clone());
    if let Some(first) = request.lines().next() {
        lines.lock().unwrap().insert(first.to_string());
    }
    let mode = if fail.iter().any(|f| agent.contains(f.as_str())) {
        Mode::Unavailable
    } else {
        mode
    };
    let ok = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nhealthy";
    let bad =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nsick";
    match mode {
        Mode::Ok => {
            let _ = s.write_all(ok.as_bytes());
        }
        Mode::Unavailable => {
            let _ = s.write_all(bad.as_bytes());
        }
        Mode::Flap => {
            let _ = s.write_all(if n.is_multiple_of(2) { ok } else { bad }.as_bytes());
        }
        Mode::Slow => {
            std::thread::sleep(Duration::from_millis(400));
            let _ = s.write_all(ok.as_bytes());
        }
        Mode::Hang => std::thread::sleep(Duration::from_secs(5)),
        Mode::Reset => {
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
        Mode::Refuse => {}
    }
}

impl Httpd {
    pub fn start() -> Httpd {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(Mode::Ok as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let fail_agents = Arc::new(Mutex::new(Vec::new()));
        let agents = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
        let requests_seen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
        let rs = requests_seen.clone();
        let (m, st, rq) = (mode.clone(), stop.clone(), requests.clone());
        let (fa, ag) = (fail_agents.clone(), agents.clone());
        std::thread::spawn(move || {
            let mut listener = Some(listener);
            while !st.load(Ordering::SeqCst) {
                let current = m.load(Ordering::SeqCst);
                if current == Mode::Refuse as u8 {
                    // Closing the listener makes connects fail with "refused".
                    listener = None;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let l = match &listener {
                    Some(l) => l,
                    None => match socket2_listener(addr) {
                        Some(l) => listener.insert(l),
                        None => {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    },
                };
                l.set_nonblocking(true).unwrap();
                match l.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let n = rq.fetch_add(1, Ordering::SeqCst);
                        let mode = match current {
                            0 => Mode::Ok,
                            1 => Mode::Unavailable,
                            3 => Mode::Hang,
                            4 => Mode::Slow,
                            5 => Mode::Reset,
                            _ => Mode::Flap,
                        };
                        let fail = fa.lock().unwrap().clone();
                        let (ag, rs) = (ag.clone(), rs.clone());
                        std::thread::spawn(move || serve(s, mode, n, &fail, &ag, &rs));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Httpd {
            addr,
            mode,
            stop,
            requests,
            fail_agents,
            agents,
            requests_seen,
        }
    }

    /// Fails (503) the probes whose User-Agent contains one of `agents`, e.g. `(ns1)`.
    pub fn fail_for(&self, agents: &[&str]) {
        *self.fail_agents.lock().unwrap() = agents.iter().map(|a| a.to_string()).collect();
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

fn socket2_listener(addr: SocketAddr) -> Option<TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    s.set_reuse_address(true).ok()?;
    s.bind(&addr.into()).ok()?;
    s.listen(128).ok()?;
    Some(s.into())
}
