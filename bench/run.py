#!/usr/bin/env python3
"""Side-by-side DNS benchmark: Meridian, gdnsd, NSD and PowerDNS on one scenario.

    python3 bench/run.py [--quick] [--db PATH] [--out bench/RESULTS.md]

One zone (bench.example), five regions with coordinates whose answers are loopback
addresses 127.0.1.1-5, each with a local HTTP health endpoint on port 18080 that this
script serves (so every health checker probes something real, and nothing leaves the
machine). Load: dnsperf with a binary query file (-B) where every query carries EDNS
Client Subnet for a different real client /24 sampled from the GeoIP database, and a
static-name file without ECS. Reported per server: queries/s (median of the runs), mean
latency at saturation, p99 at 1000 qps, lost queries, server CPU seconds per 100k
answers, peak RSS; and Meridian's ratios to each peer from the same run.

Needs root (apt installs) and the GeoIP database in MaxMind schema that gdnsd reads
(default ../shared/geoip/world-city.mmdb); Meridian is pointed at the same file.
"""
import argparse
import http.server
import os
import re
import shutil
import socket
import socketserver
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
ROOT = os.path.dirname(HERE)
WORK = "/tmp/meridian-bench"
REGIONS = [
    ("us-east", 39.04, -77.49, "127.0.1.1"),
    ("us-west", 37.34, -121.89, "127.0.1.2"),
    ("eu-west", 53.35, -6.26, "127.0.1.3"),
    ("ap-south", 19.08, 72.88, "127.0.1.4"),
    ("ap-northeast", 35.68, 139.69, "127.0.1.5"),
]
HEALTH_PORT = 18080
ZONE = """$TTL 300
@       SOA ns1 hostmaster 1 7200 3600 1209600 300
@       NS  ns1
@       MX  10 mail
ns1     A   192.0.2.53
mail    A   192.0.2.25
static  A   192.0.2.1
static  AAAA 2001:db8::1
"""
PORTS = {"meridian": 5510, "gdnsd": 5520, "nsd": 5530, "pdns": 5540, "scale": 5550}


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, **kw)


def install():
    need = [p for p in ["gdnsd", "nsd", "pdns-server", "pdns-backend-bind", "pdns-backend-geoip", "dnsperf", "time"]
            if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout.find("install ok installed") < 0]
    if need:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sh(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        sh(["apt-get", "install", "-y", "-q", "--no-install-recommends", *need], env=env, stdout=subprocess.DEVNULL)
    try:
        import maxminddb  # noqa: F401
    except ImportError:
        sh([sys.executable, "-m", "pip", "install", "-q", "maxminddb"])


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def start_health_servers():
    servers = []
    for _, _, _, addr in REGIONS:
        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request, client_address):
                pass  # a checker hanging up early is not our concern
        s = S((addr, HEALTH_PORT), Health)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
    return servers


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def setup_meridian(db):
    d = f"{WORK}/meridian"
    write(f"{d}/zones/bench.example", ZONE)
    regions = "".join(
        f"  - name: {n}\n    location: {{ lat: {lat}, lon: {lon} }}\n    a: [{a}]\n"
        f"    endpoints: [ {{ name: web, probe: http, address: \"{a}:{HEALTH_PORT}\", path: /, interval: 2s, timeout: 1s }} ]\n"
        for n, lat, lon, a in REGIONS)
    write(f"{d}/policies/bench.yaml", f"version: 1\nregions:\n{regions}policies:\n  - {{ name: www.bench.example, method: nearest, ttl: 30 }}\n")
    write(f"{d}/meridian.yaml", f"version: 1\ndns:\n  listen: [\"127.0.0.1:{PORTS['meridian']}\"]\n"
          f"http:\n  listen: \"127.0.0.1:9510\"\nzones: zones\npolicies: policies\ngeoip: {os.path.dirname(db)}\n"
          f"geo:\n  database: {os.path.basename(db)}\n  latency: null\nhealth:\n  state_file: null\n")
    binary = f"{ROOT}/target/release/meridian"
    env = dict(os.environ, MERIDIAN_LOG="warn")
    return [binary, "serve", "--config", f"{d}/meridian.yaml"], env


