/**
 * Shards opened through the index: a file descriptor and the dataset places,
 * cached by file identity (device, inode, size, mtime in ns), so that a shard
 * replaced by a commit, or edited in place by h5py, is re-indexed before its
 * next read. Used on the main thread for reads and in workers for commits.
 */
import fs from "node:fs";
import { CorruptShardError } from "./errors.js";
import { type DatasetPlace, type LazyShardIndex, openShardIndex } from "./hdf5/shard-index.js";

export interface IndexedShard {
  readonly path: string;
  readonly fd: number;
  /** Null when the shard uses structures the index does not decode: read it through h5wasm. */
  readonly index: LazyShardIndex | null;
  readonly unsupported: string | null;
  readonly identity: string;
}

/** A placed dataset's range. */
export type Placed = { offset: number; length: number };

export function isPlaced(place: DatasetPlace | undefined): place is Placed {
  return place !== undefined && !("unplaced" in place);
}

function identityOf(stat: fs.BigIntStats): string {
  return `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeNs}`;
}

/** Opens and indexes `file` once, uncached (commits: the file is about to be replaced). */
export function openIndexed(file: string): IndexedShard | null {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    if (code === "EISDIR") throw new CorruptShardError(file, "not a regular file");
    throw error;
  }
  try {
    const stat = fs.fstatSync(fd, { bigint: true });
    if (!stat.isFile()) throw new CorruptShardError(file, "not a regular file");
    const outcome = openShardIndex(fd, Number(stat.size), file);
    return {
      path: file,
      fd,
      index: outcome.ok ? outcome.index : null,
      unsupported: outcome.ok ? null : outcome.reason,
      identity: identityOf(stat),
    };
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
}

export function closeIndexed(shard: IndexedShard | null): void {
  if (shard) fs.closeSync(shard.fd);
}

/** Open, indexed shards of one thread, least recently used first. */
export class IndexedShardCache {
  private readonly shards = new Map<string, IndexedShard>();

  constructor(private readonly limit = 64) {}

  /** The current version of the shard at `file`; null when there is none. */
  get(file: string): IndexedShard | null {
    const stat = fs.statSync(file, { bigint: true, throwIfNoEntry: false });
    const cached = this.shards.get(file);
    if (cached) this.shards.delete(file);
    if (cached && stat && cached.identity === identityOf(stat)) {
      this.shards.set(file, cached); // most recently used goes last
      return cached;
    }
    if (cached) fs.closeSync(cached.fd);
    if (!stat) return null;
    const shard = openIndexed(file);
    if (!shard) return null;
    // Cache only what we indexed as the version we stat'ed; a file replaced
    // in between is read once (its descriptor still sees one whole version).
    if (shard.identity === identityOf(stat)) {
      this.shards.set(file, shard);
      while (this.shards.size > this.limit) {
        const [oldest, entry] = this.shards.entries().next().value as [string, IndexedShard];
        this.shards.delete(oldest);
        fs.closeSync(entry.fd);
      }
    } else {
      queueMicrotask(() => fs.closeSync(shard.fd));
    }
    return shard;
  }

  /** Drops the cached entry for `file` (its descriptor is closed). */
  evict(file: string): void {
    const cached = this.shards.get(file);
    if (!cached) return;
    this.shards.delete(file);
    fs.closeSync(cached.fd);
  }

  close(): void {
    for (const shard of this.shards.values()) fs.closeSync(shard.fd);
    this.shards.clear();
  }
}

/** Gaps up to this size between wanted ranges are read and dropped rather than split into another read. */
const MAX_GAP = 16 * 1024;
/** iovec count per readv (Linux IOV_MAX is 1024). */
const MAX_PARTS = 1000;
const MAX_RUN_BYTES = 64 * 1024 * 1024;

/**
 * Reads each range into a buffer of its own (no view into shared memory),
 * coalescing ranges that lie next to each other in the file into one readv.
 */
export function readPlaced(shard: IndexedShard, ranges: Placed[]): Uint8Array[] {
  const out: Uint8Array[] = ranges.map((r) => new Uint8Array(Buffer.allocUnsafeSlow(r.length).buffer, 0, r.length));
  const order = ranges.map((_, i) => i).filter((i) => ranges[i]!.length > 0);
  order.sort((a, b) => ranges[a]!.offset - ranges[b]!.offset);
  let i = 0;
  while (i < order.length) {
    const first = ranges[order[i]!]!;
    const parts: Uint8Array[] = [out[order[i]!]!];
    let end = first.offset + first.length;
    let bytes = first.length;
    let j = i + 1;
    for (; j < order.length && parts.length < MAX_PARTS - 1; j++) {
      const next = ranges[order[j]!]!;
      if (next.offset < end || next.offset - end > MAX_GAP || bytes + next.length > MAX_RUN_BYTES) break;
      if (next.offset > end) parts.push(new Uint8Array(next.offset - end));
      parts.push(out[order[j]!]!);
      bytes += next.offset - end + next.length;
      end = next.offset + next.length;
    }
    readFully(shard, parts, first.offset, bytes);
    i = j;
  }
  return out;
}

function readFully(shard: IndexedShard, parts: Uint8Array[], position: number, total: number): void {
  const done = fs.readvSync(shard.fd, parts, position);
  if (done === total) return;
  // A short readv (rare): finish part by part.
  let offset = 0;
  for (const part of parts) {
    const start = Math.max(0, done - offset);
    let filled = Math.min(part.length, start);
    while (filled < part.length) {
      const n = fs.readSync(shard.fd, part, filled, part.length - filled, position + offset + filled);
      if (n === 0) throw new CorruptShardError(shard.path, `the file ended at ${position + offset + filled}, inside a dataset`);
      filled += n;
    }
    offset += part.length;
  }
}
