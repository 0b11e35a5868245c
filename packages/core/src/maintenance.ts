/**
 * Long jobs over a whole store, streamed: consolidate (raw chunk files into
 * their shards), compact (rewrite shards that keep dead space), verify and
 * info. Every change goes through the store's shard owners, so these jobs are
 * safe beside this process's own writes.
 */
import { existsSync } from "node:fs";
import fs from "node:fs/promises";
import type { JobProgress } from "@h5nest/coordinator";
import { CorruptShardError, type CommitResult, type ShardReport } from "@h5nest/workers";
import { type ArrayCatalog, readJson } from "./arrays.js";
import { InvalidKeyError } from "./errors.js";
import { canWriteToShard, type Layout } from "./layout.js";
import { walkFiles } from "./walk.js";

/** What the jobs need from a store (see H5NestedStore). */
export interface StoreInternals {
  layout: Layout;
  arrays: ArrayCatalog;
  concurrency: number;
  /** Folds the raw chunk files waiting for a shard into it, as its owner (nothing when there are none). */
  fold(shardPath: string): Promise<CommitResult>;
  /** Rewrites a shard (keeping only live datasets, folding raw files), as its owner. */
  rewrite(shardPath: string): Promise<CommitResult>;
  /** Deletes a leftover temporary file, as the owner of the file it was meant to become. */
  sweep(file: string): Promise<void>;
  inspect(shardPath: string, readData: boolean): Promise<ShardReport>;
}

/**
 * HDF5 bytes a shard we write needs beyond its data: about 2 KiB plus ~330
 * bytes a dataset (measured), and ~4 KiB more once a group holds more than 8
 * links (dense link storage). Generous on purpose: overestimating only means
 * a shard is rewritten a little later.
 */
export function compactedSize(report: ShardReport): number {
  if (report.compactedBytes !== undefined) return report.compactedBytes;
  return report.liveBytes + 2048 + 400 * report.datasets + (report.datasets > 8 ? 4096 : 0);
}

export interface ShardError {
  file: string;
  code: string;
  message: string;
}

export interface ConsolidateProgress {
  shard: string;
  /** Raw chunk files moved into this shard. */
  chunks: number;
  bytes: number;
  /** Size of the shard after the commit. */
  shardBytes: number;
}

export interface ConsolidateOptions {
  signal?: AbortSignal;
  onProgress?: (progress: ConsolidateProgress) => void;
  /** With Redis leases: the whole job's figures, across its processes, about twice a second. */
  onJobProgress?: (job: JobProgress) => void;
}

/** A job shared by several processes (a store opened with distributedLock: { redis }), as one of them saw it at its end. */
export interface SharedJobReport extends JobProgress {
  runId: string;
  /** Chunks each process moved (compact: datasets rewritten), by hostname:pid:tag. */
  shares: Record<string, number>;
}

export interface ConsolidateSummary {
  shards: number;
  chunks: number;
  bytes: number;
  /** Leftover `.partial` files removed. */
  swept: number;
  /** Shards skipped because they could not be read; their raw files stay. */
  errors: ShardError[];
  /** The error that stopped the job (a full disk, say), if any. */
  fatal: Error | null;
  /** True when the signal stopped the job before the end. */
  interrupted: boolean;
  /** The whole job, when shared through Redis. */
  job?: SharedJobReport;
}

