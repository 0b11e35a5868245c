/**
 * Entry point of a piscina worker thread. Each task is synchronous HDF5 and
 * file work; every failure comes back as a WireError, so an HDF5 error never
 * takes the thread (or the pool) down.
 */
import fs from "node:fs";
import { threadId } from "node:worker_threads";
import { Piscina } from "piscina";
import { commit, commitNeedsHdf5, type CommitRequest, type CommitResult } from "./commit.js";
import { toWire, type WireError } from "./errors.js";
import { hdf5Loaded, initHdf5 } from "./hdf5.js";
import { inspectShard, listShard, type ReadItem, type ReadOutcome, readChunks, type ShardReport } from "./read.js";

// HDF5 (h5wasm) loads on the first task that needs it: commits write shards
// in TypeScript and read old ones through the index, so most never do.

export type TaskResult<T> = { ok: true; value: T } | { ok: false; error: WireError };

function attempt<T>(work: () => T): TaskResult<T> {
  try {
    return { ok: true, value: work() };
  } catch (error) {
    return { ok: false, error: toWire(error) };
  }
}

/** Ownership trace for tests: one JSON line per commit with its start and end (monotonic ns). */
const traceFile = process.env.H5NEST_TRACE_FILE;

export async function commitTask(request: CommitRequest): Promise<TaskResult<CommitResult>> {
  if (!hdf5Loaded() && commitNeedsHdf5(request)) await initHdf5();
  const start = process.hrtime.bigint();
  const result = attempt(() => commit(request));
  if (traceFile) {
    const end = process.hrtime.bigint();
    const line = { thread: threadId, pid: process.pid, owner: request.shardPath, lease: request.lease, start: `${start}`, end: `${end}` };
    fs.appendFileSync(traceFile, `${JSON.stringify(line)}\n`);
  }
  return result;
}

/**
 * Read results travel by transfer, not copy. Only buffers that own their
 * whole ArrayBuffer are transferred (Node pools small Buffers: detaching a
 * pool would corrupt others); the rest are copied as usual.
 */
export async function readTask(items: ReadItem[]): Promise<unknown> {
  await initHdf5();
  const outcomes = readChunks(items);
  const buffers = new Set<ArrayBuffer>();
  for (const outcome of outcomes) {
    if (outcome instanceof Uint8Array && outcome.byteOffset === 0 && outcome.byteLength === outcome.buffer.byteLength) {
      buffers.add(outcome.buffer as ArrayBuffer);
    }
  }
  const transferable = { [Piscina.transferableSymbol]: [...buffers], [Piscina.valueSymbol]: outcomes };
  return Piscina.move(transferable as unknown as Parameters<typeof Piscina.move>[0]);
}

/** Resolves once this thread has loaded HDF5. */
export async function pingTask(): Promise<number> {
  await initHdf5();
  return threadId;
}

export async function listTask(shardPath: string): Promise<TaskResult<string[]>> {
  await initHdf5();
  return attempt(() => listShard(shardPath));
}

export async function inspectTask(request: { shardPath: string; readData: boolean }): Promise<TaskResult<ShardReport>> {
  await initHdf5();
  return attempt(() => inspectShard(request.shardPath, request.readData));
}
