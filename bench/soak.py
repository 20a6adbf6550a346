#!/usr/bin/env python3
"""Soak: Meridian under steady load for a long while, with a region flapping and the
configuration reloaded, and nothing may drift.

It measures the peak rate (dnsperf, 5 s), then runs dnsperf at half of it for the given
time while eu-west's health endpoint flips between 200 and 503 every 5 s and SIGHUP
reloads the configuration every 30 s. It reports, and checks:

  - RSS: the peak over the second half of the run within 10 % of the peak over the
    first half (sampled twice a second; start and end are printed too). A reload builds
    the new snapshot beside the old, and glibc's allocator keeps that high-water mark
    for a while, so single samples wander between one and two snapshots' worth; the
    envelope is what would grow if anything leaked. Warm-up includes three reloads.
  - open file descriptors at start and end: flat (within 4)
  - queries lost: none; responses other than NOERROR: none
  - reload failures and error lines in the log: none

    python3 bench/soak.py                      # 10 minutes, target/release/meridian
    python3 bench/soak.py --seconds 60 --binary target/debug/meridian   # what CI runs

Exit status 0 when every check holds. Needs dnsperf.
"""
import argparse
import http.server
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZONE = """$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
www  A   192.0.2.80
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Flapper:
    """An HTTP health endpoint answering 200, or 503 while `sick` is set."""

    def __init__(self):
        self.sick = False
        me = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                code = 503 if me.sick else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

            def handle_error(self, *a):
                pass

        self.server = S(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def dnsperf(port, qfile, seconds, rate=None):
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", qfile, "-l", str(seconds), "-t", "2"]
    if rate:
        cmd += ["-Q", str(int(rate))]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout

    def num(pattern, default=0.0):
        m = re.search(pattern, out)
        return float(m.group(1)) if m else default

    codes = dict(re.findall(r"(\w+) (\d+) \(", out.split("Response codes:")[-1].splitlines()[0])) if "Response codes:" in out else {}
    return {
        "sent": num(r"Queries sent:\s+(\d+)"),
        "completed": num(r"Queries completed:\s+(\d+)"),
        "lost": num(r"Queries lost:\s+(\d+)"),
        "qps": num(r"Queries per second:\s+([\d.]+)"),
        "codes": {k: int(v) for k, v in codes.items()},
        "raw": out,
    }


def metric(http, name):
    try:
        text = urllib.request.urlopen(f"http://{http}/metrics", timeout=5).read().decode()
    except Exception:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--reload-every", type=int, default=30)
    ap.add_argument("--flap-every", type=float, default=5.0)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/meridian"))
    a = ap.parse_args()
    if not shutil.which("dnsperf"):
        sys.exit("dnsperf is not installed")

    eu, us = Flapper(), Flapper()
    d = tempfile.mkdtemp(prefix="meridian-soak-")
    for sub in ["zones", "policies", "geoip"]:
        os.makedirs(os.path.join(d, sub))
    shutil.copy(os.path.join(ROOT, "geoip/geo-whois-asn-country.mmdb"), os.path.join(d, "geoip"))
    open(os.path.join(d, "zones/example.test"), "w").write(ZONE)
    health = "{ window: 4, fail_consecutive: 2, recover_consecutive: 2, cooldown: 2s }"
    ep = lambda p: f'{{ name: web, probe: http, address: "127.0.0.1:{p}", path: /, interval: 250ms, timeout: 200ms }}'
    open(os.path.join(d, "policies/web.yaml"), "w").write(f"""version: 1
regions:
  - {{ name: eu-west, location: {{ lat: 53.35, lon: -6.26 }}, a: [198.51.100.10], endpoints: [{ep(eu.port)}], health: {health} }}
  - {{ name: us-east, location: {{ lat: 39.04, lon: -77.49 }}, a: [192.0.2.10], endpoints: [{ep(us.port)}], health: {health} }}
policies:
  - {{ name: pool.example.test, method: nearest, ttl: 30 }}
""")
    dns_port, http_port = free_port(), free_port()
    open(os.path.join(d, "meridian.yaml"), "w").write(f"""version: 1
