/**
 * Distributed ingest (--distributed): the main workload written by several
 * processes sharing shard leases, against 1 process without a lock doing the
 * whole workload, in the same run, rounds interleaved. Every variant runs its
 * writers as child processes (bench/ingest-child.ts) with the same harness:
 * they open the store and fill their values first, then all get "go" at once;
 * the time from "go" to the last writer's "done" (after its store.close())
 * is the write time. The values are read back and checked outside the timing.
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { H5NestedStore } from "h5nest";
import * as zarr from "zarrita";
import type { IngestJob } from "./ingest-child.js";
import { describe, provenance, rebuiltSince } from "./provenance.js";
import { type BenchRedis, infoField, startBenchRedis } from "./redis.js";
import { interleavedRounds, pairedRatio, type Stat, stat } from "./stats.js";
import { formatTable, mib, num, range, ratio } from "./table.js";
import { ARRAY_PATH, assertSameValues, type TempRoot, type Workload } from "./workloads.js";

const CHILD = path.join(import.meta.dirname, "ingest-child.mjs");

/**
 * Python H5_Nested_Store (CBI-PITT/zarr_stores) with distributed_lock, 2
 * processes writing this workload, measured earlier on this machine class.
 */
export const REFERENCE_PY_DISTRIBUTED_CHUNKS_PER_SEC = 600;
/** What the distributed variants should reach relative to 1 process without a lock. */
export const TARGET_RATIO = 0.8;

type LockKind = "none" | "local" | "redis";

interface DistributedVariant {
  id: string;
  label: string;
  processes: number;
  part: IngestJob["part"];
  lock: LockKind;
  /** The variant with the same processes and parts but no lock: "vs same, no lock" is against it. */
  nolock?: string;
}

const BASELINE_ID = "solo";

const VARIANTS: DistributedVariant[] = [
  { id: BASELINE_ID, label: "1 process, no lock, all planes (baseline)", processes: 1, part: "all", lock: "none" },
  { id: "solo-local", label: "1 process, distributedLock: true, all planes", processes: 1, part: "all", lock: "local", nolock: BASELINE_ID },
  { id: "solo-redis", label: "1 process, Redis lock, all planes", processes: 1, part: "all", lock: "redis", nolock: BASELINE_ID },
  { id: "split-nolock", label: "2 processes, no lock, half the planes each (no shared shard)", processes: 2, part: "split", lock: "none" },
  { id: "split-local", label: "2 processes, distributedLock: true, half the planes each", processes: 2, part: "split", lock: "local", nolock: "split-nolock" },
  { id: "split-redis", label: "2 processes, Redis lock, half the planes each", processes: 2, part: "split", lock: "redis", nolock: "split-nolock" },
  { id: "quad-nolock", label: "4 processes, no lock, a quarter of the planes each (no shared shard)", processes: 4, part: "split", lock: "none" },
  { id: "quad-redis", label: "4 processes, Redis lock, a quarter of the planes each", processes: 4, part: "split", lock: "redis", nolock: "quad-nolock" },
  { id: "contended-local", label: "2 processes, distributedLock: true, alternate chunk rows of every plane", processes: 2, part: "interleaved", lock: "local" },
  { id: "contended-redis", label: "2 processes, Redis lock, alternate chunk rows of every plane", processes: 2, part: "interleaved", lock: "redis" },
];

interface ChildReport {
  openMs: number;
  setMs: number;
  closeMs: number;
  chunks: number;
  maxRssBytes: number;
}

interface DistributedRun {
  /** From "go" to the last writer's "done". */
  wallMs: number;
  children: ChildReport[];
  /** Redis variants: leases Redis granted (INCR calls) and lease EVALs it ran (acquire attempts, renewals, releases) from "go" to the last "done". */
  grants: number | null;
  evals: number | null;
}