def setup_gdnsd(db):
    d = f"{WORK}/gdnsd"
    write(f"{d}/zones/bench.example", ZONE + "www 30/30 DYNA geoip!www\n")
    coords = "\n".join(f"        {n} => [ {lat}, {lon} ]" for n, lat, lon, _ in REGIONS)
    dcs = " ".join(n for n, *_ in REGIONS)
    dcmap = "\n".join(f"        {n} => {a}" for n, _, _, a in REGIONS)
    write(f"{d}/config", f"""options => {{
  listen => [ 127.0.0.1:{PORTS['gdnsd']} ]
  udp_threads => 2
}}
service_types => {{
  web => {{ plugin => http_status, port => {HEALTH_PORT}, url_path => /, interval => 2, timeout => 1, down_thresh => 3, ok_thresh => 1, up_thresh => 3 }}
}}
plugins => {{
  geoip => {{
    maps => {{
      bench => {{
        geoip2_db => {db}
        datacenters => [ {dcs} ]
        auto_dc_coords => {{
{coords}
        }}
        auto_dc_limit => 5
      }}
    }}
    resources => {{
      www => {{
        map => bench
        service_types => web
        dcmap => {{
{dcmap}
        }}
      }}
    }}
  }}
}}
""")
    return ["gdnsd", "-c", d, "start"], None


def setup_nsd():
    d = f"{WORK}/nsd"
    write(f"{d}/zones/bench.example", ZONE + "www 30 A 127.0.1.1\n")
    write(f"{d}/nsd.conf", f"""server:
  ip-address: 127.0.0.1@{PORTS['nsd']}
  server-count: 1
  zonesdir: "{d}/zones"
  database: ""
  username: ""
  chroot: ""
  pidfile: "{d}/nsd.pid"
  xfrdfile: "{d}/xfrd.state"
  zonelistfile: "{d}/zone.list"
  logfile: "{d}/nsd.log"
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: bench.example
  zonefile: bench.example
""")
    return ["nsd", "-d", "-c", f"{d}/nsd.conf"], None


def setup_pdns(db):
    """PowerDNS with the bind backend for the zone, LUA records with shared state for the
    geo name (ifurlup health checks + pickclosest) and the geoip backend for locations:
    an overlay database placing the five answer addresses, then a copy of the city
    database with the accuracy_radius PowerDNS insists on (see ../shared/design/PEERS.md)."""
    import mmdb_tools
    d = f"{WORK}/pdns"
    os.makedirs(d, exist_ok=True)
    overlay, city = f"{d}/regions.mmdb", f"{d}/city-accuracy.mmdb"
    mmdb_tools.write_overlay(overlay, [(f"{a}/32", lat, lon) for _, lat, lon, a in REGIONS])
    mmdb_tools.add_accuracy(db, city)
    addrs = ", ".join(f"'{a}'" for *_, a in REGIONS)
    lua = (f'www 30 IN LUA A "ifurlup(\'http://www.bench.example:{HEALTH_PORT}/\', {{{{{addrs}}}}}, '
           f'{{selector=\'pickclosest\', backupSelector=\'pickclosest\', timeout=\'1\'}})"\n')
    write(f"{d}/zones/bench.example", ZONE + lua)
    write(f"{d}/named.conf", f'zone "bench.example" {{ type native; file "{d}/zones/bench.example"; }};\n')
    write(f"{d}/geo-zones.yaml", "domains: []\n")
    write(f"{d}/pdns.conf", f"""launch=bind,geoip
bind-config={d}/named.conf
geoip-database-files={overlay} {city}
geoip-zones-file={d}/geo-zones.yaml
enable-lua-records=shared
edns-subnet-processing=yes
lua-health-checks-interval=1
local-address=127.0.0.1
local-port={PORTS['pdns']}
socket-dir={d}
config-dir={d}
guardian=no
daemon=no
disable-syslog=yes
loglevel=3
receiver-threads=2
distributor-threads=2
""")
    return ["pdns_server", f"--config-dir={d}"], None


def write_section(path, mark, lines):
    """Prints `lines` and puts them in `path` between `<!-- mark -->` and `<!-- /mark -->`,
    replacing what was there (appended the first time)."""
    section = "\n".join([f"<!-- {mark} -->", *lines, f"<!-- /{mark} -->"])
    print(section)
    text = open(path).read() if os.path.exists(path) else ""
    if f"<!-- {mark} -->" in text:
        text = re.sub(rf"<!-- {mark} -->.*?<!-- /{mark} -->", lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    open(path, "w").write(text)


def pids_of(root_pid):
    """The process and all its descendants (NSD forks)."""
    pids = [root_pid]
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    i = 0
    while i < len(pids):
        pids.extend(children.get(pids[i], []))
        i += 1
    return pids


def cpu_seconds(pids):
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tck


def peak_rss_mb(pids):
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def wait_answering(port, timeout=60, zone=b"\x05bench\x07example"):
    q = bytes.fromhex("abcd00000001000000000000") + b"\x06static" + zone + b"\x00\x00\x01\x00\x01"
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.3)
        try:
            s.sendto(q, ("127.0.0.1", port))
            if s.recv(512)[:2] == b"\xab\xcd":
                return True
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(0.2)
    return False


