/**
 * Lease throughput (--leases): how many lease grants one Redis serves to 64
 * concurrent clients. One redis-server (redis.ts); 64 real RedisLeaseProvider
 * instances (one ioredis connection each) spread over a few child processes
 * (lease-child.ts), so that one Node process's event loop is not the limit.
 * Every client loops on its own shard name for a fixed time; variants are
 * interleaved round by round (order rotated), figures are medians, ratios are
 * per-round ratios against a plain SET NX PX + DEL lock run in the same round.
 * Redis's own CPU time and command counts come from INFO before and after
 * every timed window.
 */
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { Writer } from "./distributed.js";
import type { LeaseJob, LeaseResult, LeaseRun } from "./lease-child.js";
import { describe, provenance, rebuiltSince } from "./provenance.js";
import { type BenchRedis, infoField, startBenchRedis } from "./redis.js";
import { interleavedRounds, pairedRatio, type Stat, stat } from "./stats.js";
import { formatTable, num, range, ratio } from "./table.js";
import type { TempRoot } from "./workloads.js";

const CHILD = path.join(import.meta.dirname, "lease-child.mjs");

/** Concurrent lease clients (RedisLeaseProvider instances), spread evenly over the processes. */
export const LEASE_CLIENTS = 64;
/** The lease term of the timed runs: h5nest's default leaseMs. */
const TERM_MS = 10_000;
/** Untimed warm-up of every variant (JIT, connections), ms. */
const WARM_UP_MS = 1000;

interface LeaseVariant {
  id: string;
  label: string;
  cycle: LeaseRun["cycle"];
  /** Distinct shard names among the 64 clients (client g uses shard g mod shards). */
  shards: number;
}

const BASELINE_ID = "setnx";

const VARIANTS: LeaseVariant[] = [
  { id: BASELINE_ID, label: "baseline: plain SET NX PX + DEL, no script, 64 keys", cycle: "setnx", shards: 64 },
  { id: "grant", label: "acquire + release, 64 shards (no contention)", cycle: "grant", shards: 64 },
  { id: "commit", label: "acquire + renew + release (a commit's cycle), 64 shards", cycle: "commit", shards: 64 },
  { id: "contended", label: "acquire + release, 64 clients on 16 shards (4 per shard)", cycle: "grant", shards: 16 },
];

interface LeaseWindow {
  cycles: number;
  /** Longest child's window (start of its loops to the end of its last one). */
  ms: number;
  p50Ms: number;
  p99Ms: number;
  /** Redis CPU seconds (user + sys) during the window. */
  redisCpuS: number;
  /** Deltas of INFO commandstats over the window. */
  evals: number;
  incrs: number;
  evalUsec: number;
  /** INFO server calls inside ACQUIRE (one per attempt; the bench's own INFO calls are subtracted) and their time. */
  infos: number;
  infoUsec: number;
}

export interface LeaseVariantSummary {
  id: string;
  label: string;
  shards: number;
  ok: number;
  failures: string[];
  cyclesPerSec: Stat | null;
  /** Per round: this variant's cycles/s over the baseline's. */
  vsBaseline: Stat | null;
  acquireP50Ms: Stat | null;
  acquireP99Ms: Stat | null;
  /** Redis CPU time over wall time (1 = one core busy). */
  redisCpu: Stat | null;
  redisCpuUsPerCycle: Stat | null;
  /** EVAL calls per cycle (2 for acquire + release without contention; more when acquires retry). */
  evalsPerCycle: Stat | null;
  /** Redis-side execution time of one EVAL (INFO commandstats usec / calls). */
  evalUs: Stat | null;
  /** Of which: the INFO server call of every ACQUIRE (to read run_id), µs per grant. */
  infoUsPerCycle: Stat | null;
  /** Cycles/s Redis could serve with one core to itself: cycles/s / Redis CPU. An extrapolation. */
  ceilingPerSec: Stat | null;
  /** Grants counted by the clients that INFO commandstats (INCR calls) does not confirm, summed over rounds. */
  grantMismatch: number;
}

export type LeaseOutcome = {
  config: Record<string, unknown>;
  notices: string[];
  variants: LeaseVariantSummary[];
};

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

async function counters(redis: BenchRedis): Promise<{ cpuS: number; evals: number; incrs: number; evalUsec: number; infos: number; infoUsec: number }> {
  const [cpu, commands] = await Promise.all([redis.info("cpu"), redis.info("commandstats")]);
  return {
    cpuS: infoField(cpu, "used_cpu_user") + infoField(cpu, "used_cpu_sys"),
    evals: infoField(commands, "calls", "cmdstat_eval"),
    incrs: infoField(commands, "calls", "cmdstat_incr"),
    evalUsec: infoField(commands, "usec", "cmdstat_eval"),
    infos: infoField(commands, "calls", "cmdstat_info"),
    infoUsec: infoField(commands, "usec", "cmdstat_info"),
  };
}

