/**
 * The Node variants of one round. Each writes the workload into a fresh
 * folder, reads it back, checks the values (outside the timings) and reports
 * its timings and the peak RSS of this process while it ran.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { createV2Array, H5NestedStore } from "h5nest";
import * as zarr from "zarrita";
import { type RssReport, RssSampler } from "./rss.js";
import { ARRAY_PATH, assertSameValues, MemoryStore, type TempRoot, type Workload } from "./workloads.js";

export interface VariantRun {
  /** Timed write: see the variant's `writeTimed`. */
  writeMs: number;
  /** Timed read: see the variant's `readTimed`. */
  readMs: number;
  /** h5nest: a second zarr.get on the same store (workers started, shard handles cached). */
  warmReadMs?: number;
  /** Parts of the write, when the variant has them. */
  openMs?: number;
  setMs?: number;
  closeMs?: number;
  /** Peak RSS of this Node process while the variant ran. */
  rss?: RssReport;
  /** Peak RSS of the Python process (ru_maxrss), for Python variants. */
  childMaxRssBytes?: number;
}

export interface RunContext {
  workload: Workload;
  temp: TempRoot;
  /** Every key zarrita writes for the workload (metadata and chunks) and its encoded bytes. */
  encoded: Map<string, Uint8Array>;
  workers: number | undefined;
  fsConcurrency: number;
}

export interface Variant {
  id: string;
  label: string;
  /** What the write timing covers, for the table's notes. */
  writeTimed: string;
  readTimed: string;
  run(ctx: RunContext): Promise<VariantRun>;
}

type U16Array = zarr.Array<"uint16", zarr.Mutable>;

const V2_OPTIONS = { dtype: "<u2", compressor: null, fillValue: 0 } as const;

function since(start: number): number {
  return performance.now() - start;
}

async function writeThroughZarrita(store: zarr.Readable & zarr.AsyncWritable, w: Workload): Promise<U16Array> {
  const arr = (await createV2Array(store, ARRAY_PATH, { shape: w.shape, chunks: w.chunks, ...V2_OPTIONS })) as unknown as U16Array;
  return arr;
}

async function setAll(arr: U16Array, w: Workload): Promise<void> {
  await zarr.set(arr, null, { data: w.data, shape: w.shape, stride: w.stride });
}

async function openV2(store: zarr.Readable): Promise<zarr.Array<"uint16", zarr.Readable>> {
  return (await zarr.open.v2(zarr.root(store).resolve(ARRAY_PATH), { kind: "array" })) as zarr.Array<"uint16", zarr.Readable>;
}