def dnsperf(port, qfile, seconds, extra=()):
    out = subprocess.run(["dnsperf", "-B", "-s", "127.0.0.1", "-p", str(port), "-d", qfile, "-l", str(seconds), *extra],
                         capture_output=True, text=True).stdout
    r = {}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Queries per second:"):
            r["qps"] = float(line.split()[3])
        elif line.startswith("Queries completed:"):
            r["completed"] = int(line.split()[2])
        elif line.startswith("Queries lost:"):
            r["lost"] = int(line.split()[2])
        elif line.startswith("Average Latency (s):"):
            r["mean_ms"] = float(line.split()[3]) * 1000
    return r, out


def latency_at(port, qfile, rate, seconds, extra=()):
    """(mean ms, p99 ms) at a fixed query rate, from dnsperf's per-query lines."""
    out = subprocess.run(["dnsperf", "-B", "-v", "-s", "127.0.0.1", "-p", str(port), "-d", qfile, "-l", str(seconds),
                          "-Q", str(int(rate)), *extra],
                         capture_output=True, text=True).stdout
    lat = []
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("> ") and len(parts) >= 2:
            try:
                lat.append(float(parts[-1]))
            except ValueError:
                pass
    if not lat:
        return None, None
    lat.sort()
    return statistics.fmean(lat) * 1000, lat[int(len(lat) * 0.99) - 1] * 1000


def saturation_run(port, qfile, args, pid):
    """One saturating dnsperf run, with the server CPU over the process tree of `pid`."""
    c0 = cpu_seconds(pids_of(pid))
    r, _ = dnsperf(port, qfile, args.seconds, ("-c", "16", "-q", "500", "-T", "2"))
    r["cpu"] = cpu_seconds(pids_of(pid)) - c0
    return r


