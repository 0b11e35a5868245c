/**
 * The TypeScript shard writer, held to the real HDF5 tools: seeded random
 * shards (0 to 5000 datasets, 0 bytes to a few MiB each) are read back byte
 * for byte through h5py (HDF5 1.10), h5wasm (HDF5 2.0, the worker threads)
 * and the shard index, and `h5dump -H` accepts each. Then h5py edits some in
 * place as the Python H5_Nested_Store does, and every reader agrees again.
 * H5NEST_WRITER_CASES sets the number of random shards (default 120).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { indexShardFile, isPlaced, WorkerPool, writeShardFile } from "@h5nest/workers";
import { h5dump, pythonJson, requirePython } from "./helpers/python.js";
import { tempDir } from "./helpers/tmp.js";

const CASES = Number(process.env.H5NEST_WRITER_CASES ?? 120);

function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** One random shard: names of the chunk form, sizes mostly small, a few large; bounded total. */
function randomShard(random: () => number): Map<string, Uint8Array> {
  const pick = random();
  const count = pick < 0.05 ? 0 : pick < 0.7 ? Math.floor(random() * 64) + 1 : pick < 0.95 ? Math.floor(random() * 1000) + 1 : Math.floor(random() * 4001) + 1000;
  const datasets = new Map<string, Uint8Array>();
  let budget = 6 * 1024 * 1024;
  while (datasets.size < count) {
    const rank = 1 + Math.floor(random() * 3);
    const name = Array.from({ length: rank }, () => Math.floor(random() * (rank === 1 ? 100000 : 200))).join(".");
    if (datasets.has(name)) continue;
    const r = random();
    let size = r < 0.05 ? 0 : r < 0.9 ? Math.floor(random() * 2048) : Math.floor(random() * 3 * 1024 * 1024);
    size = Math.min(size, budget);
    budget -= size;
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i += 4096) bytes[i] = Math.floor(random() * 256);
    if (size > 0) bytes[size - 1] = datasets.size & 0xff;
    datasets.set(name, bytes);
  }
  return datasets;
}

function writeShard(file: string, datasets: Map<string, Uint8Array>): void {
  writeShardFile(file, [...datasets].map(([name, bytes]) => ({ name, length: bytes.byteLength, bytes })), null, false);
}

const H5PY_READ = `
import hashlib, json, sys, h5py, numpy as np
out = {}
for path in sys.argv[1:]:
    with h5py.File(path, "r") as f:
        out[path] = {name: hashlib.sha256(np.asarray(f[name][()]).tobytes()).hexdigest() for name in f.keys()}
print(json.dumps(out))
`;

/** What the Python store does to a shard it writes into: open "a", delete, recreate (OPAQUE), add. */
const H5PY_EDIT = `
import json, sys, h5py, numpy as np
out = {}
for path in sys.argv[1:]:
    with h5py.File(path, "a") as f:
        names = sorted(f.keys())
        for name in names[::4]:
            del f[name]
            f.create_dataset(name, data=np.void(("edited " + name).encode()))
        for k in range(25):
            f.create_dataset("9999.%d" % k, data=np.void(bytes([k]) * (k + 1)))
print("ok")
`;

