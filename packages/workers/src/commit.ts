/**
 * The one place where a shard changes. A commit never edits a live shard:
 * it writes `<shard>.<hex>.partial` holding the kept datasets plus the new
 * ones, closes it, renames it over the shard, and only then removes the raw
 * files it absorbed (if they are still the files it read).
 */
import fs from "node:fs";
import path from "node:path";
import { ChunkTooLargeError, CorruptShardError, LeaseExpiredError, WriteFailedError, writeFailed } from "./errors.js";
import {
  type FileIdentity,
  fsyncPath,
  identityOf,
  isDeadPartial,
  partialName,
  removeEmptyFolders,
  removeEmptyTree,
  removeFile,
  sameIdentity,
  statOrNull,
  writeFileAtomic,
} from "./files.js";
import { ShardFile } from "./hdf5.js";
import { type ShardSource, writeShardFile } from "./shard-file.js";
import { MAX_DATASET_BYTES } from "./limits.js";
import { closeIndexed, type IndexedShard, isPlaced, openIndexed } from "./indexed-shards.js";
import { evictShard, openShardCached } from "./read.js";

export interface ChunkPut {
  dataset: string;
  rawPath: string;
  bytes: Uint8Array;
}

export interface ChunkRef {
  dataset: string;
  rawPath: string;
}

export interface CommitRequest {
  /** Absolute path of the shard (for a raw-only commit: the owner's name, not touched). */
  shardPath: string;
  /** "shard": rewrite the shard; "raw": write puts as raw files, unlink deleted raw files. */
  target: "shard" | "raw";
  /** Each dataset appears at most once in puts and deletes together. */
  puts: ChunkPut[];
  deletes: ChunkRef[];
  /** Raw chunk files of this shard to absorb into it (target "shard" only). */
  fold: ChunkRef[];
  /** Leftover `.partial` files of this owner to delete (it owns them, so none is in use). */
  sweep: string[];
  /** The store's folder: nothing outside it (through a symbolic link) is ever removed. */
  storeRoot: string;
  /** The folder holding this shard's raw chunk files: emptied folders below it are removed. */
  rawFolder: string | null;
  /** Also remove every empty folder below rawFolder (folds: leftovers of an interrupted one). */
  pruneRawFolder: boolean;
  fsync: boolean;
  /**
   * For target "raw" beside an existing shard: first check that the shard
   * opens, so that a write is never accepted for a shard that can't be folded.
   */
  verifyShard: boolean;
  /** Grant number (or fencing token) from the coordinator, for the ownership trace. */
  lease: number;
  /**
   * With distributed leases: the lease deadline (process.hrtime ns) in shared
   * memory, moved by renewals. Nothing is renamed or deleted once it passed.
   */
  deadline: BigInt64Array | null;
}

/** Throws LeaseExpiredError when the writer's lease has run out. */
function assertLease(request: CommitRequest, file: string): void {
  if (request.deadline && process.hrtime.bigint() >= Atomics.load(request.deadline, 0)) throw new LeaseExpiredError(file);
}

export interface CommitResult {
  target: "shard" | "raw";
  /** Datasets in the shard after the commit (0: the shard was removed or not written). */
  datasets: number;
  /** Size of the shard file after the commit. */
  shardBytes: number;
  /** Bytes written as raw files. */
  rawBytes: number;
  /** Raw files absorbed into the shard and removed. */
  folded: number;
  /** Bytes of those raw files. */
  foldedBytes: number;
  /** Stale temporary files removed. */
  swept: number;
}

export function commit(request: CommitRequest): CommitResult {
  return request.target === "raw" ? commitRaw(request) : commitShard(request);
}

/**
 * Whether this commit will read the old shard through h5wasm: only when the
 * index cannot place a dataset it keeps (or cannot decode the shard at all).
 * The worker loads HDF5 only then.
 */
