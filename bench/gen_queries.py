#!/usr/bin/env python3
"""Writes dnsperf binary query files (-B: 2-byte big-endian length, then the message).

  gen_queries.py geo DB OUT N NAME   N queries for NAME/A, each with an EDNS Client Subnet
                                     option for a different real client /24 sampled from
                                     the IPv4 networks of the GeoIP database DB
  gen_queries.py static OUT N NAME.. N queries cycling over NAMEs (A), no EDNS
  gen_queries.py geo-do DB OUT N NAME  as `geo`, with the DNSSEC OK bit set (signed answers)
"""
import os
import random
import struct
import sys


def name_wire(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def query(qid, name, ecs=None, dnssec_ok=False):
    flags = 0x0000  # no RD: we ask an authority
    arcount = 1 if ecs else 0
    msg = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, arcount) + name_wire(name) + struct.pack(">HH", 1, 1)
    if ecs:
        addr, prefix = ecs
        octets = bytes(addr[: (prefix + 7) // 8])
        opt = struct.pack(">HHBB", 1, prefix, 0, 0)[:0] + struct.pack(">HBB", 1, prefix, 0) + octets
        option = struct.pack(">HH", 8, len(opt)) + opt
        ttl = 0x8000 if dnssec_ok else 0
        msg += b"\x00" + struct.pack(">HHIH", 41, 1232, ttl, len(option)) + option
    return struct.pack(">H", len(msg)) + msg


_NETS = {}


def sample_24s(db_path, n, seed=1):
    """`n` client /24s inside the database's public IPv4 networks, chosen by network. The
    walk over a city database takes minutes in Python: kept per process."""
    import maxminddb  # pip install maxminddb

    import ipaddress
    import pickle

    nets = _NETS.get(db_path)
    # And on disk, keyed by the file's size and time, for the next run.
    st = os.stat(db_path)
    cache = f"/tmp/meridian-nets-{os.path.basename(db_path)}-{st.st_size}-{int(st.st_mtime)}.pickle"
    if nets is None and os.path.exists(cache):
        with open(cache, "rb") as f:
            nets = [ipaddress.IPv4Network(n) for n in pickle.load(f)]
    if nets is None:
        nets = []
        with maxminddb.open_database(db_path) as r:
            for net, _rec in r:
                if net.version == 4 and not net.is_private and net.prefixlen <= 24:
                    nets.append(net)
        with open(cache, "wb") as f:
            pickle.dump([str(n) for n in nets], f)
    _NETS[db_path] = nets
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        net = rnd.choice(nets)
        size = 1 << (24 - net.prefixlen)
        base = int(net.network_address) + (rnd.randrange(size) << 8)
        out.append(base.to_bytes(4, "big"))
    return out


def main():
    kind = sys.argv[1]
    if kind in ("geo", "geo-do"):
        db, out, n, name = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
        with open(out, "wb") as f:
            for i, addr in enumerate(sample_24s(db, n)):
                f.write(query(i & 0xFFFF, name, (addr, 24), kind == "geo-do"))
    elif kind == "static":
        out, n, names = sys.argv[2], int(sys.argv[3]), sys.argv[4:]
        with open(out, "wb") as f:
            for i in range(n):
                f.write(query(i & 0xFFFF, names[i % len(names)]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
