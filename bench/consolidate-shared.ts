/**
 * Scale-out consolidation (--consolidate-shared; issue 12, "Measure"):
 * 1, 2 and 4 `h5nest consolidate --redis URL` processes sharing one job
 * through Redis (a BullMQ queue of folder and shard tasks) on the same
 * freshly written raw store, against 1 process `h5nest consolidate` without
 * --redis (no lock), in the same run, rounds interleaved. Time = spawn of the
 * first process to the exit of the last (node start, worker start, Redis
 * connection, the job and the close, all included). Outside the timing:
 * every process's summary, that each chunk was folded exactly once (shares
 * add up to the store, no shard in two processes' shard events), and that
 * the store is fully consolidated (no raw chunk file left).
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { checkChunkEncoding, CLI, expectShards, freeBytes, verifyThroughH5nest, writeRawStore } from "./consolidate.js";
import { describe, provenance, rebuiltSince } from "./provenance.js";
import { type BenchRedis, startBenchRedis } from "./redis.js";
import { interleavedRounds, pairedRatio, type Stat, stat } from "./stats.js";
import { formatTable, mib, num, range, ratio } from "./table.js";
import { ARRAY_PATH, CHUNK_BYTES, CHUNKS_PER_PLANE, type TempRoot } from "./workloads.js";

const TIME = "/usr/bin/time";
/** N processes should take no longer than 1 (chunks/s ratio against 1 process with --redis). */
export const TARGET_SPEEDUP = 1;
/** Every process's share of the chunks within this factor of the mean. */
export const TARGET_SHARE_FACTOR = 2;

export interface SharedBenchOptions {
  /** Shards (z-planes of 256 chunks of 8 KiB) in the raw store. */
  shards: number;
  rounds: number;
  /** h5nest worker threads per process. */
  workers: number;
  fsConcurrency: number;
}

interface SharedVariant {
  id: string;
  label: string;
  processes: number;
  redis: boolean;
  /** Worker threads per process as a multiple of --workers (default 1). */
  workersTimes?: number;
}

const BASELINE_ID = "nolock";
const REDIS_ONE_ID = "redis-1";
/** Context: one process without a lock with the worker threads of 2 processes (with --workers 1 on 2 CPUs: both cores). */
const DOUBLE_ID = "nolock-2w";

const VARIANTS: SharedVariant[] = [
  { id: BASELINE_ID, label: "1 process, no --redis (no lock; baseline)", processes: 1, redis: false },
  { id: DOUBLE_ID, label: "1 process, no --redis, twice the workers (context)", processes: 1, redis: false, workersTimes: 2 },
  { id: REDIS_ONE_ID, label: "1 process, --redis", processes: 1, redis: true },
  { id: "redis-2", label: "2 processes, --redis (one shared job)", processes: 2, redis: true },
  { id: "redis-4", label: "4 processes, --redis (one shared job)", processes: 4, redis: true },
];

interface ProcessRun {
  /** The process's own "seconds" (its summary: store opened to job done). */
  ownSeconds: number;
  /** Chunks it folded (its summary). */
  chunks: number;
  /** Shards it reported folding (shard events with chunks > 0), relative to the store. */
  shards: string[];
  /** From the spawn of the first process: its first and last shard event, and its exit. */
  firstFoldMs: number | null;
  lastFoldMs: number | null;
  exitMs: number;
  /** /usr/bin/time: user + sys CPU seconds and peak RSS. */
  cpuSeconds: number | null;
  maxRssBytes: number | null;
  /** Notices it printed on stderr (e.g. a first-grant wait). */
  notices: string[];
}

interface RedisCounts {
  commands: number;
  usec: number;
  cpuSeconds: number;
  byCommand: Record<string, number>;
}

interface SharedRun {
  /** Spawn of the first process to the exit of the last. */
  wallMs: number;
  processes: ProcessRun[];
  /** Redis activity over the timed window (Redis variants). */
  redis: RedisCounts | null;
  /** The whole job's figures as the last process to finish saw them (Redis variants). */
  job: { processes: number; chunks: number; tasksFound: number; foldersScanned: number; shares: number[] } | null;
  /** Checks beyond the fatal ones: a job figure that disagrees with the processes' own. */
  notes: string[];
}

