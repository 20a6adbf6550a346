#!/usr/bin/env python3
"""A/B of Meridian's query path: two builds on the same machine, alternating runs.

    python3 bench/ab.py --base REV [--head REV] [--rounds 6] [--seconds 10] [--load geo|static|both]

Builds `--base` (and `--head`, default: the working tree) in a worktree of their own,
then runs the two binaries in turn on `run.py`'s scenario (zone bench.example, five
regions probed over HTTP on loopback, the city-level GeoIP database, 200 000 geo queries
each with ECS for a different real client /24, or static names without ECS): each round
starts one server, saturates it with dnsperf (`-c 16 -q 500 -T 2`), reads the server's
CPU from /proc, stops it, then the other, the order swapped every round so neither
always runs on a warmer machine. Reports per build the median queries/s and answers per
CPU-second, and the head's ratios to the base: what a change to the query path states.

Needs dnsperf and the GeoIP database (default ../shared/geoip/world-city.mmdb).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (the shared scenario: setup, dnsperf, CPU accounting)

AB = "/tmp/meridian-ab"


def build(rev):
    """The release binary of `rev` (None: the working tree)."""
    if rev is None:
        run.sh(["cargo", "build", "--release", "--locked", "--bin", "meridian"], cwd=run.ROOT)
        return f"{run.ROOT}/target/release/meridian"
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=run.ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    tree = f"{AB}/{sha}"
    if not os.path.exists(tree):
        run.sh(["git", "worktree", "add", "--detach", tree, sha], cwd=run.ROOT)
    # One target folder for every revision: dependencies are built once.
    env = dict(os.environ, CARGO_TARGET_DIR=f"{AB}/target")
    run.sh(["cargo", "build", "--release", "--locked", "--bin", "meridian"], cwd=tree, env=env)
    out = f"{AB}/meridian-{sha}"
    run.sh(["cp", f"{AB}/target/release/meridian", out])
    return out


def one_run(binary, db, qfile, seconds):
    cmd, env = run.setup_meridian(db)
    cmd[0] = binary
    log = open(f"{run.WORK}/ab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not run.wait_answering(run.PORTS["meridian"]):
            sys.exit(f"{binary} did not start, see {run.WORK}/ab.log")
        time.sleep(3)  # first health round
        pids = run.pids_of(proc.pid)
        c0 = run.cpu_seconds(pids)
        r, _ = run.dnsperf(run.PORTS["meridian"], qfile, seconds, ("-c", "16", "-q", "500", "-T", "2"))
        cpu = run.cpu_seconds(pids) - c0
        done = r.get("completed", 0)
        return r.get("qps", 0.0), (done / cpu if cpu else 0.0)
    finally:
        run.stop(proc, log)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="git revision to compare against (e.g. the previous release)")
    ap.add_argument("--head", default=None, help="git revision (default: the working tree)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--load", default="geo", choices=["geo", "static", "both"])
    ap.add_argument("--db", default=os.path.join(run.ROOT, "..", "shared", "geoip", "world-city.mmdb"))
    args = ap.parse_args()
    db = os.path.abspath(args.db)
    if not os.path.exists(db):
        sys.exit(f"GeoIP database {db} not found; pass --db")
    os.makedirs(AB, exist_ok=True)
    os.makedirs(run.WORK, exist_ok=True)
    builds = {"base": build(args.base), "head": build(args.head)}
    loads = ["geo", "static"] if args.load == "both" else [args.load]
    files = {}
    for kind in loads:
        files[kind] = f"{run.WORK}/ab-{kind}.bin"
        if kind == "geo":
            run.sh([sys.executable, f"{HERE}/gen_queries.py", "geo", db, files[kind], "200000", "www.bench.example"])
        else:
            run.sh([sys.executable, f"{HERE}/gen_queries.py", "static", files[kind], "200000",
                    "static.bench.example", "mail.bench.example", "ns1.bench.example"])
    health = run.start_health_servers()
    try:
        for kind in loads:
            got = {"base": [], "head": []}
            for i in range(args.rounds):
                order = ["base", "head"] if i % 2 == 0 else ["head", "base"]
                for who in order:
                    qps, per_cpu = one_run(builds[who], db, files[kind], args.seconds)
                    got[who].append((qps, per_cpu))
                    print(f"{kind} round {i + 1} {who}: {qps:,.0f} queries/s, {per_cpu:,.0f} answers per CPU-second", flush=True)
            med = {w: (statistics.median(q for q, _ in v), statistics.median(c for _, c in v)) for w, v in got.items()}
            print(f"\n{kind}: base {args.base} {med['base'][0]:,.0f} q/s, {med['base'][1]:,.0f} answers/CPU-s; "
                  f"head {args.head or 'working tree'} {med['head'][0]:,.0f} q/s, {med['head'][1]:,.0f} answers/CPU-s")
            print(f"{kind}: head/base queries/s × {med['head'][0] / med['base'][0]:.3f}, "
                  f"answers per CPU-second × {med['head'][1] / med['base'][1]:.3f} "
                  f"(medians of {args.rounds} alternating rounds of {args.seconds} s)\n", flush=True)
    finally:
        for s in health:
            s.shutdown()


if __name__ == "__main__":
    main()
