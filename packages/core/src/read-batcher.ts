/**
 * Chunk reads on the calling thread, through the shard index: raw file first,
 * then positioned reads of the shard's bytes from a cached descriptor. Reads
 * issued in one turn (zarrita asks for every chunk of a region at once) form
 * one batch, so the chunks of one shard that lie next to each other are read
 * with one readv. Datasets the index cannot place go to the worker threads
 * (h5wasm), which start only then.
 *
 * The reads are synchronous positioned reads: on a local or page-cached file
 * system they cost a few microseconds each, far less than a round trip to a
 * thread; a batch blocks the event loop for about its bytes' copy time.
 */
import fs from "node:fs";
import {
  CorruptShardError,
  IndexedShardCache,
  isPlaced,
  type Placed,
  type ReadItem,
  type ReadResult,
  readPlaced,
  type ShardReport,
  shardImageSize,
} from "@h5nest/workers";

/** zarrita's range request: `length` bytes at `offset`, or the last `suffixLength` bytes. */
export type RangeQuery = { offset: number; length: number } | { suffixLength: number };

interface PendingRead {
  item: ReadItem;
  range: RangeQuery | undefined;
  resolve(value: Uint8Array | undefined): void;
  reject(error: unknown): void;
}

export type FallbackRead = (items: ReadItem[]) => Promise<ReadResult[]>;

export class ReadBatcher {
  private pending: PendingRead[] = [];
  private scheduled = false;
  private closed = false;
  /** Batches on the worker threads, settled or not: close() waits for them before the threads stop. */
  private readonly onWorkers = new Set<Promise<void>>();
  private readonly shards = new IndexedShardCache();

  /** `closedError` is what a read gets once the store is closed (never the pool's own errors). */
  constructor(
    private readonly fallback: FallbackRead,
    private readonly closedError: () => Error,
  ) {}

