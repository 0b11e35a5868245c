/** What the CLI prints: the consolidation progress bar or JSON lines, and the info table. */
import cliProgress from "cli-progress";
import type { ConsolidateProgress, ConsolidateSummary, StoreInfo } from "./maintenance.js";

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
  finish(summary: ConsolidateSummary): void;
}

/** A live bar on a terminal, one JSON line per shard with --json, a summary at the end. */
export function createConsolidateView(json: boolean): ConsolidateView {
  const live = !json && Boolean(process.stderr.isTTY);
  const started = performance.now();
  let bar: cliProgress.SingleBar | null = null;
  let chunks = 0;
  let bytes = 0;
  const payload = () => {
    const seconds = (performance.now() - started) / 1000;
    return { mb: (bytes / 2 ** 20).toFixed(1), rate: seconds > 0 ? Math.round(chunks / seconds) : 0 };
  };
  return {
    wantsTotal: live,
    start(total) {
      bar = new cliProgress.SingleBar(
        {
          format: "consolidating {bar} {percentage}% | {value}/{total} chunks | {mb} MiB | {rate} chunks/s | ETA {eta_formatted}",
          stream: process.stderr,
          hideCursor: true,
          etaBuffer: 50,
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(Math.max(total.chunks, 1), 0, payload());
    },
    shard(progress) {
      chunks += progress.chunks;
      bytes += progress.bytes;
      if (json) console.log(JSON.stringify({ event: "shard", ...progress }));
      bar?.update(chunks, payload());
    },
    finish(summary) {
      bar?.stop();
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
