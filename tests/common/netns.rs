//! Network namespaces for the tests that need real links (fragmentation, network
//! faults, the cluster over veth pairs): created with iproute2, deleted (with their
//! veths) when the value is dropped. Needs root; `create` returns `None` without it.

use std::process::{Command, Stdio};

/// Runs `ip ARGS`, quietly; whether it succeeded.
pub fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A set of namespaces named `PREFIX-SHORT`, loopback up in each.
pub struct Namespaces {
    prefix: String,
    shorts: Vec<String>,
}

impl Namespaces {
    /// `prefix` is made unique per test process.
    pub fn create(prefix: &str, shorts: &[&str]) -> Option<Namespaces> {
        let mut set = Namespaces {
            prefix: format!("{prefix}{}", std::process::id() % 100_000),
            shorts: Vec::new(),
        };
        for s in shorts {
            let name = set.ns(s);
            if !ip(&["netns", "add", &name]) {
                return None;
            }
            set.shorts.push(s.to_string());
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        Some(set)
    }

    /// The full name of namespace `short`.
    pub fn ns(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// `CMD` run inside namespace `short`.
    pub fn exec(&self, short: &str, cmd: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(short), cmd]);
        c
    }

    /// A veth pair: `a_if` in `a` with `a_addr` (CIDR), `b_if` in `b` with `b_addr`, up.
    pub fn veth(
        &self,
        (a, a_if, a_addr): (&str, &str, &str),
        (b, b_if, b_addr): (&str, &str, &str),
    ) -> bool {
        let (na, nb) = (self.ns(a), self.ns(b));
        ip(&[
            "link", "add", a_if, "netns", &na, "type", "veth", "peer", "name", b_if, "netns", &nb,
        ]) && ip(&["-n", &na, "addr", "add", a_addr, "dev", a_if])
            && ip(&["-n", &nb, "addr", "add", b_addr, "dev", b_if])
            && ip(&["-n", &na, "link", "set", a_if, "up"])
            && ip(&["-n", &nb, "link", "set", b_if, "up"])
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for s in self.shorts.iter().rev() {
            ip(&["netns", "del", &self.ns(s)]);
        }
    }
}

/// A Python HTTP server answering 200 "ok" to every GET on each `HOST:PORT` given as an
/// argument: the backends of the namespace tests (`python3 -c HTTPD_OK ADDR...`).
pub const HTTPD_OK: &str = r#"
import http.server, socketserver, threading, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    def handle_error(self, *a): pass
for a in sys.argv[1:]:
    h, p = a.rsplit(":", 1)
    threading.Thread(target=S((h, int(p)), H).serve_forever, daemon=True).start()
threading.Event().wait()
"#;
