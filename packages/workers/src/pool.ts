/** The main-thread face of the worker threads: typed calls, typed errors. */
import { Piscina } from "piscina";
import type { CommitRequest, CommitResult } from "./commit.js";
import { fromWire, type WireError } from "./errors.js";
import type { ReadItem, ShardReport } from "./read.js";
import type { TaskResult } from "./worker.js";

export interface WorkerPoolOptions {
  /** Number of worker threads (each loads its own HDF5). */
  threads: number;
}

/** Per item of a read: the bytes, undefined when missing, or the error for that item. */
export type ReadResult = Uint8Array | undefined | Error;

function isWireError(value: unknown): value is WireError {
  return typeof value === "object" && value !== null && !ArrayBuffer.isView(value) && "code" in value;
}

function unwrap<T>(result: TaskResult<T>): T {
  if (result.ok) return result.value;
  throw fromWire(result.error);
}

/**
 * Threads start on first use: a store that only reads through the shard
 * index never loads HDF5.
 */
/**
 * Copies the puts' bytes into one buffer that is transferred to the worker:
 * one memcpy instead of a structured clone of every chunk (which costs both
 * threads per object), and the caller's buffers stay the caller's.
 */
function packPuts(request: CommitRequest): CommitRequest {
  if (request.puts.length === 0) return request;
  let total = 0;
  for (const put of request.puts) total += put.bytes.byteLength;
  const buffer = new ArrayBuffer(Math.max(total, 1));
  const all = new Uint8Array(buffer);
  let offset = 0;
  const puts = request.puts.map((put) => {
    all.set(put.bytes, offset);
    const bytes = new Uint8Array(buffer, offset, put.bytes.byteLength);
    offset += put.bytes.byteLength;
    return { ...put, bytes };
  });
  return { ...request, puts };
}

export class WorkerPool {
  private started: Piscina | undefined;
  private closed = false;
  readonly threads: number;

  constructor(options: WorkerPoolOptions) {
    this.threads = options.threads;
  }

  /** Whether any thread was started. */
  get running(): boolean {
    return this.started !== undefined;
  }

  private get piscina(): Piscina {
    if (this.closed) throw new Error("the worker pool is closed");
    this.started ??= new Piscina({
      filename: new URL("./worker.js", import.meta.url).href,
      minThreads: this.threads,
      maxThreads: this.threads,
      idleTimeout: Number.POSITIVE_INFINITY,
      // Every task is synchronous: one at a time per thread.
      concurrentTasksPerWorker: 1,
    });
    return this.started;
  }

  /** Resolves when every thread has started and loaded HDF5 (fails early if they cannot). */
  async ready(): Promise<void> {
    const seen = new Set<number>();
    // Each thread takes one task at a time, so concurrent pings spread over them.
    for (let attempt = 0; attempt < 3 && seen.size < this.threads; attempt++) {
      const ids = await Promise.all(Array.from({ length: this.threads }, () => this.piscina.run(null, { name: "pingTask" }) as Promise<number>));
      for (const id of ids) seen.add(id);
    }
  }

  /** Reads raw-file-first, then from the shard. Items of one shard should be sent together. */
  async read(items: ReadItem[]): Promise<ReadResult[]> {
    const outcomes = (await this.piscina.run(items, { name: "readTask" })) as (Uint8Array | null | WireError)[];
    return outcomes.map((outcome) => {
      if (outcome === null) return undefined;
      if (isWireError(outcome)) return fromWire(outcome);
      return outcome;
    });
  }

  /** Runs one commit (see commit.ts). The caller guarantees one commit per shard at a time. */
  async commit(request: CommitRequest): Promise<CommitResult> {
    const packed = packPuts(request);
    const transferList = packed.puts.length > 0 ? [packed.puts[0]!.bytes.buffer as ArrayBuffer] : [];
    return unwrap((await this.piscina.run(packed, { name: "commitTask", transferList })) as TaskResult<CommitResult>);
  }

  /** Dataset names of a shard; empty when the file does not exist. */
  async listShard(shardPath: string): Promise<string[]> {
    return unwrap((await this.piscina.run(shardPath, { name: "listTask" })) as TaskResult<string[]>);
  }

  /** Measures a shard (dataset count, live bytes); with `readData` reads every dataset in full. */
  async inspectShard(shardPath: string, readData: boolean): Promise<ShardReport> {
    return unwrap((await this.piscina.run({ shardPath, readData }, { name: "inspectTask" })) as TaskResult<ShardReport>);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.started?.close();
  }
}
