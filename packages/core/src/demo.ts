/**
 * `npm start`: writes a small 5-D array through zarrita into HDF5 shards,
 * shows the files, reads it back and checks every value.
 * Usage: node dist/demo.js [folder]   (default: a temp folder, removed at the end)
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import * as zarr from "zarrita";
import { createV2Array, H5NestedStore } from "./index.js";

const shape = [1, 2, 8, 256, 256];
const chunks = [1, 1, 1, 64, 64];

async function main(): Promise<void> {
  const given = process.argv[2];
  const root = given ? path.resolve(given) : await fs.mkdtemp(path.join(os.tmpdir(), "h5nest-demo-"));
  const store = path.join(root, "demo.zarr");
  try {
    const data = new Uint16Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 16)) & 0xffff;

    let started = performance.now();
    const writer = await H5NestedStore.open(store);
    const array = await createV2Array(writer, "raw/img", { shape, chunks, dtype: "<u2", compressor: null });
    await zarr.set(array, null, { data, shape, stride: strides(shape) });
    await writer.close();
    const chunkCount = shape.reduce((n, s, i) => n * Math.ceil(s / chunks[i]!), 1);
    console.log(`wrote ${chunkCount} chunks of ${shape.join("x")} uint16 in ${ms(started)} through zarrita into ${store}`);

    const files = await listFiles(store);
    const shards = files.filter((f) => f.name.endsWith(".h5"));
    console.log(`\n${shards.length} shard files (one per z-plane), ${files.length - shards.length} metadata files:`);
    for (const f of files) console.log(`  ${f.name.padEnd(28)} ${String(f.size).padStart(9)} bytes`);

    started = performance.now();
    const reader = await H5NestedStore.open(store);
    try {
      const back = await zarr.get(await zarr.open.v2(zarr.root(reader).resolve("raw/img"), { kind: "array" }), null);
      const values = back.data as Uint16Array;
      const same = values.length === data.length && values.every((v, i) => v === data[i]);
      console.log(`\nread back ${values.length} values in ${ms(started)}: ${same ? "every value matches" : "MISMATCH"}`);
      if (!same) process.exitCode = 1;
    } finally {
      await reader.close();
    }
    if (given) {
      const shard = path.join(store, "raw/img/0/0/0.h5");
      console.log(`\nPython reads it too: h5py.File("${shard}")["0.0"][()].tobytes() is chunk raw/img/0/0/0/0/0`);
    } else {
      console.log("\n(the temp folder is removed; `npm start -- <folder>` keeps the store there)");
    }
  } finally {
    if (!given) await fs.rm(root, { recursive: true, force: true });
  }
}

function strides(dims: number[]): number[] {
  return dims.map((_, i) => dims.slice(i + 1).reduce((a, b) => a * b, 1));
}

function ms(since: number): string {
  return `${Math.round(performance.now() - since)} ms`;
}

async function listFiles(dir: string, prefix = ""): Promise<{ name: string; size: number }[]> {
  const out: { name: string; size: number }[] = [];
  for (const entry of (await fs.readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...(await listFiles(path.join(dir, entry.name), rel)));
    else out.push({ name: rel, size: (await fs.stat(path.join(dir, entry.name))).size });
  }
  return out;
}

await main();
