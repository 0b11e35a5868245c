/**
 * One client process of the lease benchmark (bench/leases.ts). argv[2] is a
 * JSON LeaseJob. It opens `clients` RedisLeaseProvider instances (one ioredis
 * connection each, as every h5nest store has) plus as many plain ioredis
 * connections for the baseline, prints "ready", then for every line
 * "run <LeaseRun as JSON>" on stdin runs every client's loop for `ms`
 * milliseconds and prints "result <LeaseResult as JSON>". "exit" closes the
 * connections. A failure prints "error <code> <message as JSON>" and exits 1.
 */
import fs from "node:fs";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { RedisLeaseProvider } from "@h5nest/coordinator";
import { Redis } from "ioredis";

export interface LeaseJob {
  url: string;
  /** The store identity the leases are named after (one store for every client). */
  namespace: string;
  clients: number;
  /** Global index of this process's first client: client g uses shard g mod `shards`. */
  first: number;
  termMs: number;
}

/**
 * One timed loop per client. "grant": acquire + release; "commit": acquire +
 * renew + release (a commit that outlives a third of the term renews);
 * "setnx": the baseline, SET key NX PX term + DEL on a plain connection.
 */
export interface LeaseRun {
  cycle: "grant" | "commit" | "setnx";
  shards: number;
  ms: number;
}

export interface LeaseResult {
  /** Cycles completed (each holds one grant), over every client of this process. */
  cycles: number;
  /** From the start of the loops to the end of the last one. */
  ms: number;
  /** Every acquire's latency, µs (a contended acquire includes its waits). */
  acquireUs: number[];
}

const say = (line: string): void => void fs.writeSync(1, `${line}\n`);

async function runLoops(job: LeaseJob, providers: RedisLeaseProvider[], plain: Redis[], run: LeaseRun): Promise<LeaseResult> {
  const acquireUs: number[] = [];
  let cycles = 0;
  const t0 = performance.now();
  const until = t0 + run.ms;
  await Promise.all(
    providers.map(async (provider, i) => {
      const shard = `bench/s${(job.first + i) % run.shards}`;
      const key = `h5nest:${job.namespace}:plain:${shard}`;
      while (performance.now() < until) {
        const start = performance.now();
        if (run.cycle === "setnx") {
          const answer = await plain[i]!.set(key, `${job.first + i} ${cycles}`, "PX", job.termMs, "NX");
          if (answer !== "OK") throw new Error(`SET NX ${key} answered ${String(answer)} (the baseline runs without contention)`);
          acquireUs.push(Math.round((performance.now() - start) * 1000));
          await plain[i]!.del(key);
        } else {
          const lease = await provider.acquire(shard);
          acquireUs.push(Math.round((performance.now() - start) * 1000));
          if (run.cycle === "commit") await provider.renew(lease);
          await provider.release(lease);
        }
        cycles += 1;
      }
    }),
  );
  return { cycles, ms: performance.now() - t0, acquireUs };
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2]!) as LeaseJob;
  const providers = await Promise.all(
    Array.from({ length: job.clients }, () => RedisLeaseProvider.open({ url: job.url, namespace: job.namespace, termMs: job.termMs })),
  );
  const plain = Array.from({ length: job.clients }, () => new Redis(job.url, { maxRetriesPerRequest: 0 }));
  try {
    await Promise.all(plain.map((r) => r.ping()));
    say("ready");
    for await (const line of createInterface({ input: process.stdin })) {
      if (line === "exit") break;
      if (!line.startsWith("run ")) throw new Error(`unknown command ${JSON.stringify(line)}`);
      say(`result ${JSON.stringify(await runLoops(job, providers, plain, JSON.parse(line.slice(4)) as LeaseRun))}`);
    }
  } finally {
    await Promise.all(providers.map((p) => p.close()));
    for (const r of plain) r.disconnect();
  }
}

try {
  await main();
} catch (error) {
  const e = error as { code?: string; message?: string };
  say(`error ${e.code ?? "NO_CODE"} ${JSON.stringify(e.message ?? String(error))}`);
  process.exitCode = 1;
}
