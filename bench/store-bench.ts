/**
 * Store-level benchmark (npm run bench -- --store; see bench/README.md): the
 * same encoded chunks through store.get/store.set of h5nest and of the stores
 * a user would pick instead, one table of workloads x operations x variants.
 * Rounds are interleaved (variant order rotated), figures are medians, ratios
 * are medians of per-round ratios. Values are checked outside the timings.
 */
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import FileSystemStore from "@zarrita/storage/fs";
import { createV2Array, H5NestedStore } from "h5nest";
import { describe, provenance, rebuiltSince } from "./provenance.js";
import { pythonStoreVariants } from "./python.js";
import { rotate, stat } from "./stats.js";
import { type StoreReport, summarizeStore } from "./store-report.js";
import { ARRAY_PATH, assertSameValues, chunkBytesOf, type Grid, MemoryStore, seededOrder, type TempRoot } from "./workloads.js";

/** What is timed (see store-report.ts for the wording). */
export type Op = "write" | "read" | "random" | "open";
export type Timings = Partial<Record<Op, number>>;

export interface StoreWorkload {
  id: string;
  label: string;
  grid: Grid;
  /** Keys read one at a time (awaited) in a seeded random order. */
  randomReads: number;
}

/** Both keep one shard per z-plane (arr/0/0/z.h5), consolidateDepth 3. */
export const STORE_WORKLOADS: StoreWorkload[] = [
  { id: "8k", label: "8 KiB x 4096", grid: { planes: 16, height: 1024, width: 1024, chunkHeight: 64, chunkWidth: 64 }, randomReads: 1024 },
  { id: "1m", label: "1 MiB x 256", grid: { planes: 16, height: 2048, width: 4096, chunkHeight: 512, chunkWidth: 1024 }, randomReads: 256 },
];

const OPEN_REPS = 3;

/** A workload's bytes, built once: chunk keys ("/arr/0/0/z/y/x"), values, metadata, read order. */
export interface Prepared {
  workload: StoreWorkload;
  keys: string[];
  chunks: Uint8Array[];
  meta: [string, Uint8Array][];
  /** Indices into keys: the random-read order; random[0] is the key of "open + first read". */
  random: number[];
  /** sha256 of every chunk in key order, to check that Python builds the same bytes. */
  digest: string;
}

export interface StoreContext {
  temp: TempRoot;
  workers: number | undefined;
  /** Fresh opens per round for "open + first read" (their median is the round's figure). */
  openReps: number;
}

export interface StoreVariant {
  id: string;
  label: string;
  /** Operations it measures, in table order; the others print as not applicable. */
  ops: Op[];
  run(p: Prepared, ctx: StoreContext): Promise<Timings>;
}

function since(start: number): number {
  return performance.now() - start;
}

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

export async function prepare(workload: StoreWorkload): Promise<Prepared> {
  const g = workload.grid;
  const keys: string[] = [];
  const chunks: Uint8Array[] = [];
  const hash = createHash("sha256");
  for (let z = 0; z < g.planes; z++) {
    for (let cy = 0; cy < g.height / g.chunkHeight; cy++) {
      for (let cx = 0; cx < g.width / g.chunkWidth; cx++) {
        keys.push(`/${ARRAY_PATH}/0/0/${z}/${cy}/${cx}`);
        chunks.push(chunkBytesOf(g, z, cy, cx));
        hash.update(chunks[chunks.length - 1]!);
      }
    }
  }
  const meta = new MemoryStore();
  await createV2Array(meta, ARRAY_PATH, {
    shape: [1, 1, g.planes, g.height, g.width],
    chunks: [1, 1, 1, g.chunkHeight, g.chunkWidth],
    dtype: "<u2",
    compressor: null,
    fillValue: 0,
  });
  const random = seededOrder(keys.length, 0x5eed).slice(0, workload.randomReads);
  return { workload, keys, chunks, meta: [...meta.map], random, digest: hash.digest("hex") };
}

interface KV {
  get(key: string): Promise<Uint8Array | undefined> | Uint8Array | undefined;
  set(key: string, value: Uint8Array): Promise<void>;
  flush?(): Promise<void>;
  close?(): Promise<void>;
}

function checkAll(label: string, p: Prepared, indices: number[], got: (Uint8Array | undefined)[]): void {
  indices.forEach((index, i) => {
    const bytes = got[i];
    if (!bytes) throw new Error(`${label}: ${p.keys[index]} read back as missing`);
    assertSameValues(`${label} ${p.keys[index]}`, bytes, p.chunks[index]!);
  });
}

/** Median over `reps` fresh opens of open + get(first key); the last store stays open. */
async function openAndFirstRead(label: string, p: Prepared, reps: number, open: () => Promise<KV>): Promise<{ ms: number; store: KV }> {
  const times: number[] = [];
  let store: KV | undefined;
  const first = p.random[0]!;
  for (let rep = 0; rep < reps; rep++) {
    await store?.close?.();
    const t = performance.now();
    store = await open();
    const got = await store.get(p.keys[first]!);
    times.push(since(t));
    checkAll(`${label} (open + first read)`, p, [first], [got]);
  }
  return { ms: stat(times)!.median, store: store! };
}

type Purpose = "write" | "read";

interface NodeStoreSpec {
  id: string;
  label: string;
  ops: Op[];
  /** Per batch: opens the variant's store for `purpose` (a fresh instance each call, where that means anything). */
  session(dir: string, ctx: StoreContext): (purpose: Purpose) => Promise<KV>;
  /** Checks on disk after the write (not timed). */
  check?(dir: string, p: Prepared): Promise<void>;
}

