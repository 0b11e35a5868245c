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
  isMissing,
  partialName,
  removeEmptyFolders,
  removeEmptyTree,
  removeFile,
  sameIdentity,
  statOrNull,
  writeFileAtomic,
} from "./files.js";
import { ShardBuilder, ShardFile } from "./hdf5.js";
import { closeIndexed, type IndexedShard, isPlaced, openIndexed, type Placed, readPlaced } from "./indexed-shards.js";
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

function commitRaw(request: CommitRequest): CommitResult {
  if (request.verifyShard) openShardCached(request.shardPath);
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
  for (const file of request.sweep) removeFile(file);
  const removed = [...request.deletes.map((d) => d.rawPath), ...request.sweep];
  if (request.rawFolder && removed.length > 0) removeEmptyFolders(removed, request.rawFolder);
  if (request.rawFolder && request.pruneRawFolder) removeEmptyTree(request.rawFolder);
  return { target: "raw", datasets: 0, shardBytes: 0, rawBytes, folded: 0, foldedBytes: 0, swept: request.sweep.length };
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
  let builder: ShardBuilder | undefined;
  try {
    try {
      fs.mkdirSync(path.dirname(shardPath), { recursive: true });
      builder = new ShardBuilder(partial);
    } catch (error) {
      throw writeFailed(partial, error);
    }
    const written = new Set<string>();
    for (const put of request.puts) {
      builder.add(put.dataset, put.bytes);
      written.add(put.dataset);
    }
    for (const ref of request.fold) {
      const raw = readRaw(ref.rawPath);
      if (!raw) continue;
      // Absorbed raw files are removed after the rename, even when a newer
      // put replaced their dataset: otherwise they would shadow it.
      absorbed.push({ rawPath: ref.rawPath, identity: raw.identity });
      foldedBytes += raw.bytes.byteLength;
      if (replaced.has(ref.dataset) || written.has(ref.dataset)) continue;
      builder.add(ref.dataset, raw.bytes);
      written.add(ref.dataset);
    }
    if (existing) copyKept(existing, (dataset) => !replaced.has(dataset) && !written.has(dataset), (dataset, bytes) => builder!.add(dataset, bytes));
    builder.close();
    if (request.fsync) fsyncPath(partial);
    assertLease(request, shardPath);
    if (builder.count === 0) {
      fs.rmSync(partial, { force: true });
      removeFile(shardPath);
    } else {
      fs.renameSync(partial, shardPath);
      if (request.fsync) fsyncPath(path.dirname(shardPath));
    }
  } catch (error) {
    builder?.abandon();
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
  for (const file of [...request.deletes.map((d) => d.rawPath), ...request.sweep]) {
    removeFile(file);
    removed.push(file);
  }
  if (request.rawFolder && removed.length > 0) removeEmptyFolders(removed, request.rawFolder);
  if (request.rawFolder && request.pruneRawFolder) removeEmptyTree(request.rawFolder);

  const count = builder?.count ?? 0;
  return {
    target: "shard",
    datasets: count,
    shardBytes: count === 0 ? 0 : fs.statSync(shardPath).size,
    rawBytes: 0,
    folded: absorbed.length,
    foldedBytes,
    swept: request.sweep.length,
  };
}

/** Bytes of kept datasets read at a time: the commit never holds a whole shard. */
const COPY_BATCH_BYTES = 16 * 1024 * 1024;

/**
 * Copies the datasets of `shard` that `keep` accepts: by byte range where the
 * index places them, through h5wasm for the rest (or for a shard the index
 * cannot decode).
 */
function copyKept(shard: IndexedShard, keep: (dataset: string) => boolean, add: (dataset: string, bytes: Uint8Array) => void): void {
  let h5: ShardFile | null = null;
  const viaHdf5 = (dataset: string) => {
    if (!h5) {
      evictShard(shard.path); // a cached handle would share (possibly stale) HDF5 state with this open
      h5 = ShardFile.open(shard.path);
    }
    const bytes = h5.read(dataset);
    if (bytes) add(dataset, bytes);
  };
  try {
    if (!shard.index) {
      viaHdf5Names(shard.path).filter(keep).forEach(viaHdf5);
      return;
    }
    let batch: { dataset: string; place: Placed }[] = [];
    let batchBytes = 0;
    const flush = () => {
      const bytes = readPlaced(shard, batch.map((b) => b.place));
      batch.forEach((b, i) => add(b.dataset, bytes[i]!));
      batch = [];
      batchBytes = 0;
    };
    for (const [dataset, place] of shard.index.datasets) {
      if (!keep(dataset)) continue;
      if (!isPlaced(place)) {
        viaHdf5(dataset);
        continue;
      }
      if (batchBytes + place.length > COPY_BATCH_BYTES && batch.length > 0) flush();
      batch.push({ dataset, place });
      batchBytes += place.length;
    }
    if (batch.length > 0) flush();
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

function readRaw(rawPath: string): { bytes: Uint8Array; identity: FileIdentity } | null {
  let fd: number;
  try {
    fd = fs.openSync(rawPath, "r");
  } catch (error) {
    if (isMissing(error)) return null;
    throw error;
  }
  try {
    const identity = identityOf(fs.fstatSync(fd));
    const bytes = Buffer.allocUnsafe(identity.size);
    let offset = 0;
    while (offset < identity.size) {
      const n = fs.readSync(fd, bytes, offset, identity.size - offset, offset);
      if (n === 0) break;
      offset += n;
    }
    return { bytes: bytes.subarray(0, offset), identity };
  } finally {
    fs.closeSync(fd);
  }
}
