/**
 * Shared harness of the lease tests: child processes (test/children/) that
 * write a store with distributedLock, the logs of lease servers
 * (H5NEST_LEASE_LOG) and of worker commits (H5NEST_TRACE_FILE), both in
 * CLOCK_MONOTONIC nanoseconds, and the checks made on them:
 *  - no two leases of one shard overlap, across servers and takeovers;
 *  - no two commits of one shard overlap, each inside a lease of its token;
 *  - every chunk ends with a write that no later-acknowledged write superseded.
 */
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { TestContext } from "node:test";
import * as zarr from "zarrita";
import { createV2Array, H5NestedStore } from "h5nest";
import { tempDir } from "./tmp.js";

export const CHILDREN = path.join(import.meta.dirname, "..", "children");
export const hr = () => process.hrtime.bigint();
export const ms = (ns: bigint) => Number(ns) / 1e6;
/** JSON that also shows bigints. */
export const show = (value: unknown) => JSON.stringify(value, (_key, v) => (typeof v === "bigint" ? `${v}` : v));

// ---------------------------------------------------------------------------
// Child processes

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** hrtime when the parent saw the process exit (it was dead by then). */
  at: bigint;
}

export class Child {
  readonly proc: ChildProcessWithoutNullStreams;
  readonly lines: string[] = [];
  stderr = "";
  exit: ExitInfo | null = null;
  /** Resolves when the process exited and its output was read to the end. */
  readonly closed: Promise<ExitInfo>;
  private readonly listeners = new Set<() => void>();
  private ended = false;

  constructor(
    readonly name: string,
    script: string,
    args: string[],
    env: NodeJS.ProcessEnv,
    prefix: string[] = [],
  ) {
    // `prefix`: a command that runs node for us (setpriv, to run it as another user; it execs, keeping the pid).
    const command = [...prefix, process.execPath, path.join(CHILDREN, script), ...args];
    this.proc = spawn(command[0]!, command.slice(1), { stdio: "pipe", env });
    let partial = "";
    this.proc.stdout.setEncoding("utf8");
    this.proc.stdout.on("data", (text: string) => {
      partial += text;
      const parts = partial.split("\n");
      partial = parts.pop()!;
      if (parts.length) {
        this.lines.push(...parts);
        this.notify();
      }
    });
    this.proc.stderr.setEncoding("utf8");
    this.proc.stderr.on("data", (text: string) => {
      this.stderr = (this.stderr + text).slice(-3000);
    });
    this.proc.stdin.on("error", () => {}); // EPIPE after a kill
    this.proc.on("exit", (code, signal) => {
      this.exit = { code, signal, at: hr() };
    });
    this.closed = new Promise((resolve) => {
      this.proc.on("close", () => {
        this.ended = true;
        this.notify();
        resolve(this.exit!);
      });
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get alive(): boolean {
    return this.exit === null;
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }

  /** The first line (old or new) satisfying `match`. */
  waitFor(match: (line: string) => boolean, what: string, timeoutMs = 20_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const finish = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      const check = () => {
        const found = this.lines.find(match);
        if (found !== undefined) {
          finish();
          resolve(found);
        } else if (this.ended) {
          finish();
          reject(new Error(`${this.name} (pid ${this.pid}) ended (${show(this.exit)}) before ${what}\n${this.describe()}`));
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`${this.name} (pid ${this.pid}): timed out after ${timeoutMs} ms waiting for ${what}\n${this.describe()}`));
      }, timeoutMs);
      this.listeners.add(check);
      check();
    });
  }

  count(prefix: string): number {
    return this.lines.filter((line) => line.startsWith(prefix)).length;
  }

  send(line: string): void {
    this.proc.stdin.write(`${line}\n`);
  }

  signal(signal: NodeJS.Signals): void {
    if (this.alive) process.kill(this.pid, signal);
  }

  /** SIGKILL; returns the hrtime just before the signal was sent. */
  async kill9(): Promise<bigint> {
    const before = hr();
    process.kill(this.pid, "SIGKILL");
    await this.closed;
    return before;
  }

  describe(): string {
    return `last lines: ${JSON.stringify(this.lines.slice(-6))}\nstderr: ${this.stderr}`;
  }
}