export function commitNeedsHdf5(request: CommitRequest): boolean {
  if (request.target === "raw" && !request.verifyShard) return false;
  let shard: IndexedShard | null;
  try {
    shard = openIndexed(request.shardPath);
  } catch {
    return false; // the commit itself reports the damage
  }
  try {
    if (!shard) return false;
    if (!shard.index) return true;
    if (request.target === "raw") return false;
    const replaced = new Set([...request.puts.map((p) => p.dataset), ...request.deletes.map((d) => d.dataset)]);
    try {
      for (const [name, place] of shard.index.datasets) if (!isPlaced(place) && !replaced.has(name)) return true;
    } catch {
      return false; // the commit itself reports the damage
    }
    return false;
  } finally {
    closeIndexed(shard);
  }
}

function commitRaw(request: CommitRequest): CommitResult {
  // A write is never accepted beside a shard that could not be folded later.
  if (request.verifyShard) {
    const shard = openIndexed(request.shardPath);
    closeIndexed(shard);
    if (shard && !shard.index) openShardCached(request.shardPath);
  }
  let rawBytes = 0;
  const folders = new Set<string>();
  for (const put of request.puts) {
    const folder = path.dirname(put.rawPath);
    if (!folders.has(folder)) {
      try {
        fs.mkdirSync(folder, { recursive: true });
      } catch (error) {
        throw writeFailed(put.rawPath, error);
      }
      folders.add(folder);
    }
    writeFileAtomic(put.rawPath, put.bytes, request.fsync, () => assertLease(request, put.rawPath), false);
    rawBytes += put.bytes.byteLength;
  }
  if (request.deletes.length || request.sweep.length) assertLease(request, request.shardPath);
  for (const ref of request.deletes) removeFile(ref.rawPath);
  const swept = sweepDead(request.sweep);
  const removed = [...request.deletes.map((d) => d.rawPath), ...swept];
  if (request.rawFolder && removed.length > 0) removeEmptyFolders(removed, request.rawFolder, request.storeRoot);
  if (request.rawFolder && request.pruneRawFolder) removeEmptyTree(request.rawFolder, request.storeRoot);
  if (request.fsync) syncRemovals(removed);
  return { target: "raw", datasets: 0, shardBytes: 0, rawBytes, folded: 0, foldedBytes: 0, swept: swept.length };
}

function commitShard(request: CommitRequest): CommitResult {
  const { shardPath } = request;
  const replaced = new Set<string>();
  for (const put of request.puts) replaced.add(put.dataset);
  for (const ref of request.deletes) replaced.add(ref.dataset);

  const existing = openIndexed(shardPath);
  const partial = partialName(shardPath);
  const absorbed: { rawPath: string; identity: FileIdentity }[] = [];
  let foldedBytes = 0;
  let count = 0;
  try {
    const sources: ShardSource[] = [];
    const taken = new Set<string>();
    for (const put of request.puts) {
      if (put.bytes.byteLength > MAX_DATASET_BYTES) throw new ChunkTooLargeError(`${shardPath}:${put.dataset}`, put.bytes.byteLength, MAX_DATASET_BYTES);
      sources.push({ name: put.dataset, length: put.bytes.byteLength, bytes: put.bytes });
      taken.add(put.dataset);
    }
    for (const ref of request.fold) {
      const stat = statOrNull(ref.rawPath);
      if (!stat?.isFile()) continue;
      // Absorbed raw files are removed after the rename, even when a newer
      // put replaced their dataset: otherwise they would shadow it.
      const identity = identityOf(stat);
      absorbed.push({ rawPath: ref.rawPath, identity });
      foldedBytes += stat.size;
      if (replaced.has(ref.dataset) || taken.has(ref.dataset)) continue;
      sources.push({ name: ref.dataset, length: stat.size, rawPath: ref.rawPath, identity });
      taken.add(ref.dataset);
    }
    if (existing) sources.push(...keptSources(existing, (dataset) => !replaced.has(dataset) && !taken.has(dataset)));
    count = sources.length;
    try {
      fs.mkdirSync(path.dirname(shardPath), { recursive: true });
    } catch (error) {
      throw writeFailed(partial, error);
    }
    if (count > 0) writeShardFile(partial, sources, existing, request.fsync);
    assertLease(request, shardPath);
    if (count === 0) removeFile(shardPath);
    else {
      fs.renameSync(partial, shardPath);
      if (request.fsync) fsyncPath(path.dirname(shardPath));
    }
  } catch (error) {
    fs.rmSync(partial, { force: true });
    if (error instanceof CorruptShardError || error instanceof WriteFailedError || error instanceof LeaseExpiredError) throw error;
    if (error instanceof ChunkTooLargeError) throw error;
    throw writeFailed(shardPath, error);
  } finally {
    closeIndexed(existing);
  }

  const removed: string[] = [];
  for (const { rawPath, identity } of absorbed) {
    const now = statOrNull(rawPath);
    if (now && sameIdentity(identityOf(now), identity)) {
      removeFile(rawPath);
      removed.push(rawPath);
    }
  }
  for (const ref of request.deletes) {
    removeFile(ref.rawPath);
    removed.push(ref.rawPath);
  }
  const swept = sweepDead(request.sweep);
  removed.push(...swept);
  if (request.rawFolder && removed.length > 0) removeEmptyFolders(removed, request.rawFolder, request.storeRoot);
  if (request.rawFolder && request.pruneRawFolder) removeEmptyTree(request.rawFolder, request.storeRoot);
  if (request.fsync) syncRemovals(removed);

  return {
    target: "shard",
    datasets: count,
    shardBytes: count === 0 ? 0 : fs.statSync(shardPath).size,
    rawBytes: 0,
    folded: absorbed.length,
    foldedBytes,
    swept: swept.length,
  };
}

