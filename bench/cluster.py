#!/usr/bin/env python3
"""What gossip costs: N Meridian instances on 127.0.0.1x, E endpoints each, for a while.

Reports gossip bytes per second per instance (from meridian_cluster_gossip_bytes_total,
authenticated framing included) at rest, and how long a drain set on one instance takes
to show on every other one (convergence).

    python3 bench/cluster.py [--instances 3] [--endpoints 2 100] [--seconds 30]
                             [--gossip-interval 1s] [--binary target/release/meridian]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZONE = """$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
"""


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deployment(root, i, n, endpoints, gossip_port, interval, backend):
    d = os.path.join(root, f"ns{i}")
    os.makedirs(os.path.join(d, "zones"))
    os.makedirs(os.path.join(d, "policies"))
    os.makedirs(os.path.join(d, "geoip"))
    shutil.copy(os.path.join(ROOT, "geoip/geo-whois-asn-country.mmdb"), os.path.join(d, "geoip"))
    with open(os.path.join(d, "zones/example.test"), "w") as f:
        f.write(ZONE)
    regions = []
    for r in range(endpoints):
        regions.append(
            f"  - name: r{r}\n    location: {{ lat: {(r * 7) % 120 - 60}, lon: {(r * 37) % 340 - 170} }}\n"
            f"    a: [198.51.100.{r % 250 + 1}]\n"
            f"    endpoints: [{{ name: web, probe: tcp, address: \"{backend}\", interval: 1s, timeout: 500ms }}]\n"
        )
    with open(os.path.join(d, "policies/web.yaml"), "w") as f:
        f.write("version: 1\nregions:\n" + "".join(regions)
                + "policies:\n  - { name: www.example.test, method: nearest }\n")
    with open(os.path.join(d, "cluster.key"), "w") as f:
        f.write("bench-cluster-key-0123456789abcdef\n")
    peers = ", ".join(f'"127.0.0.1{j}:{gossip_port}"' for j in range(1, n + 1) if j != i)
    with open(os.path.join(d, "meridian.yaml"), "w") as f:
        f.write(f"""version: 1
dns: {{ listen: ["127.0.0.1{i}:{free_port()}"], udp_sockets_per_address: 1 }}
http: {{ listen: "127.0.0.1{i}:{free_port()}", admin_token: bench }}
health: {{ state_file: null, startup_wait: 3s }}
cluster:
  instance: ns{i}
  listen: "127.0.0.1{i}:{gossip_port}"
  peers: [{peers}]
  secret_file: cluster.key
  gossip_interval: {interval}
""")
    return d


def http_addr(d):
    for line in open(os.path.join(d, "meridian.yaml")):
        if line.startswith("http:"):
            return line.split('"')[1]
    raise SystemExit("no http listen")


def get(addr, path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as r:
        return r.read().decode()


def gossip_bytes(addr):
    total = 0.0
    for line in get(addr, "/metrics").splitlines():
        if line.startswith("meridian_cluster_gossip_bytes_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run(binary, n, endpoints, seconds, interval):
    root = tempfile.mkdtemp(prefix="meridian-cluster-")
    # A closed port: every probe fails, which changes nothing about gossip at rest.
    backend = f"127.0.0.1:{free_port()}"
    gossip_port = free_port()
    dirs = [deployment(root, i, n, endpoints, gossip_port, interval, backend) for i in range(1, n + 1)]
    procs = [subprocess.Popen([binary, "serve", "--config", os.path.join(d, "meridian.yaml")],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "w"))
             for d in dirs]
    addrs = [http_addr(d) for d in dirs]
    try:
        deadline = time.time() + 60
        while True:
            try:
                live = [sum(p["live"] for p in json.loads(get(a, "/api/v1/status"))["cluster"]["peers"]) for a in addrs]
                if all(x == n - 1 for x in live):
                    break
            except Exception:
                pass
            if time.time() > deadline:
                raise SystemExit("instances did not all see each other")
            time.sleep(0.2)
        time.sleep(5)  # first probe rounds and their verdicts out of the way
        before = [gossip_bytes(a) for a in addrs]
        time.sleep(seconds)
        after = [gossip_bytes(a) for a in addrs]
        rates = [(b - a) / seconds for a, b in zip(before, after)]
        # Convergence: a drain on ns1 until every other instance shows it.
        req = urllib.request.Request(f"http://{addrs[0]}/api/v1/regions/r0/drain", data=b"{}", method="POST",
                                     headers={"Authorization": "Bearer bench", "Content-Type": "application/json"})
        t0 = time.time()
        urllib.request.urlopen(req, timeout=5).read()
        pending = set(addrs[1:])
        while pending:
            for a in list(pending):
                st = json.loads(get(a, "/api/v1/status"))
                r0 = next(r for r in st["regions"] if r["region"] == "r0")
                if r0.get("override") and r0["override"]["kind"] == "drain":
                    pending.discard(a)
            if time.time() - t0 > 60:
                raise SystemExit("drain did not converge in 60 s")
            time.sleep(0.01)
        converged = time.time() - t0
        return rates, converged
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--endpoints", type=int, nargs="+", default=[2, 100])
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--gossip-interval", default="1s")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/meridian"))
    a = ap.parse_args()
    print(f"{a.instances} instances, gossip every {a.gossip_interval}, {a.seconds} s at rest")
    print("| endpoints | gossip bytes/s per instance (sent + received) | drain seen everywhere after |")
    print("|---|---|---|")
    for e in a.endpoints:
        rates, converged = run(a.binary, a.instances, e, a.seconds, a.gossip_interval)
        print(f"| {e} | {min(rates):.0f} to {max(rates):.0f} | {converged:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