export const childrenOf = new WeakMap<TestContext, Child[]>();

export function startChild(t: TestContext, name: string, script: string, args: string[], env: NodeJS.ProcessEnv, prefix: string[] = []): Child {
  const child = new Child(name, script, args, env, prefix);
  const list = childrenOf.get(t) ?? [];
  list.push(child);
  childrenOf.set(t, list);
  return child;
}

/** Kills (SIGCONT, then SIGKILL) every child of the test still running. */
export async function stopChildren(t: TestContext): Promise<void> {
  for (const child of childrenOf.get(t) ?? []) {
    if (!child.alive) continue;
    try {
      process.kill(child.pid, "SIGCONT");
      process.kill(child.pid, "SIGKILL");
    } catch {
      // already gone
    }
    await child.closed;
  }
}

// ---------------------------------------------------------------------------
// A store with one v2 array, and the logs of its lease servers and workers

export interface Scenario {
  dir: string;
  storePath: string;
  leaseLog: string;
  traceFile: string;
  env: NodeJS.ProcessEnv;
  shape: number[];
  chunks: number[];
}

/**
 * A temp folder with a store holding the uint32 array "img". With `fill`,
 * every chunk is written first (whole shards) with that value: `setup` is
 * that write, to count among the writes when checking the final chunks.
 */
export async function scenario(t: TestContext, shape: number[], chunks: number[], options: { fill?: number } = {}): Promise<Scenario & { setup: Write[] }> {
  // Registered before tempDir's removal (after-hooks run in order): children die first.
  // The lease servers' state lives inside the store (.h5nest/leases), removed with it.
  t.after(() => stopChildren(t));
  const dir = await tempDir(t, "h5nest-dlock-");
  const storePath = path.join(dir, "store");
  const setup = await H5NestedStore.open(storePath, { workers: 1 });
  const written: Write[] = [];
  try {
    const array = await createV2Array(setup, "img", { shape, chunks, dtype: "<u4", compressor: null });
    if (options.fill !== undefined) {
      const begin = hr();
      await zarr.set(array as zarr.Array<"uint32", H5NestedStore>, null, options.fill);
      const box = shape.map((n, axis) => [0, Math.ceil(n / chunks[axis]!)] as [number, number]);
      written.push({ child: "setup", value: options.fill, box, begin, end: hr(), acked: true, failure: null });
    }
  } finally {
    await setup.close();
  }
  const leaseLog = path.join(dir, "leases.jsonl");
  const traceFile = path.join(dir, "trace.jsonl");
  const env = { ...process.env, H5NEST_LEASE_LOG: leaseLog, H5NEST_TRACE_FILE: traceFile };
  return { dir, storePath, leaseLog, traceFile, env, shape, chunks, setup: written };
}

export function writerConfig(s: Scenario, extra: Record<string, unknown>): string {
  return JSON.stringify({ store: s.storePath, array: "img", workers: 1, ...extra });
}

/** Complete JSON lines of a file another process may still be appending to. */
export function readJsonLines<T>(file: string): T[] {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return [];
  }
  const lines = text.split("\n");
  lines.pop(); // empty, or a line still being written
  return lines.filter(Boolean).map((line) => JSON.parse(line) as T);
}

export interface LeaseEvent {
  event: "grant" | "renew" | "release";
  server: number;
  shard: string;
  owner: string;
  token: number;
  at: bigint;
  expires: bigint;
}

export function readLeaseLog(file: string): LeaseEvent[] {
  return readJsonLines<Record<string, unknown>>(file).map((e) => ({
    ...(e as unknown as LeaseEvent),
    at: BigInt(e.at as string),
    expires: BigInt(e.expires as string),
  }));
}

