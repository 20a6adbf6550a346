#!/usr/bin/env python3
"""The scale scenario of issue 6: 10 000 policies over 100 regions on a 1M-network database.

    python3 bench/scale.py DIR DB [POLICIES] [REGIONS]

Writes a Meridian deployment into DIR (meridian.yaml, zones/scale.example,
policies/scale.yaml) and a dnsperf query file DIR/queries.bin whose queries spread over
all the policy names, each with ECS for a different real client /24 of DB. The policy mix
is what a large operator has: most names nearest over their own subset of regions (2-8 of
the 100, so the subsets are nearly all different), some lowest-latency, some geo rules by
continent, weighted and failover ones, some with two answers, some with an EU residency
rule. Every region has an HTTP health endpoint at 127.0.1.1:18080 (served by run.py).
Deterministic (seeded), so runs compare.
"""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_queries  # noqa: E402

CONTINENTS = ["NA", "SA", "EU", "AF", "AS", "OC"]
# (continent, lat range, lon range, jurisdiction): rough land boxes, enough to spread regions.
BOXES = [
    ("NA", (25, 50), (-123, -70), "us"),
    ("SA", (-35, 5), (-75, -40), "br"),
    ("EU", (38, 60), (-9, 25), "eu"),
    ("AF", (-30, 15), (-10, 40), "za"),
    ("AS", (5, 45), (70, 140), "in"),
    ("OC", (-38, -15), (115, 153), "au"),
]
HEALTH = "127.0.1.1:18080"  # run.py serves the health endpoints on 127.0.1.1-5


def generate(d, db, n_policies=10000, n_regions=100, n_queries=200000, seed=7, same=False):
    """`same`: every policy nearest over all the regions (one shape, shared by all)."""
    rnd = random.Random(seed)
    os.makedirs(f"{d}/zones", exist_ok=True)
    os.makedirs(f"{d}/policies", exist_ok=True)
    regions = []
    for i in range(n_regions):
        cont, (la0, la1), (lo0, lo1), jur = BOXES[i % len(BOXES)]
        lat, lon = rnd.uniform(la0, la1), rnd.uniform(lo0, lo1)
        a = f"127.0.{2 + i // 250}.{1 + i % 250}"
        regions.append((f"r{i:03d}-{cont.lower()}", cont, lat, lon, a, jur))
    out = ["version: 1", "regions:"]
    for name, cont, lat, lon, a, jur in regions:
        out.append(f"  - name: {name}")
        out.append(f"    location: {{ lat: {lat:.3f}, lon: {lon:.3f} }}")
        out.append(f"    a: [{a}]")
        out.append(f"    labels: {{ jurisdiction: {jur} }}")
        out.append(f"    endpoints: [ {{ name: web, probe: http, address: \"{HEALTH}\", path: /, interval: 2s, timeout: 1s }} ]")
    out.append("policies:")
    names = []
    for p in range(n_policies):
        name = f"p{p:05d}.scale.example"
        names.append(name)
        k = rnd.randint(2, 8)
        subset = rnd.sample(regions, k)
        # Every residency policy keeps at least one EU region so EU clients have an answer.
        eu = [r for r in regions if r[5] == "eu"]
        roll = rnd.random()
        lines = [f"  - name: {name}"]
        if same:
            lines.append("    method: nearest")
            subset = regions
        elif roll < 0.70:
            lines.append("    method: nearest")
        elif roll < 0.80:
            lines.append("    method: latency")
        elif roll < 0.90:
            lines.append("    method: geo")
            lines.append("    geo:")
            lines.append("      rules:")
            for cont in CONTINENTS:
                local = [r[0] for r in regions if r[1] == cont]
                pick = rnd.sample(local, 2)
                lines.append(f"        - {{ continents: [{cont}], regions: [{', '.join(pick)}] }}")
            lines.append(f"      default: [{', '.join(r[0] for r in subset[:2])}]")
            subset = None
        elif roll < 0.95:
            lines.append("    method: weighted")
        else:
            lines.append("    method: failover")
        if subset is not None:
            if not same and rnd.random() < 0.1:
                subset.append(rnd.choice(eu))
                lines.append("    residency:")
                lines.append("      - { clients: { countries: [EU] }, regions: { jurisdiction: eu } }")
            lines.append(f"    regions: [{', '.join(dict.fromkeys(r[0] for r in subset))}]")
        if not same and rnd.random() < 0.2:
            lines.append("    answers: 2")
        lines.append("    ttl: 30")
        out.extend(lines)
    with open(f"{d}/policies/scale.yaml", "w") as f:
        f.write("\n".join(out) + "\n")
    with open(f"{d}/zones/scale.example", "w") as f:
        f.write("$TTL 300\n@ SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ NS ns1\nns1 A 192.0.2.53\n"
                "static A 192.0.2.1\n")
    with open(f"{d}/queries.bin", "wb") as f:
        for i, addr in enumerate(gen_queries.sample_24s(db, n_queries)):
            f.write(gen_queries.query(i & 0xFFFF, names[rnd.randrange(len(names))], (addr, 24)))
    return names


def write_config(d, db, port, http_port):
    with open(f"{d}/meridian.yaml", "w") as f:
        f.write(f"version: 1\ndns:\n  listen: [\"127.0.0.1:{port}\"]\nhttp:\n  listen: \"127.0.0.1:{http_port}\"\n"
                f"zones: zones\npolicies: policies\ngeoip: {os.path.dirname(os.path.abspath(db))}\n"
                f"geo:\n  database: {os.path.basename(db)}\n  latency: null\nhealth:\n  state_file: null\n")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    d, db = sys.argv[1], sys.argv[2]
    n_pol = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    n_reg = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    generate(d, db, n_pol, n_reg)
    write_config(d, db, 5550, 9550)
