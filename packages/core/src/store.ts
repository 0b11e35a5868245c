/**
 * H5NestedStore: a zarrita store (get/set with "/"-prefixed keys) over the H5
 * nested layout. Reads go to worker threads in batches; writes go through the
 * coordinator, which gives each shard one owner at a time and groups the
 * writes that wait for a shard into its next commit.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { type Lease, LeaseLostError, type LeaseProvider, LocalLeaseProvider, RedisLeaseProvider, ShardScheduler } from "@h5nest/coordinator";
import { ChunkTooLargeError, type CommitRequest, type CommitResult, MAX_DATASET_BYTES, WorkerPool } from "@h5nest/workers";
import { ArrayCatalog } from "./arrays.js";
import { InvalidValueError, NotAStoreError, StoreClosedError } from "./errors.js";
import { canWriteToShard, chunksPerShard, Layout, type Location } from "./layout.js";
import { type H5NestedStoreOptions, type ResolvedOptions, resolveOptions } from "./options.js";
import { listRawChunks, readFileOrUndefined, statOrNull } from "./raw-files.js";
import { ReadBatcher } from "./read-batcher.js";
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
import { walkKeys } from "./walk.js";

/**
 * A small write to an existing shard goes to a raw file unless the bytes it
 * brings (with the raw bytes already waiting for that shard) reach this
 * fraction of the shard's size; then the shard is rewritten with all of them.
 * Each byte is written at most once raw and once in a rewrite costing at most
 * (1 + 1/FOLD_RATIO) times the bytes folded: worst-case amplification 2 + 1/FOLD_RATIO.
 */
export const FOLD_RATIO = 0.5;

type FoldMode = "none" | "if-raw" | "always";

const METADATA_NAMES = new Set([".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json"]);

type WriteOp =
  | { kind: "put"; location: Location; bytes: Uint8Array }
  | { kind: "delete"; location: Location }
  /**
   * Fold the raw chunk files waiting for this shard into it ("if-raw": only
   * when there are some; "always": rewrite anyway, which compacts it).
   */
  | { kind: "fold"; mode: FoldMode; report?: (result: CommitResult) => void }
  /** Delete a leftover temporary file of this owner. */
  | { kind: "sweep"; file: string };

export class H5NestedStore {
  readonly root: string;
  readonly options: Readonly<ResolvedOptions>;
  private readonly layout: Layout;
  private readonly pool: WorkerPool;
  private readonly scheduler: ShardScheduler<WriteOp>;
  private readonly reader: ReadBatcher;
  private readonly arrays: ArrayCatalog;
  /** Bytes written as raw files for a shard since its last rewrite, by shard path. */
  private readonly rawBytesWaiting = new Map<string, number>();
  private closed = false;
  /** Shard leases shared with other processes (distributedLock), or null. */
  private leases: LeaseProvider | null = null;

  private constructor(root: string, options: ResolvedOptions) {
    this.options = Object.freeze(options);
    this.layout = new Layout({ root, depth: options.consolidateDepth, ext: options.containerExt });
    this.root = this.layout.root;
    this.pool = new WorkerPool({ threads: options.workers });
    this.reader = new ReadBatcher(this.pool);
    this.arrays = new ArrayCatalog(this.root);
    this.scheduler = new ShardScheduler<WriteOp>({
      concurrency: options.workers,
      maxPendingBytes: options.maxPendingBytes,
      maxBatchBytes: Math.max(1, Math.min(options.maxPendingBytes, 256 * 1024 * 1024)),
      execute: (owner, ops, grant) => this.execute(owner, ops, grant),
    });
  }

  /** Opens (creating the folder if needed) the store at `dir`. */
  static async open(dir: string, options?: H5NestedStoreOptions): Promise<H5NestedStore> {
    const resolved = resolveOptions(options);
    const existing = await statOrNull(dir);
    if (existing && !existing.isDirectory()) throw new NotAStoreError(dir, "it is not a folder");
    if (!existing) await fs.mkdir(dir, { recursive: true });
    const store = new H5NestedStore(dir, resolved);
    const lock = resolved.distributedLock;
    try {
      await store.pool.ready();
    } catch (error) {
      await store.pool.close();
      throw error;
    }
    if (lock) {
      try {
        const realRoot = await fs.realpath(store.root); // one store, one lease namespace, whatever the path
        store.leases = lock.redis
          ? await RedisLeaseProvider.open({ url: lock.redis, namespace: realRoot, termMs: lock.leaseMs })
          : await LocalLeaseProvider.open({ storeRoot: realRoot, termMs: lock.leaseMs });
      } catch (error) {
        await store.pool.close();
        throw error;
      }
    }
    return store;
  }