/** The pid inside an owner name (`host:pid:random`). */
export function ownerPid(owner: string): number {
  const parts = owner.split(":");
  return Number(parts[parts.length - 2]);
}

export interface LeaseInterval {
  shard: string;
  owner: string;
  token: number;
  /** The server that granted it. */
  server: number;
  /** The server of its latest event (a clean handover passes live leases to the next server). */
  lastServer: number;
  start: bigint;
  /** Release time, else the latest expiry granted (grant or renewal). */
  end: bigint;
  released: boolean;
}

/**
 * A lease handed from one server to the next has its expiry carried over
 * through the wall clock (Date.now(), 1 ms resolution): the two servers may
 * disagree about it by a millisecond or two. Holders stop SAFETY_MARGIN_MS
 * (250 ms) before the expiry, so this much is tolerated across servers only.
 */
export const CROSS_SERVER_SLACK_NS = 5_000_000n;

/**
 * One interval per token: [grant.at, release.at or the latest expiry]. Also
 * checks the log is coherent: each token granted once, renewals and releases
 * only of granted, live, unreleased tokens, of the same shard and owner.
 */
export function leaseIntervals(events: LeaseEvent[]): Map<number, LeaseInterval> {
  const byToken = new Map<number, LeaseInterval>();
  for (const e of events) {
    if (e.event === "grant") {
      assert.ok(!byToken.has(e.token), `token ${e.token} granted twice`);
      byToken.set(e.token, { shard: e.shard, owner: e.owner, token: e.token, server: e.server, lastServer: e.server, start: e.at, end: e.expires, released: false });
      continue;
    }
    const lease = byToken.get(e.token);
    assert.ok(lease, `${e.event} of token ${e.token}, which was never granted`);
    assert.equal(lease.shard, e.shard, `token ${e.token} is for ${lease.shard}, not ${e.shard}`);
    assert.equal(lease.owner, e.owner, `token ${e.token} belongs to ${lease.owner}, not ${e.owner}`);
    assert.ok(!lease.released, `${e.event} of token ${e.token} after its release`);
    const slack = e.server === lease.lastServer ? 0n : CROSS_SERVER_SLACK_NS;
    lease.lastServer = e.server;
    if (e.event === "renew") {
      assert.ok(e.at < lease.end + slack, `token ${e.token} renewed ${ms(e.at - lease.end)} ms after it expired`);
      if (e.expires > lease.end) lease.end = e.expires;
    } else {
      lease.end = e.at;
      lease.released = true;
    }
  }
  return byToken;
}

/** No two leases of one shard overlap; tokens grow with every grant of a shard. */
export function assertNoOverlappingLeases(intervals: Map<number, LeaseInterval>): void {
  const byShard = new Map<string, LeaseInterval[]>();
  for (const lease of intervals.values()) {
    const list = byShard.get(lease.shard) ?? [];
    list.push(lease);
    byShard.set(lease.shard, list);
  }
  for (const [shard, list] of byShard) {
    list.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    let previous: LeaseInterval | null = null;
    for (const lease of list) {
      if (previous) {
        const slack = lease.server === previous.lastServer ? 0n : CROSS_SERVER_SLACK_NS;
        assert.ok(
          lease.start + slack >= previous.end,
          `${shard}: token ${lease.token} (owner pid ${ownerPid(lease.owner)}, server ${lease.server}) granted ` +
            `${ms(previous.end - lease.start).toFixed(3)} ms before token ${previous.token} (owner pid ${ownerPid(previous.owner)}, ` +
            `server ${previous.server}) ended`,
        );
        assert.ok(lease.token > previous.token, `${shard}: token ${lease.token} granted after ${previous.token}`);
      }
      if (!previous || lease.end > previous.end) previous = lease;
    }
  }
}

export interface Commit {
  thread: number;
  pid: number;
  owner: string;
  lease: number;
  start: bigint;
  end: bigint;
}

export function readTrace(file: string): Commit[] {
  return readJsonLines<Record<string, unknown>>(file).map((e) => ({
    ...(e as unknown as Commit),
    start: BigInt(e.start as string),
    end: BigInt(e.end as string),
  }));
}

