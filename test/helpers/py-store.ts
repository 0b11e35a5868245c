/**
 * Python scripts shared by the interoperability tests: a read-only mini
 * H5_Nested_Store (raw file first, then the shard), a reader that reports
 * arrays through it and every shard dataset through h5py, and a builder of
 * stores written by Python zarr's NestedDirectoryStore. Plus docs/format.md's
 * placement arithmetic, computed independently of the library.
 */
import { listFiles } from "./arrays.ts";
import { pythonJson } from "./python.ts";

/**
 * A read-only MutableMapping with H5_Nested_Store's read path: the raw file
 * first, then dataset '<last D-1 segments joined by .>' of the shard
 * '<the other segments>.h5' (docs/format.md section 3), read as
 * f[name][()].tobytes(). Unlike H5_Nested_Store it lets HDF5 errors through
 * instead of turning them into missing chunks (fill values).
 */
export const PY_MINI_STORE = `
import os
from collections.abc import MutableMapping
import h5py

class MiniH5NestedStore(MutableMapping):
    def __init__(self, root, depth=3, ext='.h5'):
        self.root, self.depth, self.ext = root, depth, ext

    def _locate(self, key):
        parts = key.split('/')
        kept = parts[:len(parts) - (self.depth - 1)]
        archive = os.path.join(self.root, *kept) + self.ext
        return os.path.join(self.root, *parts), archive, '.'.join(parts[len(kept):])

    def __getitem__(self, key):
        raw, archive, name = self._locate(key)
        if os.path.isfile(raw):
            with open(raw, 'rb') as f:
                return f.read()
        if os.path.isfile(archive):
            with h5py.File(archive, 'r', libver='latest', locking=True) as f:
                if name in f:
                    return f[name][()].tobytes()
        raise KeyError(key)

    def __contains__(self, key):
        try:
            self[key]
            return True
        except KeyError:
            return False

    def __iter__(self):
        for folder, _, files in os.walk(self.root):
            for name in files:
                yield os.path.relpath(os.path.join(folder, name), self.root).replace(os.sep, '/')

    def __len__(self):
        return sum(1 for _ in self)

    def __setitem__(self, key, value):
        raise PermissionError('read only')

    def __delitem__(self, key):
        raise PermissionError('read only')
`;

/**
 * Reads v2 arrays (argv[2]: JSON list of paths) with zarr through
 * MiniH5NestedStore, and every dataset of every shard below argv[1] with h5py.
 */
export const PY_READ = `${PY_MINI_STORE}
import sys, json, hashlib
import numpy as np, zarr
root, paths = sys.argv[1], json.loads(sys.argv[2])
store = MiniH5NestedStore(root)
arrays = {}
for p in paths:
    a = zarr.open_array(store, mode='r', path=p)[...]
    arrays[p] = {'shape': list(a.shape), 'dtype': a.dtype.str,
                 'sha256': hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest(),
                 'sum': float(a.sum(dtype='f8'))}
shards = {}
for folder, _, files in os.walk(root):
    for name in files:
        if not name.endswith('.h5'):
            continue
        full = os.path.join(folder, name)
        with h5py.File(full, 'r') as f:
            datasets = {}
            for dname in f:
                data = f[dname][()].tobytes()
                datasets[dname] = {'sha256': hashlib.sha256(data).hexdigest(), 'bytes': len(data),
                                   'dtype': f[dname].dtype.str, 'shape': list(f[dname].shape)}
            shards[os.path.relpath(full, root).replace(os.sep, '/')] = {
                'superblock': f.id.get_create_plist().get_version()[0], 'datasets': datasets}
print(json.dumps({'arrays': arrays, 'shards': shards}))
`;

export interface PyReadReport {
  arrays: Record<string, { shape: number[]; dtype: string; sha256: string; sum: number }>;
  shards: Record<string, { superblock: number; datasets: Record<string, { sha256: string; bytes: number; dtype: string; shape: number[] }> }>;
}

/** docs/format.md section 3: the shard file (relative to the store) and dataset of a chunk key. */
export function placement(key: string, depth = 3, ext = ".h5"): { shard: string; dataset: string } {
  const segments = key.split("/");
  const kept = segments.length - (depth - 1);
  return { shard: `${segments.slice(0, kept).join("/")}${ext}`, dataset: segments.slice(kept).join(".") };
}

/** True for zarr metadata and any other key whose last segment holds a '.'. */
export function isMetadataKey(key: string): boolean {
  return key.slice(key.lastIndexOf("/") + 1).includes(".");
}

export type CompressorName = "none" | "zlib" | "blosc";

/** One array written through Python zarr's NestedDirectoryStore. */
export interface NestedSpec {
  path: string;
  shape: number[];
  chunks: number[];
  dtype: string;
  compressor: CompressorName;
  fill: number;
  /** Write only [start, stop) along the first axis (chunks outside it stay missing); default: everything. */
  firstAxis?: [number, number];
}