/** Runs `job` for each item with at most `limit` in flight; stops taking items once `stop()` is true. */
async function forEachBounded<T>(items: AsyncIterable<T>, limit: number, stop: () => boolean, job: (item: T) => Promise<void>): Promise<void> {
  const inFlight = new Set<Promise<void>>();
  for await (const item of items) {
    if (stop()) break;
    const running = job(item).finally(() => inFlight.delete(running));
    inFlight.add(running);
    while (inFlight.size >= limit) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
}

export function describeError(file: string, error: unknown): ShardError {
  const e = error as { code?: unknown; message?: unknown };
  return { file, code: typeof e.code === "string" ? e.code : "UNKNOWN", message: String(e.message ?? error) };
}

/** True when `folder` holds the raw chunk files of a shard that consolidation may write. */
export async function isRawFolder(store: StoreInternals, folder: string): Promise<boolean> {
  const { layout } = store;
  const rel = layout.keyOfFile(folder);
  if (rel === "" || rel.startsWith("..")) return false;
  let location;
  try {
    location = layout.locate(`${rel}/${Array(layout.depth - 1).fill("0").join("/")}`);
  } catch (error) {
    if (error instanceof InvalidKeyError) return false;
    throw error;
  }
  if (location.kind !== "chunk" || location.shard?.path !== folder + layout.ext) return false;
  return canWriteToShard(location, await store.arrays.arrayOf(location.key), layout.depth);
}

/**
 * Raw folders of shardable arrays (not descended into) and leftover
 * temporary files, in the store's own tree: symbolic links are not followed
 * (see shardFiles).
 */
async function* consolidationWork(store: StoreInternals): AsyncGenerator<{ shard: string } | { temp: string }> {
  const enter = async (folder: string) => !(await isRawFolder(store, folder));
  for await (const file of walkFiles(store.layout, { enter })) {
    if (file.kind === "folder") yield { shard: file.path + store.layout.ext };
    else if (file.kind === "temp") yield { temp: file.path };
  }
}

/** Counts the raw chunk files consolidation would move (a streaming pre-pass for progress and ETA). */
export async function countConsolidation(store: StoreInternals, signal?: AbortSignal): Promise<{ chunks: number; bytes: number }> {
  let chunks = 0;
  let bytes = 0;
  const enter = async (folder: string) => !(await isRawFolder(store, folder));
  for await (const entry of walkFiles(store.layout, { enter })) {
    if (signal?.aborted) break;
    if (entry.kind !== "folder") continue;
    for await (const file of walkFiles(store.layout, { folder: entry.path })) {
      if (file.kind !== "chunk") continue;
      chunks += 1;
      const size = (await fs.stat(file.path).catch(() => null))?.size ?? 0;
      bytes += size;
    }
  }
  return { chunks, bytes };
}

function isFatal(error: unknown): boolean {
  return !(error instanceof CorruptShardError);
}

/** Sweeps a leftover temporary file as its owner, counting it in `summary` once gone (a live one is left alone). */
export async function sweepInto(store: StoreInternals, file: string, summary: Pick<ConsolidateSummary, "swept" | "errors">): Promise<void> {
  await store.sweep(file).then(
    () => void (summary.swept += existsSync(file) ? 0 : 1),
    (error: unknown) => void summary.errors.push(describeError(file, error)),
  );
}

/**
 * Folds the raw chunk files waiting for `shard` into it, adding to
 * `summary`. Returns what it moved, or null when there was nothing (an empty
 * raw folder, or raw files of another owner).
 */
export async function foldShard(
  store: StoreInternals,
  shard: string,
  summary: ConsolidateSummary,
  options: ConsolidateOptions,
): Promise<{ chunks: number; bytes: number } | null> {
  const result = await store.fold(shard);
  summary.swept += result.swept;
  if (result.folded === 0) return null;
  summary.shards += 1;
  summary.chunks += result.folded;
  summary.bytes += result.foldedBytes;
  options.onProgress?.({ shard, chunks: result.folded, bytes: result.foldedBytes, shardBytes: result.shardBytes });
  return { chunks: result.folded, bytes: result.foldedBytes };
}

export async function consolidate(store: StoreInternals, options: ConsolidateOptions = {}): Promise<ConsolidateSummary> {
  const summary: ConsolidateSummary = { shards: 0, chunks: 0, bytes: 0, swept: 0, errors: [], fatal: null, interrupted: false };
  const stop = () => summary.fatal !== null || (options.signal?.aborted ?? false);
  await forEachBounded(consolidationWork(store), store.concurrency * 2, stop, async (work) => {
    if ("temp" in work) {
      await sweepInto(store, work.temp, summary);
      return;
    }
    try {
      await foldShard(store, work.shard, summary, options);
    } catch (error) {
      if (isFatal(error)) summary.fatal ??= error as Error;
      else summary.errors.push(describeError(work.shard, error));
    }
  });
  summary.interrupted = summary.fatal === null && (options.signal?.aborted ?? false);
  return summary;
}

export interface CompactOptions {
  /** Rewrite shards whose reclaimable bytes are at least this fraction of their size (default 0.2). */
  minWaste?: number;
  signal?: AbortSignal;
  onProgress?: (progress: { shard: string; before: number; after: number }) => void;
  /** With Redis leases: the whole job's figures, across its processes. */
  onJobProgress?: (job: JobProgress) => void;
}

export interface CompactSummary {
  shardsSeen: number;
  shardsRewritten: number;
  bytesBefore: number;
  bytesAfter: number;
  errors: ShardError[];
  fatal: Error | null;
  interrupted: boolean;
  /** The whole job, when shared through Redis. */
  job?: SharedJobReport;
}

/**
 * Every shard file. Jobs that only read (verify) follow symbolic links, as
 * keys() does; jobs that rewrite (compact, consolidate) do not: a link may
 * lead to a read-only disk or to another store's files, and they change only
 * the store's own tree.
 */
async function* shardFiles(store: StoreInternals, followLinks: boolean): AsyncGenerator<string> {
  for await (const file of walkFiles(store.layout, { followLinks })) if (file.kind === "shard") yield file.path;
}

/**
 * Inspects one shard and rewrites it when its reclaimable bytes reach
 * `minWaste` of its size, adding to `summary`. Returns the datasets kept and
 * the bytes freed by a rewrite, or null when the shard was left as it is.
 */
export async function compactShard(
  store: StoreInternals,
  shard: string,
  minWaste: number,
  summary: CompactSummary,
  options: CompactOptions,
): Promise<{ datasets: number; freed: number } | null> {
  const report = await store.inspect(shard, false);
  summary.shardsSeen += 1;
  summary.bytesBefore += report.fileBytes;
  if (report.fileBytes - compactedSize(report) < minWaste * report.fileBytes) {
    summary.bytesAfter += report.fileBytes;
    return null;
  }
  const result = await store.rewrite(shard);
  summary.shardsRewritten += 1;
  summary.bytesAfter += result.shardBytes;
  options.onProgress?.({ shard, before: report.fileBytes, after: result.shardBytes });
  return { datasets: report.datasets, freed: report.fileBytes - result.shardBytes };
}

export async function compact(store: StoreInternals, options: CompactOptions = {}): Promise<CompactSummary> {
  const minWaste = options.minWaste ?? 0.2;
  const summary: CompactSummary = { shardsSeen: 0, shardsRewritten: 0, bytesBefore: 0, bytesAfter: 0, errors: [], fatal: null, interrupted: false };
  const stop = () => summary.fatal !== null || (options.signal?.aborted ?? false);
  await forEachBounded(shardFiles(store, false), store.concurrency * 2, stop, async (shard) => {
    try {
      await compactShard(store, shard, minWaste, summary, options);
    } catch (error) {
      if (isFatal(error)) summary.fatal ??= error as Error;
      else summary.errors.push(describeError(shard, error));
    }
  });
  summary.interrupted = summary.fatal === null && (options.signal?.aborted ?? false);
  return summary;
}

export interface VerifySummary {
  shards: number;
  datasets: number;
  bytes: number;
  corrupt: ShardError[];
}

export interface VerifyOptions {
  signal?: AbortSignal;
  onShard?: (file: string, error: ShardError | null) => void;
}

/** Opens every shard and reads every dataset in full, streaming. */
export async function verify(store: StoreInternals, options: VerifyOptions = {}): Promise<VerifySummary> {
  const summary: VerifySummary = { shards: 0, datasets: 0, bytes: 0, corrupt: [] };
  await forEachBounded(shardFiles(store, true), store.concurrency * 2, () => options.signal?.aborted ?? false, async (shard) => {
    summary.shards += 1;
    try {
      const report = await store.inspect(shard, true);
      summary.datasets += report.datasets;
      summary.bytes += report.liveBytes;
      options.onShard?.(shard, null);
    } catch (error) {
      const described = describeError(shard, error);
      summary.corrupt.push(described);
      options.onShard?.(shard, described);
    }
  });
  return summary;
}

export interface ArraySummary {
  path: string;
  zarrFormat: 2 | 3;
  shape: number[];
  chunks: number[];
  dtype: string;
  /** False when its chunks stay raw files (and why, in `note`). */
  sharded: boolean;
  note?: string;
}

export interface StoreInfo {
  arrays: ArraySummary[];
  metadataFiles: number;
  rawChunkFiles: number;
  rawChunkBytes: number;
  shards: number;
  shardBytes: number;
  datasets: number;
  /** Bytes a rewrite of every shard would free (HDF5 keeps the space of replaced datasets). */
  reclaimableBytes: number;
  tempFiles: number;
  unreadableShards: ShardError[];
}

async function describeArray(store: StoreInternals, file: string, name: string): Promise<ArraySummary | null> {
  const meta = await readJson(file);
  if (!meta) return null;
  const prefix = store.layout.keyOfFile(file).split("/").slice(0, -1).join("/");
  let summary: ArraySummary;
  if (name === ".zarray" && Array.isArray(meta.shape)) {
    summary = { path: prefix, zarrFormat: 2, shape: meta.shape as number[], chunks: (meta.chunks as number[]) ?? [], dtype: String(meta.dtype), sharded: false };
  } else if (name === "zarr.json" && meta.node_type === "array" && Array.isArray(meta.shape)) {
    const grid = meta.chunk_grid as { configuration?: { chunk_shape?: number[] } } | undefined;
    summary = { path: prefix, zarrFormat: 3, shape: meta.shape as number[], chunks: grid?.configuration?.chunk_shape ?? [], dtype: String(meta.data_type), sharded: false };
  } else {
    return null;
  }
  const array = await store.arrays.arrayOf(`${prefix ? `${prefix}/` : ""}0`);
  if (!array || array.prefix !== prefix) return { ...summary, note: "unreadable metadata" };
  let location;
  try {
    const probe = [...(prefix ? [prefix] : []), ...array.chunkKeyPrefix, ...summary.shape.map(() => "0")].join("/");
    location = store.layout.locate(probe);
  } catch {
    return { ...summary, note: "its path cannot hold chunk keys" };
  }
  if (canWriteToShard(location, array, store.layout.depth)) return { ...summary, sharded: true };
  const note = !array.nested
    ? "flat chunk keys (dimension separator '.'): raw files"
    : location.key.split("/").some((s) => s.includes("."))
      ? "a path segment holds a '.': raw files (the Python store reads those as files only)"
      : `too few dimensions for depth ${store.layout.depth}: raw files`;
  return { ...summary, note };
}

/** A chunk key's last segment in the "." separator form: digits joined by dots. */
const FLAT_CHUNK_NAME = /^\d+(\.\d+)+$/;

/** Streams the tree once, through symbolic links as keys() does, and inspects every shard (metadata only). */
export async function info(store: StoreInternals, options: { signal?: AbortSignal } = {}): Promise<StoreInfo> {
  const result: StoreInfo = {
    arrays: [],
    metadataFiles: 0,
    rawChunkFiles: 0,
    rawChunkBytes: 0,
    shards: 0,
    shardBytes: 0,
    datasets: 0,
    reclaimableBytes: 0,
    tempFiles: 0,
    unreadableShards: [],
  };
  await forEachBounded(walkFiles(store.layout, { followLinks: true }), store.concurrency * 2, () => options.signal?.aborted ?? false, async (file) => {
    if (file.kind === "temp") result.tempFiles += 1;
    else if (file.kind === "meta" && FLAT_CHUNK_NAME.test(file.name)) {
      // zarr-python's default DirectoryStore keys ("0.0.0"): raw chunk files that stay raw.
      result.rawChunkFiles += 1;
      const size = (await fs.stat(file.path).catch(() => null))?.size ?? 0; // not `+= await`: jobs interleave
      result.rawChunkBytes += size;
    } else if (file.kind === "meta") {
      result.metadataFiles += 1;
      const array = await describeArray(store, file.path, file.name);
      if (array) result.arrays.push(array);
    } else if (file.kind === "chunk") {
      result.rawChunkFiles += 1;
      const size = (await fs.stat(file.path).catch(() => null))?.size ?? 0; // not `+= await`: jobs interleave
      result.rawChunkBytes += size;
    } else if (file.kind === "shard") {
      result.shards += 1;
      try {
        const report = await store.inspect(file.path, false);
        result.shardBytes += report.fileBytes;
        result.datasets += report.datasets;
        result.reclaimableBytes += Math.max(0, report.fileBytes - compactedSize(report));
      } catch (error) {
        const size = (await fs.stat(file.path).catch(() => null))?.size ?? 0;
        result.shardBytes += size;
        result.unreadableShards.push(describeError(file.path, error));
      }
    }
  });
  result.arrays.sort((a, b) => a.path.localeCompare(b.path));
  return result;
}
