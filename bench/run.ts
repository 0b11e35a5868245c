/**
 * Benchmark entry point (npm run bench -- [options]; see bench/README.md).
 * Every figure of the main benchmark is relative to baselines measured in
 * the same run, interleaved round by round, because this machine's file
 * creation rate swings by an order of magnitude from minute to minute.
 */
import os from "node:os";
import { parseArgs } from "./args.js";
import { type ConsolidateReport, consolidateFailed, renderConsolidate, runConsolidateBench } from "./consolidate.js";
import { renderSharedConsolidate, runSharedConsolidateBench, sharedConsolidateFailed, type SharedReport } from "./consolidate-shared.js";
import { type DistributedOutcome, distributedFailed, renderDistributed, runDistributedBench } from "./distributed.js";
import { type LeaseOutcome, leasesFailed, renderLeases, runLeaseBench } from "./leases.js";
import { renderMemory, runMemoryBench, type MemoryOutcome } from "./memory.js";
import { describe, provenance, rebuiltSince } from "./provenance.js";
import { pythonVariants } from "./python.js";
import { type MainReport, renderMain, type Rounds, summarize } from "./report.js";
import { gcAvailable } from "./rss.js";
import { rotate } from "./stats.js";
import { renderServe, runServeBench, type ServeReport } from "./serve-bench.js";
import { runStoreBench, STORE_WORKLOADS } from "./store-bench.js";
import { renderStore, type StoreReport } from "./store-report.js";
import { encodeWorkload, NODE_VARIANTS, type RunContext, type Variant } from "./variants.js";
import { makeWorkload, TempRoot } from "./workloads.js";

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

