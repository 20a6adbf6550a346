#!/usr/bin/env python3
"""Two MaxMind DB files PowerDNS's LUA pickclosest needs (see ../shared/design/PEERS.md):

  write_overlay(path, [(ipv4_network, lat, lon), ...])
      a small IPv4 database giving the candidate answer addresses their locations;
  add_accuracy(src, dst, radius_km)
      a copy of src with location.accuracy_radius added to every record (PowerDNS's mmdb
      reader returns no location without it). The search tree is copied as it is and only
      its data pointers are remapped to the re-encoded records.

The encoding follows the MaxMind DB File Format Specification 2.0.
"""
import ipaddress
import struct
import time

import maxminddb

META_MARKER = b"\xab\xcd\xefMaxMind.com"


def _ctrl(type_num, size):
    if size < 29:
        sb, extra = size, b""
    elif size < 29 + 256:
        sb, extra = 29, bytes([size - 29])
    elif size < 285 + 65536:
        sb, extra = 30, (size - 285).to_bytes(2, "big")
    else:
        sb, extra = 31, (size - 65821).to_bytes(3, "big")
    if type_num <= 7:
        return bytes([(type_num << 5) | sb]) + extra
    return bytes([sb, type_num - 7]) + extra


class U32(int):
    pass


class U64(int):
    pass


def encode(v):
    if isinstance(v, (U32, U64)):
        n = max(1, (v.bit_length() + 7) // 8)
        return _ctrl(6 if isinstance(v, U32) else 9, n) + (int(v).to_bytes(n, "big") if n else b"")
    if isinstance(v, dict):
        out = _ctrl(7, len(v))
        for k, x in v.items():
            out += encode(str(k)) + encode(x)
        return out
    if isinstance(v, list):
        return _ctrl(11, len(v)) + b"".join(encode(x) for x in v)
    if isinstance(v, str):
        b = v.encode()
        return _ctrl(2, len(b)) + b
    if isinstance(v, bool):
        return _ctrl(14, int(v))
    if isinstance(v, float):
        return _ctrl(3, 8) + struct.pack(">d", v)
    if isinstance(v, int):
        n = max(1, (v.bit_length() + 7) // 8)
        t = 5 if v < 1 << 16 else 6 if v < 1 << 32 else 9
        return _ctrl(t, n) + (v.to_bytes(n, "big") if n else b"")
    raise TypeError(type(v))



def _metadata(node_count, record_size, ip_version, db_type, epoch=None):
    # libmaxminddb refuses a build_epoch of 0.
    epoch = epoch or int(time.time())
    return META_MARKER + encode({
        "node_count": U32(node_count), "record_size": record_size, "ip_version": ip_version,
        "database_type": db_type, "languages": ["en"], "binary_format_major_version": 2,
        "binary_format_minor_version": 0, "build_epoch": U64(epoch), "description": {"en": db_type},
    })


def write_overlay(path, points):
    """IPv6 tree (IPv4 networks at ::/96, as MaxMind's own files), 24-bit records; each
    network maps to a City-schema record."""
    nodes = [[None, None]]  # child: int node index, ("data", offset) or None
    data = b""
    for net, lat, lon in points:
        n = ipaddress.ip_network(net)
        rec = encode({"location": {"latitude": float(lat), "longitude": float(lon), "accuracy_radius": 1},
                      "country": {"iso_code": "ZZ"}})
        off = len(data)
        data += rec
        bits = int(n.network_address)
        plen = n.prefixlen + 96
        cur = 0
        for i in range(plen):
            bit = (bits >> (127 - i)) & 1
            if i == plen - 1:
                nodes[cur][bit] = ("data", off)
            else:
                if not isinstance(nodes[cur][bit], int):
                    nodes.append([None, None])
                    nodes[cur][bit] = len(nodes) - 1
                cur = nodes[cur][bit]
    count = len(nodes)

    def rec(c):
        if c is None:
            return count
        if isinstance(c, int):
            return c
        return count + 16 + c[1]
    tree = b"".join(rec(a).to_bytes(3, "big") + rec(b).to_bytes(3, "big") for a, b in nodes)
    with open(path, "wb") as f:
        f.write(tree + b"\0" * 16 + data + _metadata(count, 24, 6, "Meridian-Bench-Overlay"))


def add_accuracy(src, dst, radius_km=50):
    reader = maxminddb.open_database(src, maxminddb.MODE_FILE)
    meta = reader.metadata()
    raw = open(src, "rb").read()
    count, size = meta.node_count, meta.record_size
    node_bytes = size * 2 // 8
    tree_len = count * node_bytes
    data_start = tree_len + 16
    new_data = bytearray()
    remap = {}

    def new_pointer(value):
        old = value - count - 16
        if old not in remap:
            rec, _ = reader._decoder.decode(data_start + old)
            if isinstance(rec, dict):
                loc = dict(rec.get("location") or {})
                if "latitude" in loc:
                    loc.setdefault("accuracy_radius", radius_km)
                    rec = dict(rec, location=loc)
            remap[old] = len(new_data)
            new_data.extend(encode(rec))
        v = count + 16 + remap[old]
        if v >= 1 << size:
            raise ValueError("re-encoded data does not fit the tree's record size")
        return v

    tree = bytearray(raw[:tree_len])
    for i in range(count):
        o = i * node_bytes
        b = tree[o:o + node_bytes]
        if size == 24:
            left, right = int.from_bytes(b[0:3], "big"), int.from_bytes(b[3:6], "big")
        elif size == 28:
            left = ((b[3] & 0xF0) << 20) | int.from_bytes(b[0:3], "big")
            right = ((b[3] & 0x0F) << 24) | int.from_bytes(b[4:7], "big")
        else:
            left, right = int.from_bytes(b[0:4], "big"), int.from_bytes(b[4:8], "big")
        if left <= count and right <= count:
            continue
        if left > count:
            left = new_pointer(left)
        if right > count:
            right = new_pointer(right)
        if size == 24:
            tree[o:o + 6] = left.to_bytes(3, "big") + right.to_bytes(3, "big")
        elif size == 28:
            tree[o:o + 7] = ((left & 0xFFFFFF).to_bytes(3, "big") + bytes([((left >> 24) << 4) | (right >> 24)])
                             + (right & 0xFFFFFF).to_bytes(3, "big"))
        else:
            tree[o:o + 8] = left.to_bytes(4, "big") + right.to_bytes(4, "big")
    with open(dst, "wb") as f:
        f.write(bytes(tree) + b"\0" * 16 + bytes(new_data)
                + _metadata(count, size, meta.ip_version, meta.database_type, meta.build_epoch))