export interface SharedVariantSummary {
  id: string;
  label: string;
  processes: number;
  redis: boolean;
  ok: number;
  failures: string[];
  wallSeconds: Stat | null;
  chunksPerSec: Stat | null;
  /** Per round: chunks/s over those of 1 process with --redis, and of the no-lock baseline, same round. */
  vsRedisOne: Stat | null;
  vsBaseline: Stat | null;
  /** Per round: chunks/s over those of 1 process without a lock with twice the workers. */
  vsDouble: Stat | null;
  /** Per round: (wall time - the no-lock baseline's) / shards, ms: what sharing through Redis adds per shard. */
  extraMsPerShard: Stat | null;
  /** Per round: the slowest and fastest process's own seconds. */
  ownSecondsMax: Stat | null;
  ownSecondsMin: Stat | null;
  /** Per round, max over processes: spawn to first fold, last fold to exit (ms). */
  startMs: Stat | null;
  tailMs: Stat | null;
  /** Per round: smallest and largest share over the mean share. */
  shareMin: Stat | null;
  shareMax: Stat | null;
  /** Rounds where every chunk was folded exactly once (they fail otherwise; kept for the table). */
  exactlyOnce: number;
  /** CPU seconds of all processes (user + sys). */
  cpuSeconds: Stat | null;
  maxRssBytes: Stat | null;
  /** Redis variants, per shard: commands and Redis CPU ms; and Redis CPU share of the wall time. */
  redisCommandsPerShard: Stat | null;
  redisCpuMsPerShard: Stat | null;
  redisUsecPerShard: Stat | null;
  /** The commands Redis ran most, per shard, median over rounds. */
  topCommands: [string, number][];
  wallMsPerRound: (number | null)[];
  notes: string[];
}

export interface SharedReport {
  config: Record<string, unknown>;
  notices: string[];
  variants: SharedVariantSummary[];
}

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

/** INFO commandstats and cpu: every command's calls and usec, and Redis's CPU seconds. */
async function redisCounts(redis: BenchRedis): Promise<RedisCounts> {
  const stats = await redis.info("commandstats");
  const cpu = await redis.info("cpu");
  const byCommand: Record<string, number> = {};
  let commands = 0;
  let usec = 0;
  for (const match of stats.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    byCommand[match[1]!] = Number(match[2]);
    commands += Number(match[2]);
    usec += Number(match[3]);
  }
  const field = (name: string): number => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(cpu)?.[1] ?? 0);
  return { commands, usec, cpuSeconds: field("used_cpu_user") + field("used_cpu_sys"), byCommand };
}

function countsBetween(before: RedisCounts, after: RedisCounts): RedisCounts {
  const byCommand: Record<string, number> = {};
  for (const [name, calls] of Object.entries(after.byCommand)) {
    const delta = calls - (before.byCommand[name] ?? 0);
    if (delta > 0) byCommand[name] = delta;
  }
  // Our own INFO commandstats and INFO cpu of `before` fall inside the window.
  if (byCommand.info) byCommand.info = Math.max(0, byCommand.info - 2);
  return {
    commands: Object.values(byCommand).reduce((sum, n) => sum + n, 0),
    usec: after.usec - before.usec,
    cpuSeconds: after.cpuSeconds - before.cpuSeconds,
    byCommand,
  };
}

interface Spawned {
  lines: { at: number; event: Record<string, unknown> }[];
  stderr: string;
  exitAt: Promise<number>;
  closed: Promise<number | null>;
  timeFile: string;
  kill(): void;
}

function spawnConsolidate(dir: string, workers: number, redisUrl: string | null, timeFile: string): Spawned {
  const cliArgs = [CLI, "consolidate", dir, "--json", "--workers", String(workers), ...(redisUrl ? ["--redis", redisUrl] : [])];
  const withTime = fs.existsSync(TIME);
  const [command, args] = withTime ? [TIME, ["-f", "%U %S %M", "-o", timeFile, process.execPath, ...cliArgs]] : [process.execPath, cliArgs];
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  const spawned: Spawned = {
    lines: [],
    stderr: "",
    exitAt: new Promise((resolve) => child.once("exit", () => resolve(performance.now()))),
    closed: new Promise((resolve) => child.once("close", (code) => resolve(code))),
    timeFile: withTime ? timeFile : "",
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    },
  };
  let partial = "";
  child.stdout!.setEncoding("utf8").on("data", (text: string) => {
    const at = performance.now();
    const parts = (partial + text).split("\n");
    partial = parts.pop()!;
    for (const line of parts) {
      if (!line.trim()) continue;
      try {
        spawned.lines.push({ at, event: JSON.parse(line) as Record<string, unknown> });
      } catch {
        spawned.stderr += `(stdout, not JSON) ${line}\n`;
      }
    }
  });
  child.stderr!.setEncoding("utf8").on("data", (text: string) => (spawned.stderr = (spawned.stderr + text).slice(-8000)));
  return spawned;
}