/**
 * One batch: write every chunk (all in flight; metadata first, untimed),
 * open + first read, then on that store read every chunk (all in flight),
 * then on another fresh store (opened untimed) the random keys one at a time.
 */
function nodeVariant(spec: NodeStoreSpec): StoreVariant {
  const { id, label, ops } = spec;
  return {
    id,
    label,
    ops,
    async run(p, ctx) {
      const dir = await ctx.temp.fresh(`${id}-${p.workload.id}`);
      try {
        const open = spec.session(dir, ctx);
        const ms: Timings = {};
        const writer = await open("write");
        for (const [key, bytes] of p.meta) await writer.set(key, bytes);
        let t = performance.now();
        await Promise.all(p.keys.map((key, i) => writer.set(key, p.chunks[i]!)));
        await writer.flush?.();
        ms.write = since(t);
        await writer.close?.();
        await spec.check?.(dir, p);

        let store: KV;
        if (ops.includes("open")) {
          const opened = await openAndFirstRead(label, p, ctx.openReps, () => open("read"));
          ms.open = opened.ms;
          store = opened.store;
        } else {
          store = await open("read");
        }
        try {
          t = performance.now();
          const got = await Promise.all(p.keys.map((key) => store.get(key)));
          ms.read = since(t);
          checkAll(label, p, p.keys.map((_, i) => i), got);
        } finally {
          await store.close?.();
        }

        store = await open("read"); // a fresh store: nothing cached by the read of every key
        try {
          const random: (Uint8Array | undefined)[] = [];
          t = performance.now();
          for (const i of p.random) random.push(await store.get(p.keys[i]!));
          ms.random = since(t);
          checkAll(`${label} (random)`, p, p.random, random);
        } finally {
          await store.close?.();
        }
        return ms;
      } finally {
        await ctx.temp.remove(dir);
      }
    },
  };
}

/** writeDirect must have left one .h5 shard per z-plane and nothing else in arr/0/0. */
async function expectShards(dir: string, p: Prepared): Promise<void> {
  const names = await fs.readdir(path.join(dir, ARRAY_PATH, "0", "0"));
  const shards = names.filter((n) => n.endsWith(".h5")).length;
  if (shards !== p.workload.grid.planes || names.length !== shards) {
    throw new Error(`h5nest: expected ${p.workload.grid.planes} shards in ${ARRAY_PATH}/0/0, found ${shards} among ${names.length} entries`);
  }
}

export const NODE_STORE_VARIANTS: StoreVariant[] = [
  nodeVariant({
    id: "h5nest",
    label: "h5nest (H5NestedStore)",
    ops: ["write", "read", "random", "open"],
    // Default options; a store that is only read (the "open + first read" stores) never starts its worker threads.
    session: (dir, ctx) => () => H5NestedStore.open(dir, ctx.workers ? { workers: ctx.workers } : {}),
    check: expectShards,
  }),
  nodeVariant({
    id: "fsstore",
    label: "zarrita FileSystemStore",
    ops: ["write", "read", "random", "open"],
    session: (dir) => async () => new FileSystemStore(dir) as KV,
  }),
  nodeVariant({
    id: "map",
    label: "Map (in memory)",
    ops: ["write", "read", "random"],
    session: () => {
      const store = new MemoryStore();
      return async () => store;
    },
  }),
];

export type StoreRounds = Map<string, Map<string, (Timings | string)[]>>;

export async function runStoreBench(temp: TempRoot, rounds: number, workers: number | undefined): Promise<StoreReport> {
  const code = provenance();
  const python = await pythonStoreVariants();
  const ctx: StoreContext = { temp, workers, openReps: OPEN_REPS };
  const notices = [...python.notices];
  for (const notice of notices) log(`\n*** NOTICE: ${notice} ***\n`);
  const variants = [...NODE_STORE_VARIANTS, ...python.variants];

  const results: StoreRounds = new Map();
  for (const workload of STORE_WORKLOADS) {
    const p = await prepare(workload);
    const byVariant = new Map<string, (Timings | string)[]>(variants.map((v) => [v.id, []]));
    results.set(workload.id, byVariant);
    log(`store benchmark ${workload.label}: warm-up (not counted): ${NODE_STORE_VARIANTS.map((v) => v.id).join(", ")}`);
    for (const v of NODE_STORE_VARIANTS) await v.run(p, ctx);
    for (let round = 0; round < rounds; round++) {
      const parts: string[] = [];
      for (const v of rotate(variants, round)) {
        let outcome: Timings | string;
        try {
          const ms = await v.run(p, ctx);
          outcome = ms;
          parts.push(`${v.id} ${Object.entries(ms).map(([op, value]) => `${op} ${value.toFixed(op.startsWith("open") ? 2 : 0)}`).join(" ")}`);
        } catch (error) {
          outcome = error instanceof Error ? error.message : String(error);
          parts.push(`${v.id} FAILED`);
          log(`*** store ${workload.id} ${v.id} failed in round ${round + 1}: ${outcome}`);
        }
        byVariant.get(v.id)![round] = outcome;
      }
      log(`store ${workload.id} round ${round + 1}/${rounds} (ms): ${parts.join("; ")}`);
    }
  }
  const rebuilt = rebuiltSince(code);
  if (rebuilt) notices.push(rebuilt);
  const config = { code: describe(code), commit: code.commit, rounds, workers: workers ?? "default", openReps: OPEN_REPS, node: process.version, tmpdir: temp.dir, pythonZarr: python.zarrVersion, h5StoreMeasured: python.h5StoreMeasured };
  return summarizeStore(STORE_WORKLOADS, variants, results, python.missing, config, notices, rebuilt !== null);
}
