#!/usr/bin/env python3
"""Tenant maps at scale (`method: home`): load time and memory for a million tenants,
and answers per CPU-second for tenant names against a `nearest` policy, in one run.

    python3 bench/tenants.py [--tenants 1000000] [--seconds 10] [--db PATH]

One server with both policies: `*.tenants.bench.example` (method home, the map) and
`www.bench.example` (method nearest), five regions. Reports:
- the time `meridian check` takes with and without the map, and the server's peak RSS
  (VmHWM) once answering, with and without it: what the map costs;
- saturating dnsperf runs (`-c 16 -q 500 -T 2`) of 200 000 tenant names (random
  tenants) and of 200 000 nearest queries with ECS for real client /24s, the server's
  CPU read from /proc: answers per CPU-second for each, and their ratio.
"""
import argparse
import os
import random
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402

WORK = "/tmp/meridian-tenants-bench"
REGIONS = [
    ("us-east", 39.04, -77.49, "127.0.1.1", "us"),
    ("us-west", 45.60, -121.18, "127.0.1.2", "us"),
    ("eu-west", 53.35, -6.26, "127.0.1.3", "eu"),
    ("eu-central", 50.11, 8.68, "127.0.1.4", "eu"),
    ("ap-south", 19.08, 72.88, "127.0.1.5", "in"),
]
PORT = 5560


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def setup(db, tenants, with_map):
    d = f"{WORK}/{'map' if with_map else 'nomap'}"
    write(f"{d}/zones/bench.example", run.ZONE)
    regions = "".join(f"  - {{ name: {n}, location: {{ lat: {lat}, lon: {lon} }}, a: [{a}] }}\n"
                      for n, lat, lon, a, _ in REGIONS)
    policies = "  - { name: www.bench.example, method: nearest, ttl: 30 }\n"
    if with_map:
        policies += '  - { name: "*.tenants.bench.example", method: home, tenants: tenants.csv, ttl: 60 }\n'
    write(f"{d}/policies/bench.yaml", f"version: 1\nregions:\n{regions}policies:\n{policies}")
    if with_map and not os.path.exists(f"{d}/policies/tenants.csv"):
        rng = random.Random(1)
        by_j = {}
        for n, *_, j in REGIONS:
            by_j.setdefault(j, []).append(n)
        lines = ["tenant,home,allowed,move_to,move_at"]
        for i in range(tenants):
            j = rng.choice(["us", "eu", "in"])
            home = rng.choice(by_j[j])
            lines.append(f"tenant-{i:07d},{home},{' '.join(by_j[j])},,")
        write(f"{d}/policies/tenants.csv", "\n".join(lines) + "\n")
    write(f"{d}/meridian.yaml", f"version: 1\ndns:\n  listen: [\"127.0.0.1:{PORT}\"]\n"
          f"http:\n  listen: \"127.0.0.1:9560\"\nzones: zones\npolicies: policies\ngeoip: {os.path.dirname(db)}\n"
          f"geo:\n  database: {os.path.basename(db)}\n  latency: null\nhealth:\n  state_file: null\n")
    return f"{d}/meridian.yaml"


def check_time(binary, config):
    t = time.monotonic()
    run.sh([binary, "check", "--config", config], stdout=subprocess.DEVNULL)
    return time.monotonic() - t


def tenant_queries(path, tenants, n):
    """dnsperf's binary format (-B): each record a 2-byte length and a DNS message."""
    rng = random.Random(2)
    with open(path, "wb") as f:
        for i in range(n):
            name = f"tenant-{rng.randrange(tenants):07d}.tenants.bench.example"
            q = struct.pack(">HHHHHH", i & 0xFFFF, 0, 1, 0, 0, 0)
            q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\x00"
            q += struct.pack(">HH", 1, 1)
            f.write(struct.pack(">H", len(q)) + q)


def serve(binary, config):
    log = open(f"{WORK}/serve.log", "w")
    t = time.monotonic()
    proc = subprocess.Popen([binary, "serve", "--config", config], env=dict(os.environ, MERIDIAN_LOG="warn"),
                            stdout=log, stderr=subprocess.STDOUT)
    if not run.wait_answering(PORT, timeout=120):
        sys.exit(f"did not start, see {WORK}/serve.log")
    return proc, log, time.monotonic() - t


def hwm_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def saturate(pid, qfile, seconds):
    pids = run.pids_of(pid)
    c0 = run.cpu_seconds(pids)
    r, _ = run.dnsperf(PORT, qfile, seconds, ("-c", "16", "-q", "500", "-T", "2"))
    cpu = run.cpu_seconds(pids) - c0
    return r.get("qps", 0.0), (r.get("completed", 0) / cpu if cpu else 0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--db", default=os.path.join(run.ROOT, "..", "shared", "geoip", "world-city.mmdb"))
    args = ap.parse_args()
    db = os.path.abspath(args.db)
    if not os.path.exists(db):
        db = os.path.join(run.ROOT, "geoip", "geo-whois-asn-country.mmdb")
    os.makedirs(WORK, exist_ok=True)
    run.sh(["cargo", "build", "--release", "--locked", "--bin", "meridian"], cwd=run.ROOT)
    binary = f"{run.ROOT}/target/release/meridian"
    with_map = setup(db, args.tenants, True)
    without = setup(db, args.tenants, False)
    print(f"database {db}, {args.tenants:,} tenants", flush=True)
    t_with, t_without = check_time(binary, with_map), check_time(binary, without)
    print(f"meridian check: {t_with:.2f} s with the map, {t_without:.2f} s without: the map costs {t_with - t_without:.2f} s", flush=True)

    proc, log, _ = serve(binary, without)
    base_rss = hwm_mb(proc.pid)
    run.stop(proc, log)
    proc, log, started = serve(binary, with_map)
    try:
        rss = hwm_mb(proc.pid)
        print(f"serving: peak RSS {rss:.0f} MB with the map, {base_rss:.0f} MB without: the map costs {rss - base_rss:.0f} MB "
              f"({(rss - base_rss) * 1e6 / args.tenants:.0f} bytes a tenant); answering {started:.1f} s after start", flush=True)
        tq, gq = f"{WORK}/tenants.bin", f"{WORK}/geo.bin"
        tenant_queries(tq, args.tenants, 200_000)
        run.sh([sys.executable, f"{HERE}/gen_queries.py", "geo", db, gq, "200000", "www.bench.example"])
        results = {}
        for kind, q in [("tenant names", tq), ("nearest with ECS", gq)] * 2:
            results.setdefault(kind, []).append(saturate(proc.pid, q, args.seconds))
        for kind, rs in results.items():
            best = max(rs, key=lambda r: r[1])
            print(f"{kind}: {best[0]:,.0f} queries/s, {best[1]:,.0f} answers per CPU-second (best of {len(rs)})", flush=True)
        t = max(r[1] for r in results["tenant names"])
        n = max(r[1] for r in results["nearest with ECS"])
        print(f"tenant names / nearest: answers per CPU-second × {t / n:.2f}", flush=True)
    finally:
        run.stop(proc, log)


if __name__ == "__main__":
    main()