/** Encodes the workload once through zarrita into memory: the bytes the plain fs baseline writes. */
export async function encodeWorkload(w: Workload): Promise<Map<string, Uint8Array>> {
  const store = new MemoryStore();
  await setAll(await writeThroughZarrita(store, w), w);
  // Keys without the leading "/", as relative file paths.
  return new Map([...store.map].map(([key, bytes]) => [key.replace(/^\//, ""), bytes]));
}

function h5nestVariant(writeDirect: boolean): Variant {
  return {
    id: writeDirect ? "h5nest-direct" : "h5nest-raw",
    label: `h5nest writeDirect=${writeDirect}`,
    writeTimed: "zarr.set + store.close (open+create timed apart)",
    readTimed: "zarr.get on a freshly opened store (incl. worker start); warm = 2nd zarr.get, same store",
    async run(ctx) {
      const w = ctx.workload;
      const dir = await ctx.temp.fresh(writeDirect ? "direct" : "raw");
      const options = { writeDirect, ...(ctx.workers ? { workers: ctx.workers } : {}) };
      const sampler = new RssSampler();
      try {
        const t0 = performance.now();
        const store = await H5NestedStore.open(dir, options);
        const arr = await writeThroughZarrita(store, w);
        const openMs = since(t0);
        const t1 = performance.now();
        await setAll(arr, w);
        const setMs = since(t1);
        const t2 = performance.now();
        await store.close();
        const closeMs = since(t2);

        const reader = await H5NestedStore.open(dir, options);
        let readMs: number;
        let warmReadMs: number;
        try {
          const array = await openV2(reader);
          const t3 = performance.now();
          const got = await zarr.get(array, null);
          readMs = since(t3);
          // Checked between the two timed reads, so that only one result is held at a time.
          assertSameValues(this.label, got.data, w.data);
          const t4 = performance.now();
          const again = await zarr.get(array, null);
          warmReadMs = since(t4);
          assertSameValues(`${this.label} (second read)`, again.data, w.data);
        } finally {
          await reader.close();
        }
        const rss = sampler.stop();
        if (writeDirect) await expectShards(dir, w.planes);
        return { writeMs: setMs + closeMs, readMs, warmReadMs, openMs, setMs, closeMs, rss };
      } finally {
        sampler.stop();
        await ctx.temp.remove(dir);
      }
    },
  };
}

/** writeDirect must have produced one .h5 shard per z-plane and no raw chunk files. */
async function expectShards(dir: string, planes: number): Promise<void> {
  const folder = path.join(dir, ARRAY_PATH, "0", "0");
  const names = await fs.readdir(folder);
  const shards = names.filter((n) => n.endsWith(".h5")).length;
  if (shards !== planes || names.length !== planes) {
    throw new Error(`writeDirect: expected ${planes} shard files in ${folder}, found ${shards} shards among ${names.length} entries`);
  }
}

/** Runs `task` over `items` with at most `limit` in flight. */
async function bounded<T, R>(items: T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

const plainFs: Variant = {
  id: "fs",
  label: "plain fs (Node)",
  writeTimed: "mkdir -p per folder + fs.promises.writeFile of every key",
  readTimed: "fs.promises.readFile of every key",
  async run(ctx) {
    const dir = await ctx.temp.fresh("fs");
    const entries = [...ctx.encoded];
    const sampler = new RssSampler();
    try {
      const t0 = performance.now();
      const folders = new Set(entries.map(([key]) => path.dirname(path.join(dir, key))));
      for (const folder of folders) await fs.mkdir(folder, { recursive: true });
      await bounded(entries, ctx.fsConcurrency, ([key, bytes]) => fs.writeFile(path.join(dir, key), bytes));
      const writeMs = since(t0);
      const t1 = performance.now();
      const read = await bounded(entries, ctx.fsConcurrency, ([key]) => fs.readFile(path.join(dir, key)));
      const readMs = since(t1);
      const rss = sampler.stop();
      entries.forEach(([key, bytes], i) => assertSameValues(`plain fs ${key}`, read[i]!, bytes));
      return { writeMs, readMs, rss };
    } finally {
      sampler.stop();
      await ctx.temp.remove(dir);
    }
  },
};

const zarritaMemory: Variant = {
  id: "zarrita-map",
  label: "zarrita -> in-memory Map",
  writeTimed: "zarr.set into a Map (zarrita's chunking+encoding, no I/O)",
  readTimed: "zarr.get from that Map",
  async run(ctx) {
    const w = ctx.workload;
    const sampler = new RssSampler();
    try {
      const store = new MemoryStore();
      const arr = await writeThroughZarrita(store, w);
      const t0 = performance.now();
      await setAll(arr, w);
      const writeMs = since(t0);
      const array = await openV2(store);
      const t1 = performance.now();
      const got = await zarr.get(array, null);
      const readMs = since(t1);
      const rss = sampler.stop();
      assertSameValues(this.label, got.data, w.data);
      return { writeMs, readMs, rss };
    } finally {
      sampler.stop();
    }
  },
};

export const NODE_VARIANTS: Variant[] = [h5nestVariant(true), h5nestVariant(false), plainFs, zarritaMemory];
