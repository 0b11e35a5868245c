/**
 * The store the HTTP interoperability tests serve and export: zarr v2 arrays
 * written by Python zarr 2.13 (NestedDirectoryStore, consolidated metadata),
 * consolidated into shards by `h5nest consolidate`, then given every kind of
 * value a reader meets:
 *
 * - chunks in shards (img 5-D zlib, g/vol 3-D blosc, g/sparse with missing chunks);
 * - raw chunk files (g/plane 2-D and line 1-D stay raw, too few dimensions);
 * - a raw file shadowing its shard dataset (img[0,1,2,0:32,32:64], written by
 *   Python after the consolidation: precedence);
 * - a dataset the shard index cannot place (h5py rewrites img/0/0/1.h5's
 *   "1.2" chunked and gzip-filtered: refs inline it, serve reads it by h5wasm);
 * - a zarr v3 array with the sharding codec (v3/sharded, built here), whose
 *   zarr shard objects live in HDF5 shards and are read by byte range.
 *
 * `expected/<name>.bin` holds the values written (C order, the array's
 * dtype), `expected/manifest.json` their shape and dtype.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import type { TestContext } from "node:test";
import { H5NestedStore } from "h5nest";
import { describeRun, h5nest } from "./cli.ts";
import { python } from "./python.ts";
import { tempDir } from "./tmp.ts";

export interface ExpectedArray {
  shape: number[];
  /** numpy dtype string of the stored array, e.g. "<u2", "<f4", "|u1". */
  dtype: string;
  zarrFormat: 2 | 3;
}

export interface ServedStore {
  /** Folder holding `store/` and `expected/`. */
  dir: string;
  root: string;
  arrays: Record<string, ExpectedArray>;
  /** The bytes of the values written, C order. */
  bytes(name: string): Promise<Buffer>;
}

const PY_WRITE = `
import sys, json, os
import numpy as np, zarr, numcodecs
root, expected = sys.argv[1], sys.argv[2]
store = zarr.storage.NestedDirectoryStore(root)
g = zarr.group(store=store)

def values(shape, dtype, seed):
    n = int(np.prod(shape))
    v = (np.arange(n, dtype=np.int64) * 37 + seed * 101) % 997
    kind = np.dtype(dtype).kind
    if kind == 'f':
        out = v / 8.0 - 20
    elif np.dtype(dtype).itemsize == 1:
        out = v % 251
    elif kind == 'i':
        out = v - 500
    else:
        out = v * 61
    return out.astype(dtype).reshape(shape)

specs = [
    ("img", [1, 2, 3, 64, 96], [1, 1, 1, 32, 32], "<u2", numcodecs.Zlib(level=1), 0),
    ("g/vol", [4, 40, 50], [2, 16, 16], "<f4", numcodecs.Blosc(cname="lz4", clevel=5, shuffle=1), 0),
    ("g/plane", [50, 70], [16, 16], "<i2", None, 0),
    ("line", [100], [30], "|u1", None, 0),
    ("g/sparse", [10, 10, 10], [5, 5, 5], "|u1", None, 7),
]
manifest = {}
for name, shape, chunks, dtype, compressor, fill in specs:
    a = g.create_dataset(name, shape=shape, chunks=chunks, dtype=dtype, compressor=compressor, fill_value=fill)
    data = np.full(shape, fill, dtype=dtype)
    if name == "g/sparse":
        data[0:5, 0:5, 5:10] = values([5, 5, 5], dtype, 3)
    else:
        data[...] = values(shape, dtype, len(name))
    a[...] = data
    np.ascontiguousarray(data).tofile(os.path.join(expected, name.replace("/", "_") + ".bin"))
    manifest[name] = {"shape": shape, "dtype": np.dtype(dtype).str, "zarrFormat": 2}
zarr.consolidate_metadata(store)
json.dump(manifest, open(os.path.join(expected, "manifest.json"), "w"))
`;

const PY_EDIT = `
import sys, os
import numpy as np, zarr, h5py
root, expected = sys.argv[1], sys.argv[2]
store = zarr.storage.NestedDirectoryStore(root)
img = zarr.open_array(store, path="img", mode="r+")
img[0, 1, 2, 0:32, 32:64] = 12345
file = os.path.join(expected, "img.bin")
data = np.fromfile(file, dtype="<u2").reshape(img.shape)
data[0, 1, 2, 0:32, 32:64] = 12345
data.tofile(file)
with h5py.File(os.path.join(root, "img", "0", "0", "1.h5"), "a") as f:
    raw = np.frombuffer(f["1.2"][()].tobytes(), dtype=np.uint8)
    del f["1.2"]
    f.create_dataset("1.2", data=raw, chunks=(64,), compression="gzip")
`;

/** Values of v3/sharded: uint16 (i * 13 + 5) mod 65521 at flat index i. */
export const V3_SHAPE = [4, 32, 48];
const V3_SHARD = [2, 16, 24];
const V3_INNER = [1, 8, 8];

function v3Value(i: number): number {
  return (i * 13 + 5) % 65521;
}

