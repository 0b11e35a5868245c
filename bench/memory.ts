/**
 * Memory benchmark (--memory): ingests a [1,1,P,1024,1024] uint16 array
 * (P=1024: 2 GiB, 262144 chunks of 8 KiB) into h5nest with writeDirect,
 * one z-plane per `await zarr.set(arr, [0,0,z,null,null], plane)`, and
 * reports the peak RSS and the rate. Memory should stay flat: the plane
 * buffer is reused and set() only resolves once its chunks are in a shard.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { createV2Array, H5NestedStore } from "h5nest";
import * as zarr from "zarrita";
import { describe, provenance, rebuiltSince } from "./provenance.js";
import { RssSampler, type RssReport } from "./rss.js";
import { formatTable, mib, num } from "./table.js";
import { ARRAY_PATH, assertSameValues, CHUNK_BYTES, CHUNK_EDGE, CHUNKS_PER_PLANE, fillValues, PLANE, type TempRoot } from "./workloads.js";

const MIN_FREE_BYTES = 6 * 2 ** 30;
const PLANE_ELEMENTS = PLANE * PLANE;

export interface MemoryReport {
  planes: number;
  inflight: number;
  workers: number;
  chunks: number;
  payloadBytes: number;
  /** Wall time of the ingest: open, create, every set, close. */
  wallMs: number;
  /** Of which: filling plane buffers with the deterministic values (main thread). */
  generateMs: number;
  closeMs: number;
  chunksPerSec: number;
  mbPerSec: number;
  rss: RssReport;
  /** RSS after every 1/8 of the planes (and at the end of close). */
  rssTrace: { planes: number; rssBytes: number }[];
  /** RSS once the store is closed (its worker threads gone). */
  rssAfterClose: number;
  shardFiles: number;
  diskBytes: number;
  verifiedPlanes: number[];
  code: string;
  /** Set when packages/*\/dist changed during the run. */
  rebuilt: string | null;
}

export type MemoryOutcome = { skipped: string } | MemoryReport;

export async function runMemoryBench(temp: TempRoot, planes: number, inflight: number, workers: number | undefined): Promise<MemoryOutcome> {
  const stats = await fs.statfs(temp.dir);
  const free = stats.bavail * stats.bsize;
  const needed = Math.max(MIN_FREE_BYTES, planes * PLANE_ELEMENTS * 2 * 3);
  if (free < needed) {
    return { skipped: `only ${(free / 2 ** 30).toFixed(1)} GiB free under ${temp.dir}, need ${(needed / 2 ** 30).toFixed(1)} GiB: memory benchmark skipped` };
  }
  const code = provenance();
  const dir = await temp.fresh("memory");
  try {
    const options = workers ? { workers } : {};
    const shape = [1, 1, planes, PLANE, PLANE];
    const buffers = Array.from({ length: inflight }, () => new Uint16Array(PLANE_ELEMENTS));
    const inFlight: Promise<void>[] = [];
    const rssTrace: { planes: number; rssBytes: number }[] = [];
    const traceEvery = Math.max(1, Math.floor(planes / 8));
    let generateMs = 0;

    const sampler = new RssSampler();
    const t0 = performance.now();
    const store = await H5NestedStore.open(dir, options);
    const arr = (await createV2Array(store, ARRAY_PATH, {
      shape,
      chunks: [1, 1, 1, CHUNK_EDGE, CHUNK_EDGE],
      dtype: "<u2",
      compressor: null,
      fillValue: 0,
    })) as unknown as zarr.Array<"uint16", zarr.Mutable>;
    for (let z = 0; z < planes; z++) {
      // Reuse buffer z % inflight only after the set that used it resolved.
      if (inFlight.length === inflight) await inFlight.shift();
      const buffer = buffers[z % inflight]!;
      const g = performance.now();
      fillValues(buffer, z * PLANE_ELEMENTS);
      generateMs += performance.now() - g;
      // Slices, not the index z: zarrita treats an integer index as a partial
      // chunk write and would first read every chunk back.
      const region = [zarr.slice(0, 1), zarr.slice(0, 1), zarr.slice(z, z + 1), null, null];
      inFlight.push(zarr.set(arr, region, { data: buffer, shape: [1, 1, 1, PLANE, PLANE], stride: [PLANE * PLANE, PLANE * PLANE, PLANE * PLANE, PLANE, 1] }));
      if ((z + 1) % traceEvery === 0) rssTrace.push({ planes: z + 1, rssBytes: process.memoryUsage.rss() });
    }
    await Promise.all(inFlight);
    const tc = performance.now();
    await store.close();
    const closeMs = performance.now() - tc;
    const wallMs = performance.now() - t0;
    const rssAfterClose = process.memoryUsage.rss();
    const rss = sampler.stop();

    // Outside the timing: shard files, and a few planes read back.
    const folder = path.join(dir, ARRAY_PATH, "0", "0");
    const names = await fs.readdir(folder);
    const shardNames = names.filter((n) => n.endsWith(".h5"));
    let diskBytes = 0;
    for (const name of names) diskBytes += (await fs.stat(path.join(folder, name))).size;
    if (shardNames.length !== planes || names.length !== planes) {
      throw new Error(`expected ${planes} shard files in ${folder}, found ${shardNames.length} among ${names.length} entries`);
    }
    const verifiedPlanes = [...new Set([0, planes >> 1, planes - 1])];
    const reader = await H5NestedStore.open(dir, options);
    try {
      const array = await zarr.open.v2(zarr.root(reader).resolve(ARRAY_PATH), { kind: "array" });
      const want = new Uint16Array(PLANE_ELEMENTS);
      for (const z of verifiedPlanes) {
        const got = await zarr.get(array as zarr.Array<"uint16", zarr.Readable>, [0, 0, z, null, null]);
        fillValues(want, z * PLANE_ELEMENTS);
        assertSameValues(`memory benchmark plane ${z}`, got.data, want);
      }
    } finally {
      await reader.close();
    }

    const chunks = planes * CHUNKS_PER_PLANE;
    const ingestMs = wallMs - generateMs;
    return {
      planes,
      inflight,
      workers: store.options.workers,
      chunks,
      payloadBytes: chunks * CHUNK_BYTES,
      wallMs,
      generateMs,
      closeMs,
      chunksPerSec: chunks / (ingestMs / 1000),
      mbPerSec: (chunks * CHUNK_BYTES) / 1e6 / (ingestMs / 1000),
      rss,
      rssTrace,
      rssAfterClose,
      shardFiles: shardNames.length,
      diskBytes,
      verifiedPlanes,
      code: describe(code),
      rebuilt: rebuiltSince(code),
    };
  } finally {
    await temp.remove(dir);
  }
}