dns: {{ listen: ["127.0.0.1:{dns_port}"], udp_sockets_per_address: 2 }}
http: {{ listen: "127.0.0.1:{http_port}" }}
health: {{ state_file: null, startup_wait: 5s }}
""")
    qfile = os.path.join(d, "queries.txt")
    open(qfile, "w").write("pool.example.test A\nwww.example.test A\nexample.test SOA\nnope.example.test A\n")
    log = open(os.path.join(d, "log"), "w")
    proc = subprocess.Popen([a.binary, "serve", "--config", os.path.join(d, "meridian.yaml")],
                            stdout=subprocess.DEVNULL, stderr=log)
    http = f"127.0.0.1:{http_port}"
    failures = []
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://{http}/ready", timeout=1).read()
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    sys.exit("meridian did not become ready")
                time.sleep(0.2)
        peak = dnsperf(dns_port, qfile, 5)["qps"]
        rate = max(100.0, peak / 2)
        for _ in range(3):
            proc.send_signal(signal.SIGHUP)
            time.sleep(1.5)
        rss0, fds0 = rss_kb(proc.pid), fds(proc.pid)
        print(f"peak {peak:.0f} queries/s; soaking {a.seconds} s at {rate:.0f}/s, "
              f"eu-west flapping every {a.flap_every} s, reload every {a.reload_every} s", flush=True)
        stop = threading.Event()
        reloads = [0]
        rss_trace = []

        def chaos():
            t0 = time.time()
            next_sample = t0
            next_flap, next_reload = t0 + a.flap_every, t0 + a.reload_every
            while not stop.wait(0.1):
                now = time.time()
                if now >= next_sample:
                    rss_trace.append((now - t0, rss_kb(proc.pid)))
                    next_sample += 0.5
                if now >= next_flap:
                    eu.sick = not eu.sick
                    next_flap += a.flap_every
                if now >= next_reload:
                    proc.send_signal(signal.SIGHUP)
                    reloads[0] += 1
                    next_reload += a.reload_every


        t = threading.Thread(target=chaos, daemon=True)
        t.start()
        run = dnsperf(dns_port, qfile, a.seconds, rate)
        stop.set()
        t.join()
        time.sleep(1)
        rss1, fds1 = rss_kb(proc.pid), fds(proc.pid)
        transitions = metric(http, 'meridian_health_transitions_total{')
        reload_ok = metric(http, 'meridian_config_reloads_total{result="success"}')
        reload_bad = metric(http, 'meridian_config_reloads_total{result="failure"}')
        half = a.seconds / 2
        first = max((r for t, r in rss_trace if t < half), default=rss0)
        second = max((r for t, r in rss_trace if t >= half), default=rss1)
        growth = (second - first) / first if first else 0
        others = {k: v for k, v in run["codes"].items() if k != "NOERROR"}
        nxdomain_ok = set(others) <= {"NXDOMAIN"}  # nope.example.test is NXDOMAIN by design
        print(f"queries: {run['sent']:.0f} sent, {run['completed']:.0f} completed, {run['lost']:.0f} lost, "
              f"{run['qps']:.0f}/s; response codes {run['codes']}")
        print(f"RSS {rss0} kB at start, {rss1} kB at end; peak {first} kB in the first half, "
              f"{second} kB in the second ({growth * 100:+.1f} %); file descriptors {fds0} → {fds1}")
        print(f"reloads: {reloads[0]} sent, {reload_ok:.0f} succeeded in all, {reload_bad:.0f} failed; "
              f"health transitions: {transitions:.0f}")
        if run["lost"] > 0:
            failures.append(f"{run['lost']:.0f} queries lost")
        if not nxdomain_ok:
            failures.append(f"unexpected response codes {others}")
        if run["completed"] == 0:
            failures.append("no queries completed")
        if growth > 0.10:
            failures.append(f"RSS peak grew {growth * 100:+.1f} %")
        if abs(fds1 - fds0) > 4:
            failures.append(f"file descriptors {fds0} → {fds1}")
        if reload_bad:
            failures.append(f"{reload_bad:.0f} reloads failed")
        if reloads[0] and reload_ok < reloads[0] + 3:
            failures.append(f"only {reload_ok:.0f} of {reloads[0]} reloads succeeded")
        if not transitions:
            failures.append("eu-west never changed state: the flapping did not reach the checker")
        errors = [l for l in open(os.path.join(d, "log")) if " ERROR " in l or "panicked" in l]
        if errors:
            failures.append(f"{len(errors)} error lines in the log, first: {errors[0].strip()}")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)
    if failures:
        print("FAILED: " + "; ".join(failures))
        sys.exit(1)
    print("ok: flat, nothing lost")


if __name__ == "__main__":
    main()