/** Files under the store that are neither metadata, shards nor the identity folder's: raw chunk files or temporary files left. */
async function leftovers(root: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await fsp.readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const rel = path.relative(root, path.join(entry.parentPath, entry.name));
    if (rel.split(path.sep)[0] === ".h5nest") continue;
    if (entry.name.endsWith(".h5") || entry.name.startsWith(".z")) continue;
    found.push(rel);
  }
  return found;
}

interface Context {
  options: SharedBenchOptions;
  temp: TempRoot;
  redis: BenchRedis | null;
}

async function runOnce(v: SharedVariant, ctx: Context, readBack: boolean): Promise<SharedRun> {
  const { shards, workers, fsConcurrency } = ctx.options;
  const total = shards * CHUNKS_PER_PLANE;
  const dir = await ctx.temp.fresh(`shared-${v.id}`);
  const spawned: Spawned[] = [];
  try {
    await writeRawStore(dir, shards, fsConcurrency);
    const counted = v.redis ? ctx.redis : null;
    if (v.redis && !counted) throw new Error("no Redis");
    const before = counted ? await redisCounts(counted) : null;
    const t0 = performance.now();
    for (let i = 0; i < v.processes; i++) {
      spawned.push(spawnConsolidate(dir, workers * (v.workersTimes ?? 1), v.redis ? ctx.redis!.url : null, path.join(dir, `..`, `${path.basename(dir)}-time-${i}.txt`)));
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("a process still ran after 600 s")), 600_000);
    });
    let exits: number[];
    try {
      exits = await Promise.race([Promise.all(spawned.map((s) => s.exitAt)), timeout]);
    } finally {
      clearTimeout(timer);
    }
    const wallMs = Math.max(...exits) - t0;
    const after = counted ? await redisCounts(counted) : null;
    const codes = await Promise.all(spawned.map((s) => s.closed));

    // Outside the timing: every process's summary, exactly once, fully consolidated.
    const processes: ProcessRun[] = [];
    const summaries: Record<string, unknown>[] = [];
    for (const [i, s] of spawned.entries()) {
      const tail = s.stderr.trim().split("\n").slice(-3).join(" | ");
      if (codes[i] !== 0) throw new Error(`process ${i + 1}/${v.processes} exited with ${codes[i]}: ${tail}`);
      const summary = s.lines.find((l) => l.event.event === "summary")?.event;
      if (!summary) throw new Error(`process ${i + 1}/${v.processes} printed no summary: ${tail}`);
      if (summary.fatal || (summary.errors as unknown[]).length > 0 || summary.interrupted) {
        throw new Error(`process ${i + 1}/${v.processes}: ${JSON.stringify({ fatal: summary.fatal, errors: summary.errors, interrupted: summary.interrupted })}`);
      }
      summaries.push(summary);
      const folds = s.lines.filter((l) => l.event.event === "shard" && Number(l.event.chunks) > 0);
      let cpuSeconds: number | null = null;
      let maxRssBytes: number | null = null;
      if (s.timeFile) {
        const fields = fs.readFileSync(s.timeFile, "utf8").trim().split("\n").pop()!.split(" ").map(Number);
        if (fields.length === 3 && fields.every(Number.isFinite)) {
          cpuSeconds = fields[0]! + fields[1]!;
          maxRssBytes = fields[2]! * 1024;
        }
      }
      processes.push({
        ownSeconds: Number(summary.seconds),
        chunks: Number(summary.chunks),
        shards: folds.map((l) => path.relative(dir, String(l.event.shard))),
        firstFoldMs: folds.length ? folds[0]!.at - t0 : null,
        lastFoldMs: folds.length ? folds[folds.length - 1]!.at - t0 : null,
        exitMs: exits[i]! - t0,
        cpuSeconds,
        maxRssBytes,
        notices: s.stderr.split("\n").filter((line) => line.includes('"notice"') || line.startsWith("h5nest:")),
      });
    }
    const folded = processes.reduce((sum, p) => sum + p.chunks, 0);
    if (folded !== total) throw new Error(`the processes folded ${folded} chunks between them, the store holds ${total}: not exactly once`);
    const all = processes.flatMap((p) => p.shards);
    const twice = [...new Set(all.filter((shard, i) => all.indexOf(shard) !== i))];
    if (twice.length) throw new Error(`shards folded by two processes: ${twice.slice(0, 5).join(", ")}${twice.length > 5 ? ", ..." : ""}`);
    if (all.length !== shards) throw new Error(`${all.length} shard events, the store has ${shards} shards`);
    const notes: string[] = [];
    let job: SharedRun["job"] = null;
    if (v.redis) {
      const last = summaries[exits.indexOf(Math.max(...exits))]!;
      const j = last.job as { processes: number; chunks: number; tasksFound: number; foldersScanned: number; remaining: number; shares: Record<string, number> } | undefined;
      if (!j) throw new Error("a --redis process printed no job figures");
      job = { processes: j.processes, chunks: j.chunks, tasksFound: j.tasksFound, foldersScanned: j.foldersScanned, shares: Object.values(j.shares) };
      const shareSum = job.shares.reduce((sum, n) => sum + n, 0);
      if (shareSum !== total) throw new Error(`job shares add up to ${shareSum} chunks, the store holds ${total}`);
      if (j.remaining !== 0) throw new Error(`the last process ended with ${j.remaining} tasks remaining`);
      if (j.processes !== v.processes) notes.push(`job counted ${j.processes} processes, ${v.processes} ran`);
      if (j.tasksFound !== shards) notes.push(`job found ${j.tasksFound} shard tasks, the store has ${shards}`);
      const own = processes.map((p) => p.chunks).sort((a, b) => a - b).join(",");
      const theirs = [...job.shares].sort((a, b) => a - b).join(",");
      if (own !== theirs) notes.push(`job shares ${theirs} differ from the processes' own chunks ${own}`);
    }
    await expectShards(dir, shards, v.label);
    const left = await leftovers(dir);
    if (left.length) throw new Error(`${v.label}: ${left.length} raw chunk or temporary files left, e.g. ${left.slice(0, 3).join(", ")}`);
    if (readBack) await verifyThroughH5nest(dir, shards, 1, v.label);
    return { wallMs, processes, redis: before && after ? countsBetween(before, after) : null, job, notes };
  } finally {
    for (const s of spawned) s.kill();
    await Promise.all(spawned.map((s) => s.closed));
    await Promise.all(spawned.map((s) => (s.timeFile ? fsp.rm(s.timeFile, { force: true }) : null)));
    await ctx.temp.remove(dir);
  }
}