async function runMain(args: ReturnType<typeof parseArgs>, temp: TempRoot): Promise<{ report: MainReport; text: string; failed: boolean }> {
  const code = provenance();
  const workload = makeWorkload(args.chunks);
  const encoded = await encodeWorkload(workload);
  const python = await pythonVariants();
  for (const notice of python.notices) log(`\n*** NOTICE: ${notice} ***\n`);
  const variants: Variant[] = [...NODE_VARIANTS, ...python.variants];
  const ctx: RunContext = { workload, temp, encoded, workers: args.workers, fsConcurrency: args.fsConcurrency };

  log(`warm-up (not counted): ${NODE_VARIANTS.map((v) => v.id).join(", ")}`);
  for (const v of NODE_VARIANTS) await v.run(ctx);

  const rounds: Rounds = new Map(variants.map((v) => [v.id, []]));
  for (let round = 0; round < args.rounds; round++) {
    const order = rotate(variants, round);
    const parts: string[] = [];
    for (const v of order) {
      let outcome;
      try {
        outcome = await v.run(ctx);
        parts.push(`${v.id} w ${outcome.writeMs.toFixed(0)} r ${outcome.readMs.toFixed(0)}${outcome.warmReadMs ? `/${outcome.warmReadMs.toFixed(0)}` : ""} ms`);
      } catch (error) {
        outcome = error instanceof Error ? error.message : String(error);
        parts.push(`${v.id} FAILED`);
        log(`*** ${v.id} failed in round ${round + 1}: ${outcome}`);
      }
      rounds.get(v.id)![round] = outcome;
    }
    log(`round ${round + 1}/${args.rounds}: ${parts.join("; ")}`);
  }

  const config = {
    code: describe(code),
    commit: code.commit,
    rounds: args.rounds,
    chunks: workload.chunkCount,
    chunkBytes: workload.chunkBytes,
    shape: workload.shape,
    chunkShape: workload.chunks,
    workers: args.workers ?? `default (${os.availableParallelism()})`,
    fsConcurrency: args.fsConcurrency,
    node: process.version,
    tmpdir: os.tmpdir(),
    pythonZarr: python.zarrVersion,
    h5StoreMeasured: python.h5StoreMeasured,
    h5StoreRoot: python.h5StoreMeasured ? process.env.H5NEST_PY_STORE : null,
    exposeGc: gcAvailable,
  };
  const rebuilt = rebuiltSince(code);
  const notices = rebuilt ? [...python.notices, rebuilt] : python.notices;
  const report = summarize(variants, rounds, workload, python.h5StoreMeasured, config, notices);
  const failed = rebuilt !== null || report.variants.some((v) => v.failures.length > 0);
  return { report, text: renderMain(report, workload), failed };
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (process.execArgv.some((a, i) => /^--(import|loader|require)(=.*)?tsx/.test(a) || (/^--(import|loader|require)$/.test(a) && /tsx/.test(process.execArgv[i + 1] ?? "")))) {
    log("\n*** NOTICE: started with --import tsx: h5nest's worker threads inherit it and load tsx+esbuild, inflating worker start (open ms, cold reads); use npm run bench (bench/main.mjs) ***\n");
  }
  const temp = await TempRoot.create();
  const cleanup = (): void => {
    void temp.remove().finally(() => process.exit(130));
  };
  process.once("SIGINT", cleanup);
  process.once("SIGTERM", cleanup);
  try {
    const json: { main?: MainReport; memory?: MemoryOutcome; distributed?: DistributedOutcome; leases?: LeaseOutcome; consolidate?: ConsolidateReport; consolidateShared?: SharedReport; store?: StoreReport; serve?: ServeReport } = {};
    const texts: string[] = [];
    let failed = false;
    const defaultRun = !args.memory && !args.distributed && !args.leases && !args.consolidate && !args.consolidateShared && !args.store && !args.serve;
    if (defaultRun || args.withMain) {
      const main = await runMain(args, temp);
      json.main = main.report;
      texts.push(main.text);
      failed ||= main.failed;
    }
    if (args.consolidate || (defaultRun && !args.noConsolidate)) {
      log(`consolidate benchmark: ${args.chunks} chunks, ${args.rounds} rounds${args.consolidateScale ? `, then single runs at ${args.chunks} and ${args.consolidateScaleChunks} chunks` : ""} ...`);
      try {
        const options = { chunks: args.chunks, rounds: args.rounds, workers: args.workers, fsConcurrency: args.fsConcurrency };
        json.consolidate = await runConsolidateBench(temp, { ...options, scale: args.consolidateScale, scaleChunks: args.consolidateScaleChunks });
        texts.push(renderConsolidate(json.consolidate));
        failed ||= consolidateFailed(json.consolidate);
      } catch (error) {
        failed = true;
        texts.push(`*** FAILED consolidate benchmark: ${error instanceof Error ? error.message : String(error)} ***`);
      }
    }
    if (args.consolidateShared) {
      const workers = args.workers ?? 1;
      log(`shared consolidate benchmark: ${args.sharedShards} shards x 256 chunks, 1/2/4 processes x ${workers} workers, ${args.rounds} rounds ...`);
      try {
        json.consolidateShared = await runSharedConsolidateBench(temp, { shards: args.sharedShards, rounds: args.rounds, workers, fsConcurrency: args.fsConcurrency });
        texts.push(renderSharedConsolidate(json.consolidateShared));
        failed ||= sharedConsolidateFailed(json.consolidateShared);
      } catch (error) {
        failed = true;
        texts.push(`*** FAILED shared consolidate benchmark: ${error instanceof Error ? error.message : String(error)} ***`);
      }
    }
    if (args.store || (defaultRun && !args.noStore)) {
      log(`store-level benchmark: ${STORE_WORKLOADS.map((w) => w.label).join(" and ")}, ${args.rounds} rounds ...`);
      try {
        json.store = await runStoreBench(temp, args.rounds, args.workers);
        texts.push(renderStore(json.store));
        failed ||= json.store.failed;
      } catch (error) {
        failed = true;
        texts.push(`*** FAILED store-level benchmark: ${error instanceof Error ? error.message : String(error)} ***`);
      }
    }
    if (args.serve) {
      log(`serve benchmark: ${STORE_WORKLOADS.map((w) => w.label).join(" and ")} over HTTP, ${args.rounds} rounds ...`);
      try {
        json.serve = await runServeBench(temp, args.rounds, args.workers);
        texts.push(renderServe(json.serve));
        failed ||= json.serve.failed;
      } catch (error) {
        failed = true;
        texts.push(`*** FAILED serve benchmark: ${error instanceof Error ? error.message : String(error)} ***`);
      }
    }
    if (args.memory) {
      log(`memory benchmark: ${args.memoryPlanes} planes, ${args.memoryInflight} in flight ...`);
      try {
        json.memory = await runMemoryBench(temp, args.memoryPlanes, args.memoryInflight, args.workers);
        texts.push(renderMemory(json.memory));
        if ("rebuilt" in json.memory && json.memory.rebuilt) failed = true;
      } catch (error) {
        failed = true;
        texts.push(`*** FAILED memory benchmark: ${error instanceof Error ? error.message : String(error)} ***`);
      }
    }
    if (args.distributed) {
      log(`distributed ingest benchmark: ${args.chunks} chunks, ${args.rounds} rounds ...`);
      try {
        const workload = makeWorkload(args.chunks);
        json.distributed = await runDistributedBench(workload, await encodeWorkload(workload), temp, args.rounds, args.workers);
        texts.push(renderDistributed(json.distributed));
        failed ||= distributedFailed(json.distributed);
      } catch (error) {
        failed = true;
        texts.push(`*** FAILED distributed ingest benchmark: ${error instanceof Error ? error.message : String(error)} ***`);
      }
    }
    if (args.leases) {
      log(`lease benchmark: 64 clients in ${args.leaseProcesses} processes, ${args.leaseSeconds} s windows, ${args.rounds} rounds ...`);
      try {
        json.leases = await runLeaseBench(temp, args.rounds, args.leaseSeconds, args.leaseProcesses);
        texts.push(renderLeases(json.leases));
        failed ||= leasesFailed(json.leases);
      } catch (error) {
        failed = true;
        texts.push(`*** FAILED lease benchmark: ${error instanceof Error ? error.message : String(error)} ***`);
      }
    }
    if (!gcAvailable) log("note: run with node --expose-gc for steadier RSS figures (npm run bench does)");
    console.log(args.json ? JSON.stringify(json, null, 2) : texts.join("\n\n"));
    return failed ? 1 : 0;
  } finally {
    await temp.remove();
  }
}

process.exitCode = await main();
