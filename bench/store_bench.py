"""Store-level Python side of the h5nest benchmark (run by bench/python.ts, not by hand).

stdin: JSON {"kind": "nds"|"h5", "root": zarr_stores checkout (kind "h5"),
"path": store folder, "grid": {planes, height, width, chunkHeight, chunkWidth},
"meta": {key: text}, "keys": chunk keys in write order, "random": indices of
keys read one at a time, "digest": sha256 of all chunks in key order,
"open_reps": fresh opens}. Builds the chunks from the formula of
bench/workloads.ts (checked against the digest), then times with perf_counter:
store[key] = bytes for every key, fresh store + store[keys[random[0]]]
(median of open_reps), store[key] for every key, then on a fresh store
store[key] in random order.
Prints one JSON line. Imports, data generation and checks are not timed.
"""
import hashlib
import json
import sys
import time

import numpy as np

cfg = json.load(sys.stdin)
g = cfg["grid"]
planes, height, width = g["planes"], g["height"], g["width"]
ch, cw = g["chunkHeight"], g["chunkWidth"]

# Same values as bench/workloads.ts fillValues (uint32 wrap-around).
i = np.arange(planes * height * width, dtype=np.uint32)
data = ((i * np.uint32(40503) + (i >> np.uint32(13))) & np.uint32(0xFFFF)).astype("<u2").reshape(planes, height, width)
del i


def chunk(key):
    z, cy, cx = (int(s) for s in key.split("/")[-3:])
    return data[z, cy * ch:(cy + 1) * ch, cx * cw:(cx + 1) * cw].tobytes()


keys = cfg["keys"]
values = [chunk(k) for k in keys]
del data
digest = hashlib.sha256()
for v in values:
    digest.update(v)
if digest.hexdigest() != cfg["digest"]:
    print(json.dumps({"ok": False, "error": "Python built other chunk bytes than Node (digest differs)"}))
    sys.exit(0)

if cfg["kind"] == "nds":
    from zarr.storage import NestedDirectoryStore as make_store
elif cfg["kind"] == "h5":
    sys.path.insert(0, cfg["root"])
    from zarr_stores.h5_nested_store import H5_Nested_Store as make_store  # write_direct=True by default
else:
    raise SystemExit(f"unknown kind {cfg['kind']!r}")

path = cfg["path"]
store = make_store(path)
for key, text in cfg["meta"].items():
    store[key] = text.encode()

t0 = time.perf_counter()
for key, value in zip(keys, values):
    store[key] = value
write_s = time.perf_counter() - t0

first = cfg["random"][0]
opens = []
ok = True
for _ in range(cfg["open_reps"]):
    t0 = time.perf_counter()
    store = make_store(path)
    got = store[keys[first]]
    opens.append(time.perf_counter() - t0)
    ok = ok and got == values[first]

t0 = time.perf_counter()
out = [store[key] for key in keys]
read_s = time.perf_counter() - t0
ok = ok and all(a == b for a, b in zip(out, values))
del out

store = make_store(path)  # a fresh store, as in Node
t0 = time.perf_counter()
rnd = [store[keys[j]] for j in cfg["random"]]
random_s = time.perf_counter() - t0
ok = ok and all(a == values[j] for a, j in zip(rnd, cfg["random"]))

print(json.dumps({
    "ok": bool(ok),
    "write_s": write_s,
    "read_s": read_s,
    "random_s": random_s,
    "open_s": sorted(opens)[len(opens) // 2],
}))