/**
 * No two commits of a shard overlap (across processes and threads), and each
 * runs inside the lease of its fencing token, held by its own process.
 * Returns how many shards were committed by more than one process.
 */
export function assertCommitsExclusive(commits: Commit[], intervals: Map<number, LeaseInterval>): number {
  const byOwner = new Map<string, Commit[]>();
  for (const c of commits) {
    const lease = intervals.get(c.lease);
    assert.ok(lease, `commit of ${c.owner} by pid ${c.pid} under token ${c.lease}, which no server granted`);
    assert.equal(lease.shard, c.owner, `commit of ${c.owner} under token ${c.lease}, a lease of ${lease.shard}`);
    assert.equal(ownerPid(lease.owner), c.pid, `commit by pid ${c.pid} under token ${c.lease} of ${lease.owner}`);
    assert.ok(c.start >= lease.start, `commit of ${c.owner} (token ${c.lease}) started ${ms(lease.start - c.start)} ms before its grant`);
    assert.ok(c.end <= lease.end, `commit of ${c.owner} (token ${c.lease}) ended ${ms(c.end - lease.end)} ms after its lease`);
    const list = byOwner.get(c.owner) ?? [];
    list.push(c);
    byOwner.set(c.owner, list);
  }
  let shared = 0;
  for (const [owner, list] of byOwner) {
    list.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    let latest: Commit | null = null;
    for (const c of list) {
      if (latest) {
        assert.ok(
          c.start >= latest.end,
          `${owner}: commit of pid ${c.pid} (token ${c.lease}) overlaps commit of pid ${latest.pid} (token ${latest.lease})`,
        );
      }
      if (!latest || c.end > latest.end) latest = c;
    }
    if (new Set(list.map((c) => c.pid)).size > 1) shared += 1;
  }
  return shared;
}

// ---------------------------------------------------------------------------
// Writes and the final contents

export interface Write {
  child: string;
  value: number;
  /** [from, to) per axis, in chunks. */
  box: [number, number][];
  begin: bigint;
  /** Acknowledgement time; for a killed writer's unacknowledged write, its death. */
  end: bigint | null;
  acked: boolean;
  failure: string | null;
}

export function writesOf(child: Child, diedAt?: bigint): Write[] {
  const writes = new Map<number, Write>();
  for (const line of child.lines) {
    const [kind, value, time, ...rest] = line.split(" ");
    if (kind === "begin") {
      writes.set(Number(value), { child: child.name, value: Number(value), box: JSON.parse(rest.join(" ")), begin: BigInt(time!), end: null, acked: false, failure: null });
    } else if (kind === "ack" || kind === "fail") {
      const write = writes.get(Number(value));
      assert.ok(write, `${child.name}: ${kind} of ${value} without begin`);
      write.end = BigInt(time!);
      write.acked = kind === "ack";
      if (kind === "fail") write.failure = rest.join(" ");
    }
  }
  const list = [...writes.values()];
  if (diedAt !== undefined) for (const w of list) if (w.end === null) w.end = diedAt;
  return list;
}

export async function readArray(storePath: string): Promise<Uint32Array> {
  const store = await H5NestedStore.open(storePath, { workers: 1 });
  try {
    const array = await zarr.open.v2(zarr.root(store).resolve("img"), { kind: "array" });
    return (await zarr.get(array, null)).data as Uint32Array;
  } finally {
    await store.close();
  }
}

export function* indices(extent: number[]): Generator<number[]> {
  const index = extent.map(() => 0);
  if (extent.some((n) => n === 0)) return;
  for (;;) {
    yield [...index];
    let axis = extent.length - 1;
    while (axis >= 0 && ++index[axis]! === extent[axis]) index[axis--] = 0;
    if (axis < 0) return;
  }
}

/**
 * Every chunk is uniform (not torn) and holds the value of a write covering
 * it that no acknowledged write begun after that write's end superseded;
 * a chunk no acknowledged write covered may still hold the fill value 0.
 */
