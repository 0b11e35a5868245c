/**
 * Reads through the shard index: getRange, a read-only store that never
 * starts HDF5, in-place h5py edits seen at once, h5wasm as the fallback for
 * datasets the index cannot place, and zarr v3 sharded arrays via getRange.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import * as zarr from "zarrita";
import { createV2Array, H5NestedStore, InvalidRangeError } from "h5nest";
import { python, requirePython } from "./helpers/python.js";
import { tempDir } from "./helpers/tmp.js";

const shape = [1, 1, 2, 64, 64];
const chunks = [1, 1, 1, 16, 16]; // 16 chunks of 512 bytes per shard

const chunkBytes = (fill: number) => new Uint8Array(new Uint16Array(16 * 16).fill(fill).buffer);
const bytesOf = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7) & 0xff);

/** Threads of this process (worker threads included), from /proc. */
function threadCount(): number {
  return fs.readdirSync("/proc/self/task").length;
}

async function writtenStore(t: import("node:test").TestContext) {
  const root = path.join(await tempDir(t), "store");
  const writer = await H5NestedStore.open(root, { workers: 1 });
  const array = await createV2Array(writer, "img", { shape, chunks, dtype: "<u2", compressor: null });
  await zarr.set(array, null, 5);
  await writer.set("img/0/0/1/0/0", chunkBytes(9));
  await writer.close();
  return root;
}

test("a store that only reads starts no worker thread", async (t) => {
  const root = await writtenStore(t);
  const before = threadCount();
  const store = await H5NestedStore.open(root, { workers: 2 });
  t.after(() => store.close());
  assert.deepEqual(await store.get("img/0/0/0/1/2"), chunkBytes(5));
  const array = await zarr.open.v2(zarr.root(store).resolve("img"), { kind: "array" });
  const all = await zarr.get(array, null);
  assert.equal(all.data.length, 2 * 64 * 64);
  const keys: string[] = [];
  for await (const key of store.keys()) keys.push(key);
  assert.equal(keys.length, 2 + 32);
  assert.equal(threadCount(), before, "no HDF5 worker thread was started for reads, keys or getRange");
});

test("getRange reads part of a shard dataset or of a raw file, in zarrita's two forms", async (t) => {
  const root = await writtenStore(t);
  const store = await H5NestedStore.open(root, { workers: 1, writeDirect: false });
  t.after(() => store.close());
  const whole = chunkBytes(5);
  assert.deepEqual(await store.getRange("img/0/0/0/1/2", { offset: 10, length: 20 }), whole.slice(10, 30));
  assert.deepEqual(await store.getRange("/img/0/0/0/1/2", { suffixLength: 7 }), whole.slice(-7));
  assert.deepEqual(await store.getRange("img/0/0/0/1/2", { offset: 500, length: 100 }), whole.slice(500), "clamped to the value");
  assert.deepEqual(await store.getRange("img/0/0/0/1/2", { offset: 9999, length: 5 }), new Uint8Array(0));
  assert.deepEqual(await store.getRange("img/0/0/0/1/2", { suffixLength: 99999 }), whole);
  assert.equal(await store.getRange("img/0/0/0/9/9", { offset: 0, length: 4 }), undefined, "a missing key");

  // A raw file (writeDirect: false) shadows the shard's dataset.
  const raw = bytesOf(512, 3);
  await store.set("img/0/0/0/1/2", raw);
  assert.ok(fs.existsSync(path.join(root, "img/0/0/0/1/2")));
  assert.deepEqual(await store.getRange("img/0/0/0/1/2", { offset: 100, length: 3 }), raw.slice(100, 103));
  assert.deepEqual(await store.getRange("img/0/0/0/1/2", { suffixLength: 1 }), raw.slice(-1));
  const meta = fs.readFileSync(path.join(root, "img/.zarray"));
  assert.deepEqual(await store.getRange("img/.zarray", { offset: 2, length: 5 }), new Uint8Array(meta.subarray(2, 7)));

  for (const bad of [{ offset: -1, length: 2 }, { offset: 1.5, length: 2 }, { offset: 0 }, { suffixLength: -3 }, null]) {
    await assert.rejects(store.getRange("img/0/0/0/1/2", bad as never), InvalidRangeError);
  }
});

test("returned buffers are the caller's own, even when one readv served a whole plane", async (t) => {
  const root = await writtenStore(t);
  const store = await H5NestedStore.open(root, { workers: 1 });
  t.after(() => store.close());
  const keys = Array.from({ length: 16 }, (_, i) => `img/0/0/0/${i >> 2}/${i & 3}`);
  const values = await Promise.all(keys.map((k) => store.get(k)));
  const buffers = new Set(values.map((v) => v!.buffer));
  assert.equal(buffers.size, keys.length, "no two results share memory");
  values[0]!.fill(0);
  assert.deepEqual(values[1], chunkBytes(5));
  assert.deepEqual(await store.get(keys[0]!), chunkBytes(5), "changing a result changes nothing stored or cached");
});

