/**
 * `h5nest demo` (npm start): builds a small NestedDirectoryStore (one file per
 * chunk) through zarrita, shows `info`, consolidates it in place with the
 * progress bar, verifies every shard and checks every value read back.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import * as zarr from "zarrita";
import { createConsolidateView, printInfo } from "./cli-output.js";
import { H5NestedStore } from "./store.js";
import { createV2Array } from "./v2.js";

const arrays = [
  { path: "raw/img", shape: [1, 2, 16, 512, 512], chunks: [1, 1, 1, 64, 64], dtype: "<u2" },
  { path: "raw/vol", shape: [8, 128, 128], chunks: [1, 64, 64], dtype: "<u2" },
  { path: "labels/mask", shape: [256, 256], chunks: [64, 64], dtype: "<u2" },
];

function values(count: number, seed: number): Uint16Array {
  const data = new Uint16Array(count);
  for (let i = 0; i < count; i++) data[i] = (i * 7 + seed * 101 + (i >> 12)) & 0xffff;
  return data;
}

function strides(dims: number[]): number[] {
  return dims.map((_, i) => dims.slice(i + 1).reduce((a, b) => a * b, 1));
}

export async function runDemo(folder?: string): Promise<void> {
  const root = folder ? path.resolve(folder) : await fs.mkdtemp(path.join(os.tmpdir(), "h5nest-demo-"));
  const dir = path.join(root, "demo.zarr");
  try {
    console.log(`1. writing a NestedDirectoryStore (one file per chunk) through zarrita: ${dir}`);
    const nested = await H5NestedStore.open(dir, { writeDirect: false });
    for (const [i, spec] of arrays.entries()) {
      const array = await createV2Array(nested, spec.path, { shape: spec.shape, chunks: spec.chunks, dtype: spec.dtype, compressor: null });
      const count = spec.shape.reduce((a, b) => a * b, 1);
      await zarr.set(array, null, { data: values(count, i), shape: spec.shape, stride: strides(spec.shape) });
    }
    await nested.close();

    const store = await H5NestedStore.open(dir);
    try {
      console.log("\n2. h5nest info");
      printInfo(dir, await store.info());

      console.log("\n3. h5nest consolidate");
      const view = createConsolidateView(false, false);
      if (view.wantsTotal) view.start(await store.consolidationSize());
      const summary = await store.consolidate({ onProgress: (p) => view.shard(p) });
      view.finish(summary);
      if (summary.fatal || summary.errors.length) throw summary.fatal ?? new Error(summary.errors[0]!.message);

      console.log("\n4. h5nest info");
      printInfo(dir, await store.info());

      console.log("\n5. h5nest verify");
      const checked = await store.verify();
      console.log(`checked ${checked.shards} shards, ${checked.datasets} chunks: ${checked.corrupt.length ? "CORRUPT" : "all readable"}`);

      console.log("\n6. reading every array back through zarrita");
      for (const [i, spec] of arrays.entries()) {
        const array = await zarr.open.v2(zarr.root(store).resolve(spec.path), { kind: "array" });
        const back = (await zarr.get(array, null)).data as Uint16Array;
        const expected = values(back.length, i);
        const same = back.every((v, j) => v === expected[j]);
        console.log(`  ${spec.path.padEnd(12)} ${spec.shape.join("x").padEnd(18)} ${same ? "every value matches" : "MISMATCH"}`);
        if (!same) process.exitCode = 1;
      }

      console.log("\n7. writing a new 5-D array straight into shards (writeDirect, the default) and reading it back");
      const shape = [1, 2, 8, 256, 256];
      const direct = await createV2Array(store, "raw/direct", { shape, chunks: [1, 1, 1, 64, 64], dtype: "<u2", compressor: null });
      const data = values(shape.reduce((a, b) => a * b, 1), 7);
      const started = performance.now();
      await zarr.set(direct, null, { data, shape, stride: strides(shape) });
      const wrote = Math.round(performance.now() - started);
      const back = (await zarr.get(direct, null)).data as Uint16Array;
      const same = back.every((v, j) => v === data[j]);
      const shards = (await fs.readdir(path.join(dir, "raw/direct/0/0"))).filter((name) => name.endsWith(".h5")).length;
      console.log(`  raw/direct   ${shape.join("x").padEnd(18)} ${shards} shard files written in ${wrote} ms; ${same ? "every value matches" : "MISMATCH"}`);
      if (!same) process.exitCode = 1;
    } finally {
      await store.close();
    }
    if (folder) console.log(`\nthe store stays in ${dir}; Python reads it with H5_Nested_Store or h5py`);
    else console.log("\n(the temp folder is removed; `npm start -- <folder>` keeps the store there)");
  } finally {
    if (!folder) await fs.rm(root, { recursive: true, force: true });
  }
}