export interface DistributedVariantSummary {
  id: string;
  label: string;
  processes: number;
  lock: LockKind;
  ok: number;
  failures: string[];
  chunksPerSec: Stat | null;
  mbPerSec: Stat | null;
  /** Per round: this variant's chunks/s over the baseline's (same round). */
  vsBaseline: Stat | null;
  /** Per round: chunks/s over those of the same processes and parts without a lock (`nolock`). */
  vsNoLock: Stat | null;
  /** Redis variants: grants per run, and per second of the write time. */
  redisGrants: Stat | null;
  redisGrantsPerSec: Stat | null;
  redisEvalsPerSec: Stat | null;
  /** Chunks/s over REFERENCE_PY_DISTRIBUTED_CHUNKS_PER_SEC (a fixed figure, not measured). */
  vsPythonReference: Stat | null;
  /** Write time of each round (null: failed), in round order. */
  writeMsPerRound: (number | null)[];
  openMs: Stat | null;
  closeMs: Stat | null;
  childMaxRssBytes: Stat | null;
}

export type DistributedOutcome = {
  config: Record<string, unknown>;
  notices: string[];
  variants: DistributedVariantSummary[];
};

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

/** A child process of a benchmark that reports on stdout, one line per event ("ready ...", "done ...", "error ..."). */
export class Writer {
  readonly proc: ChildProcess;
  private buffer = "";
  readonly lines: string[] = [];
  stderr = "";
  /** performance.now() when each line arrived. */
  readonly arrivals: number[] = [];
  readonly exit: Promise<[number | null, NodeJS.Signals | null]>;
  exited = false;
  private waiters: (() => void)[] = [];

  constructor(job: object, script: string = CHILD) {
    this.proc = spawn(process.execPath, [script, JSON.stringify(job)], { stdio: ["pipe", "pipe", "pipe"] });
    this.proc.stdout!.setEncoding("utf8").on("data", (text: string) => {
      const at = performance.now();
      const parts = (this.buffer + text).split("\n");
      this.buffer = parts.pop()!;
      for (const line of parts.filter(Boolean)) {
        this.lines.push(line);
        this.arrivals.push(at);
      }
      for (const wake of this.waiters.splice(0)) wake();
    });
    this.proc.stderr!.setEncoding("utf8").on("data", (text: string) => (this.stderr = (this.stderr + text).slice(-4000)));
    this.proc.stdin!.on("error", () => {});
    this.exit = new Promise((resolve) =>
      this.proc.on("exit", (code, signal) => {
        this.exited = true;
        for (const wake of this.waiters.splice(0)) wake();
        resolve([code, signal]);
      }),
    );
  }

