"""Python side of the consolidate benchmark (run by bench/consolidate.ts, not by hand).

argv[1] is a JSON config: {"root": zarr_stores checkout, "path": a
NestedDirectoryStore written by bench/consolidate.ts, "planes": z-planes,
"verify": [z-planes to read back]}. Times H5_Nested_Store.consolidate() on
it (in place; dask's threaded scheduler when dask imports, else a plain
loop: the store's own choice) with the store's per-archive prints sent to
/dev/null, then, outside the timing, checks that no raw chunk file is left,
that every shard holds its 256 datasets and that the listed planes read
back with the benchmark's values. Prints one JSON line.
"""
import contextlib
import json
import os
import resource
import sys
import time

import h5py
import numpy as np
import zarr

cfg = json.loads(sys.argv[1])
sys.path.insert(0, cfg["root"])
from zarr_stores.h5_nested_store import H5_Nested_Store  # noqa: E402

try:
    import dask  # noqa: F401

    scheduler = "dask"
except Exception:
    scheduler = "single-threaded"

path = cfg["path"]
planes = int(cfg["planes"])

store = H5_Nested_Store(path)  # consolidate=False: nothing happens before the call
with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
    t0 = time.perf_counter()
    store.consolidate()
    t1 = time.perf_counter()

# Outside the timing: the result.
problems = []
folder = os.path.join(path, "arr", "0", "0")
leftovers = 0
for root, dirs, files in os.walk(folder):
    leftovers += sum(1 for f in files if not f.endswith(".h5"))
if leftovers:
    problems.append(f"{leftovers} raw chunk files left")
shards = sorted(n for n in os.listdir(folder) if n.endswith(".h5"))
if len(shards) != planes:
    problems.append(f"{len(shards)} shards, expected {planes}")
datasets = 0
for name in shards:
    with h5py.File(os.path.join(folder, name), "r") as f:
        datasets += len(f.keys())
if datasets != planes * 256:
    problems.append(f"{datasets} datasets, expected {planes * 256}")
arr = zarr.open_array(store=H5_Nested_Store(path), mode="r", path="arr")
for z in cfg["verify"]:
    # Same values as bench/workloads.ts fillValues (uint32 wrap-around).
    i = np.arange(z * 1024 * 1024, (z + 1) * 1024 * 1024, dtype=np.uint32)
    want = ((i * np.uint32(40503) + (i >> np.uint32(13))) & np.uint32(0xFFFF)).astype("<u2").reshape(1024, 1024)
    if not np.array_equal(arr[0, 0, z], want):
        problems.append(f"plane {z} reads back different values")

print(json.dumps({
    "consolidate_s": t1 - t0,
    "scheduler": scheduler,
    "problems": problems,
    "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
}))
