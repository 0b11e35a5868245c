/** Write-path behaviour of H5NestedStore: shard or raw file, folding, deletes, limits. */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import * as zarr from "zarrita";
import { ChunkTooLargeError, createV2Array, FOLD_RATIO, H5NestedStore, MAX_DATASET_BYTES } from "h5nest";
import { tempDir } from "./helpers/tmp.js";

const shape = [1, 1, 2, 256, 256];
const chunks = [1, 1, 1, 16, 16]; // 256 chunks of 512 bytes per shard

/** The store's files, without its identity record (`.h5nest/store.json`, written with the first shard). */
async function filesUnder(dir: string): Promise<string[]> {
  return ((await fs.readdir(dir, { recursive: true, withFileTypes: true })) as import("node:fs").Dirent[])
    .filter((e) => e.isFile() && !path.relative(dir, e.parentPath).startsWith(".h5nest"))
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

const chunkBytes = (fill: number) => new Uint8Array(new Uint16Array(16 * 16).fill(fill).buffer);

async function arrayStore(t: import("node:test").TestContext, options = {}) {
  const root = path.join(await tempDir(t), "store");
  const store = await H5NestedStore.open(root, { workers: 2, ...options });
  t.after(() => store.close());
  const array = await createV2Array(store, "img", { shape, chunks, dtype: "<u2", compressor: null });
  return { root, store, array };
}

test("a whole shard written by one zarr.set is one shard file and no raw files", async (t) => {
  const { root, store, array } = await arrayStore(t);
  await zarr.set(array, [0, 0, 0, null, null], 7);
  assert.deepEqual(await filesUnder(root), [".zgroup", "img/.zarray", "img/0/0/0.h5"]);
  assert.deepEqual(await store.get("/img/0/0/0/3/4"), chunkBytes(7));
});

test("small writes to a big shard go to raw files until half its size, then fold in", async (t) => {
  const { root, store, array } = await arrayStore(t);
  await zarr.set(array, [0, 0, 0, null, null], 1);
  const shard = path.join(root, "img/0/0/0.h5");
  const before = await fs.stat(shard);
  const foldAfter = Math.ceil((FOLD_RATIO * before.size) / 512);
  for (let i = 0; i < foldAfter - 1; i++) await store.set(`/img/0/0/0/${i >> 4}/${i & 15}`, chunkBytes(2));
  assert.equal((await fs.stat(shard)).ino, before.ino, "the shard was not rewritten for small writes");
  const raw = (await filesUnder(root)).filter((f) => /^img\/0\/0\/0\/\d+\/\d+$/.test(f));
  assert.equal(raw.length, foldAfter - 1, "each small write is a raw file");
  assert.deepEqual(await store.get("/img/0/0/0/0/0"), chunkBytes(2), "the raw file is current at once");

  await store.set(`/img/0/0/0/15/15`, chunkBytes(3)); // reaches the threshold
  assert.notEqual((await fs.stat(shard)).ino, before.ino, "the shard was rewritten once the threshold was reached");
  assert.deepEqual(await filesUnder(root), [".zgroup", "img/.zarray", "img/0/0/0.h5"], "raw files were folded in and removed");
  assert.deepEqual(await store.get("/img/0/0/0/0/0"), chunkBytes(2));
  assert.deepEqual(await store.get("/img/0/0/0/15/15"), chunkBytes(3));
  assert.deepEqual(await store.get("/img/0/0/0/15/14"), chunkBytes(1));
});

test("flush() folds the raw files written for small updates", async (t) => {
  const { root, store, array } = await arrayStore(t);
  await zarr.set(array, [0, 0, 0, null, null], 1);
  await store.set("/img/0/0/0/1/1", chunkBytes(9));
  assert.ok((await filesUnder(root)).includes("img/0/0/0/1/1"));
  await store.flush();
  assert.deepEqual(await filesUnder(root), [".zgroup", "img/.zarray", "img/0/0/0.h5"]);
  assert.deepEqual(await store.get("/img/0/0/0/1/1"), chunkBytes(9));
});

test("delete removes a key from its shard and its raw file; an emptied shard disappears", async (t) => {
  const { root, store, array } = await arrayStore(t);
  await zarr.set(array, [0, 0, 0, zarr.slice(0, 16), zarr.slice(0, 32)], 5); // chunks 0/0 and 0/1
  await store.set("/img/0/0/0/0/0", chunkBytes(6)); // small: raw file shadowing the shard
  assert.deepEqual(await store.get("/img/0/0/0/0/0"), chunkBytes(6));
  await store.delete("/img/0/0/0/0/0");
  assert.equal(await store.get("/img/0/0/0/0/0"), undefined, "neither raw file nor shard dataset remains");
  assert.deepEqual(await store.get("/img/0/0/0/0/1"), chunkBytes(5));
  await store.delete("/img/0/0/0/0/1");
  assert.deepEqual(await filesUnder(root), [".zgroup", "img/.zarray"], "the empty shard and folders are gone");
  await store.delete("/img/0/0/0/9/9"); // missing: not an error
});

test("keys() lists a key held both raw and in the shard once", async (t) => {
  const { store, array } = await arrayStore(t);
  await zarr.set(array, [0, 0, 0, zarr.slice(0, 16), zarr.slice(0, 32)], 5);
  await store.set("/img/0/0/0/0/0", chunkBytes(6));
  const keys: string[] = [];
  for await (const key of store.keys()) keys.push(key);
  assert.deepEqual(keys.sort(), [".zgroup", "img/.zarray", "img/0/0/0/0/0", "img/0/0/0/0/1"]);
});

test("writeDirect: false writes raw files, which shadow what the shard holds", async (t) => {
  const root = path.join(await tempDir(t), "store");
  const direct = await H5NestedStore.open(root, { workers: 1 });
  const array = await createV2Array(direct, "img", { shape, chunks, dtype: "<u2", compressor: null });
  await zarr.set(array, [0, 0, 0, zarr.slice(0, 16), zarr.slice(0, 16)], 1);
  await direct.close();
  const rawStore = await H5NestedStore.open(root, { workers: 1, writeDirect: false });
  try {
    await rawStore.set("/img/0/0/0/0/0", chunkBytes(2));
    await rawStore.set("/img/0/0/1/0/0", chunkBytes(3));
    assert.deepEqual(await filesUnder(root), [".zgroup", "img/.zarray", "img/0/0/0.h5", "img/0/0/0/0/0", "img/0/0/1/0/0"]);
    assert.deepEqual(await rawStore.get("/img/0/0/0/0/0"), chunkBytes(2));
  } finally {
    await rawStore.close();
  }
});

test("chunks that cannot go into a shard stay raw files (dotted group, 1-D array)", async (t) => {
  const root = path.join(await tempDir(t), "store");
  const store = await H5NestedStore.open(root, { workers: 1 });
  try {
    const dotted = await createV2Array(store, "v1.2/img", { shape: [2, 2, 32, 32], chunks: [1, 1, 16, 16], dtype: "|u1", compressor: null });
    const line = await createV2Array(store, "grp/line", { shape: [8], chunks: [4], dtype: "|u1", compressor: null });
    await zarr.set(dotted, null, 1);
    await zarr.set(line, null, 2);
    const files = await filesUnder(root);
    assert.ok(!files.some((f) => f.endsWith(".h5")), `no shard written: ${files}`);
    assert.ok(files.includes("v1.2/img/1/1/1/1") && files.includes("grp/line/1"));
  } finally {
    await store.close();
  }
});

test("a chunk over the per-call limit is refused with ChunkTooLargeError and nothing is written", async (t) => {
  const { root, store } = await arrayStore(t);
  const huge = new Uint8Array(MAX_DATASET_BYTES + 1);
  await assert.rejects(store.set("/img/0/0/0/0/0", huge), (error: unknown) => {
    assert.ok(error instanceof ChunkTooLargeError);
    assert.equal(error.bytes, MAX_DATASET_BYTES + 1);
    assert.match(error.message, /img\/0\/0\/0\/0\/0/);
    return true;
  });
  assert.deepEqual(await filesUnder(root), [".zgroup", "img/.zarray"]);
});

test("flush() waits for writes that were not awaited", async (t) => {
  const { store } = await arrayStore(t);
  for (let i = 0; i < 50; i++) void store.set(`/img/0/0/1/${i >> 4}/${i & 15}`, chunkBytes(i));
  await store.flush();
  for (let i = 0; i < 50; i++) assert.deepEqual(await store.get(`/img/0/0/1/${i >> 4}/${i & 15}`), chunkBytes(i));
});

test("fsync: true writes shards and raw files that read back the same", async (t) => {
  const { root, store, array } = await arrayStore(t, { fsync: true });
  await zarr.set(array, [0, 0, 0, null, null], 4);
  await store.set("/img/0/0/0/2/3", chunkBytes(8)); // a small write: a raw file
  assert.ok((await filesUnder(root)).includes("img/0/0/0/2/3"));
  await store.flush();
  assert.deepEqual(await store.get("/img/0/0/0/2/3"), chunkBytes(8));
  assert.deepEqual(await store.get("/img/0/0/0/2/4"), chunkBytes(4));
  assert.deepEqual(await filesUnder(root), [".zgroup", "img/.zarray", "img/0/0/0.h5"]);
});