export function assertFinalChunks(data: Uint32Array, s: Scenario, writes: Write[]): { contested: number } {
  const grid = s.shape.map((n, axis) => n / s.chunks[axis]!);
  const stride = s.shape.map((_, axis) => s.shape.slice(axis + 1).reduce((a, b) => a * b, 1));
  let contested = 0;
  for (const chunk of indices(grid)) {
    const origin = chunk.map((c, axis) => c * s.chunks[axis]!);
    let value: number | undefined;
    for (const offset of indices(s.chunks)) {
      const at = data[offset.reduce((sum, o, axis) => sum + (origin[axis]! + o) * stride[axis]!, 0)]!;
      if (value === undefined) value = at;
      else assert.equal(at, value, `chunk ${chunk} is torn: ${value} and ${at}`);
    }
    const covering = writes.filter((w) => w.box.every(([from, to], axis) => chunk[axis]! >= from && chunk[axis]! < to));
    if (new Set(covering.map((w) => w.child)).size > 1) contested += 1;
    if (value === 0) {
      const acked = covering.find((w) => w.acked);
      assert.equal(acked, undefined, `chunk ${chunk} holds the fill value, but write ${acked?.value} of it was acknowledged`);
      continue;
    }
    const winner = covering.find((w) => w.value === value);
    assert.ok(winner, `chunk ${chunk} holds ${value}, which no write of this chunk wrote`);
    assert.ok(winner.end !== null, `chunk ${chunk} holds ${value}, a write that neither ended nor died`);
    const later = covering.find((w) => w.acked && w.begin > winner.end!);
    assert.equal(later, undefined, `chunk ${chunk}: acknowledged write ${later?.value} (${later?.child}) began after ${value} (${winner.child}) ended, yet lost`);
  }
  return { contested };
}

// Five-dimensional like the images h5nest stores: 8 shards (one per t,c,z) of 16 chunks of 1 KiB.
export const SHAPE = [1, 2, 4, 64, 64];
export const CHUNKS = [1, 1, 1, 16, 16];

/** Runs the checks shared by the writer tests; returns the lease intervals. */
/**
 * One name per shard file: lease names may be absolute paths (as the
 * process that took the lease spelled its store's path) or relative to the
 * store; commit traces name the shard by the writer's path. Both become the
 * real path of the shard file.
 */
export function shardNamer(storePath: string, aliases: [string, string][] = []): (name: string) => string {
  const realStore = fs.realpathSync(storePath);
  const folders = new Map<string, string>();
  return (name) => {
    // Another mount of the store (a bind mount) names its shards by that path.
    for (const [alias, target] of aliases) if (name === alias || name.startsWith(`${alias}/`)) name = target + name.slice(alias.length);
    const absolute = path.isAbsolute(name) ? name : path.join(realStore, name);
    const folder = path.dirname(absolute);
    let real = folders.get(folder);
    if (real === undefined) {
      try {
        real = fs.realpathSync(folder);
      } catch {
        real = folder;
      }
      folders.set(folder, real);
    }
    return path.join(real, path.basename(absolute));
  };
}

/** Checks the lease log and the commit trace (shards named by their real paths). */
export function assertLogs(s: Scenario, aliases: [string, string][] = []): { intervals: Map<number, LeaseInterval>; events: LeaseEvent[]; commits: Commit[]; shared: number } {
  const canonical = shardNamer(s.storePath, aliases);
  const events = readLeaseLog(s.leaseLog).map((e) => ({ ...e, shard: canonical(e.shard) }));
  const commits = readTrace(s.traceFile).map((c) => ({ ...c, owner: canonical(c.owner) }));
  assert.ok(events.length > 0, "the lease server logged its grants");
  assert.ok(commits.length > 0, "the workers traced their commits");
  const intervals = leaseIntervals(events);
  assertNoOverlappingLeases(intervals);
  const shared = assertCommitsExclusive(commits, intervals);
  return { intervals, events, commits, shared };
}