/**
 * Creates arrays with Python zarr's NestedDirectoryStore and writes seeded
 * random values (numpy's default_rng); prints each array's shape, dtype, and
 * the sha256 and sum of arr[...] read back through NestedDirectoryStore.
 */
const PY_NESTED_WRITE = `
import sys, json, hashlib, zarr, numcodecs, numpy as np
root, specs = sys.argv[1], json.loads(sys.argv[2])
COMPRESSORS = {
    'none': lambda: None,
    'zlib': lambda: numcodecs.Zlib(level=1),
    'blosc': lambda: numcodecs.Blosc(cname='lz4', clevel=5, shuffle=numcodecs.Blosc.SHUFFLE, blocksize=0),
}
store = zarr.storage.NestedDirectoryStore(root)
out = {}
for n, s in enumerate(specs):
    z = zarr.open_array(store, mode='w', path=s['path'], shape=s['shape'], chunks=s['chunks'],
                        dtype=s['dtype'], compressor=COMPRESSORS[s['compressor']](), fill_value=s['fill'])
    rng = np.random.default_rng(1000 + n)
    start, stop = s.get('firstAxis') or [0, s['shape'][0]]
    region = [stop - start] + list(s['shape'][1:])
    dt = np.dtype(s['dtype'])
    if dt.kind == 'f':
        v = rng.standard_normal(region).astype(dt)
    else:
        info = np.iinfo(dt)
        # Runs of repeated values, so that compressors have something to do.
        v = np.repeat(rng.integers(info.min, info.max, size=int(np.prod(region)) // 4 + 1, dtype=dt, endpoint=True), 4)
        v = v[:int(np.prod(region))].reshape(region)
    z[start:stop] = v
for s in specs:
    a = zarr.open_array(zarr.storage.NestedDirectoryStore(root), mode='r', path=s['path'])[...]
    out[s['path']] = {'shape': list(a.shape), 'dtype': a.dtype.str,
                      'sha256': hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest(),
                      'sum': float(a.sum(dtype='f8'))}
print(json.dumps(out))
`;

export type ArrayDigests = PyReadReport["arrays"];

/** Writes `specs` into `root` with NestedDirectoryStore; returns what Python reads back (arr[...] digests). */
export async function writeNestedDirectoryStore(root: string, specs: NestedSpec[]): Promise<ArrayDigests> {
  return pythonJson<ArrayDigests>(PY_NESTED_WRITE, [root, JSON.stringify(specs)]);
}

/**
 * The NestedDirectoryStore test store: arrays of 1 to 5 dimensions, raw,
 * zlib and blosc, one partly written, one at the root, and one inside the
 * group "v1.2" (its chunks must stay raw files: docs/format.md section 7).
 */
export const NESTED_SPECS: (NestedSpec & { sharded: boolean })[] = [
  { path: "line1", shape: [50], chunks: [8], dtype: "<f8", compressor: "zlib", fill: 0, sharded: false },
  { path: "g/img2", shape: [30, 25], chunks: [8, 8], dtype: "<u2", compressor: "blosc", fill: 0, sharded: false },
  { path: "g/vol3", shape: [5, 20, 18], chunks: [2, 8, 8], dtype: "<i4", compressor: "none", fill: -7, firstAxis: [0, 3], sharded: true },
  { path: "g/img4", shape: [2, 3, 10, 12], chunks: [1, 2, 4, 5], dtype: "<f4", compressor: "blosc", fill: 0, sharded: true },
  { path: "img5", shape: [1, 2, 4, 9, 10], chunks: [1, 1, 2, 4, 4], dtype: "<i2", compressor: "zlib", fill: 0, sharded: true },
  { path: "v1.2/img4", shape: [2, 2, 6, 6], chunks: [1, 1, 4, 4], dtype: "|u1", compressor: "zlib", fill: 0, sharded: false },
];

export interface NestedStore {
  root: string;
  /** What Python read back right after writing, by array path. */
  digests: ArrayDigests;
  /** Every file below root, sorted. */
  files: string[];
  /** Raw chunk files (store keys) by array path. */
  chunksOf: Map<string, string[]>;
}

/** The array (of NESTED_SPECS) a chunk file belongs to. */
export function nestedArrayOf(file: string): string | undefined {
  return NESTED_SPECS.map((s) => s.path).find((p) => file.startsWith(`${p}/`));
}

/** Writes NESTED_SPECS with Python's NestedDirectoryStore into `<dir>/store`. */
export async function makeNestedStore(dir: string): Promise<NestedStore> {
  const root = `${dir}/store`;
  const digests = await writeNestedDirectoryStore(root, NESTED_SPECS);
  const files = await listFiles(root);
  const chunksOf = new Map<string, string[]>(NESTED_SPECS.map((s) => [s.path, []]));
  for (const file of files) {
    if (isMetadataKey(file)) continue;
    const array = nestedArrayOf(file);
    if (!array) throw new Error(`unexpected file ${file} in the NestedDirectoryStore`);
    chunksOf.get(array)!.push(file);
  }
  return { root, digests, files, chunksOf };
}