/** One timed window of `v` on every client at once. */
async function runWindow(v: LeaseVariant, ms: number, children: Writer[], redis: BenchRedis): Promise<LeaseWindow> {
  const before = await counters(redis);
  const run: LeaseRun = { cycle: v.cycle, shards: v.shards, ms };
  for (const child of children) child.proc.stdin!.write(`run ${JSON.stringify(run)}\n`);
  const results = await Promise.all(children.map((c) => c.line("result", ms + 60_000, true)));
  const after = await counters(redis);
  const parsed = results.map((r) => JSON.parse(r.fields.slice(1).join(" ")) as LeaseResult);
  const latencies = parsed.flatMap((r) => r.acquireUs).sort((a, b) => a - b);
  return {
    cycles: parsed.reduce((sum, r) => sum + r.cycles, 0),
    ms: Math.max(...parsed.map((r) => r.ms)),
    p50Ms: percentile(latencies, 0.5) / 1000,
    p99Ms: percentile(latencies, 0.99) / 1000,
    redisCpuS: after.cpuS - before.cpuS,
    evals: after.evals - before.evals,
    incrs: after.incrs - before.incrs,
    evalUsec: after.evalUsec - before.evalUsec,
    // counters() itself calls INFO twice (cpu, commandstats); their time is negligible beside thousands of acquires.
    infos: after.infos - before.infos - 2,
    infoUsec: after.infoUsec - before.infoUsec,
  };
}

export async function runLeaseBench(temp: TempRoot, rounds: number, seconds: number, processes: number): Promise<LeaseOutcome> {
  if (LEASE_CLIENTS % processes !== 0) throw new Error(`--lease-processes must divide ${LEASE_CLIENTS}, got ${processes}`);
  const code = provenance();
  const redisDir = await temp.fresh("redis-leases");
  const redis = await startBenchRedis(redisDir);
  if ("missing" in redis) throw new Error(`${redis.missing}: no lease benchmark without Redis`);
  const perProcess = LEASE_CLIENTS / processes;
  const namespace = randomBytes(16).toString("hex");
  const children: Writer[] = [];
  const results = new Map<string, (LeaseWindow | string)[]>(VARIANTS.map((v) => [v.id, []]));
  try {
    for (let p = 0; p < processes; p++) {
      const job: LeaseJob = { url: redis.url, namespace, clients: perProcess, first: p * perProcess, termMs: TERM_MS };
      children.push(new Writer(job, CHILD));
    }
    await Promise.all(children.map((c) => c.line("ready", 60_000)));
    log(`leases: warm-up (not counted): ${VARIANTS.map((v) => v.id).join(", ")}, ${WARM_UP_MS} ms each`);
    for (const v of VARIANTS) await runWindow(v, WARM_UP_MS, children, redis);
    const measured = await interleavedRounds("leases", VARIANTS, rounds, (v) => runWindow(v, seconds * 1000, children, redis), (w) => `${num(w.cycles / (w.ms / 1000))}/s`, log);
    for (const [id, list] of measured) results.set(id, list);
  } finally {
    for (const c of children) if (!c.exited) c.proc.stdin!.end("exit\n");
    const giveUp = setTimeout(() => children.forEach((c) => c.exited || c.proc.kill("SIGKILL")), 10_000);
    await Promise.all(children.map((c) => c.exit));
    clearTimeout(giveUp);
    await redis.stop();
  }

  const windows = (id: string): (LeaseWindow | null)[] => (results.get(id) ?? []).map((r) => (typeof r === "string" || r === undefined ? null : r));
  const rate = (w: LeaseWindow | null): number | null => (w ? w.cycles / (w.ms / 1000) : null);
  const baseline = windows(BASELINE_ID).map(rate);
  const over = (list: (LeaseWindow | null)[], f: (w: LeaseWindow) => number): Stat | null =>
    stat(list.filter((w): w is LeaseWindow => w !== null).map(f).filter(Number.isFinite));
  const variants = VARIANTS.map((v): LeaseVariantSummary => {
    const list = windows(v.id);
    const ok = list.filter((w): w is LeaseWindow => w !== null);
    return {
      id: v.id,
      label: v.label,
      shards: v.shards,
      ok: ok.length,
      failures: (results.get(v.id) ?? []).filter((r): r is string => typeof r === "string"),
      cyclesPerSec: over(list, (w) => rate(w)!),
      vsBaseline: v.id === BASELINE_ID ? null : pairedRatio(list.map(rate), baseline),
      acquireP50Ms: over(list, (w) => w.p50Ms),
      acquireP99Ms: over(list, (w) => w.p99Ms),
      redisCpu: over(list, (w) => w.redisCpuS / (w.ms / 1000)),
      redisCpuUsPerCycle: over(list, (w) => (w.redisCpuS * 1e6) / w.cycles),
      evalsPerCycle: v.cycle === "setnx" ? null : over(list, (w) => w.evals / w.cycles),
      evalUs: v.cycle === "setnx" ? null : over(list, (w) => w.evalUsec / w.evals),
      infoUsPerCycle: v.cycle === "setnx" ? null : over(list, (w) => w.infoUsec / w.cycles),
      ceilingPerSec: over(list, (w) => w.cycles / w.redisCpuS),
      grantMismatch: v.cycle === "setnx" ? 0 : ok.reduce((sum, w) => sum + Math.abs(w.cycles - w.incrs), 0),
    };
  });
  const notices: string[] = [];
  for (const v of variants) {
    if (v.grantMismatch) notices.push(`${v.label}: the clients' grant count and Redis's INCR count differ by ${v.grantMismatch}`);
  }
  const rebuilt = rebuiltSince(code);
  if (rebuilt) notices.push(rebuilt);
  return {
    config: {
      code: describe(code),
      commit: code.commit,
      rounds,
      seconds,
      clients: LEASE_CLIENTS,
      processes,
      termMs: TERM_MS,
      cpus: os.availableParallelism(),
      node: process.version,
      redis: redis.version,
    },
    notices,
    variants,
  };
}

