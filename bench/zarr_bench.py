"""Python side of the h5nest benchmark (run by bench/python.ts, not by hand).

argv[1] is a JSON config: {"kind": "nds"|"h5", "path": store folder,
"planes": z-planes, "root": zarr_stores checkout (kind "h5")}. Writes the
workload array with arr[:] = data, reads it back from a fresh store, checks
the values and prints one JSON line with the timings (perf_counter seconds).
Imports and data generation are not timed.
"""
import json
import resource
import sys
import time

import numpy as np
import zarr

cfg = json.loads(sys.argv[1])
planes = int(cfg["planes"])
shape = (1, 1, planes, 1024, 1024)
chunks = (1, 1, 1, 64, 64)

# Same values as bench/workloads.ts fillValues (uint32 wrap-around).
i = np.arange(planes * 1024 * 1024, dtype=np.uint32)
data = ((i * np.uint32(40503) + (i >> np.uint32(13))) & np.uint32(0xFFFF)).astype("<u2").reshape(shape)
del i

if cfg["kind"] == "nds":
    from zarr.storage import NestedDirectoryStore

    def make_store(path):
        return NestedDirectoryStore(path)

elif cfg["kind"] == "h5":
    sys.path.insert(0, cfg["root"])
    from zarr_stores.h5_nested_store import H5_Nested_Store

    def make_store(path):
        return H5_Nested_Store(path)  # write_direct=True by default

else:
    raise SystemExit(f"unknown kind {cfg['kind']!r}")

path = cfg["path"]
t0 = time.perf_counter()
store = make_store(path)
arr = zarr.open_array(store=store, mode="w", path="arr", shape=shape, chunks=chunks,
                      dtype="<u2", compressor=None, fill_value=0)
t1 = time.perf_counter()
arr[:] = data
t2 = time.perf_counter()

reader = zarr.open_array(store=make_store(path), mode="r", path="arr")
t3 = time.perf_counter()
out = reader[:]
t4 = time.perf_counter()

ok = bool(np.array_equal(out, data))
print(json.dumps({
    "open_s": t1 - t0,
    "write_s": t2 - t1,
    "read_s": t4 - t3,
    "ok": ok,
    "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "zarr": zarr.__version__,
}))
