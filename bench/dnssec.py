#!/usr/bin/env python3
"""Signed geo answers against unsigned ones, in one run: Meridian and PowerDNS.

    sudo python3 bench/dnssec.py [--quick] [--db PATH] [--out bench/RESULTS.md]

The scenario of run.py (zone bench.example, www.bench.example nearest of five healthy
regions, 200 000 queries each with ECS for a different real client /24), every query
with the DO bit set. Four servers run side by side and are loaded in turn, repeatedly:

- meridian: the zone unsigned (DO is ignored: no key);
- meridian-signed: the same deployment with a key from `meridian keygen` (ECDSA P-256):
  every answer carries its RRSIG, pre-signed when the snapshot was built;
- pdns: PowerDNS 4 (bind backend, LUA record with ifurlup + pickclosest), unsigned;
- pdns-signed: the same with `pdnsutil secure-zone` (ECDSA P-256), signing the LUA
  answers online (with its signature cache).

Reported per server: queries/s (median run), answers per server CPU-second, and each
signed server's ratio to its unsigned self. The goal for Meridian is within 10 %: nothing
is signed on its query path. It rewrites the `<!-- dnssec -->` section of RESULTS.md.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402

PORTS = {"meridian": 5610, "meridian-signed": 5620, "pdns": 5630, "pdns-signed": 5640}


def meridian(db, name, signed):
    cmd, env = run.setup_meridian(db)
    src = f"{run.WORK}/meridian"
    d = f"{run.WORK}/dnssec-{name}"
    shutil.copytree(src, d, dirs_exist_ok=True)
    conf = open(f"{d}/meridian.yaml").read()
    conf = conf.replace(f"127.0.0.1:{run.PORTS['meridian']}", f"127.0.0.1:{PORTS[name]}")
    conf = conf.replace("127.0.0.1:9510", f"127.0.0.1:{PORTS[name] + 1}")
    open(f"{d}/meridian.yaml", "w").write(conf)
    binary = cmd[0]
    if signed:
        run.sh([binary, "keygen", "--config", f"{d}/meridian.yaml", "bench.example"], stdout=subprocess.DEVNULL)
    return [binary, "serve", "--config", f"{d}/meridian.yaml"], env


def pdns(db, name, signed):
    cmd, _ = run.setup_pdns(db)
    src = f"{run.WORK}/pdns"
    d = f"{run.WORK}/dnssec-{name}"
    shutil.copytree(src, d, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.controlsocket"))
    conf = open(f"{d}/pdns.conf").read().replace(src, d)
    conf = conf.replace(f"local-port={run.PORTS['pdns']}", f"local-port={PORTS[name]}")
    named = open(f"{d}/named.conf").read().replace(src, d)
    open(f"{d}/named.conf", "w").write(named)
    if signed:
        conf += f"bind-dnssec-db={d}/dnssec.sqlite3\n"
    open(f"{d}/pdns.conf", "w").write(conf)
    if signed:
        db_file = f"{d}/dnssec.sqlite3"
        if os.path.exists(db_file):
            os.remove(db_file)
        run.sh(["pdnsutil", f"--config-dir={d}", "create-bind-db", db_file], stdout=subprocess.DEVNULL)
        run.sh(["pdnsutil", f"--config-dir={d}", "secure-zone", "bench.example"], stdout=subprocess.DEVNULL)
    return ["pdns_server", f"--config-dir={d}"], None


def rrsigs(port):
    """RRSIGs in the answer to one DO query for the geo name (0 for an unsigned server)."""
    out = subprocess.run(["dig", "+dnssec", "+norec", "+subnet=81.2.69.0/24", "-p", str(port), "@127.0.0.1",
                          "www.bench.example", "A"], capture_output=True, text=True).stdout
    ans = out.split("ANSWER SECTION:")[-1].split("\n\n")[0] if "ANSWER SECTION:" in out else ""
    return len(re.findall(r"\sRRSIG\s", ans))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="5 s runs, one repeat")
    ap.add_argument("--db", default=os.path.join(run.ROOT, "..", "shared", "geoip", "world-city.mmdb"))
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--servers", default="meridian,meridian-signed,pdns,pdns-signed")
    args = ap.parse_args()
    args.seconds = 5 if args.quick else 20
    args.repeats = 1 if args.quick else 3
    db = os.path.abspath(args.db)
    if not os.path.exists(db):
        sys.exit(f"GeoIP database {db} not found; pass --db")
    run.install()
    run.sh(["cargo", "build", "--release", "--locked", "--bin", "meridian"], cwd=run.ROOT)
    shutil.rmtree(run.WORK, ignore_errors=True)
    os.makedirs(run.WORK)
    qfile = f"{run.WORK}/geo-do.bin"
    run.sh([sys.executable, f"{HERE}/gen_queries.py", "geo-do", db, qfile, "200000", "www.bench.example"])
    health = run.start_health_servers()
    setups = {
        "meridian": lambda: meridian(db, "meridian", False),
        "meridian-signed": lambda: meridian(db, "meridian-signed", True),
        "pdns": lambda: pdns(db, "pdns", False),
        "pdns-signed": lambda: pdns(db, "pdns-signed", True),
    }
    names = args.servers.split(",")
    procs = {}
    # Every deployment written before any server starts: the setups share run.py's
    # folders, which each one rewrites.
    commands = {n: setups[n]() for n in names}
    for n in names:
        cmd, env = commands[n]
        log = open(f"{run.WORK}/{n}.log", "w")
        procs[n] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    for n in names:
        if not run.wait_answering(PORTS[n]):
            sys.exit(f"{n} did not answer; see {run.WORK}/{n}.log")
    time.sleep(5)  # first health rounds
    sigs = {n: rrsigs(PORTS[n]) for n in names}
    print("RRSIGs per answer:", sigs, flush=True)
    for n in names:
        if n.endswith("-signed") and sigs[n] < 1:
            sys.exit(f"{n} answers without RRSIG: not a signed server")
    runs = {n: [] for n in names}
    for i in range(args.repeats):
        for n in names:  # in turn, so that drift in the machine hits every server alike
            r = run.saturation_run(PORTS[n], qfile, args, procs[n][0].pid)
            runs[n].append(r)
            print(i, n, r, flush=True)
    res = {}
    for n in names:
        s = run.summarize(runs[n])
        done = sum(r.get("completed", 0) for r in runs[n])
        cpu = sum(r.get("cpu", 0.0) for r in runs[n])
        s["per_cpu"] = done / cpu if cpu > 0 else 0.0
        s["rss"] = run.peak_rss_mb(run.pids_of(procs[n][0].pid))
        res[n] = s
    for p, log in procs.values():
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
        log.close()
    for s in health:
        s.shutdown()

    lines = [
        f"### DNSSEC: signed geo answers (`bench/dnssec.py{' --quick' if args.quick else ''}`, {time.strftime('%Y-%m-%d')})",
        "",
        f"{args.repeats} × {args.seconds} s per server in turn, dnsperf `-c 16 -q 500 -T 2`, 200 000 geo queries with ECS and DO; "
        f"RRSIGs per answer: {', '.join(f'{n} {sigs[n]}' for n in names)}.",
        "",
        "| server | queries/s | answers per CPU-second | lost | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for n in names:
        s = res[n]
        lines.append(f"| {n} | {s['qps']:.0f} | {s['per_cpu']:.0f} | {s.get('lost', 0)} | {s['rss']:.0f} |")
    lines.append("")
    for signed, plain in (("meridian-signed", "meridian"), ("pdns-signed", "pdns")):
        if signed in res and plain in res and res[plain]["per_cpu"] and res[plain]["qps"]:
            lines.append(
                f"- {signed} / {plain}: queries/s {res[signed]['qps'] / res[plain]['qps']:.3f}, "
                f"answers per CPU-second {res[signed]['per_cpu'] / res[plain]['per_cpu']:.3f}")
    if "meridian-signed" in res and "pdns-signed" in res and res["pdns-signed"]["per_cpu"]:
        lines.append(
            f"- meridian-signed / pdns-signed: queries/s {res['meridian-signed']['qps'] / max(res['pdns-signed']['qps'], 1):.2f}, "
            f"answers per CPU-second {res['meridian-signed']['per_cpu'] / res['pdns-signed']['per_cpu']:.2f}")
    run.write_section(args.out, "dnssec", lines)


if __name__ == "__main__":
    main()