  read(item: ReadItem, range?: RangeQuery): Promise<Uint8Array | undefined> {
    if (this.closed) return Promise.reject(this.closedError());
    return new Promise((resolve, reject) => {
      this.pending.push({ item, range, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        // A microtask: the reads zarrita issues together are queued before it runs.
        queueMicrotask(() => this.dispatch());
      }
    });
  }

  /** Dataset names of a shard from its index; null when the index cannot decode it; [] when there is no shard. */
  datasetsOf(shardPath: string): string[] | null {
    const shard = this.shards.get(shardPath);
    if (!shard) return [];
    return shard.index ? [...shard.index.datasets.keys()] : null;
  }

  /**
   * Measures a shard from its index: dataset count, live bytes and the exact
   * size of a rewrite. Null when the index cannot place every dataset.
   */
  inspect(shardPath: string): ShardReport | null {
    const shard = this.shards.get(shardPath);
    if (!shard) throw new CorruptShardError(shardPath, "the file disappeared");
    if (!shard.index) return null;
    const entries: { name: string; length: number }[] = [];
    for (const [name, place] of shard.index.datasets) {
      if (!isPlaced(place)) return null;
      entries.push({ name, length: place.length });
    }
    return {
      file: shardPath,
      fileBytes: fs.fstatSync(shard.fd).size,
      datasets: entries.length,
      liveBytes: entries.reduce((sum, e) => sum + e.length, 0),
      compactedBytes: shardImageSize(entries),
    };
  }

  /**
   * Serves the reads queued so far, waits (at most `waitMs`) for those on
   * worker threads, then closes the cached shard descriptors. Reads still on
   * the threads after that (the caller stops them) and any read asked later
   * fail with `closedError`.
   */
  async close(waitMs: number): Promise<void> {
    // Queued reads were asked before close(): serve them now, while the threads still run.
    if (this.pending.length > 0) this.dispatch();
    if (this.onWorkers.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)));
      await Promise.race([Promise.allSettled(this.onWorkers), deadline]);
      clearTimeout(timer);
    }
    this.closed = true;
    this.shards.close();
  }

  private dispatch(): void {
    this.scheduled = false;
    const reads = this.pending;
    this.pending = [];
    if (this.closed) {
      // Not after close: the descriptors it would open would never be closed.
      for (const read of reads) read.reject(this.closedError());
      return;
    }
    const toShards = new Map<string, PendingRead[]>();
    // All raw files are tried before any shard: a commit renames the new
    // shard before it removes the raw files it absorbed, so a reader that
    // misses a raw file is sure to see that new shard. A commit removes raw
    // files (and emptied folders) only after its rename, so a missing raw
    // folder is as good as a missing raw file.
    const folderPresent = new Map<string, boolean>();
    for (const read of reads) {
      try {
        const { rawFolder } = read.item;
        let present = rawFolder === null ? true : folderPresent.get(rawFolder);
        if (present === undefined) {
          present = fs.statSync(rawFolder!, { throwIfNoEntry: false }) !== undefined;
          folderPresent.set(rawFolder!, present);
        }
        const raw = present ? readRawFile(read.item.rawPath, read.range) : undefined;
        if (raw) read.resolve(raw);
        else if (read.item.shardPath === null) read.resolve(undefined);
        else {
          const list = toShards.get(read.item.shardPath) ?? [];
          list.push(read);
          toShards.set(read.item.shardPath, list);
        }
      } catch (error) {
        read.reject(error);
      }
    }
    const viaWorkers: PendingRead[] = [];
    for (const [shardPath, list] of toShards) {
      try {
        this.readShard(shardPath, list, viaWorkers);
      } catch (error) {
        for (const read of list) read.reject(error);
      }
    }
    if (viaWorkers.length > 0) this.readViaWorkers(viaWorkers);
  }

  private readShard(shardPath: string, list: PendingRead[], viaWorkers: PendingRead[]): void {
    const shard = this.shards.get(shardPath);
    if (!shard) {
      for (const read of list) read.resolve(undefined);
      return;
    }
    if (!shard.index) {
      viaWorkers.push(...list);
      return;
    }
    const wanted: { read: PendingRead; range: Placed }[] = [];
    for (const read of list) {
      let place: ReturnType<typeof shard.index.place>;
      try {
        place = shard.index.place(read.item.dataset); // a damaged header fails its own key only
      } catch (error) {
        read.reject(error);
        continue;
      }
      if (place === undefined) read.resolve(undefined);
      else if (!isPlaced(place)) viaWorkers.push(read);
      else wanted.push({ read, range: subRange(place, read.range) });
    }
    let bytes: Uint8Array[];
    try {
      bytes = readPlaced(shard, wanted.map((w) => w.range));
    } catch (error) {
      this.shards.evict(shardPath);
      throw error instanceof CorruptShardError ? error : new CorruptShardError(shardPath, String(error));
    }
    wanted.forEach((w, i) => w.read.resolve(bytes[i]));
  }

  private readViaWorkers(reads: PendingRead[]): void {
    const batch = this.fallback(reads.map((r) => r.item)).then(
      (results) =>
        results.forEach((result, i) => {
          const read = reads[i]!;
          if (result instanceof Error) read.reject(result);
          else read.resolve(result && read.range ? sliceRange(result, read.range) : result);
        }),
      (error: unknown) => {
        // Once closed, a failed batch is one the stopped threads dropped
        // (piscina's AbortError, "Terminating worker thread", a closed pool).
        const reason = this.closed ? this.closedError() : error;
        for (const read of reads) read.reject(reason);
      },
    );
    this.onWorkers.add(batch);
    void batch.finally(() => this.onWorkers.delete(batch));
  }
}

/** The part of a `length`-byte value that `range` asks for, clamped to the value. */
function bounds(length: number, range: RangeQuery): { start: number; end: number } {
  if ("suffixLength" in range) return { start: Math.max(0, length - range.suffixLength), end: length };
  const start = Math.min(range.offset, length);
  return { start, end: Math.min(length, start + range.length) };
}

function subRange(place: Placed, range: RangeQuery | undefined): Placed {
  if (!range) return place;
  const { start, end } = bounds(place.length, range);
  return { offset: place.offset + start, length: end - start };
}

function sliceRange(bytes: Uint8Array, range: RangeQuery): Uint8Array {
  const { start, end } = bounds(bytes.length, range);
  return bytes.slice(start, end);
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR";
}

/** A raw file's bytes (or the asked range of them); undefined when there is no file. */
function readRawFile(file: string, range: RangeQuery | undefined): Uint8Array | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (error) {
    if (isMissing(error)) return undefined;
    throw error;
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) return undefined;
    const size = stat.size;
    const { start, end } = range ? bounds(size, range) : { start: 0, end: size };
    const out = new Uint8Array(Buffer.allocUnsafeSlow(end - start).buffer, 0, end - start);
    let done = 0;
    while (done < out.length) {
      const n = fs.readSync(fd, out, done, out.length - done, start + done);
      if (n === 0) return out.subarray(0, done); // the file shrank under us: what it holds now
      done += n;
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}