export async function runSharedConsolidateBench(temp: TempRoot, options: SharedBenchOptions): Promise<SharedReport> {
  const code = provenance();
  const notices: string[] = [];
  await checkChunkEncoding();
  const total = options.shards * CHUNKS_PER_PLANE;
  const needed = 3 * total * CHUNK_BYTES + 2 ** 30;
  if ((await freeBytes(temp.dir)) < needed) throw new Error(`shared consolidate benchmark: less than ${(needed / 2 ** 30).toFixed(1)} GiB free under ${temp.dir}`);

  const redis = await startBenchRedis(await temp.fresh("redis"));
  let variants = VARIANTS;
  if ("missing" in redis) {
    notices.push(`${redis.missing}: only the no-lock baseline runs`);
    log(`\n*** NOTICE: ${redis.missing}: the --redis variants of the shared consolidate benchmark are skipped ***\n`);
    variants = VARIANTS.filter((v) => !v.redis);
  }
  const ctx: Context = { options, temp, redis: "missing" in redis ? null : redis };
  const results = new Map<string, (SharedRun | string)[]>(variants.map((v) => [v.id, []]));
  try {
    const warm = variants.filter((v) => v.id === BASELINE_ID || v.id === "redis-2");
    log(`shared consolidate: warm-up (not counted): ${warm.map((v) => v.id).join(", ")}`);
    for (const v of warm) await runOnce(v, ctx, true);
    const measured = await interleavedRounds(
      "shared consolidate",
      variants,
      options.rounds,
      // Values read back in round 1; every round checks summaries, shares and the files left.
      (v, round) => runOnce(v, ctx, round === 0),
      (run) => `${run.wallMs.toFixed(0)} ms [${run.processes.map((p) => p.chunks).join("/")}]`,
      log,
    );
    for (const [id, list] of measured) results.set(id, list);
  } finally {
    if (!("missing" in redis)) await redis.stop();
  }

  const rate = (list: (SharedRun | string)[]): (number | null)[] =>
    Array.from({ length: options.rounds }, (_, i) => {
      const r = list[i];
      return r === undefined || typeof r === "string" ? null : total / (r.wallMs / 1000);
    });
  const baseline = rate(results.get(BASELINE_ID) ?? []);
  const wallOf = (list: (SharedRun | string)[], i: number): number | null => {
    const r = list[i];
    return r === undefined || typeof r === "string" ? null : r.wallMs;
  };
  const redisOne = rate(results.get(REDIS_ONE_ID) ?? []);
  const double = rate(results.get(DOUBLE_ID) ?? []);
  const summaries = variants.map((v): SharedVariantSummary => {
    const list = results.get(v.id) ?? [];
    const runs = list.filter((r): r is SharedRun => r !== undefined && typeof r !== "string");
    const rates = rate(list);
    const redisRuns = runs.filter((r) => r.redis !== null);
    const shareStat = (pick: (ratios: number[]) => number): Stat | null =>
      stat(
        runs.map((r) => {
          const mean = total / r.processes.length;
          return pick(r.processes.map((p) => p.chunks / mean));
        }),
      );
    const commandNames = [...new Set(redisRuns.flatMap((r) => Object.keys(r.redis!.byCommand)))];
    const topCommands = commandNames
      .map((name): [string, number] => [name, stat(redisRuns.map((r) => (r.redis!.byCommand[name] ?? 0) / options.shards))!.median])
      .sort((a, b) => b[1] - a[1])
      .slice(0, 6);
    const cpu = runs.filter((r) => r.processes.every((p) => p.cpuSeconds !== null));
    return {
      id: v.id,
      label: v.label,
      processes: v.processes,
      redis: v.redis,
      ok: runs.length,
      failures: list.filter((r): r is string => typeof r === "string"),
      wallSeconds: stat(runs.map((r) => r.wallMs / 1000)),
      chunksPerSec: stat(rates.filter((x): x is number => x !== null)),
      vsRedisOne: v.redis && v.id !== REDIS_ONE_ID ? pairedRatio(rates, redisOne) : null,
      vsBaseline: v.id === BASELINE_ID ? null : pairedRatio(rates, baseline),
      vsDouble: v.redis ? pairedRatio(rates, double) : null,
      extraMsPerShard:
        v.id === BASELINE_ID
          ? null
          : stat(
              Array.from({ length: options.rounds }, (_, i) => {
                const mine = wallOf(list, i);
                const base = wallOf(results.get(BASELINE_ID) ?? [], i);
                return mine === null || base === null ? null : (mine - base) / options.shards;
              }).filter((x): x is number => x !== null),
            ),
      ownSecondsMax: stat(runs.map((r) => Math.max(...r.processes.map((p) => p.ownSeconds)))),
      ownSecondsMin: stat(runs.map((r) => Math.min(...r.processes.map((p) => p.ownSeconds)))),
      startMs: stat(runs.map((r) => Math.max(...r.processes.map((p) => p.firstFoldMs ?? p.exitMs)))),
      tailMs: stat(runs.map((r) => Math.max(...r.processes.map((p) => p.exitMs - (p.lastFoldMs ?? 0))))),
      shareMin: shareStat((x) => Math.min(...x)),
      shareMax: shareStat((x) => Math.max(...x)),
      exactlyOnce: runs.length,
      cpuSeconds: stat(cpu.map((r) => r.processes.reduce((sum, p) => sum + p.cpuSeconds!, 0))),
      maxRssBytes: stat(runs.flatMap((r) => r.processes.flatMap((p) => (p.maxRssBytes === null ? [] : [p.maxRssBytes])))),
      redisCommandsPerShard: stat(redisRuns.map((r) => r.redis!.commands / options.shards)),
      redisCpuMsPerShard: stat(redisRuns.map((r) => (r.redis!.cpuSeconds * 1000) / options.shards)),
      redisUsecPerShard: stat(redisRuns.map((r) => r.redis!.usec / options.shards)),
      topCommands,
      wallMsPerRound: Array.from({ length: options.rounds }, (_, i) => {
        const r = list[i];
        return r === undefined || typeof r === "string" ? null : Math.round(r.wallMs);
      }),
      notes: [
        ...new Set([
          ...runs.flatMap((r) => r.notes),
          ...runs.flatMap((r) => r.processes.flatMap((p) => p.notices)).map((n) => `stderr: ${n}`),
        ]),
      ],
    };
  });
  const rebuilt = rebuiltSince(code);
  if (rebuilt) notices.push(rebuilt);
  return {
    config: {
      code: describe(code),
      commit: code.commit,
      rounds: options.rounds,
      shards: options.shards,
      chunks: total,
      chunkBytes: CHUNK_BYTES,
      chunksPerShard: CHUNKS_PER_PLANE,
      shape: [1, 1, options.shards, 1024, 1024],
      workersPerProcess: options.workers,
      cpus: os.availableParallelism(),
      node: process.version,
      tmpdir: os.tmpdir(),
      redis: "missing" in redis ? null : redis.version,
      targetSpeedup: TARGET_SPEEDUP,
      targetShareFactor: TARGET_SHARE_FACTOR,
    },
    notices,
    variants: summaries,
  };
}