def summarize(runs):
    """The median run's figures, and the queries lost in all of them."""
    best = sorted(runs, key=lambda r: r.get("qps", 0))[len(runs) // 2]
    done = max(best.get("completed", 0), 1)
    return {
        "qps": best.get("qps", 0.0),
        "mean_ms": best.get("mean_ms", 0.0),
        "lost": sum(r.get("lost", 0) for r in runs),
        "cpu_per_100k": best["cpu"] / done * 100000,
        "answers_per_cpu_s": done / best["cpu"] if best["cpu"] else 0.0,
    }


def saturation(port, qfile, args, pid):
    """`args.repeats` saturating dnsperf runs, summarized."""
    return summarize([saturation_run(port, qfile, args, pid) for _ in range(args.repeats)])


def stop(proc, log):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def run_server(name, cmd, env, files, args, half=None):
    """Saturation runs, then latency at 1000 qps and at `half[kind]` queries/s (half of
    Meridian's peak, once Meridian has run)."""
    port = PORTS[name]
    log = open(f"{WORK}/{name}.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_answering(port):
            return {"error": f"did not start, see {WORK}/{name}.log"}
        time.sleep(3 if args.quick else 6)  # first health round
        res = {}
        for kind, qfile in files:
            res[kind] = saturation(port, qfile, args, proc.pid)
            # Saturation with 100 queries in flight instead of 500: fewer queued in front of
            # each answer, and a server that drops queries does not shorten the queue.
            r100, _ = dnsperf(port, qfile, 5 if args.quick else 10, ("-c", "16", "-q", "100", "-T", "2"))
            res[kind]["q100_qps"], res[kind]["q100_mean_ms"] = r100.get("qps"), r100.get("mean_ms")
            res[kind]["p99_1000_ms"] = latency_at(port, qfile, 1000, 5 if args.quick else 10)[1]
            # Meridian sets the rate: half of its own peak, measured just now.
            rate = res[kind]["qps"] / 2 if name == "meridian" else (half or {}).get(kind)
            if rate:
                res[kind]["half_rate"] = rate
                res[kind]["half_mean_ms"], res[kind]["half_p99_ms"] = latency_at(
                    port, qfile, rate, 5, ("-c", "16", "-T", "2"))
        res["rss_mb"] = peak_rss_mb(pids_of(proc.pid))
        return res
    finally:
        stop(proc, log)


def run_scale(db, args, geo):
    """Issue 6's scale scenario: 10 000 policies over 100 regions, the same database.
    Its throughput is compared with the 1-policy deployment run alongside, the two loads
    alternating: this machine's speed drifts by tens of percent within a full run, so a
    ratio against figures taken minutes earlier would measure the drift."""
    import scale
    d = f"{WORK}/scale"
    scale.generate(d, db)
    scale.write_config(d, db, PORTS["scale"], 9555)
    binary = f"{ROOT}/target/release/meridian"
    cfg = f"{d}/meridian.yaml"
    t0 = time.time()
    sh([binary, "check", "--config", cfg], stdout=subprocess.DEVNULL)
    load_s = time.time() - t0
    log = open(f"{WORK}/scale.log", "w")
    t0 = time.time()
    env = dict(os.environ, MERIDIAN_LOG="warn")
    proc = subprocess.Popen([binary, "serve", "--config", cfg], env=env, stdout=log, stderr=subprocess.STDOUT)
    cmd, _ = setup_meridian(db)
    one_log = open(f"{WORK}/scale-1-policy.log", "w")
    one = subprocess.Popen(cmd, env=env, stdout=one_log, stderr=subprocess.STDOUT)
    try:
        if not wait_answering(PORTS["scale"], zone=b"\x05scale\x07example"):
            return {"error": f"did not start, see {WORK}/scale.log"}
        first_answer_s = time.time() - t0
        if not wait_answering(PORTS["meridian"]):
            return {"error": f"the 1-policy deployment did not start, see {WORK}/scale-1-policy.log"}
        time.sleep(3)
        runs, one_runs = [], []
        for _ in range(args.repeats):
            one_runs.append(saturation_run(PORTS["meridian"], geo, args, one.pid))
            runs.append(saturation_run(PORTS["scale"], f"{d}/queries.bin", args, proc.pid))
        res = summarize(runs)
        return dict(res, load_s=load_s, first_answer_s=first_answer_s, rss_mb=peak_rss_mb([proc.pid]),
                    one_policy=summarize(one_runs))
    finally:
        stop(proc, log)
        stop(one, one_log)


def fmt(v, f="{:,.0f}"):
    return "–" if v is None else f.format(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="5 s runs, one repeat")
    ap.add_argument("--db", default=os.path.join(ROOT, "..", "shared", "geoip", "world-city.mmdb"))
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--servers", default="meridian,gdnsd,nsd,pdns")
    ap.add_argument("--no-scale", action="store_true", help="skip the 10 000-policy scenario")
    args = ap.parse_args()
    args.seconds = 5 if args.quick else 20
    args.repeats = 1 if args.quick else 3
    db = os.path.abspath(args.db)
    if not os.path.exists(db):
        sys.exit(f"GeoIP database {db} not found (MaxMind schema, for gdnsd); pass --db")
    install()
    sh(["cargo", "build", "--release", "--locked", "--bin", "meridian"], cwd=ROOT)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    geo = f"{WORK}/geo.bin"
    static = f"{WORK}/static.bin"
    sh([sys.executable, f"{HERE}/gen_queries.py", "geo", db, geo, "200000", "www.bench.example"])
    sh([sys.executable, f"{HERE}/gen_queries.py", "static", static, "200000", "static.bench.example", "mail.bench.example", "ns1.bench.example"])
    health = start_health_servers()
    setups = {
        "meridian": lambda: setup_meridian(db),
        "gdnsd": lambda: setup_gdnsd(db),
        "nsd": setup_nsd,
        "pdns": lambda: setup_pdns(db),
    }
    geo_capable = {"meridian", "gdnsd", "pdns"}
    results = {}
    for name in args.servers.split(","):
        cmd, env = setups[name]()
        files = ([("geo", geo)] if name in geo_capable else []) + [("static", static)]
        print(f"== {name}", flush=True)
        m = results.get("meridian", {})
        half = {k: m[k]["qps"] / 2 for k in ("geo", "static") if k in m}
        results[name] = run_server(name, cmd, env, files, args, half)
        print(results[name], flush=True)
    scale_res = run_scale(db, args, geo) if "meridian" in args.servers.split(",") and not args.no_scale else None
    print("== scale", scale_res, flush=True)
    for s in health:
        s.shutdown()

    versions = {}
    for name, cmd in [("meridian", [f"{ROOT}/target/release/meridian", "--version"]), ("gdnsd", ["gdnsd", "-?"]),
                      ("nsd", ["nsd", "-v"]), ("pdns", ["pdns_server", "--version"])]:
        p = subprocess.run(cmd, capture_output=True, text=True)
        text = [l for l in (p.stdout + p.stderr).splitlines() if "ersion" in l or "PowerDNS" in l or l.startswith("meridian")]
        versions[name] = text[0].strip() if text else "?"
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Benchmark results",
        "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {os.cpu_count()} cores ({cpu}), "
        f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, loopback; dnsperf shares the cores with the server.",
        f"Runs: {args.repeats} × {args.seconds} s per load at `-c 16 -q 500 -T 2` (median shown), one run with `-q 100`; p99 from `dnsperf -v` at 1000 qps. "
        "Geo load: 200k queries for www.bench.example, each with ECS for a different real client /24 from "
        f"`{os.path.basename(db)}`, nearest healthy of 5 regions with live HTTP health checks. Static load: 3 names, no EDNS.",
        "",
        "Versions: " + "; ".join(f"{k}: `{v}`" for k, v in versions.items()),
        "",
        "| server | load | queries/s | answers per server CPU-s | CPU-s per 100k | mean ms at saturation | queries/s, mean ms with 100 in flight | p99 ms at 1000 qps | mean / p99 ms at 50 % of Meridian's peak | lost | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | – | {r['error']} | | | | | | | | |")
            continue
        for kind in ("geo", "static"):
            if kind in r:
                k = r[kind]
                lines.append(f"| {name} | {kind} | {fmt(k['qps'])} | {fmt(k['answers_per_cpu_s'])} | {k['cpu_per_100k']:.2f} | "
                             f"{k['mean_ms']:.3f} | {fmt(k.get('q100_qps'))}, {fmt(k.get('q100_mean_ms'), '{:.3f}')} | "
                             f"{fmt(k['p99_1000_ms'], '{:.3f}')} | "
                             f"{fmt(k.get('half_mean_ms'), '{:.3f}')} / {fmt(k.get('half_p99_ms'), '{:.3f}')} at {fmt(k.get('half_rate'))} q/s | "
                             f"{k['lost']} | {r['rss_mb']:.0f} |")
    m = results.get("meridian", {})
    lines += ["", "Ratios (Meridian / peer, same run):", ""]
    for peer in ("gdnsd", "nsd", "pdns"):
        p = results.get(peer, {})
        for kind in ("geo", "static"):
            if kind in m and kind in p and p[kind]["qps"] and p[kind]["answers_per_cpu_s"]:
                lines.append(f"- {kind} vs {peer}: queries/s × {m[kind]['qps'] / p[kind]['qps']:.2f}, "
                             f"answers per CPU-second × {m[kind]['answers_per_cpu_s'] / p[kind]['answers_per_cpu_s']:.2f}")
        if "rss_mb" in m and p.get("rss_mb"):
            lines.append(f"- peak RSS vs {peer}: × {m['rss_mb'] / p['rss_mb']:.2f}")
    if scale_res and "error" not in scale_res and "geo" in m:
        one = scale_res["one_policy"]
        lines += ["", "Scale (10 000 policies over 100 regions, each name its own mix of 2-8 regions and method; "
                  "the same database; queries spread over all names, each with ECS for a different client /24):", "",
                  f"- configuration load (`meridian check`: zones, policies, GeoIP, compile): {scale_res['load_s']:.2f} s; "
                  f"first answer after start (includes the first health-probe round of 100 regions): {scale_res['first_answer_s']:.2f} s",
                  f"- queries/s {fmt(scale_res['qps'])}, answers per CPU-second {fmt(scale_res['answers_per_cpu_s'])}, "
                  f"lost {scale_res['lost']}; the 1-policy deployment in runs alternating with these: "
                  f"{fmt(one['qps'])} queries/s, {fmt(one['answers_per_cpu_s'])} answers per CPU-second: "
                  f"× {scale_res['qps'] / one['qps']:.2f} queries/s, × {scale_res['answers_per_cpu_s'] / one['answers_per_cpu_s']:.2f} answers per CPU-second",
                  f"- peak RSS {scale_res['rss_mb']:.0f} MB (1-policy scenario: {m['rss_mb']:.0f} MB)"]
    elif scale_res:
        lines += ["", f"Scale scenario: {scale_res.get('error')}"]
    # bench/city.py's and bench/dnssec.py's sections (between their markers) are kept.
    city = ""
    if os.path.exists(args.out):
        old = open(args.out).read()
        for mark in ("city", "dnssec"):
            if f"<!-- {mark} -->" in old:
                body = old.split(f"<!-- {mark} -->", 1)[1].split(f"<!-- /{mark} -->", 1)[0]
                city += f"\n<!-- {mark} -->" + body + f"<!-- /{mark} -->\n"
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n" + city)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
