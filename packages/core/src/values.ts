/**
 * Where the current bytes of a key are, with the identity of the file that
 * holds them: a raw file (opened), a byte range of a shard that the index
 * places, or a dataset only h5wasm can read. `h5nest serve` (ETags, ranges,
 * streaming) and `h5nest refs` (kerchunk byte ranges) both need more than
 * `store.get` gives: the size and the file before reading. Precedence is the
 * store's: the raw file first, then the shard (docs/format.md section 5).
 */
import fs from "node:fs";
import { type IndexedShard, IndexedShardCache, isPlaced } from "@h5nest/workers";
import type { Layout, Location } from "./layout.js";

export type StoredValue =
  /** A raw file (metadata or chunk), open: the caller owns `fd` and closes it. */
  | { kind: "file"; path: string; fd: number; size: number; identity: string }
  /** `size` bytes at `offset` of a shard file, placed by the shard index. */
  | { kind: "range"; shard: IndexedShard; offset: number; size: number; identity: string }
  /** A dataset the index cannot place (chunked, filtered, ...): only h5wasm reads it. */
  | { kind: "unplaced"; shardPath: string; dataset: string; reason: string; identity: string };

function identityOf(stat: fs.BigIntStats): string {
  return `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeNs}`;
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR" || code === "ENAMETOOLONG";
}

/** Finds values; keeps up to `cacheSize` shards indexed and open (re-indexed when a shard's file changes). */
export class ValueLocator {
  private readonly shards: IndexedShardCache;

  constructor(
    readonly layout: Layout,
    cacheSize = 64,
  ) {
    this.shards = new IndexedShardCache(cacheSize);
  }

  /** The file and dataset of `key`. Throws InvalidKeyError for a key that could leave the store. */
  locate(key: string): Location {
    return this.layout.locate(key);
  }

  /**
   * The current value of `location`, or null when there is none. Synchronous:
   * a descriptor handed out here is never closed by another task before the
   * caller has used it (shard descriptors belong to the cache; read them
   * before the next await).
   */
  open(location: Location): StoredValue | null {
    const raw = openRawFile(location.rawPath);
    if (raw) return raw;
    if (location.kind === "meta" || !location.shard) return null;
    return this.inShard(location.shard.path, location.shard.dataset);
  }

  /** The dataset `dataset` of the shard at `shardPath`, or null. Throws CorruptShardError. */
  inShard(shardPath: string, dataset: string): StoredValue | null {
    const shard = this.shards.get(shardPath);
    if (!shard) return null;
    if (!shard.index) return { kind: "unplaced", shardPath, dataset, reason: shard.unsupported ?? "not decoded", identity: `${shard.identity}/${dataset}` };
    const place = shard.index.place(dataset);
    if (place === undefined) return null;
    if (!isPlaced(place)) return { kind: "unplaced", shardPath, dataset, reason: place.unplaced, identity: `${shard.identity}/${dataset}` };
    return { kind: "range", shard, offset: place.offset, size: place.length, identity: `${shard.identity}@${place.offset}+${place.length}` };
  }

  /** Dataset names of a shard from its index; null when the index cannot decode it; [] when there is no shard. */
  datasetsOf(shardPath: string): string[] | null {
    const shard = this.shards.get(shardPath);
    if (!shard) return [];
    return shard.index ? [...shard.index.datasets.keys()] : null;
  }

  close(): void {
    this.shards.close();
  }
}

/** A regular file opened for reading, or null when there is none (missing, a folder, a path through a file). */
function openRawFile(file: string): StoredValue | null {
  // Most keys of a consolidated store have no raw file: a stat that does not
  // throw costs far less than an open that fails (Node builds an Error for it).
  try {
    if (!fs.statSync(file, { throwIfNoEntry: false })?.isFile()) return null;
  } catch (error) {
    if (isMissing(error)) return null;
    throw error;
  }
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO at a key's path must not hang the server (it is then no regular file: null).
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (error) {
    if (isMissing(error)) return null;
    throw error;
  }
  try {
    const stat = fs.fstatSync(fd, { bigint: true });
    if (stat.isFile()) return { kind: "file", path: file, fd, size: Number(stat.size), identity: identityOf(stat) };
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
  fs.closeSync(fd);
  return null;
}

/** Reads `length` bytes at `position` of `fd` into a fresh buffer; fewer when the file ends first. */
export function readAt(fd: number, position: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, out, done, length - done, position + done);
    if (n === 0) return out.subarray(0, done);
    done += n;
  }
  return out;
}