/** Removes the temporary files that are provably dead (see isDeadPartial); returns those removed. */
function sweepDead(files: string[]): string[] {
  const removed: string[] = [];
  for (const file of files) {
    if (!isDeadPartial(file)) continue;
    removeFile(file);
    removed.push(file);
  }
  return removed;
}

/**
 * With `fsync: true`, an unlink is acknowledged only once it is durable:
 * otherwise a power cut can bring back an absorbed raw file (its old value
 * shadows the new shard) or a deleted key. For each removed file, fsyncs the
 * nearest folder above it that still exists: the file's own folder, or the
 * parent of the highest folder removed with it.
 */
function syncRemovals(removed: string[]): void {
  const synced = new Set<string>();
  for (const file of removed) {
    let folder = path.dirname(file);
    while (!synced.has(folder) && !statOrNull(folder) && path.dirname(folder) !== folder) folder = path.dirname(folder);
    if (synced.has(folder)) continue;
    synced.add(folder);
    try {
      fsyncPath(folder);
    } catch (error) {
      throw writeFailed(folder, error);
    }
  }
}

/**
 * Kept datasets of the old shard: byte ranges where the index places them;
 * read through h5wasm now for the rest (or for a shard the index cannot
 * decode), which is rare and one dataset at a time.
 */
function keptSources(shard: IndexedShard, keep: (dataset: string) => boolean): ShardSource[] {
  const sources: ShardSource[] = [];
  let h5: ShardFile | null = null;
  const viaHdf5 = (dataset: string) => {
    if (!h5) {
      evictShard(shard.path); // a cached handle would share (possibly stale) HDF5 state with this open
      h5 = ShardFile.open(shard.path);
    }
    const bytes = h5.read(dataset);
    if (bytes) sources.push({ name: dataset, length: bytes.byteLength, bytes });
  };
  try {
    if (!shard.index) {
      viaHdf5Names(shard.path).filter(keep).forEach(viaHdf5);
      return sources;
    }
    for (const [dataset, place] of shard.index.datasets) {
      if (!keep(dataset)) continue;
      if (isPlaced(place)) sources.push({ name: dataset, length: place.length, place });
      else viaHdf5(dataset);
    }
    return sources;
  } finally {
    (h5 as ShardFile | null)?.close();
  }
}

function viaHdf5Names(file: string): string[] {
  evictShard(file);
  const h5 = ShardFile.open(file);
  try {
    return h5.datasets();
  } finally {
    h5.close();
  }
}
