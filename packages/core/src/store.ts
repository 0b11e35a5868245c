/**
 * H5NestedStore: a zarrita store (get/set with "/"-prefixed keys) over the H5
 * nested layout. Reads go to worker threads in batches; writes go through the
 * coordinator, which gives each shard one owner at a time and groups the
 * writes that wait for a shard into its next commit.
 */
import { randomBytes } from "node:crypto";
import { statSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { invalidShardName, type LeaseProvider, leaseServerLive, LocalLeaseProvider, RedisLeaseProvider, ShardScheduler } from "@h5nest/coordinator";
import { ChunkTooLargeError, type CommitResult, MAX_DATASET_BYTES, type ReadItem, WorkerPool } from "@h5nest/workers";
import { ArrayCatalog } from "./arrays.js";
import { InvalidKeyError, InvalidRangeError, InvalidValueError, LockRequiredError, NotAStoreError, ReadOnlyShardError, StoreClosedError, StoreConfigMismatchError, StoreIdentityError } from "./errors.js";
import { IDENTITY_FOLDER, leaseStateFolder, readStoreIdentity, recordStoreIdentity, type StoreIdentity } from "./identity.js";
import { type ArrayInfo, canWriteToShard, chunksPerShard, finalPathOfTemp, Layout, type Location } from "./layout.js";
import { type H5NestedStoreOptions, type ResolvedOptions, resolveOptions } from "./options.js";
import { readFileOrUndefined } from "./raw-files.js";
import { type RangeQuery, ReadBatcher } from "./read-batcher.js";
import {
  type CompactOptions,
  type CompactSummary,
  compact,
  type ConsolidateOptions,
  type ConsolidateSummary,
  consolidate,
  countConsolidation,
  info,
  type StoreInfo,
  type StoreInternals,
  type VerifyOptions,
  type VerifySummary,
  verify,
} from "./maintenance.js";
import { type FoldMode, ShardWriter, type WriteOp } from "./shard-writer.js";
import { compactShared, consolidateShared, type SharedJobTarget } from "./shared-maintenance.js";
import { walkKeys } from "./walk.js";

/** How long close() waits for reads on worker threads before it stops them (they then fail with StoreClosedError). */
const CLOSE_READ_WAIT_MS = 10_000;

const METADATA_NAMES = new Set([".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json"]);

export class H5NestedStore {
  readonly root: string;
  readonly options: Readonly<ResolvedOptions>;
  private readonly layout: Layout;
  private readonly pool: WorkerPool;
  private readonly scheduler: ShardScheduler<WriteOp>;
  private readonly reader: ReadBatcher;
  private readonly arrays: ArrayCatalog;
  private readonly writer: ShardWriter;
  private closed = false;
  /** The store's identity record, once known (read at open, or made by the first batch that may write shards). */
  private identity: StoreIdentity | null;
  private recording: Promise<void> | null = null;

  private constructor(root: string, options: ResolvedOptions, identity: StoreIdentity | null) {
    this.identity = identity;
    this.options = Object.freeze(options);
    this.layout = new Layout({ root, depth: options.consolidateDepth, ext: options.containerExt });
    this.root = this.layout.root;
    this.pool = new WorkerPool({ threads: options.workers });
    this.reader = new ReadBatcher(
      (items) => this.pool.read(items),
      () => new StoreClosedError(this.root),
    );
    this.arrays = new ArrayCatalog(this.root);
    this.writer = new ShardWriter(this.root, this.layout, this.pool, this.arrays, this.options);
    this.scheduler = new ShardScheduler<WriteOp>({
      // With leases a batch also waits on lock round trips (acquire, release): one more batch
      // a worker keeps the threads busy meanwhile (piscina queues what it cannot start).
      concurrency: options.distributedLock ? 2 * options.workers : options.workers,
      maxPendingBytes: options.maxPendingBytes,
      maxBatchBytes: Math.max(1, Math.min(options.maxPendingBytes, 256 * 1024 * 1024)),
      execute: (owner, ops, grant) => {
        const recording = this.recordIdentity(ops);
        return recording ? recording.then(() => this.writer.execute(owner, ops, grant)) : this.writer.execute(owner, ops, grant);
      },
    });
  }

  /**
   * Opens (creating the folder if needed) the store at `dir`. A store with an
   * identity record (`.h5nest/store.json`) is opened with the layout it
   * records: consolidateDepth and containerExt default to it, and other
   * values are a StoreConfigMismatchError. With distributedLock the record is
   * made now if missing, and names the store's leases.
   */
  static async open(dir: string, options?: H5NestedStoreOptions): Promise<H5NestedStore> {
    if (typeof dir !== "string" || dir.length === 0) throw new NotAStoreError(String(dir), "the store path must be a non-empty string");
    if (dir.includes("\0")) throw new NotAStoreError(dir, "the store path holds a NUL byte");
    const resolved = resolveOptions(options);
    const existing = statSync(dir, { throwIfNoEntry: false }); // once an open: a thread-pool hop costs more
    if (existing && !existing.isDirectory()) throw new NotAStoreError(dir, "it is not a folder");
    if (!existing) await fs.mkdir(dir, { recursive: true });
    const root = path.resolve(dir);
    let identity = await readStoreIdentity(root);
    if (identity) adoptRecordedLayout(root, resolved, identity, options);
    const lock = resolved.distributedLock;
    let leases: LeaseProvider | null = null;
    if (lock) {
      // Leases are keyed by the store's identity, not by its path, user or environment.
      if (lock.redis) {
        // Reach Redis before writing anything into the store.
        const proposed = identity?.id ?? randomBytes(16).toString("hex");
        leases = await RedisLeaseProvider.open({ url: lock.redis, namespace: proposed, termMs: lock.leaseMs, onNotice: lock.onNotice });
        try {
          identity ??= await recordStoreIdentity(root, resolved);
          adoptRecordedLayout(root, resolved, identity, options);
          if (identity.id !== proposed) {
            await leases.close();
            leases = null;
            leases = await RedisLeaseProvider.open({ url: lock.redis, namespace: identity.id, termMs: lock.leaseMs, onNotice: lock.onNotice });
          }
        } catch (error) {
          await leases?.close();
          throw error;
        }
      } else {
        identity ??= await recordStoreIdentity(root, resolved);
        adoptRecordedLayout(root, resolved, identity, options);
        leases = await LocalLeaseProvider.open({ namespace: identity.id, stateDir: leaseStateFolder(root), termMs: lock.leaseMs });
      }
    }
    // The worker threads (h5wasm) start on the first write, fallback read or
    // maintenance job: a store that only reads never waits for them.
    const store = new H5NestedStore(dir, resolved, identity);
    store.writer.leases = leases;
    return store;
  }

  /**
   * Before the first batch that may write a shard, records the layout this
   * store is opened with (unless it has a record): from then on every open
   * must use it. Best effort (a folder this process may not write is left
   * alone), but a record made meanwhile with another layout fails the write.
   */
  private recordIdentity(ops: WriteOp[]): Promise<void> | null {
    if (this.identity || (this.recording === null && !this.mayWriteShards(ops))) return null;
    this.recording ??= (async () => {
      let identity: StoreIdentity;
      try {
        identity = await recordStoreIdentity(this.root, this.options);
      } catch (error) {
        if (error instanceof StoreIdentityError) return; // e.g. a read-only store root: nothing to record
        throw error;
      }
      adoptRecordedLayout(this.root, { ...this.options }, identity, this.options);
      this.identity = identity;
    })();
    return this.recording;
  }

  private mayWriteShards(ops: WriteOp[]): boolean {
    return ops.some(
      (op) =>
        op.kind === "fold" ||
        (op.kind === "delete" && op.location.kind === "chunk" && op.location.shard?.placement === "inside") ||
        (op.kind === "put" && this.options.writeDirect && op.location.kind === "chunk" && op.location.shard?.placement === "inside"),
    );
  }

  /** With leases, a key whose lease name (its shard's path in the store) is too long is refused up front. */
  private checkLeaseName(key: string, location: Location): void {
    if (!this.writer.leases) return;
    const problem = invalidShardName(path.relative(this.root, ownerOf(location)));
    if (problem) throw new InvalidKeyError(key, problem);
  }

  /** The bytes stored under `key`, or undefined. Raw file first, then the shard. */
  async get(key: string, options?: { signal?: AbortSignal }): Promise<Uint8Array | undefined> {
    this.assertOpen();
    options?.signal?.throwIfAborted();
    const location = this.layout.locate(key);
    if (location.kind === "meta") return readFileOrUndefined(location.rawPath);
    return this.reader.read(this.readItem(location));
  }

  /**
   * Part of the bytes stored under `key` (zarrita's form: `{offset, length}`
   * or `{suffixLength}`), clamped to the value; undefined when the key does
   * not exist. One positioned read, for raw files and shard datasets alike.
   */
  async getRange(key: string, range: RangeQuery, options?: { signal?: AbortSignal }): Promise<Uint8Array | undefined> {
    this.assertOpen();
    options?.signal?.throwIfAborted();
    checkRange(key, range);
    const location = this.layout.locate(key);
    if (location.kind === "meta") return this.reader.read({ rawPath: location.rawPath, shardPath: null, dataset: "", rawFolder: null }, range);
    return this.reader.read(this.readItem(location), range);
  }

  private readItem(location: Extract<Location, { kind: "chunk" }>): ReadItem {
    const shard = location.shard;
    return {
      rawPath: location.rawPath,
      shardPath: shard?.path ?? null,
      dataset: shard?.dataset ?? "",
      rawFolder: shard ? this.layout.rawFolderOf(shard.path) : null,
    };
  }

  /**
   * Stores `value` under `key`; resolves once it is in a renamed shard or raw
   * file. Like fs.writeFile, it does not copy: don't change `value` until then.
   */
  async set(key: string, value: Uint8Array): Promise<void> {
    this.assertOpen();
    if (!(value instanceof Uint8Array)) throw new InvalidValueError(key);
    const location = this.layout.locate(key);
    this.checkLeaseName(key, location);
    if (location.kind === "chunk" && value.byteLength > MAX_DATASET_BYTES) {
      throw new ChunkTooLargeError(location.rawPath, value.byteLength, MAX_DATASET_BYTES);
    }
    await this.scheduler.submit(ownerOf(location), { kind: "put", location, bytes: value }, value.byteLength, this.fullShard(location));
    if (location.kind === "meta" && isMetadata(location.key)) this.arrays.invalidate();
  }

  /** Removes `key` from the raw file and from its shard. A missing key is not an error. */
  async delete(key: string): Promise<void> {
    this.assertOpen();
    const location = this.layout.locate(key);
    this.checkLeaseName(key, location);
    if (location.kind === "chunk" && location.shard?.placement === "legacy-root" && this.reader.datasetsOf(location.shard.path)?.includes(location.shard.dataset)) {
      // The legacy `<store>.h5` lies outside the store folder and is never written: a delete
      // that left its dataset in place would bring the old value back.
      throw new ReadOnlyShardError(key, location.shard.path);
    }
    await this.scheduler.submit(ownerOf(location), { kind: "delete", location }, 0);
    if (location.kind === "meta" && isMetadata(location.key)) this.arrays.invalidate();
  }

  /** Streams every key once (optionally only those starting with `prefix`): raw files and shard datasets. */
  keys(prefix = ""): AsyncGenerator<string> {
    this.assertOpen();
    return withoutIdentity(walkKeys(this.layout, (shardPath) => this.listShard(shardPath), prefix.replace(/^\//, "")));
  }

  /** Dataset names of a shard, from the index (h5wasm only for a shard it cannot decode). */
  private async listShard(shardPath: string): Promise<string[]> {
    const names = this.reader.datasetsOf(shardPath);
    return names ?? this.pool.listShard(shardPath);
  }

  /** Waits for every write, then folds raw files written for small updates into their shards. */
  async flush(): Promise<void> {
    this.assertOpen();
    await this.scheduler.drain();
    await Promise.all(this.writer.waitingShards().map((shardPath) => this.fold(shardPath, "if-raw")));
    await this.scheduler.drain();
  }

  /**
   * Flushes, then stops the worker threads and the lease provider (and the
   * lease server if this process serves it). Reads asked before the threads
   * stop are served (waiting at most CLOSE_READ_WAIT_MS for those on worker
   * threads); any read left fails with StoreClosedError. Bounded: every lease
   * call has a deadline, and whatever fails, everything this store started is
   * stopped.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.closed = true;
      try {
        await this.reader.close(CLOSE_READ_WAIT_MS);
      } finally {
        try {
          await this.pool.close();
        } finally {
          await this.writer.leases?.close();
        }
      }
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreClosedError(this.root);
  }

  /**
   * The number of chunks that fill this chunk's shard, when the chunk goes
   * into a shard: at once when the array's metadata was read already (the
   * common case, and the cheap one for the many set() calls of a region).
   */
  private fullShard(location: Location): number | undefined | Promise<number | undefined> {
    if (location.kind !== "chunk" || !this.options.writeDirect || location.shard?.placement !== "inside") return undefined;
    const whole = (array: ArrayInfo | null) => (array && canWriteToShard(location, array, this.layout.depth) ? (chunksPerShard(array, this.layout.depth) ?? undefined) : undefined);
    const known = this.arrays.known(location.key);
    return known === undefined ? this.arrays.arrayOf(location.key).then(whole) : whole(known);
  }

  /** Folds (or with "always" rewrites) one shard as its owner. */
  private fold(shardPath: string, mode: FoldMode): Promise<CommitResult> {
    return new Promise((resolve, reject) => {
      let result: CommitResult | undefined;
      const report = (r: CommitResult) => void (result = r);
      this.scheduler.submit(shardPath, { kind: "fold", mode, report }, 0).then(() => resolve(result!), reject);
    });
  }

  /** The store's parts that maintenance jobs use. */
  private internals(): StoreInternals {
    return {
      layout: this.layout,
      arrays: this.arrays,
      concurrency: this.options.workers,
      fold: (shardPath) => this.fold(shardPath, "if-raw"),
      rewrite: (shardPath) => this.fold(shardPath, "always"),
      sweep: (file) => this.scheduler.submit(this.ownerOfTemp(file), { kind: "sweep", file }, 0),
      // Metadata questions are answered by the index; reading every dataset (verify) needs h5wasm too.
      inspect: async (shardPath, readData) => (!readData && this.reader.inspect(shardPath)) || this.pool.inspectShard(shardPath, readData),
    };
  }

  /** A temporary file belongs to the owner of the file it was meant to become. */
  private ownerOfTemp(file: string): string {
    const final = finalPathOfTemp(file);
    if (final.endsWith(this.layout.ext)) return final;
    try {
      return ownerOf(this.layout.locate(this.layout.keyOfFile(final)));
    } catch {
      return final;
    }
  }

  /**
   * Moves every raw chunk file into its shard, array by array, shard by
   * shard, streaming the tree. Reads return the same bytes at every instant.
   */
  async consolidate(options?: ConsolidateOptions): Promise<ConsolidateSummary> {
    this.assertOpen();
    await this.refuseUnlockedBesideWriters("consolidate");
    const shared = this.sharedJobTarget();
    return shared ? consolidateShared(this.internals(), shared, options) : consolidate(this.internals(), options);
  }

  /**
   * With Redis leases, maintenance jobs are shared: every process running
   * the same job on this store (same identity, any path) takes part of it.
   */
  private sharedJobTarget(): SharedJobTarget | null {
    const lock = this.options.distributedLock;
    if (!lock?.redis || !this.identity) return null;
    return { url: lock.redis, namespace: this.identity.id, termMs: lock.leaseMs };
  }

  /**
   * A job that takes no leases must not run while processes write this store
   * with distributedLock: it would fold and sweep under their feet. Their
   * lease server answering proves them live (writers that lock through Redis
   * cannot be seen from here: run jobs beside them with the same --redis).
   */
  private async refuseUnlockedBesideWriters(job: string): Promise<void> {
    if (this.writer.leases || !this.identity) return;
    if (await leaseServerLive(this.identity.id, leaseStateFolder(this.root))) throw new LockRequiredError(this.root, job);
  }

  /** Counts what consolidate() would move (for progress bars). */
  async consolidationSize(signal?: AbortSignal): Promise<{ chunks: number; bytes: number }> {
    this.assertOpen();
    return countConsolidation(this.internals(), signal);
  }

  /** Rewrites shards whose dead space is at least `minWaste` of their size. */
  async compact(options?: CompactOptions): Promise<CompactSummary> {
    this.assertOpen();
    await this.refuseUnlockedBesideWriters("compact");
    const shared = this.sharedJobTarget();
    return shared ? compactShared(this.internals(), shared, options) : compact(this.internals(), options);
  }

  /** Opens every shard and reads every dataset. */
  async verify(options?: VerifyOptions): Promise<VerifySummary> {
    this.assertOpen();
    return verify(this.internals(), options);
  }

  /** Arrays, raw chunk files, shards, stored and reclaimable bytes. */
  async info(options?: { signal?: AbortSignal }): Promise<StoreInfo> {
    this.assertOpen();
    return info(this.internals(), options);
  }
}

/** Keys, without the store's own `.h5nest` folder (its identity and lease state). */
async function* withoutIdentity(keys: AsyncGenerator<string>): AsyncGenerator<string> {
  for await (const key of keys) if (!key.startsWith(`${IDENTITY_FOLDER}/`)) yield key;
}

/**
 * Checks the options given against the store's identity record and takes
 * the recorded layout: an option left out takes the recorded value, one
 * given with another value is a StoreConfigMismatchError.
 */
function adoptRecordedLayout(
  root: string,
  resolved: Pick<ResolvedOptions, "consolidateDepth" | "containerExt">,
  identity: StoreIdentity,
  given: { consolidateDepth?: unknown; containerExt?: unknown } | undefined,
): void {
  if (given?.consolidateDepth !== undefined && resolved.consolidateDepth !== identity.consolidateDepth) {
    throw new StoreConfigMismatchError(root, "consolidateDepth", identity.consolidateDepth, resolved.consolidateDepth);
  }
  if (given?.containerExt !== undefined && resolved.containerExt !== identity.containerExt) {
    throw new StoreConfigMismatchError(root, "containerExt", identity.containerExt, resolved.containerExt);
  }
  resolved.consolidateDepth = identity.consolidateDepth;
  resolved.containerExt = identity.containerExt;
}

/** The unit of ownership: a chunk's shard (even one never written), else the file itself. */
function ownerOf(location: Location): string {
  return location.kind === "chunk" && location.shard ? location.shard.path : location.rawPath;
}

function checkRange(key: string, range: RangeQuery): void {
  const valid = (n: unknown) => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
  if (typeof range !== "object" || range === null) throw new InvalidRangeError(key, "not an object");
  if ("suffixLength" in range) {
    if (!valid(range.suffixLength)) throw new InvalidRangeError(key, "suffixLength must be a non-negative integer");
  } else if (!valid(range.offset) || !valid(range.length)) {
    throw new InvalidRangeError(key, "offset and length must be non-negative integers");
  }
}

function isMetadata(key: string): boolean {
  return METADATA_NAMES.has(key.slice(key.lastIndexOf("/") + 1));
}
