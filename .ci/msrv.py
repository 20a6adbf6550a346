#!/usr/bin/env python3
"""The crate's rust-version must be at least every dependency's: the toolchain CI has
(the machine's only one) is newer, so this is what keeps rust-version honest."""
import json
import subprocess
import sys
import tomllib

def ver(s):
    return tuple(int(x) for x in (s.split(".") + ["0", "0"])[:3])

ours = tomllib.load(open("Cargo.toml", "rb"))["package"]["rust-version"]
meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--format-version", "1", "--locked", "--all-features"]))
members = set(meta["workspace_members"])
needs = [(p["rust_version"], p["name"]) for p in meta["packages"]
         if p.get("rust_version") and p["id"] not in members]
top = max(needs, key=lambda n: ver(n[0]))
rustc = subprocess.check_output(["rustc", "--version"], text=True).split()[1]
print(f"rust-version {ours}; most demanding dependency {top[1]} needs {top[0]}; building with rustc {rustc}")
if ver(top[0]) > ver(ours):
    sys.exit(f"rust-version {ours} is below {top[1]}'s {top[0]}")
if ver(rustc) < ver(ours):
    sys.exit(f"rustc {rustc} is older than rust-version {ours}")