test("an in-place h5py edit of an indexed shard is read at once by the same store", async (t) => {
  if (!(await requirePython(t))) return;
  const root = await writtenStore(t);
  const store = await H5NestedStore.open(root, { workers: 1 });
  t.after(() => store.close());
  const shard = path.join(root, "img/0/0/0.h5");
  assert.deepEqual(await store.get("img/0/0/0/0/1"), chunkBytes(5)); // indexed and cached now
  // What the Python store does on overwrite: delete and recreate the dataset
  // (same size), plus a new dataset, in place, file open in "a" mode.
  await python(
    `
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "a") as f:
    del f["0.1"]
    f.create_dataset("0.1", data=np.full(256, 7, dtype="<u2").view(np.uint8))
    del f["0.2"]
    f.create_dataset("0.2", data=np.void(b"hello"))
    f.create_dataset("new", data=np.arange(3, dtype=np.uint8))
`,
    [shard],
  );
  assert.deepEqual(await store.get("img/0/0/0/0/1"), chunkBytes(7), "the dataset replaced with one of the same size");
  assert.deepEqual(await store.get("img/0/0/0/0/2"), new TextEncoder().encode("hello"), "the dataset replaced with a shorter one");
  assert.deepEqual(await store.get("img/0/0/0/0/3"), chunkBytes(5), "an untouched dataset");
  const keys: string[] = [];
  for await (const key of store.keys("img/0/0/0/")) keys.push(key);
  assert.ok(keys.includes("img/0/0/0/new"), "the added dataset is listed");
});

test("datasets the index cannot place (chunked, gzip) are read through h5wasm", async (t) => {
  if (!(await requirePython(t))) return;
  const root = await writtenStore(t);
  const shard = path.join(root, "img/0/0/0.h5");
  const gz = bytesOf(512, 11);
  await python(
    `
import sys, h5py, numpy as np
data = np.frombuffer(bytes.fromhex(sys.argv[2]), dtype=np.uint8)
with h5py.File(sys.argv[1], "a") as f:
    del f["3.3"]
    f.create_dataset("3.3", data=data, chunks=(100,), compression="gzip")
`,
    [shard, Buffer.from(gz).toString("hex")],
  );
  const store = await H5NestedStore.open(root, { workers: 1 });
  t.after(() => store.close());
  const [chunked, plain] = await Promise.all([store.get("img/0/0/0/3/3"), store.get("img/0/0/0/3/2")]);
  assert.deepEqual(chunked, gz);
  assert.deepEqual(plain, chunkBytes(5));
  assert.deepEqual(await store.getRange("img/0/0/0/3/3", { offset: 500, length: 20 }), gz.slice(500));
});

test("a zarr v3 array with the sharding codec reads back through zarrita (getRange)", async (t) => {
  const root = path.join(await tempDir(t), "store");
  const store = await H5NestedStore.open(root, { workers: 1 });
  t.after(() => store.close());
  // An 8x8 uint8 array in 4x4 shard objects of 2x2 inner chunks, index at the end.
  const meta = {
    zarr_format: 3,
    node_type: "array",
    shape: [8, 8],
    data_type: "uint8",
    chunk_grid: { name: "regular", configuration: { chunk_shape: [4, 4] } },
    chunk_key_encoding: { name: "default", configuration: { separator: "/" } },
    fill_value: 0,
    codecs: [
      {
        name: "sharding_indexed",
        configuration: {
          chunk_shape: [2, 2],
          codecs: [{ name: "bytes", configuration: { endian: "little" } }],
          index_codecs: [{ name: "bytes", configuration: { endian: "little" } }],
          index_location: "end",
        },
      },
    ],
    attributes: {},
  };
  await store.set("zarr.json", new TextEncoder().encode(JSON.stringify({ zarr_format: 3, node_type: "group", attributes: {} })));
  await store.set("sharded/zarr.json", new TextEncoder().encode(JSON.stringify(meta)));
  const value = (r: number, c: number) => r * 8 + c;
  for (let sr = 0; sr < 2; sr++) {
    for (let sc = 0; sc < 2; sc++) {
      // Inner chunks in C order, then the index: (offset, nbytes) as uint64 per inner chunk.
      const body: number[] = [];
      const index = new BigUint64Array(8);
      for (let ir = 0; ir < 2; ir++) {
        for (let ic = 0; ic < 2; ic++) {
          index[(ir * 2 + ic) * 2] = BigInt(body.length);
          index[(ir * 2 + ic) * 2 + 1] = 4n;
          for (let r = 0; r < 2; r++) for (let c = 0; c < 2; c++) body.push(value(sr * 4 + ir * 2 + r, sc * 4 + ic * 2 + c));
        }
      }
      const shardObject = new Uint8Array(body.length + index.byteLength);
      shardObject.set(body);
      shardObject.set(new Uint8Array(index.buffer), body.length);
      await store.set(`sharded/c/${sr}/${sc}`, shardObject);
    }
  }
  await store.flush();
  assert.ok(fs.existsSync(path.join(root, "sharded/c.h5")), "the shard objects live in an HDF5 shard");
  const array = await zarr.open.v3(zarr.root(store).resolve("sharded"), { kind: "array" });
  const got = await zarr.get(array, null);
  assert.deepEqual(Array.from(got.data as Uint8Array), Array.from({ length: 64 }, (_, i) => value(i >> 3, i & 7)));
  const part = await zarr.get(array, [zarr.slice(3, 6), 5]);
  assert.deepEqual(Array.from(part.data as Uint8Array), [value(3, 5), value(4, 5), value(5, 5)]);
});
