#!/usr/bin/env python3
"""The health checker at scale (issue 29 section 6): N HTTP endpoints probed every second.

    python3 bench/checker.py [--sizes 200,1000,2000] [--seconds 20] [--binary PATH]

For each size, writes a deployment into a temporary folder: N/20 regions of 20 HTTP
endpoints each (interval 1s, timeout 1s) plus a `target` region with one endpoint that
goes down on its first failure, and a failover policy `t.bench.example` (target, then
r000). One local backend (a separate asyncio process, so its CPU is not the server's)
answers every probe with 200 and a fresh connection per probe, as Meridian probes.

Measured per size, from the server's /proc/PID/stat and its /metrics:
- the checker's CPU per probe: the server's CPU time over the window divided by the
  probes it completed (meridian_probe_duration_seconds_count), with no DNS load;
- the delay from a failing sample to the published view: the backend starts failing
  `/target` and records when it sent each failure; a DNS poller asks for t.bench.example
  every 2 ms and notes when the answer moved to r000. Delay = that moment minus the last
  failure sent before it (the sample that caused the transition). Five repetitions.
"""
import argparse
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

BACKEND_PORT = 18091
DNS_PORT = 5591
HTTP_PORT = 9591
TARGET_A = bytes([192, 0, 2, 91])
FALLBACK_A = bytes([192, 0, 2, 92])


# --- the backend (run as `checker.py --backend`) ---------------------------------------
def backend():
    fails = []
    state = {"fail": False}

    async def handle(reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except Exception:
            writer.close()
            return
        path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
        status, body = b"200 OK", b"ok"
        if path == b"/__fail":
            state["fail"] = True
        elif path == b"/__heal":
            state["fail"] = False
            fails.clear()
        elif path == b"/__fails":
            body = json.dumps(fails).encode()
        elif path == b"/target" and state["fail"]:
            status, body = b"503 Service Unavailable", b"no"
            fails.append(time.time())
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\nConnection: close\r\n\r\n" + body)
        try:
            await writer.drain()
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", BACKEND_PORT, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def control(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{BACKEND_PORT}{path}", timeout=5) as r:
        return r.read()


# --- the deployment --------------------------------------------------------------------
def write_deployment(d, n):
    os.makedirs(f"{d}/zones", exist_ok=True)
    os.makedirs(f"{d}/policies", exist_ok=True)
    geoip = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "geoip")
    backend_addr = f"127.0.0.1:{BACKEND_PORT}"
    out = ["version: 1", "regions:"]
    out += ["  - name: target", "    location: { lat: 50, lon: 8 }",
            "    a: [192.0.2.91]",
            "    health: { fail_consecutive: 1, recover_consecutive: 1, cooldown: 1s }",
            f"    endpoints: [ {{ name: web, probe: http, address: \"{backend_addr}\", path: /target, interval: 1s, timeout: 1s }} ]"]
    for r in range(max(1, n // 20)):
        out += [f"  - name: r{r:03d}", f"    location: {{ lat: {r % 80}, lon: {r % 170} }}",
                f"    a: [{'192.0.2.92' if r == 0 else f'198.51.100.{r % 250 + 1}'}]",
                "    endpoints:"]
        for e in range(20):
            out.append(f"      - {{ name: e{e:02d}, probe: http, address: \"{backend_addr}\", path: /, interval: 1s, timeout: 1s }}")
    out += ["policies:", "  - name: t.bench.example", "    method: failover",
            "    regions: [target, r000]", "    ttl: 30"]
    with open(f"{d}/policies/bench.yaml", "w") as f:
        f.write("\n".join(out) + "\n")
    with open(f"{d}/zones/bench.example", "w") as f:
        f.write("$TTL 300\n@ SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ NS ns1\nns1 A 192.0.2.53\n")
    with open(f"{d}/meridian.yaml", "w") as f:
        f.write(f"version: 1\ndns:\n  listen: [\"127.0.0.1:{DNS_PORT}\"]\n"
                f"http:\n  listen: \"127.0.0.1:{HTTP_PORT}\"\n"
                f"zones: zones\npolicies: policies\ngeoip: {geoip}\ngeo:\n  latency: null\n"
                "health:\n  state_file: state.json\n")


# --- measuring -------------------------------------------------------------------------
def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def probes_done():
    with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/metrics", timeout=10) as r:
        total = 0.0
        for line in r.read().decode().splitlines():
            if line.startswith("meridian_probe_duration_seconds_count"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def ask(sock, qid):
    q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0)
    for label in b"t.bench.example".split(b"."):
        q += bytes([len(label)]) + label
    q += b"\x00\x00\x01\x00\x01"
    sock.sendto(q, ("127.0.0.1", DNS_PORT))
    try:
        return sock.recv(512)[-4:]
    except socket.timeout:
        return None


def failover_delay(sock):
    """One failover: seconds from the causing failure to the answer moving."""
    while ask(sock, 1) != TARGET_A:
        time.sleep(0.05)
    control("/__fail")
    deadline = time.time() + 10
    moved = None
    while time.time() < deadline:
        if ask(sock, 2) == FALLBACK_A:
            moved = time.time()
            break
        time.sleep(0.002)
    fails = json.loads(control("/__fails"))
    control("/__heal")
    if moved is None:
        return None
    before = [t for t in fails if t <= moved]
    return moved - max(before) if before else None


def run_size(binary, n, seconds):
    with tempfile.TemporaryDirectory() as d:
        write_deployment(d, n)
        log = open(f"{d}/meridian.log", "w")
        server = subprocess.Popen([binary, "serve", "--config", f"{d}/meridian.yaml"],
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/ready", timeout=1)
                    break
                except Exception:
                    time.sleep(0.1)
            time.sleep(3)  # past the first round's burst
            p0, c0, t0 = probes_done(), cpu_seconds(server.pid), time.time()
            time.sleep(seconds)
            p1, c1, t1 = probes_done(), cpu_seconds(server.pid), time.time()
            probes = p1 - p0
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(0.5)
            delays = [failover_delay(sock) for _ in range(5)]
            return {
                "endpoints": n + 1,
                "probes_per_second": probes / (t1 - t0),
                "cpu_us_per_probe": (c1 - c0) / probes * 1e6 if probes else None,
                "cores": (c1 - c0) / (t1 - t0),
                "delay_ms": [round(x * 1000, 1) if x is not None else None for x in delays],
            }
        finally:
            server.terminate()
            server.wait()


def main():
    if "--backend" in sys.argv:
        return backend()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="200,1000,2000")
    ap.add_argument("--seconds", type=int, default=20)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--binary", default=os.path.join(here, "..", "target", "release", "meridian"))
    args = ap.parse_args()
    back = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--backend"])
    try:
        time.sleep(0.5)
        print(f"{'endpoints':>9} {'probes/s':>9} {'CPU/probe':>10} {'cores':>6}  failing sample -> published view (5 runs)")
        for n in [int(s) for s in args.sizes.split(",")]:
            r = run_size(args.binary, n, args.seconds)
            cpu = f"{r['cpu_us_per_probe']:.0f} us" if r["cpu_us_per_probe"] else "-"
            delays = ", ".join(f"{x} ms" if x is not None else "none" for x in r["delay_ms"])
            print(f"{r['endpoints']:>9} {r['probes_per_second']:>9.0f} {cpu:>10} {r['cores']:>6.2f}  {delays}", flush=True)
    finally:
        back.terminate()


if __name__ == "__main__":
    main()
