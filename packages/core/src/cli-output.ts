/** What the CLI prints: the consolidation progress bar or JSON lines, and the info table. */
import type { JobProgress } from "@h5nest/coordinator";
import cliProgress from "cli-progress";
import type { ConsolidateProgress, ConsolidateSummary, StoreInfo } from "./maintenance.js";

export function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

export interface ConsolidateView {
  /** True when a pre-count is worth it (a live bar with an ETA). */
  wantsTotal: boolean;
  start(total: { chunks: number; bytes: number }): void;
  shard(progress: ConsolidateProgress): void;
  /** The whole job's figures (a job shared through Redis). */
  job(progress: JobProgress): void;
  finish(summary: ConsolidateSummary): void;
}

/**
 * A live bar on a terminal, one JSON line per shard with --json, a summary at
 * the end. A job shared through Redis shows two lines: the whole job (shards
 * done of those found so far, across processes) and this process's part.
 */
export function createConsolidateView(json: boolean, shared: boolean): ConsolidateView {
  const live = !json && Boolean(process.stderr.isTTY);
  const started = performance.now();
  let chunks = 0;
  let bytes = 0;
  let latestJob: JobProgress | null = null;
  const multi = live
    ? new cliProgress.MultiBar({ stream: process.stderr, hideCursor: true, etaBuffer: 50, clearOnComplete: false }, cliProgress.Presets.shades_classic)
    : null;
  let bar: cliProgress.SingleBar | null = null;
  let jobBar: cliProgress.SingleBar | null = null;
  const payload = () => {
    const seconds = (performance.now() - started) / 1000;
    // The job's counters lag this process's own by a moment: never show more than all of it.
    const share = latestJob && latestJob.chunks > 0 ? `${Math.min(100, Math.round((100 * chunks) / latestJob.chunks))}%` : "-";
    return { mb: (bytes / 2 ** 20).toFixed(1), rate: seconds > 0 ? Math.round(chunks / seconds) : 0, chunks, share };
  };
  if (multi && shared) {
    jobBar = multi.create(1, 0, { chunks: 0, mb: "0.0", processes: 0, remaining: 0 }, {
      format: "whole job    {bar} {value}/{total} shards found | {chunks} chunks | {mb} MiB | {processes} processes | {remaining} tasks left",
    });
    bar = multi.create(0, 0, payload(), { format: "this process {chunks} chunks | {mb} MiB | {rate} chunks/s | {share} of the job" });
  }
  return {
    wantsTotal: live && !shared,
    start(total) {
      bar = multi!.create(Math.max(total.chunks, 1), 0, payload(), {
        format: "consolidating {bar} {percentage}% | {value}/{total} chunks | {mb} MiB | {rate} chunks/s | ETA {eta_formatted}",
      });
    },
    shard(progress) {
      chunks += progress.chunks;
      bytes += progress.bytes;
      if (json) console.log(JSON.stringify({ event: "shard", ...progress, ...(shared ? { job: latestJob } : {}) }));
      bar?.update(chunks, payload());
    },
    job(progress) {
      latestJob = progress;
      jobBar?.setTotal(Math.max(progress.tasksFound, 1));
      jobBar?.update(progress.tasksDone, { chunks: progress.chunks, mb: (progress.bytes / 2 ** 20).toFixed(1), processes: progress.processes, remaining: progress.remaining });
      bar?.update(chunks, payload());
    },
    finish(summary) {
      multi?.stop();
      const seconds = (performance.now() - started) / 1000;
      if (json) {
        console.log(JSON.stringify({ event: "summary", ...summary, fatal: summary.fatal?.message ?? null, seconds }));
        return;
      }
      const rate = seconds > 0 ? Math.round(summary.chunks / seconds) : 0;
      const state = summary.interrupted ? " (interrupted: run it again to finish)" : "";
      console.log(
        `moved ${summary.chunks} chunks (${formatBytes(summary.bytes)}) into ${summary.shards} shards in ${seconds.toFixed(1)} s (${rate} chunks/s)` +
          `; removed ${summary.swept} leftover temporary files${state}`,
      );
      const job = summary.job;
      if (job) {
        const share = job.chunks > 0 ? Math.min(100, Math.round((100 * summary.chunks) / job.chunks)) : 0;
        console.log(
          `whole job (${plural(job.processes, "process", "processes")}): ${job.chunks} chunks (${formatBytes(job.bytes)}), ${job.tasksDone} shards worked on, ` +
            `${job.foldersScanned} folders listed; this process did ${share}%`,
        );
      }
    },
  };
}

/**
 * compact on a terminal: a live line of shards rewritten and bytes reclaimed
 * (shards left alone are not reported one by one), and with a job shared
 * through Redis a bar of the whole job (shards checked of those found).
 */
export function createCompactView(json: boolean, shared: boolean) {
  const live = !json && Boolean(process.stderr.isTTY);
  const multi = live
    ? new cliProgress.MultiBar({ stream: process.stderr, hideCursor: true, clearOnComplete: false }, cliProgress.Presets.shades_classic)
    : null;
  const jobBar = multi && shared ? multi.create(1, 0, { mb: "0.0", processes: 0, remaining: 0 }, { format: "whole job    {bar} {value}/{total} shards checked | {mb} MiB reclaimed | {processes} processes | {remaining} tasks left" }) : null;
  const bar = multi ? multi.create(0, 0, { mb: "0.0" }, { format: `${shared ? "this process" : "compacting"} {value} shards rewritten | {mb} MiB reclaimed` }) : null;
  let rewritten = 0;
  let reclaimed = 0;
  let latestJob: JobProgress | null = null;
  return {
    shard(progress: { shard: string; before: number; after: number }) {
      rewritten += 1;
      reclaimed += progress.before - progress.after;
      if (json) console.log(JSON.stringify({ event: "shard", ...progress, ...(shared ? { job: latestJob } : {}) }));
      bar?.update(rewritten, { mb: (reclaimed / 2 ** 20).toFixed(1) });
    },
    job(progress: JobProgress) {
      latestJob = progress;
      jobBar?.setTotal(Math.max(progress.tasksFound, 1));
      jobBar?.update(progress.tasksDone, { mb: (progress.bytes / 2 ** 20).toFixed(1), processes: progress.processes, remaining: progress.remaining });
    },
    stop() {
      multi?.stop();
    },
  };
}

export function printInfo(dir: string, info: StoreInfo): void {
  console.log(`store ${dir}`);
  for (const array of info.arrays) {
    const layout = array.sharded ? "sharded" : (array.note ?? "raw files");
    console.log(
      `  ${array.path || "/"}  v${array.zarrFormat}  ${array.dtype}  shape ${array.shape.join("x")}  chunks ${array.chunks.join("x")}  (${layout})`,
    );
  }
  console.log(`raw chunk files   ${info.rawChunkFiles} (${formatBytes(info.rawChunkBytes)})`);
  console.log(`shards            ${info.shards} (${formatBytes(info.shardBytes)}, ${info.datasets} chunks)`);
  console.log(`reclaimable       ${formatBytes(info.reclaimableBytes)} (h5nest compact)`);
  console.log(`metadata files    ${info.metadataFiles}`);
  if (info.tempFiles) console.log(`temporary files   ${info.tempFiles} (leftovers of a crash: consolidate removes them)`);
  for (const bad of info.unreadableShards) console.log(`UNREADABLE        ${bad.file}: ${bad.message}`);
}
