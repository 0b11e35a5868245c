/**
 * Applies one batch of writes for one owner (a shard, or a lone raw file):
 * sorts the batch into raw-file and shard work, decides between a shard
 * rewrite and raw files for small updates, and with distributedLock holds
 * (and renews) the owner's lease while it runs.
 */
import path from "node:path";
import { type Lease, LeaseLostError, type LeaseProvider } from "@h5nest/coordinator";
import type { CommitRequest, CommitResult, WorkerPool } from "@h5nest/workers";
import type { ArrayCatalog } from "./arrays.js";
import { canWriteToShard, type Layout, type Location } from "./layout.js";
import type { ResolvedOptions } from "./options.js";
import fs from "node:fs";
import { listRawChunks } from "./raw-files.js";

/**
 * A small write to an existing shard goes to a raw file unless the bytes it
 * brings (with the raw bytes already waiting for that shard) reach this
 * fraction of the shard's size; then the shard is rewritten with all of them.
 * Each byte is written at most once raw and once in a rewrite costing at most
 * (1 + 1/FOLD_RATIO) times the bytes folded: worst-case amplification 2 + 1/FOLD_RATIO.
 */
export const FOLD_RATIO = 0.5;

export type FoldMode = "none" | "if-raw" | "always";

export type WriteOp =
  | { kind: "put"; location: Location; bytes: Uint8Array }
  | { kind: "delete"; location: Location }
  /**
   * Fold the raw chunk files waiting for this shard into it ("if-raw": only
   * when there are some; "always": rewrite anyway, which compacts it).
   */
  | { kind: "fold"; mode: FoldMode; report?: (result: CommitResult) => void }
  /** Delete a leftover temporary file of this owner. */
  | { kind: "sweep"; file: string };

export class ShardWriter {
  /** Bytes written as raw files for a shard since its last rewrite, by shard path. */
  private readonly rawBytesWaiting = new Map<string, number>();
  /** Shard leases shared with other processes (distributedLock), or null. */
  leases: LeaseProvider | null = null;

  constructor(
    private readonly root: string,
    private readonly layout: Layout,
    private readonly pool: WorkerPool,
    private readonly arrays: ArrayCatalog,
    private readonly options: Readonly<ResolvedOptions>,
  ) {}

  /** Shards with raw files written for small updates, waiting to be folded. */
  waitingShards(): string[] {
    return [...this.rawBytesWaiting.keys()];
  }

  /** Runs a batch as the owner: with distributedLock, while holding (and renewing) the owner's lease. */
  async execute(owner: string, ops: WriteOp[], grant: number): Promise<void> {
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
      storeRoot: this.root,
      rawFolder: null,
      sweep: [],
      fsync: this.options.fsync,
      verifyShard: false,
      pruneRawFolder: false,
      lease: grant,
      deadline: lease?.deadline ?? null,
    };
  }

  shardWritable(location: Location): boolean | Promise<boolean> {
    const known = this.arrays.known(location.key);
    if (known !== undefined) return canWriteToShard(location, known, this.layout.depth);
    return this.arrays.arrayOf(location.key).then((array) => canWriteToShard(location, array, this.layout.depth));
  }

  /** Rewrites the shard, or for a small update of a big shard writes raw files (see FOLD_RATIO). */
  private async commitShard(request: CommitRequest, fold: FoldMode): Promise<CommitResult> {
    const shardPath = request.shardPath;
    const rawFolder = this.layout.rawFolderOf(shardPath);
    // Synchronous stats: a hop through libuv's thread pool would delay every commit.
    const stat = fs.statSync(shardPath, { throwIfNoEntry: false });
    const incoming = request.puts.reduce((sum, put) => sum + put.bytes.byteLength, 0);
    const waiting = this.rawBytesWaiting.get(shardPath) ?? 0;
    const changes = request.puts.length > 0 || request.deletes.length > 0;
    if (stat && fold === "none" && request.deletes.length === 0 && incoming + waiting < FOLD_RATIO * stat.size) {
      const result = await this.pool.commit({ ...request, target: "raw", rawFolder, verifyShard: true });
      this.rawBytesWaiting.set(shardPath, waiting + incoming);
      return result;
    }
    const folderStat = fs.statSync(rawFolder, { throwIfNoEntry: false });
    const listed = folderStat?.isDirectory() ? await listRawChunks(this.layout, rawFolder) : { chunks: [], partials: [] };
    const partials = listed.partials;
    // Only chunks that may live in this shard are folded (docs/format.md section 7).
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
    // Sweep ops count their own files; the fold reports those it found itself
    // and removed (a temporary file still being written is left alone).
    return { ...result, swept: partials.filter((file) => !fs.existsSync(file)).length };
  }
}