export function sharedConsolidateFailed(report: SharedReport): boolean {
  return report.variants.some((v) => v.failures.length > 0) || report.notices.some((n) => n.includes("changed during the run") || n.includes("not found"));
}

export function renderSharedConsolidate(report: SharedReport): string {
  const c = report.config;
  const out: string[] = [];
  out.push(
    `shared consolidate (scale-out): raw store of ${c.shards} shards x ${c.chunksPerShard} chunks x ${Number(c.chunkBytes) / 1024} KiB = ${c.chunks} chunk files ` +
      `(${mib(Number(c.chunks) * Number(c.chunkBytes))} MiB; uint16 [${(c.shape as number[]).join(",")}], chunks [1,1,1,64,64]), written afresh for every run`,
  );
  out.push(
    `${c.rounds} interleaved rounds (order rotated); medians; time = spawn of the first \`h5nest consolidate --json --workers ${c.workersPerProcess}\` ` +
      `(the context row: --workers ${Number(c.workersPerProcess) * 2}) to the exit of the last; ${c.cpus} CPUs; redis ${c.redis ?? "missing"}; node ${c.node}`,
  );
  out.push(String(c.code));
  for (const notice of report.notices) out.push(`*** NOTICE: ${notice} ***`);
  out.push("");
  const target = (v: SharedVariantSummary): string => {
    if (!v.vsRedisOne) return "";
    return v.vsRedisOne.median >= TARGET_SPEEDUP ? "met" : "NOT met";
  };
  out.push(
    formatTable(
      ["variant", "wall s", "min..max", "chunks/s", "vs 1 process --redis", "min..max", `>= ${TARGET_SPEEDUP}x`, "vs no lock", "min..max", "vs no lock, 2x workers", "min..max", "+ms/shard vs no lock", "wall ms per round", "ok"],
      report.variants.map((v) => [
        v.label,
        num(v.wallSeconds?.median),
        range(v.wallSeconds?.min, v.wallSeconds?.max),
        num(v.chunksPerSec?.median),
        v.id === REDIS_ONE_ID ? "1.00x (reference)" : ratio(v.vsRedisOne?.median),
        range(v.vsRedisOne?.min, v.vsRedisOne?.max, (x) => x.toFixed(2)),
        target(v),
        v.id === BASELINE_ID ? "1.00x (baseline)" : ratio(v.vsBaseline?.median),
        range(v.vsBaseline?.min, v.vsBaseline?.max, (x) => x.toFixed(2)),
        ratio(v.vsDouble?.median),
        range(v.vsDouble?.min, v.vsDouble?.max, (x) => x.toFixed(2)),
        num(v.extraMsPerShard?.median),
        v.wallMsPerRound.map((x) => (x === null ? "FAIL" : String(x))).join(" "),
        `${v.ok}/${v.ok + v.failures.length}`,
      ]),
    ),
  );
  out.push("");
  out.push("per process and Redis (medians over rounds)");
  const shareOk = (v: SharedVariantSummary): string => {
    if (!v.shareMin || !v.shareMax) return "-";
    return v.shareMin.min >= 1 / TARGET_SHARE_FACTOR && v.shareMax.max <= TARGET_SHARE_FACTOR ? "yes" : "NO";
  };
  out.push(
    formatTable(
      [
        "variant",
        "own s fastest..slowest",
        "spawn to 1st fold ms",
        "last fold to exit ms",
        "share min/mean..max/mean (worst round)",
        `within ${TARGET_SHARE_FACTOR}x`,
        "exactly once",
        "CPU s all procs",
        "peak RSS MiB",
        "Redis cmds/shard",
        "Redis CPU ms/shard",
        "Redis exec us/shard",
      ],
      report.variants.map((v) => [
        v.label,
        range(v.ownSecondsMin?.median, v.ownSecondsMax?.median),
        num(v.startMs?.median),
        num(v.tailMs?.median),
        v.shareMin && v.shareMax ? `${v.shareMin.median.toFixed(2)}..${v.shareMax.median.toFixed(2)} (${v.shareMin.min.toFixed(2)}..${v.shareMax.max.toFixed(2)})` : "-",
        shareOk(v),
        `${v.exactlyOnce}/${v.ok + v.failures.length}`,
        num(v.cpuSeconds?.median),
        mib(v.maxRssBytes?.max),
        num(v.redisCommandsPerShard?.median),
        num(v.redisCpuMsPerShard?.median),
        num(v.redisUsecPerShard?.median),
      ]),
    ),
  );
  const withCommands = report.variants.filter((v) => v.topCommands.length);
  if (withCommands.length) {
    out.push("");
    out.push("Redis commands per shard, most frequent (median over rounds):");
    for (const v of withCommands) out.push(`  ${v.label}: ${v.topCommands.map(([name, n]) => `${name} ${num(n)}`).join(", ")}`);
  }
  out.push("");
  out.push("notes:");
  out.push("  wall s: spawn of the first process to the exit of the last (node start, worker threads, Redis connection, the job, close).");
  out.push("  vs 1 process --redis / vs no lock: chunks/s over those of that variant in the same round, median of the per-round ratios (>1: faster);");
  out.push(`  target: N processes take no longer than 1 (>= ${TARGET_SPEEDUP}x against 1 process --redis).`);
  out.push("  twice the workers (context): one process without a lock with as many worker threads as 2 processes have between them");
  out.push("  (with --workers 1 on 2 CPUs: both cores); vs no lock, 2x workers = chunks/s over that row's, same round, median.");
  out.push("  +ms/shard vs no lock: (wall time - the no-lock baseline's wall time, same round) / shards, median over rounds.");
  out.push("  own s: each process's summary `seconds` (store opened to its job done), fastest and slowest process of a run.");
  out.push("  spawn to 1st fold: slowest process from the first spawn to its first shard event; last fold to exit: longest from a process's");
  out.push("  last shard event to its exit (waiting for the queue to drain everywhere, closing the BullMQ worker, the store and node).");
  out.push("  share: chunks in each process's summary over the mean (total / processes); exactly once: shares add up to the store's chunks,");
  out.push("  no shard in two processes' shard events, the job's shares agree (a run fails otherwise). Every run: no raw chunk or temporary");
  out.push("  file left, one shard per plane; values read back through h5nest in the warm-up and round 1.");
  out.push("  Redis: INFO commandstats and cpu before the first spawn and after the last exit; exec us = time inside Redis commands.");
  out.push("  CPU s: user + sys of all processes (/usr/bin/time). The fresh redis-server is marked as long in use (no first-grant wait).");
  for (const v of report.variants) for (const note of v.notes) out.push(`  NOTE ${v.label}: ${note}`);
  for (const v of report.variants) for (const failure of v.failures) out.push(`*** FAILED ${v.label}: ${failure} ***`);
  return out.join("\n");
}