/** Writes v3/sharded: shard objects of inner chunks (bytes codec) with the index at the end, one per key. */
async function writeV3Sharded(root: string): Promise<Buffer> {
  const store = await H5NestedStore.open(root, { workers: 1 });
  try {
    const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
    await store.set("v3/zarr.json", json({ zarr_format: 3, node_type: "group", attributes: {} }));
    await store.set(
      "v3/sharded/zarr.json",
      json({
        zarr_format: 3,
        node_type: "array",
        shape: V3_SHAPE,
        data_type: "uint16",
        chunk_grid: { name: "regular", configuration: { chunk_shape: V3_SHARD } },
        chunk_key_encoding: { name: "default", configuration: { separator: "/" } },
        fill_value: 0,
        codecs: [
          {
            name: "sharding_indexed",
            configuration: {
              chunk_shape: V3_INNER,
              codecs: [{ name: "bytes", configuration: { endian: "little" } }],
              index_codecs: [{ name: "bytes", configuration: { endian: "little" } }],
              index_location: "end",
            },
          },
        ],
        attributes: {},
      }),
    );
    const [Z, Y, X] = V3_SHAPE as [number, number, number];
    const per = V3_SHARD.map((s, d) => s / V3_INNER[d]!) as [number, number, number];
    const innerBytes = V3_INNER.reduce((a, b) => a * b, 1) * 2;
    const writes: Promise<void>[] = [];
    for (let sz = 0; sz < Z / V3_SHARD[0]!; sz++) {
      for (let sy = 0; sy < Y / V3_SHARD[1]!; sy++) {
        for (let sx = 0; sx < X / V3_SHARD[2]!; sx++) {
          const count = per[0] * per[1] * per[2];
          const body = new Uint16Array((count * innerBytes) / 2);
          const index = new BigUint64Array(count * 2);
          let n = 0;
          for (let iz = 0; iz < per[0]; iz++) {
            for (let iy = 0; iy < per[1]; iy++) {
              for (let ix = 0; ix < per[2]; ix++, n++) {
                index[2 * n] = BigInt(n * innerBytes);
                index[2 * n + 1] = BigInt(innerBytes);
                let k = n * (innerBytes / 2);
                for (let z = 0; z < V3_INNER[0]!; z++) {
                  for (let y = 0; y < V3_INNER[1]!; y++) {
                    for (let x = 0; x < V3_INNER[2]!; x++) {
                      const gz = sz * V3_SHARD[0]! + iz * V3_INNER[0]! + z;
                      const gy = sy * V3_SHARD[1]! + iy * V3_INNER[1]! + y;
                      const gx = sx * V3_SHARD[2]! + ix * V3_INNER[2]! + x;
                      body[k++] = v3Value((gz * Y + gy) * X + gx);
                    }
                  }
                }
              }
            }
          }
          const object = Buffer.concat([Buffer.from(body.buffer), Buffer.from(index.buffer)]);
          writes.push(store.set(`v3/sharded/c/${sz}/${sy}/${sx}`, object));
        }
      }
    }
    await Promise.all(writes);
  } finally {
    await store.close();
  }
  const all = new Uint16Array(V3_SHAPE.reduce((a, b) => a * b, 1));
  for (let i = 0; i < all.length; i++) all[i] = v3Value(i);
  return Buffer.from(all.buffer);
}

/**
 * Skips (or under CI fails) the test without Debian's python3-fsspec and
 * python3-aiohttp (fsspec's HTTP file system). Call after requirePython.
 */
export async function requireFsspec(t: TestContext): Promise<boolean> {
  try {
    await python("import fsspec, aiohttp");
    return true;
  } catch {
    const message = "MISSING TOOLS: /usr/bin/python3 with fsspec and aiohttp (apt-get install python3-fsspec python3-aiohttp)";
    if (process.env.CI === "true") throw new Error(`${message} (required under CI)`);
    console.warn(`\n*** ${message}: test skipped ***\n`);
    t.skip(message);
    return false;
  }
}

/** Builds the store (about 3 s: two Python runs, one consolidation, the v3 array). Needs the Python tools. */
export async function makeServedStore(t: TestContext): Promise<ServedStore> {
  const dir = await tempDir(t, "h5nest-served-");
  const root = path.join(dir, "store");
  const expected = path.join(dir, "expected");
  await fs.mkdir(expected);
  await python(PY_WRITE, [root, expected]);
  const args = ["consolidate", root, "--json", "--workers", "1"];
  const run = await h5nest(args);
  assert.equal(run.code, 0, describeRun(args, run));
  await python(PY_EDIT, [root, expected]);
  const v3 = await writeV3Sharded(root);
  await fs.writeFile(path.join(expected, "v3_sharded.bin"), v3);
  const arrays = JSON.parse(await fs.readFile(path.join(expected, "manifest.json"), "utf8")) as Record<string, ExpectedArray>;
  arrays["v3/sharded"] = { shape: V3_SHAPE, dtype: "<u2", zarrFormat: 3 };
  // The kinds of value promised above are really there.
  const exists = (p: string) => fs.stat(path.join(root, p)).then(() => true, () => false);
  assert.ok(await exists("img/0/0/1.h5"), "img is in shards");
  assert.ok(await exists("img/0/1/2/0/1"), "a raw file shadows a shard dataset");
  assert.ok(await exists("g/plane/0/0"), "g/plane stays raw files");
  assert.ok(await exists("v3/sharded/c/0.h5"), "the v3 shard objects are in HDF5 shards");
  return {
    dir,
    root,
    arrays,
    bytes: (name) => fs.readFile(path.join(expected, `${name.replace(/\//g, "_")}.bin`)),
  };
}

/** The raw bytes of a typed array (what zarr.get returns), for comparison with expected/*.bin. */
export function bytesOfData(data: ArrayBufferView): Buffer {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}
