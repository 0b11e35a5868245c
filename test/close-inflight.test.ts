/**
 * Reads in flight when close() runs: raw files, datasets read through the
 * shard index, and datasets only h5wasm can read (gzip, chunked: worker
 * threads). Each either resolves with the right bytes or rejects with a typed
 * h5nest error (StoreClosedError), never piscina's AbortError or a plain Error.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import * as zarr from "zarrita";
import { createV2Array, H5NestedStore, StoreClosedError } from "h5nest";
import { ReadBatcher } from "../packages/core/dist/read-batcher.js";
import { python, requirePython } from "./helpers/python.js";
import { tempDir } from "./helpers/tmp.js";

const shape = [1, 1, 2, 64, 64];
const chunks = [1, 1, 1, 16, 16]; // two shards of 16 chunks (512 bytes) each

const chunkBytes = (fill: number) => new Uint8Array(new Uint16Array(16 * 16).fill(fill).buffer);
const bytesOf = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7) & 0xff);

/** True for what a get may reject with: an Error whose `code` is an h5nest one. */
function isTyped(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return error instanceof Error && typeof code === "string" && code.startsWith("H5NEST_");
}

test("gets in flight when close() runs resolve with their bytes or reject with a typed error", async (t) => {
  if (!(await requirePython(t))) return;
  const root = path.join(await tempDir(t), "store");
  const writer = await H5NestedStore.open(root, { workers: 1 });
  const array = await createV2Array(writer, "img", { shape, chunks, dtype: "<u2", compressor: null });
  await zarr.set(array, null, 5);
  await writer.close();
  const raw = await H5NestedStore.open(root, { workers: 1, writeDirect: false });
  await raw.set("img/0/0/0/1/2", bytesOf(512, 1));
  await raw.set("img/0/0/1/2/1", bytesOf(512, 2));
  await raw.close();
  // Some datasets of each shard become gzip-compressed and chunked: the index
  // cannot place them, so they are read on worker threads.
  const expected = new Map<string, Uint8Array>();
  for (let z = 0; z < 2; z++) for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) expected.set(`img/0/0/${z}/${y}/${x}`, chunkBytes(5));
  expected.set("img/0/0/0/1/2", bytesOf(512, 1));
  expected.set("img/0/0/1/2/1", bytesOf(512, 2));
  const gzipped = ["0/0/0/3/3", "0/0/0/2/0", "0/0/1/0/1", "0/0/1/3/2"];
  for (const [i, key] of gzipped.entries()) {
    const [, , z, y, x] = key.split("/");
    const data = bytesOf(512, 10 + i);
    await python(
      `
import sys, h5py, numpy as np
data = np.frombuffer(bytes.fromhex(sys.argv[3]), dtype=np.uint8)
with h5py.File(sys.argv[1], "a") as f:
    del f[sys.argv[2]]
    f.create_dataset(sys.argv[2], data=data, chunks=(100,), compression="gzip")
`,
      [path.join(root, `img/0/0/${z}.h5`), `${y}.${x}`, Buffer.from(data).toString("hex")],
    );
    expected.set(`img/${key}`, data);
  }

  for (let round = 0; round < 3; round++) {
    const store = await H5NestedStore.open(root, { workers: 1 });
    const keys = [...expected.keys()];
    const gets: { key: string; read: Promise<Uint8Array | undefined> }[] = [];
    // Many batches (one per microtask turn), each with worker reads: they
    // queue on the one worker thread, which has not even started yet.
    for (let batch = 0; batch < 20; batch++) {
      for (const key of keys) gets.push({ key, read: store.get(key) });
      for (const key of gzipped) gets.push({ key: `img/${key}`, read: store.get(`img/${key}`) });
      await Promise.resolve();
    }
    if (round === 1) await new Promise((resolve) => setTimeout(resolve, 50)); // threads starting
    if (round === 2) await new Promise((resolve) => setTimeout(resolve, 500)); // threads reading
    const before = gets.length;
    const closing = store.close();
    // And gets issued while close() runs, one per microtask turn: some are
    // dispatched only after close() has stopped the threads.
    for (let turn = 0; turn < 40; turn++) {
      const key = `img/${gzipped[turn % gzipped.length]!}`;
      gets.push({ key, read: store.get(key) });
      await Promise.resolve();
    }
    const outcomes = await Promise.allSettled(gets.map((g) => g.read));
    await closing;
    let resolved = 0;
    outcomes.forEach((outcome, i) => {
      const { key } = gets[i]!;
      if (outcome.status === "fulfilled") {
        assert.deepEqual(outcome.value, expected.get(key), key);
        resolved += 1;
      } else {
        assert.ok(isTyped(outcome.reason), `round ${round}, ${key}: ${(outcome.reason as Error)?.name}: ${(outcome.reason as Error)?.message} (code ${(outcome.reason as { code?: unknown })?.code})`);
      }
    });
    // close() waits for the reads asked before it: all of them are served.
    assert.ok(outcomes.slice(0, before).every((outcome) => outcome.status === "fulfilled"), "reads issued before close() are served");
    t.diagnostic(`round ${round}: ${resolved} of ${outcomes.length} gets served, the rest refused with StoreClosedError`);
    await assert.rejects(store.get("img/0/0/0/0/0"), { code: "H5NEST_STORE_CLOSED" });
  }

  // A worker read still running when the wait runs out: the threads are
  // stopped under it, and it fails with StoreClosedError, not the pool's error.
  const stopped = Object.assign(new Error("pool is closed"), { name: "AbortError", code: "ABORT_ERR" });
  const reader = new ReadBatcher(
    () => new Promise((_, reject) => setTimeout(() => reject(stopped), 200)),
    () => new StoreClosedError(root),
  );
  const slow = reader.read({ rawPath: path.join(root, "img/0/0/0/3/3"), shardPath: path.join(root, "img/0/0/0.h5"), dataset: "3.3", rawFolder: path.join(root, "img/0/0/0") });
  await reader.close(20);
  await assert.rejects(slow, StoreClosedError);
  await assert.rejects(reader.read({ rawPath: path.join(root, "img/.zarray"), shardPath: null, dataset: "", rawFolder: null }), StoreClosedError);
});