async function checkAllReaders(pool: WorkerPool, files: string[], expected: Map<string, Map<string, string>>): Promise<void> {
  const viaH5py = await pythonJson<Record<string, Record<string, string>>>(H5PY_READ, files);
  for (const file of files) {
    const want = expected.get(file)!;
    assert.deepEqual(new Map(Object.entries(viaH5py[file]!)), want, `h5py reads ${file}`);
    const outcome = indexShardFile(file);
    assert.ok(outcome.ok, `the index decodes ${file}`);
    const fd = fs.openSync(file, "r");
    try {
      assert.deepEqual(new Set(outcome.index.datasets.keys()), new Set(want.keys()), `the index lists ${file}`);
      for (const [name, place] of outcome.index.datasets) {
        assert.ok(isPlaced(place), `${file}:${name} is placed`);
        const bytes = Buffer.alloc(place.length);
        if (place.length > 0) fs.readSync(fd, bytes, 0, place.length, place.offset);
        assert.equal(sha(bytes), want.get(name), `index bytes of ${file}:${name}`);
      }
    } finally {
      fs.closeSync(fd);
    }
    const names = [...want.keys()];
    const viaWasm = await pool.read(names.map((dataset) => ({ rawPath: path.join(file, "none"), shardPath: file, dataset, rawFolder: null })));
    viaWasm.forEach((bytes, i) => {
      assert.ok(bytes instanceof Uint8Array, `h5wasm reads ${file}:${names[i]}: ${String(bytes)}`);
      assert.equal(sha(bytes), want.get(names[i]!), `h5wasm bytes of ${file}:${names[i]}`);
    });
    await h5dump(["-H", file]); // throws on a non-zero exit
  }
}

test(`${CASES} random shards read back through h5py, h5wasm, the index and h5dump; then after h5py edits`, { timeout: 600_000 }, async (t) => {
  if (!(await requirePython(t))) return;
  const dir = await tempDir(t);
  const pool = new WorkerPool({ threads: 1 });
  t.after(() => pool.close());
  const random = mulberry32(20261202);
  const expected = new Map<string, Map<string, string>>();
  const files: string[] = [];
  let datasets = 0;
  for (let i = 0; i < CASES; i++) {
    const file = path.join(dir, `shard-${i}.h5`);
    const shard = i === 0 ? new Map() : i === 1 ? randomShardOfSize(random, 5000) : randomShard(random);
    writeShard(file, shard);
    expected.set(file, new Map([...shard].map(([name, bytes]) => [name, sha(bytes)])));
    files.push(file);
    datasets += shard.size;
  }
  t.diagnostic(`${files.length} shards, ${datasets} datasets`);
  for (let i = 0; i < files.length; i += 40) await checkAllReaders(pool, files.slice(i, i + 40), expected);

  // In-place edits by h5py (what the Python store does), then every reader again.
  const edited = files.filter((_, i) => i % 5 === 1);
  await pythonJson(H5PY_EDIT.replace('print("ok")', 'print(json.dumps("ok"))'), edited);
  for (const file of edited) {
    const want = expected.get(file)!;
    const names = [...want.keys()].sort();
    for (const name of names.filter((_, k) => k % 4 === 0)) want.set(name, sha(new TextEncoder().encode(`edited ${name}`)));
    for (let k = 0; k < 25; k++) want.set(`9999.${k}`, sha(new Uint8Array(k + 1).fill(k)));
  }
  await checkAllReaders(pool, edited, expected);
});

function randomShardOfSize(random: () => number, count: number): Map<string, Uint8Array> {
  const datasets = new Map<string, Uint8Array>();
  for (let i = 0; datasets.size < count; i++) datasets.set(`${Math.floor(i / 100)}.${i % 100}`, new Uint8Array(Math.floor(random() * 64)).fill(i & 0xff));
  return datasets;
}

test("the writer refuses duplicate and invalid names, and lays chunks out in row-major order", async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, "a.h5");
  assert.throws(() => writeShard(file, new Map([["a/b", new Uint8Array(1)]])), /invalid dataset name/);
  fs.rmSync(file, { force: true });
  writeShardFile(file, ["0.10", "0.9", "1.0", "0.0"].map((name) => ({ name, length: 4, bytes: new Uint8Array(4) })), null, false);
  const outcome = indexShardFile(file);
  assert.ok(outcome.ok);
  const order = [...outcome.index.datasets].filter(([, p]) => isPlaced(p)).sort((a, b) => (a[1] as { offset: number }).offset - (b[1] as { offset: number }).offset).map(([n]) => n);
  assert.deepEqual(order, ["0.0", "0.9", "0.10", "1.0"]);
});