export function renderMemory(outcome: MemoryOutcome): string {
  if ("skipped" in outcome) return `*** NOTICE: ${outcome.skipped} ***`;
  const r = outcome;
  const out: string[] = [];
  out.push(
    `memory benchmark: h5nest writeDirect=true, ${r.planes} z-planes x 1024x1024 uint16 = ${(r.payloadBytes / 2 ** 30).toFixed(2)} GiB, ` +
      `${r.chunks} chunks of 8 KiB, one await zarr.set per plane (${r.inflight} in flight), workers=${r.workers}`,
  );
  out.push(r.code);
  if (r.rebuilt) out.push(`*** NOTICE: ${r.rebuilt} ***`);
  out.push("");
  out.push(
    formatTable(
      ["chunks/s", "MB/s", "wall s", "data gen s", "close ms", "peak RSS MiB", "RSS start MiB", "RSS growth MiB", "shards", "disk MiB"],
      [
        [
          num(r.chunksPerSec),
          num(r.mbPerSec),
          num(r.wallMs / 1000),
          num(r.generateMs / 1000),
          num(r.closeMs),
          mib(r.rss.peakBytes),
          mib(r.rss.startBytes),
          mib(r.rss.peakBytes - r.rss.startBytes),
          String(r.shardFiles),
          mib(r.diskBytes),
        ],
      ],
      Array(10).fill("right"),
    ),
  );
  out.push("");
  out.push(`RSS MiB after N planes: ${r.rssTrace.map((t) => `${t.planes}:${mib(t.rssBytes)}`).join("  ")}  after close: ${mib(r.rssAfterClose)}`);
  out.push(
    `peak RSS = max(20 ms samples ${mib(r.rss.sampledPeakBytes)} MiB, VmHWM ${r.rss.highWaterBytes == null ? "n/a" : `${mib(r.rss.highWaterBytes)} MiB`}); ` +
      `chunks/s and MB/s exclude data generation (wall - data gen); planes ${r.verifiedPlanes.join(", ")} read back and verified; folder removed.`,
  );
  out.push("single run on a noisy machine: the rate is indicative only; the RSS figures are the point.");
  return out.join("\n");
}
