#!/usr/bin/env python3
"""A random-subdomain NXDOMAIN flood with DO, against a signed zone and the same zone unsigned.

    python3 bench/flood.py [--quick] [--db PATH] [--out bench/RESULTS.md]

The deployment of dnssec.py (zone bench.example, five healthy regions), served twice:
unsigned and signed (ECDSA P-256 key from `meridian keygen`, the default signing budget,
no RRL, so every flood query reaches the denial code). The flood is dnsperf saturating
each server with 200 000 distinct random names under bench.example, DO set: every one
is an NXDOMAIN whose proof a signed server must sign online (the cache cannot help).

Reported per server: flood answers per server CPU-second (and the signed / unsigned
ratio), and the latency of ordinary geo queries (DO, ECS, 2 000 qps) alone and during
the flood. It rewrites the `<!-- flood -->` section of RESULTS.md.
"""
import argparse
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dnssec  # noqa: E402
import gen_queries  # noqa: E402
import run  # noqa: E402

ORDINARY_QPS = 2000


def flood_file(path, n):
    """dnsperf's binary format (-B): `n` queries for distinct random names, DO set."""
    rnd = random.Random(29)
    opt = b"\x00" + struct.pack(">HHIH", 41, 1232, 0x8000, 0)
    with open(path, "wb") as f:
        for i in range(n):
            label = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
            msg = (struct.pack(">HHHHHH", i & 0xFFFF, 0, 1, 0, 0, 1) + gen_queries.name_wire(f"{label}.bench.example")
                   + struct.pack(">HH", 1, 1) + opt)
            f.write(struct.pack(">H", len(msg)) + msg)


def deferred(http_port):
    """Denials answered with TC because the signing budget was spent (from /metrics)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("meridian_dnssec_signing_deferred_total"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="5 s runs")
    ap.add_argument("--db", default=os.path.join(run.ROOT, "..", "shared", "geoip", "world-city.mmdb"))
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    args = ap.parse_args()
    args.seconds = 5 if args.quick else 15
    db = os.path.abspath(args.db)
    if not os.path.exists(db):
        sys.exit(f"GeoIP database {db} not found; pass --db")
    run.sh(["cargo", "build", "--release", "--locked", "--bin", "meridian"], cwd=run.ROOT)
    shutil.rmtree(run.WORK, ignore_errors=True)
    os.makedirs(run.WORK)
    ordinary = f"{run.WORK}/geo-do.bin"
    run.sh([sys.executable, f"{HERE}/gen_queries.py", "geo-do", db, ordinary, "50000", "www.bench.example"])
    flood = f"{run.WORK}/flood.bin"
    flood_file(flood, 200000)
    health = run.start_health_servers()
    names = ["meridian", "meridian-signed"]
    commands = {n: dnssec.meridian(db, n, n.endswith("signed")) for n in names}
    res = {}
    for n in names:
        cmd, env = commands[n]
        log = open(f"{run.WORK}/{n}.log", "w")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        port = dnssec.PORTS[n]
        if not run.wait_answering(port):
            sys.exit(f"{n} did not answer; see {run.WORK}/{n}.log")
        time.sleep(3)  # first health rounds
        if n.endswith("signed") and dnssec.rrsigs(port) < 1:
            sys.exit(f"{n} answers without RRSIG: not a signed server")
        alone = run.latency_at(port, ordinary, ORDINARY_QPS, args.seconds)
        during = {}

        def measure():
            time.sleep(1)  # the flood at full rate first
            during["lat"] = run.latency_at(port, ordinary, ORDINARY_QPS, args.seconds - 2)

        t = threading.Thread(target=measure)
        t.start()
        r = run.saturation_run(port, flood, argparse.Namespace(seconds=args.seconds), proc.pid)
        t.join()
        r["deferred"] = deferred(port + 1)
        r["alone"], r["during"] = alone, during.get("lat", (None, None))
        res[n] = r
        print(n, r, flush=True)
        run.stop(proc, log)
    for s in health:
        s.shutdown()

    def ms(v):
        return "-" if v is None else f"{v:.2f}"

    lines = [
        f"### DNSSEC under a random-subdomain flood (`bench/flood.py{' --quick' if args.quick else ''}`, {time.strftime('%Y-%m-%d')})",
        "",
        f"{args.seconds} s per server: dnsperf `-c 16 -q 500 -T 2` with 200 000 distinct random names under "
        f"bench.example (NXDOMAIN, DO set), no RRL; meanwhile {ORDINARY_QPS} geo queries/s with ECS and DO.",
        "",
        "| server | flood answers/s | flood answers per CPU-second | of them TC (signing budget spent) | ordinary mean / p99 ms alone | during the flood |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for n in names:
        r = res[n]
        per_cpu = r.get("completed", 0) / r["cpu"] if r.get("cpu") else 0.0
        r["per_cpu"] = per_cpu
        lines.append(
            f"| {n} | {r.get('qps', 0):.0f} | {per_cpu:.0f} | {r['deferred'] / max(r.get('completed', 1), 1):.1%} | {ms(r['alone'][0])} / {ms(r['alone'][1])} "
            f"| {ms(r['during'][0])} / {ms(r['during'][1])} |")
    if res["meridian"]["per_cpu"]:
        lines.append("")
        lines.append(
            f"- signed / unsigned flood answers per CPU-second: "
            f"{res['meridian-signed']['per_cpu'] / res['meridian']['per_cpu']:.3f}")
    run.write_section(args.out, "flood", lines)


if __name__ == "__main__":
    main()