export function leasesFailed(outcome: LeaseOutcome): boolean {
  return outcome.variants.some((v) => v.failures.length > 0 || v.grantMismatch > 0) || outcome.notices.some((n) => n.includes("changed during the run"));
}

export function renderLeases(outcome: LeaseOutcome): string {
  const c = outcome.config;
  const out: string[] = [];
  out.push(
    `lease throughput: ${c.clients} RedisLeaseProvider clients (one ioredis connection each) in ${c.processes} processes ` +
      `(${Number(c.clients) / Number(c.processes)} each), one redis-server ${c.redis}, lease term ${c.termMs} ms`,
  );
  out.push(
    `every client loops on its own shard name (contended: 4 clients per name, in 4 processes) for ${c.seconds} s; ${c.rounds} interleaved rounds ` +
      `(order rotated); medians; ${c.cpus} CPUs shared by Redis and the clients; node ${c.node}`,
  );
  out.push(String(c.code));
  for (const notice of outcome.notices) out.push(`*** NOTICE: ${notice} ***`);
  out.push("");
  out.push(
    formatTable(
      ["variant", "grants/s", "min..max", "vs SET NX+DEL", "min..max", "acquire p50 ms", "p99 ms", "Redis CPU", "Redis CPU us/grant", "EVALs/grant", "us/EVAL in Redis", "INFO us/grant", "grants/s at 1 Redis core", "ok"],
      outcome.variants.map((v) => [
        v.label,
        num(v.cyclesPerSec?.median),
        range(v.cyclesPerSec?.min, v.cyclesPerSec?.max),
        v.id === BASELINE_ID ? "1.00x (baseline)" : ratio(v.vsBaseline?.median),
        range(v.vsBaseline?.min, v.vsBaseline?.max, (x) => x.toFixed(2)),
        num(v.acquireP50Ms?.median),
        num(v.acquireP99Ms?.median),
        v.redisCpu ? `${(v.redisCpu.median * 100).toFixed(0)}%` : "-",
        num(v.redisCpuUsPerCycle?.median),
        num(v.evalsPerCycle?.median),
        num(v.evalUs?.median),
        num(v.infoUsPerCycle?.median),
        num(v.ceilingPerSec?.median),
        `${v.ok}/${v.ok + v.failures.length}`,
      ]),
    ),
  );
  out.push("");
  out.push("notes:");
  out.push("  grants/s: completed cycles (one grant each) over all clients / the window; the baseline's are SET NX PX + DEL cycles.");
  out.push("  vs SET NX+DEL: per-round ratio to the baseline's cycles/s, median. acquire p50/p99: over every acquire of a round, median over rounds");
  out.push("  (contended: includes the waits for the other holders, 1..16 ms back-off).");
  out.push("  Redis CPU: its user+sys CPU time (INFO cpu) over the window; 100% = one core. us/EVAL: INFO commandstats, script execution only;");
  out.push("  INFO us/grant: of that, the INFO server call every ACQUIRE makes to read Redis's run_id (all attempts of a grant).");
  out.push("  grants/s at 1 Redis core = grants / Redis CPU seconds: what Redis could serve with a core to itself and enough clients");
  out.push("  (an extrapolation: here Redis shares 2 CPUs with the client processes).");
  out.push("  commit cycle: acquire + one renew + release; a store renews every term/3 only while a commit outlasts it, so short commits skip the renew.");
  for (const v of outcome.variants) for (const failure of v.failures) out.push(`*** FAILED ${v.label}: ${failure} ***`);
  return out.join("\n");
}