  /**
   * The first line starting with `kind` (and when it arrived); throws on "error", exit or timeout.
   * `take`: remove it, so that the next call waits for the next such line.
   */
  async line(kind: string, timeoutMs: number, take = false): Promise<{ fields: string[]; at: number }> {
    const giveUp = performance.now() + timeoutMs;
    for (;;) {
      const index = this.lines.findIndex((l) => l.split(" ")[0] === kind);
      if (index >= 0) {
        const found = { fields: this.lines[index]!.split(" "), at: this.arrivals[index]! };
        if (take) {
          this.lines.splice(index, 1);
          this.arrivals.splice(index, 1);
        }
        return found;
      }
      const failed = this.lines.find((l) => l.startsWith("error "));
      if (failed) throw new Error(`writer failed: ${failed}`);
      if (this.exited) throw new Error(`writer exited before "${kind}": ${this.stderr.trim().split("\n").slice(-3).join(" | ")}`);
      const left = giveUp - performance.now();
      if (left <= 0) throw new Error(`no "${kind}" from a writer within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

/** Writes the array's metadata files (.zgroup, .zarray) as zarrita encoded them. */
async function writeMetadata(dir: string, encoded: Map<string, Uint8Array>): Promise<void> {
  for (const [key, bytes] of encoded) {
    if (!/(^|\/)\.z(group|array|attrs)$/.test(key)) continue;
    const file = path.join(dir, key);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, bytes);
  }
}

/** One shard per z-plane and nothing else (no raw chunk file left behind). */
async function expectShards(dir: string, planes: number): Promise<void> {
  const folder = path.join(dir, ARRAY_PATH, "0", "0");
  const names = await fs.readdir(folder);
  const shards = names.filter((n) => n.endsWith(".h5")).length;
  if (shards !== planes || names.length !== planes) {
    throw new Error(`expected ${planes} shard files in ${folder}, found ${shards} shards among ${names.length} entries`);
  }
}

interface Context {
  workload: Workload;
  encoded: Map<string, Uint8Array>;
  temp: TempRoot;
  workers: number | undefined;
  redis: BenchRedis | null;
}

async function redisCounts(redis: BenchRedis): Promise<{ grants: number; evals: number }> {
  const info = await redis.info("commandstats");
  return { grants: infoField(info, "calls", "cmdstat_incr"), evals: infoField(info, "calls", "cmdstat_eval") };
}

async function runOnce(v: DistributedVariant, ctx: Context): Promise<DistributedRun> {
  const dir = await ctx.temp.fresh(v.id);
  const writers: Writer[] = [];
  try {
    await writeMetadata(dir, ctx.encoded);
    const lock: IngestJob["lock"] = v.lock === "none" ? null : v.lock === "local" ? "local" : { redis: ctx.redis!.url };
    for (let index = 0; index < v.processes; index++) {
      writers.push(new Writer({ dir, planes: ctx.workload.planes, part: v.part, index, of: v.processes, workers: ctx.workers ?? null, lock }));
    }
    const ready = await Promise.all(writers.map((w) => w.line("ready", 120_000)));
    const counted = v.lock === "redis" ? ctx.redis : null;
    const before = counted ? await redisCounts(counted) : null;
    const t0 = performance.now();
    for (const w of writers) w.proc.stdin!.end("go\n");
    const done = await Promise.all(writers.map((w) => w.line("done", 600_000)));
    const wallMs = Math.max(...done.map((d) => d.at)) - t0;
    const after = counted ? await redisCounts(counted) : null;
    for (const w of writers) {
      const [code, signal] = await w.exit;
      if (code !== 0) throw new Error(`writer exited with ${code ?? signal}: ${w.stderr.trim().split("\n").slice(-3).join(" | ")}`);
    }
    const children = done.map(({ fields }, i) => ({
      openMs: Number(ready[i]!.fields[1]),
      setMs: Number(fields[1]),
      closeMs: Number(fields[2]),
      chunks: Number(fields[3]),
      maxRssBytes: Number(fields[4]) * 1024,
    }));
    const chunks = children.reduce((sum, c) => sum + c.chunks, 0);
    if (chunks !== ctx.workload.chunkCount) throw new Error(`writers wrote ${chunks} chunks, the workload has ${ctx.workload.chunkCount}`);

    // Outside the timing: every value right, one shard per plane.
    const reader = await H5NestedStore.open(dir, ctx.workers ? { workers: ctx.workers } : {});
    try {
      const array = await zarr.open.v2(zarr.root(reader).resolve(ARRAY_PATH), { kind: "array" });
      const got = await zarr.get(array, null);
      assertSameValues(v.label, got.data as Uint16Array, ctx.workload.data);
    } finally {
      await reader.close();
    }
    await expectShards(dir, ctx.workload.planes);
    return { wallMs, children, grants: after && before ? after.grants - before.grants : null, evals: after && before ? after.evals - before.evals : null };
  } finally {
    for (const w of writers) if (!w.exited) w.proc.kill("SIGKILL");
    await Promise.all(writers.map((w) => w.exit));
    await ctx.temp.remove(dir);
  }
}

export async function runDistributedBench(
  workload: Workload,
  encoded: Map<string, Uint8Array>,
  temp: TempRoot,
  rounds: number,
  workers: number | undefined,
): Promise<DistributedOutcome> {
  const code = provenance();
  const notices: string[] = [];
  const redisDir = await temp.fresh("redis");
  const redis = await startBenchRedis(redisDir);
  let variants = VARIANTS;
  if ("missing" in redis) {
    notices.push(`${redis.missing}: the Redis rows are left out`);
    log(`\n*** NOTICE: ${redis.missing}: Redis variants of the distributed ingest skipped ***\n`);
    variants = VARIANTS.filter((v) => v.lock !== "redis");
  }
  const ctx: Context = { workload, encoded, temp, workers, redis: "missing" in redis ? null : redis };
  const results = new Map<string, (DistributedRun | string)[]>(variants.map((v) => [v.id, []]));
  try {
    log(`distributed ingest: warm-up (not counted): ${BASELINE_ID}`);
    await runOnce(VARIANTS[0]!, ctx);
    const measured = await interleavedRounds("distributed", variants, rounds, (v) => runOnce(v, ctx), (run) => `${run.wallMs.toFixed(0)} ms`, log);
    for (const [id, list] of measured) results.set(id, list);
  } finally {
    if (!("missing" in redis)) await redis.stop();
  }

  const rate = (list: (DistributedRun | string)[]): (number | null)[] =>
    list.map((r) => (typeof r === "string" || r === undefined ? null : workload.chunkCount / (r.wallMs / 1000)));
  const baseline = rate(results.get(BASELINE_ID) ?? []);
  const present = (values: (number | null | undefined)[]): number[] => values.filter((x): x is number => x != null);
  const summaries = variants.map((v): DistributedVariantSummary => {
    const list = results.get(v.id) ?? [];
    const runs = list.filter((r): r is DistributedRun => typeof r !== "string" && r !== undefined);
    const rates = rate(list);
    const redisRuns = runs.filter((r) => r.grants !== null);
    return {
      id: v.id,
      label: v.label,
      processes: v.processes,
      lock: v.lock,
      ok: runs.length,
      failures: list.filter((r): r is string => typeof r === "string"),
      chunksPerSec: stat(present(rates)),
      mbPerSec: stat(present(rates).map((c) => (c * workload.chunkBytes) / 1e6)),
      vsBaseline: v.id === BASELINE_ID ? null : pairedRatio(rates, baseline),
      vsNoLock: v.nolock && results.has(v.nolock) ? pairedRatio(rates, rate(results.get(v.nolock)!)) : null,
      redisGrants: stat(redisRuns.map((r) => r.grants!)),
      redisGrantsPerSec: stat(redisRuns.map((r) => r.grants! / (r.wallMs / 1000))),
      redisEvalsPerSec: stat(redisRuns.map((r) => r.evals! / (r.wallMs / 1000))),
      writeMsPerRound: Array.from({ length: rounds }, (_, i) => {
        const r = list[i];
        return r === undefined || typeof r === "string" ? null : Math.round(r.wallMs);
      }),
      vsPythonReference: v.processes > 1 ? stat(present(rates).map((c) => c / REFERENCE_PY_DISTRIBUTED_CHUNKS_PER_SEC)) : null,
      openMs: stat(runs.map((r) => Math.max(...r.children.map((c) => c.openMs)))),
      closeMs: stat(runs.map((r) => Math.max(...r.children.map((c) => c.closeMs)))),
      childMaxRssBytes: stat(runs.map((r) => Math.max(...r.children.map((c) => c.maxRssBytes)))),
    };
  });
  const rebuilt = rebuiltSince(code);
  if (rebuilt) notices.push(rebuilt);
  return {
    config: {
      code: describe(code),
      commit: code.commit,
      rounds,
      chunks: workload.chunkCount,
      chunkBytes: workload.chunkBytes,
      shape: workload.shape,
      chunkShape: workload.chunks,
      workersPerProcess: workers ?? `default (${os.availableParallelism()})`,
      cpus: os.availableParallelism(),
      node: process.version,
      tmpdir: os.tmpdir(),
      redis: "missing" in redis ? null : redis.version,
      referencePythonDistributedChunksPerSec: REFERENCE_PY_DISTRIBUTED_CHUNKS_PER_SEC,
      targetRatio: TARGET_RATIO,
    },
    notices,
    variants: summaries,
  };
}

export function distributedFailed(outcome: DistributedOutcome): boolean {
  return outcome.variants.some((v) => v.failures.length > 0) || outcome.notices.some((n) => n.includes("changed during the run"));
}

export function renderDistributed(outcome: DistributedOutcome): string {
  const c = outcome.config;
  const out: string[] = [];
  out.push(
    `distributed ingest: ${c.chunks} chunks x ${Number(c.chunkBytes) / 1024} KiB, uint16 shape [${(c.shape as number[]).join(",")}] ` +
      `chunks [${(c.chunkShape as number[]).join(",")}], writeDirect, one shard per z-plane`,
  );
  out.push(
    `${c.rounds} interleaved rounds (order rotated); medians; every writer is a child process; write time = "go" to the last writer's ` +
      `store.close(); ${c.cpus} CPUs; h5nest workers per process=${c.workersPerProcess}; redis ${c.redis ?? "missing"}; node ${c.node}`,
  );
  out.push(String(c.code));
  for (const notice of outcome.notices) out.push(`*** NOTICE: ${notice} ***`);
  out.push("");
  const target = (v: DistributedVariantSummary): string => {
    if (!v.vsBaseline || v.processes < 2 || v.lock === "none") return "";
    return v.vsBaseline.median >= TARGET_RATIO ? "yes" : "NO";
  };
  out.push(
    formatTable(
      ["variant", "chunks/s", "MB/s", "chunks/s min..max", `vs 1 process no lock`, "min..max", `>= ${TARGET_RATIO}x`, "vs same, no lock", "min..max", "Redis grants", "grants/s", "EVALs/s", "write ms per round", "open ms", "close ms", "writer peak RSS MiB", "ok"],
      outcome.variants.map((v) => [
        v.label,
        num(v.chunksPerSec?.median),
        num(v.mbPerSec?.median),
        range(v.chunksPerSec?.min, v.chunksPerSec?.max),
        v.id === BASELINE_ID ? "1.00x (baseline)" : ratio(v.vsBaseline?.median),
        range(v.vsBaseline?.min, v.vsBaseline?.max, (x) => x.toFixed(2)),
        target(v),
        ratio(v.vsNoLock?.median),
        range(v.vsNoLock?.min, v.vsNoLock?.max, (x) => x.toFixed(2)),
        num(v.redisGrants?.median),
        num(v.redisGrantsPerSec?.median),
        num(v.redisEvalsPerSec?.median),
        v.writeMsPerRound.map((x) => (x === null ? "FAIL" : String(x))).join(" "),
        num(v.openMs?.median),
        num(v.closeMs?.median),
        mib(v.childMaxRssBytes?.max),
        `${v.ok}/${v.ok + v.failures.length}`,
      ]),
    ),
  );
  out.push("");
  out.push(`REFERENCE FIGURE, not measured in this run: Python H5_Nested_Store with distributed_lock, 2 processes, ~${REFERENCE_PY_DISTRIBUTED_CHUNKS_PER_SEC} chunks/s`);
  out.push(
    formatTable(
      ["ratio", "median", "min..max", "basis"],
      outcome.variants
        .filter((v) => v.vsPythonReference)
        .map((v) => [
          `${v.label} / Python ${REFERENCE_PY_DISTRIBUTED_CHUNKS_PER_SEC} chunks/s`,
          ratio(v.vsPythonReference?.median),
          range(v.vsPythonReference?.min, v.vsPythonReference?.max, (x) => x.toFixed(2)),
          "REFERENCE FIGURE, not measured in this run",
        ]),
    ),
  );
  out.push("");
  out.push("notes:");
  out.push("  vs 1 process no lock: chunks/s over the baseline's in the same round, median of the per-round ratios (>1: faster).");
  out.push("  vs same, no lock: chunks/s over those of the same processes writing the same parts without a lock, same round, median:");
  out.push("  what the lock costs at that process count (1 = none; contended rows have no lock-free counterpart).");
  out.push("  Redis grants: leases Redis granted from \"go\" to the last \"done\" (INFO commandstats: INCR calls), per run and per second of");
  out.push("  the write time; EVALs/s: every lease script call (acquire attempts, renewals, releases) per second.");
  out.push("  half / a quarter of the planes: the processes share no shard. alternate chunk rows: both processes write every shard (contended).");
  out.push("  open ms: slowest writer's H5NestedStore.open + zarr.open (worker threads' start, lease server or Redis connection), not timed.");
  out.push("  close ms: slowest writer's store.close(), part of the write time. writer peak RSS: max over rounds of a writer's ru_maxrss.");
  out.push("  write ms per round: in round order. The bench's fresh redis-server is marked as long in use (h5nest:epoch, h5nest:runid), or the first");
  out.push("  acquire on it would wait one lease term (h5nest cannot tell a new Redis from one that lost its data).");
  for (const v of outcome.variants) for (const failure of v.failures) out.push(`*** FAILED ${v.label}: ${failure} ***`);
  return out.join("\n");
}
