/**
 * Chunk reads in a worker: raw file first, then the shard dataset, through
 * shard handles cached by file identity (a replaced shard is reopened).
 */
import { CorruptShardError, toWire, type WireError } from "./errors.js";
import { type FileIdentity, identityOf, readFileOrUndefined, sameIdentity, statOrNull } from "./files.js";
import { ShardFile } from "./hdf5.js";
import { closeIndexed, isPlaced, openIndexed, readPlaced } from "./indexed-shards.js";

export interface ReadItem {
  rawPath: string;
  /** Null when the key has no shard (a metadata key, or too few segments). */
  shardPath: string | null;
  dataset: string;
  /** The folder holding the shard's raw chunk files: when it is absent, no raw file is tried. */
  rawFolder: string | null;
}

/** Per item: the bytes, null when the key does not exist, or the error that stopped the read. */
export type ReadOutcome = Uint8Array | null | WireError;

const MAX_OPEN_SHARDS = 64;

interface CachedShard {
  file: ShardFile;
  identity: FileIdentity;
}

/** Open shard handles of this thread, least recently used first. */
const handles = new Map<string, CachedShard>();

/**
 * Reads a batch. All raw files are tried before any shard is checked: a
 * commit renames the new shard before it removes the raw files it absorbed,
 * so a reader that misses a raw file is sure to see that new shard.
 */
export function readChunks(items: ReadItem[]): ReadOutcome[] {
  const outcomes: ReadOutcome[] = new Array(items.length).fill(null);
  const byShard = new Map<string, number[]>();
  // A commit removes raw files (and emptied folders) only after its rename, so
  // a missing raw folder is as good a "no raw file" as a missing raw file.
  const folderPresent = new Map<string, boolean>();
  const mayHaveRaw = (item: ReadItem): boolean => {
    if (!item.rawFolder) return true;
    let present = folderPresent.get(item.rawFolder);
    if (present === undefined) {
      present = statOrNull(item.rawFolder) !== null;
      folderPresent.set(item.rawFolder, present);
    }
    return present;
  };
  items.forEach((item, index) => {
    try {
      const raw = mayHaveRaw(item) ? readFileOrUndefined(item.rawPath) : undefined;
      if (raw) outcomes[index] = raw;
      else if (item.shardPath) {
        const list = byShard.get(item.shardPath) ?? [];
        list.push(index);
        byShard.set(item.shardPath, list);
      }
    } catch (error) {
      outcomes[index] = toWire(error);
    }
  });
  for (const [shardPath, indexes] of byShard) {
    let shard: ShardFile | null;
    try {
      shard = openShardCached(shardPath);
    } catch (error) {
      for (const index of indexes) outcomes[index] = toWire(error);
      continue;
    }
    if (!shard) continue;
    for (const index of indexes) {
      try {
        outcomes[index] = shard.read(items[index]!.dataset) ?? null;
      } catch (error) {
        outcomes[index] = toWire(error);
      }
    }
  }
  return outcomes;
}

export interface ShardReport {
  file: string;
  fileBytes: number;
  datasets: number;
  /** Sum of the datasets' byte lengths. */
  liveBytes: number;
  /** Size of the shard once rewritten, when known exactly (from the index). */
  compactedBytes?: number;
}

/**
 * Opens a shard and measures it. With `readData`, every dataset is read in
 * full through h5wasm and, independently, through the shard index, and the
 * two must agree byte for byte: this is how `verify` finds damage that an
 * open misses, and how it checks the index against HDF5.
 */
export function inspectShard(shardPath: string, readData: boolean): ShardReport {
  const stat = statOrNull(shardPath);
  const shard = openShardCached(shardPath);
  if (!stat || !shard) throw new CorruptShardError(shardPath, "the file disappeared");
  let liveBytes = 0;
  const names = shard.datasets();
  if (!readData) {
    for (const name of names) liveBytes += shard.byteLength(name) ?? 0;
    return { file: shardPath, fileBytes: stat.size, datasets: names.length, liveBytes };
  }
  const indexed = openIndexed(shardPath);
  try {
    const places = indexed?.index?.datasets;
    if (indexed && places) {
      const listed = [...places.keys()].filter((name) => places.get(name) && !("unplaced" in places.get(name)!)).sort();
      const missing = listed.filter((name) => !shard.has(name));
      if (missing.length > 0) throw new CorruptShardError(shardPath, `the index lists ${missing[0]} but HDF5 does not`);
    }
    for (const name of names) {
      const bytes = shard.read(name);
      liveBytes += bytes?.byteLength ?? 0;
      const place = places?.get(name);
      if (!indexed || !places || !place || !isPlaced(place)) continue;
      const [viaIndex] = readPlaced(indexed, [place]);
      if (!bytes || !Buffer.from(viaIndex!).equals(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))) {
        throw new CorruptShardError(shardPath, `dataset ${name}: the shard index and HDF5 read different bytes`);
      }
    }
  } finally {
    closeIndexed(indexed);
  }
  return { file: shardPath, fileBytes: stat.size, datasets: names.length, liveBytes };
}

/** Dataset names of one shard (throws CorruptShardError). Empty when the shard is gone. */
export function listShard(shardPath: string): string[] {
  return openShardCached(shardPath)?.datasets() ?? [];
}

/** The shard at `shardPath` through this thread's handle cache; null when there is no file. */
export function openShardCached(shardPath: string): ShardFile | null {
  const stat = statOrNull(shardPath);
  const cached = handles.get(shardPath);
  if (!stat) {
    if (cached) forget(shardPath, cached);
    return null;
  }
  const identity = identityOf(stat);
  if (cached) {
    handles.delete(shardPath);
    if (sameIdentity(cached.identity, identity)) {
      handles.set(shardPath, cached); // most recently used goes last
      return cached.file;
    }
    cached.file.close();
  }
  if (!stat.isFile()) throw new CorruptShardError(shardPath, "not a regular file");
  const file = ShardFile.open(shardPath);
  // The path may have been replaced between stat and open: cache only a
  // handle whose identity we are sure of; otherwise use it once.
  const after = statOrNull(shardPath);
  if (after && sameIdentity(identityOf(after), identity)) {
    handles.set(shardPath, { file, identity });
    while (handles.size > MAX_OPEN_SHARDS) {
      const [oldest, entry] = handles.entries().next().value as [string, CachedShard];
      forget(oldest, entry);
    }
  } else {
    queueMicrotask(() => file.close());
  }
  return file;
}

/**
 * Closes this thread's cached handle on `shardPath`, if any. HDF5 shares one
 * state between all opens of a file in a thread, so a commit must drop the
 * cached handle before and after it reads the file it replaces.
 */
export function evictShard(shardPath: string): void {
  const cached = handles.get(shardPath);
  if (cached) forget(shardPath, cached);
}

function forget(shardPath: string, cached: CachedShard): void {
  handles.delete(shardPath);
  cached.file.close();
}