  /** The bytes stored under `key`, or undefined. Raw file first, then the shard. */
  async get(key: string, options?: { signal?: AbortSignal }): Promise<Uint8Array | undefined> {
    this.assertOpen();
    options?.signal?.throwIfAborted();
    const location = this.layout.locate(key);
    if (location.kind === "meta") return readFileOrUndefined(location.rawPath);
    const shard = location.shard;
    return this.reader.read({
      rawPath: location.rawPath,
      shardPath: shard?.path ?? null,
      dataset: shard?.dataset ?? "",
      rawFolder: shard ? this.layout.rawFolderOf(shard.path) : null,
    });
  }

  /**
   * Stores `value` under `key`; resolves once it is in a renamed shard or raw
   * file. Like fs.writeFile, it does not copy: don't change `value` until then.
   */
  async set(key: string, value: Uint8Array): Promise<void> {
    this.assertOpen();
    if (!(value instanceof Uint8Array)) throw new InvalidValueError(key);
    const location = this.layout.locate(key);
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
    await this.scheduler.submit(ownerOf(location), { kind: "delete", location }, 0);
    if (location.kind === "meta" && isMetadata(location.key)) this.arrays.invalidate();
  }

  /** Streams every key once (optionally only those starting with `prefix`): raw files and shard datasets. */
  keys(prefix = ""): AsyncGenerator<string> {
    this.assertOpen();
    return walkKeys(this.layout, (shardPath) => this.pool.listShard(shardPath), prefix.replace(/^\//, ""));
  }

  /** Waits for every write, then folds raw files written for small updates into their shards. */
  async flush(): Promise<void> {
    this.assertOpen();
    await this.scheduler.drain();
    const shards = [...this.rawBytesWaiting.keys()];
    await Promise.all(shards.map((shardPath) => this.fold(shardPath, "if-raw")));
    await this.scheduler.drain();
  }

  /** Flushes, then stops the worker threads (and, if it serves them, the lease server). */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.closed = true;
      await this.pool.close();
      await this.leases?.close();
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreClosedError(this.root);
  }

  /** Runs a batch as the owner: with distributedLock, while holding (and renewing) the owner's lease. */
  private async execute(owner: string, ops: WriteOp[], grant: number): Promise<void> {
    if (!this.leases) return this.apply(owner, ops, grant, null);
    const leases = this.leases;
    // Lease names are relative to the store, so every path to it names the same lease.
    const lease = await leases.acquire(path.relative(this.root, owner));
    const renewal = setInterval(() => {
      leases.renew(lease).catch((error: unknown) => {
        // Lost for good: the deadline stops moving, and the commit fails before
        // its rename if it outlasts it. A server going away may come back: retry.
        if (error instanceof LeaseLostError) clearInterval(renewal);
      });
    }, Math.max(100, Math.floor(lease.termMs / 3)));
    try {
      await this.apply(owner, ops, lease.token, lease);
    } finally {
      clearInterval(renewal);
      await leases.release(lease).catch(() => {
        // An unreleased lease simply expires.
      });
    }
  }

  /** Applies one batch of writes for one owner (a shard, or a lone raw file). */
  private async apply(owner: string, ops: WriteOp[], grant: number, lease: Lease | null): Promise<void> {
    // Last write to a key wins, as if the batch had run one op at a time.
    const latest = new Map<string, Extract<WriteOp, { location: Location }>>();
    const reports: ((result: CommitResult) => void)[] = [];
    let fold: FoldMode = "none";
    const sweep: string[] = [];
    for (const op of ops) {
      if (op.kind === "fold") {
        if (fold !== "always") fold = op.mode;
        if (op.report) reports.push(op.report);
      } else if (op.kind === "sweep") sweep.push(op.file);
      else {
        latest.delete(op.location.key);
        latest.set(op.location.key, op);
      }
    }
    const raw: CommitRequest = { ...this.emptyRequest(owner, grant, lease), target: "raw" };
    const shard: CommitRequest = { ...this.emptyRequest(owner, grant, lease), target: "shard" };
    for (const op of latest.values()) {
      const { location } = op;
      const ref = { dataset: location.kind === "chunk" ? (location.shard?.dataset ?? "") : "", rawPath: location.rawPath };
      const inside = location.kind === "chunk" && location.shard?.placement === "inside";
      if (op.kind === "delete") {
        (inside ? shard : raw).deletes.push(ref);
      } else if (this.options.writeDirect && inside && (await this.shardWritable(location))) {
        shard.puts.push({ ...ref, bytes: op.bytes });
      } else {
        raw.puts.push({ ...ref, bytes: op.bytes });
      }
    }
    if (fold !== "none" || shard.puts.length > 0 || shard.deletes.length > 0) {
      // Sweeping goes with the shard commit, which also removes the raw folder's leftovers.
      shard.sweep = sweep;
      if (raw.puts.length > 0 || raw.deletes.length > 0) await this.pool.commit(raw);
      const result = await this.commitShard(shard, fold);
      for (const report of reports) report(result);
    } else if (raw.puts.length > 0 || raw.deletes.length > 0 || sweep.length > 0) {
      raw.sweep = sweep;
      await this.pool.commit(raw);
    }
  }

  private emptyRequest(owner: string, grant: number, lease: Lease | null): CommitRequest {
    return {
      shardPath: owner,
      target: "raw",
      puts: [],
      deletes: [],
      fold: [],
      rawFolder: null,
      sweep: [],
      fsync: this.options.fsync,
      verifyShard: false,
      pruneRawFolder: false,
      lease: grant,
      deadline: lease?.deadline ?? null,
    };
  }

  /** The number of chunks that fill this chunk's shard, when the chunk goes into a shard. */
  private async fullShard(location: Location): Promise<number | undefined> {
    if (location.kind !== "chunk" || !this.options.writeDirect || location.shard?.placement !== "inside") return undefined;
    const array = await this.arrays.arrayOf(location.key);
    if (!array || !canWriteToShard(location, array, this.layout.depth)) return undefined;
    return chunksPerShard(array, this.layout.depth) ?? undefined;
  }

  private async shardWritable(location: Location): Promise<boolean> {
    return canWriteToShard(location, await this.arrays.arrayOf(location.key), this.layout.depth);
  }

  /** Rewrites the shard, or for a small update of a big shard writes raw files (see FOLD_RATIO). */
  private async commitShard(request: CommitRequest, fold: FoldMode): Promise<CommitResult> {
    const shardPath = request.shardPath;
    const rawFolder = this.layout.rawFolderOf(shardPath);
    const stat = await statOrNull(shardPath);
    const incoming = request.puts.reduce((sum, put) => sum + put.bytes.byteLength, 0);
    const waiting = this.rawBytesWaiting.get(shardPath) ?? 0;
    const changes = request.puts.length > 0 || request.deletes.length > 0;
    if (stat && fold === "none" && request.deletes.length === 0 && incoming + waiting < FOLD_RATIO * stat.size) {
      const result = await this.pool.commit({ ...request, target: "raw", rawFolder, verifyShard: true });
      this.rawBytesWaiting.set(shardPath, waiting + incoming);
      return result;
    }
    const folderStat = await statOrNull(rawFolder);
    const listed = folderStat?.isDirectory() ? await listRawChunks(this.layout, rawFolder) : { chunks: [], partials: [] };
    const partials = listed.partials;
    // Only chunks that may live in this shard are folded (FORMAT.md section 7).
    const chunks: typeof listed.chunks = [];
    for (const chunk of listed.chunks) {
      if (await this.shardWritable(this.layout.locate(this.layout.keyOfFile(chunk.rawPath)))) chunks.push(chunk);
    }
    const sweep = [...request.sweep, ...partials];
    this.rawBytesWaiting.delete(shardPath);
    const pruneRawFolder = fold !== "none";
    const result =
      !changes && chunks.length === 0 && fold !== "always"
        ? // Nothing to fold: only leftovers to sweep and empty folders to remove.
          await this.pool.commit({ ...request, target: "raw", sweep, rawFolder, pruneRawFolder })
        : await this.pool.commit({ ...request, target: "shard", fold: chunks, sweep, rawFolder, pruneRawFolder });
    // Sweep ops count their own files; the fold reports those it found itself.
    return { ...result, swept: partials.length };
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
      inspect: (shardPath, readData) => this.pool.inspectShard(shardPath, readData),
    };
  }

  /** A temporary file belongs to the owner of the file it was meant to become. */
  private ownerOfTemp(file: string): string {
    const final = file.replace(/\.[0-9a-f]{32}\.partial$/, "");
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
    return consolidate(this.internals(), options);
  }

  /** Counts what consolidate() would move (for progress bars). */
  async consolidationSize(signal?: AbortSignal): Promise<{ chunks: number; bytes: number }> {
    this.assertOpen();
    return countConsolidation(this.internals(), signal);
  }

  /** Rewrites shards whose dead space is at least `minWaste` of their size. */
  async compact(options?: CompactOptions): Promise<CompactSummary> {
    this.assertOpen();
    return compact(this.internals(), options);
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

/** The unit of ownership: a chunk's shard (even one never written), else the file itself. */
function ownerOf(location: Location): string {
  return location.kind === "chunk" && location.shard ? location.shard.path : location.rawPath;
}

function isMetadata(key: string): boolean {
  return METADATA_NAMES.has(key.slice(key.lastIndexOf("/") + 1));
}
