/** Turns the rounds into medians, spreads and ratios, as tables or JSON. */
import { pairedRatio, type Stat, stat } from "./stats.js";
import { formatTable, mib, num, range, ratio } from "./table.js";
import type { Variant, VariantRun } from "./variants.js";
import type { Workload } from "./workloads.js";

/** Python H5_Nested_Store figures measured earlier on this machine class (used when H5NEST_PY_STORE is unset). */
export const REFERENCE_H5_STORE = { writeChunksPerSec: 5000, readChunksPerSec: 6000 };

export interface VariantSummary {
  id: string;
  label: string;
  writeTimed: string;
  readTimed: string;
  ok: number;
  failures: string[];
  writeChunksPerSec: Stat | null;
  writeMBps: Stat | null;
  readChunksPerSec: Stat | null;
  readMBps: Stat | null;
  warmReadChunksPerSec: Stat | null;
  openMs: Stat | null;
  closeMs: Stat | null;
  /** Node process (or, for Python variants, Python process) peak RSS per round. */
  peakRssBytes: Stat | null;
  /** Peak minus RSS at the start of the variant (Node variants). */
  rssGrowthBytes: Stat | null;
  rssOf: "node" | "python" | null;
}

export interface RatioSummary {
  label: string;
  /** "measured": both sides measured in this run (median of per-round ratios); "reference": against a fixed figure. */
  basis: "measured" | "reference";
  value: Stat | null;
}

export interface MainReport {
  config: Record<string, unknown>;
  notices: string[];
  variants: VariantSummary[];
  ratios: RatioSummary[];
}

type Metric = "write" | "read" | "warm";

/** Per variant, one entry per round: the run, or the error message. */
export type Rounds = Map<string, (VariantRun | string)[]>;

function runs(list: (VariantRun | string)[]): (VariantRun | null)[] {
  return list.map((r) => (typeof r === "string" ? null : r));
}

function perRound(list: (VariantRun | string)[], pick: (r: VariantRun) => number | undefined): (number | null)[] {
  return runs(list).map((r) => (r ? (pick(r) ?? null) : null));
}

function present(values: (number | null)[]): number[] {
  return values.filter((v): v is number => v != null);
}

export function summarize(variants: Variant[], rounds: Rounds, w: Workload, h5StoreMeasured: boolean, config: Record<string, unknown>, notices: string[]): MainReport {
  const rates = new Map<string, Record<Metric, (number | null)[]>>();
  const summaries = variants.map((v): VariantSummary => {
    const list = rounds.get(v.id) ?? [];
    const write = perRound(list, (r) => w.chunkCount / (r.writeMs / 1000));
    const read = perRound(list, (r) => w.chunkCount / (r.readMs / 1000));
    const warm = perRound(list, (r) => (r.warmReadMs ? w.chunkCount / (r.warmReadMs / 1000) : undefined));
    rates.set(v.id, { write, read, warm });
    const mb = (chunksPerSec: number[]): number[] => chunksPerSec.map((c) => (c * w.chunkBytes) / 1e6);
    const python = list.some((r) => typeof r !== "string" && r.childMaxRssBytes != null);
    const peak = present(perRound(list, (r) => r.childMaxRssBytes ?? r.rss?.peakBytes));
    return {
      id: v.id,
      label: v.label,
      writeTimed: v.writeTimed,
      readTimed: v.readTimed,
      ok: runs(list).filter(Boolean).length,
      failures: list.filter((r): r is string => typeof r === "string"),
      writeChunksPerSec: stat(present(write)),
      writeMBps: stat(mb(present(write))),
      readChunksPerSec: stat(present(read)),
      readMBps: stat(mb(present(read))),
      warmReadChunksPerSec: stat(present(warm)),
      openMs: stat(present(perRound(list, (r) => r.openMs))),
      closeMs: stat(present(perRound(list, (r) => r.closeMs))),
      peakRssBytes: stat(peak),
      rssGrowthBytes: stat(present(perRound(list, (r) => (r.rss ? r.rss.peakBytes - r.rss.startBytes : undefined)))),
      rssOf: peak.length === 0 ? null : python ? "python" : "node",
    };
  });

  const ratios: RatioSummary[] = [];
  const measured = (label: string, a: string, b: string, kind: Metric, kindB: Metric = kind): void => {
    const x = rates.get(a);
    const y = rates.get(b);
    if (x && y) ratios.push({ label, basis: "measured", value: pairedRatio(x[kind], y[kindB]) });
  };
  const reference = (label: string, a: string, kind: Metric, figure: number): void => {
    const x = rates.get(a);
    if (x) ratios.push({ label, basis: "reference", value: stat(present(x[kind]).map((v) => v / figure)) });
  };
  measured("h5nest writeDirect write / plain fs write", "h5nest-direct", "fs", "write");
  measured("h5nest writeDirect read  / plain fs read", "h5nest-direct", "fs", "read");
  measured("h5nest writeDirect warm read / plain fs read", "h5nest-direct", "fs", "warm", "read");
  measured("h5nest raw-files  write / plain fs write", "h5nest-raw", "fs", "write");
  measured("h5nest raw-files  read  / plain fs read", "h5nest-raw", "fs", "read");
  measured("h5nest writeDirect write / zarrita->Map write", "h5nest-direct", "zarrita-map", "write");
  measured("h5nest writeDirect read  / zarrita->Map read", "h5nest-direct", "zarrita-map", "read");
  measured("h5nest writeDirect warm read / zarrita->Map read", "h5nest-direct", "zarrita-map", "warm", "read");
  measured("h5nest writeDirect write / Python NDS write", "h5nest-direct", "py-nds", "write");
  measured("h5nest writeDirect read  / Python NDS read", "h5nest-direct", "py-nds", "read");
  measured("h5nest raw-files  write / Python NDS write", "h5nest-raw", "py-nds", "write");
  measured("h5nest raw-files  read  / Python NDS read", "h5nest-raw", "py-nds", "read");
  if (h5StoreMeasured) {
    measured("h5nest writeDirect write / Python H5_Nested_Store write", "h5nest-direct", "py-h5", "write");
    measured("h5nest writeDirect read  / Python H5_Nested_Store read", "h5nest-direct", "py-h5", "read");
  } else {
    const { writeChunksPerSec: wr, readChunksPerSec: rd } = REFERENCE_H5_STORE;
    reference(`h5nest writeDirect write / Python H5_Nested_Store ${wr} chunks/s`, "h5nest-direct", "write", wr);
    reference(`h5nest writeDirect read  / Python H5_Nested_Store ${rd} chunks/s`, "h5nest-direct", "read", rd);
  }
  return { config, notices, variants: summaries, ratios };
}

export function renderMain(report: MainReport, w: Workload): string {
  const c = report.config;
  const out: string[] = [];
  out.push(
    `h5nest benchmark: ${w.chunkCount} chunks x ${w.chunkBytes / 1024} KiB = ${(w.totalBytes / 2 ** 20).toFixed(1)} MiB, ` +
      `uint16 shape [${w.shape.join(",")}] chunks [${w.chunks.join(",")}], no compressor, zarr v2 nested keys`,
  );
  out.push(
    `${c.rounds} interleaved rounds (variant order rotated each round); figures are medians over rounds; ` +
      `h5nest workers=${c.workers}; node ${c.node}; tmp ${c.tmpdir}; MB = 10^6 bytes`,
  );
  out.push(String(c.code));
  for (const notice of report.notices) out.push(`*** NOTICE: ${notice} ***`);
  out.push("");
  const rows = report.variants.map((v) => [
    v.label,
    num(v.writeChunksPerSec?.median),
    num(v.writeMBps?.median),
    num(v.readChunksPerSec?.median),
    num(v.readMBps?.median),
    num(v.warmReadChunksPerSec?.median),
    num(v.openMs?.median),
    num(v.closeMs?.median),
    v.peakRssBytes ? `${mib(v.peakRssBytes.max)}${v.rssOf === "python" ? " (py)" : ""}` : "-",
    mib(v.rssGrowthBytes?.median),
    `${v.ok}/${v.ok + v.failures.length}`,
  ]);
  out.push(
    formatTable(
      ["variant", "write chunks/s", "write MB/s", "read chunks/s", "read MB/s", "warm read chunks/s", "open ms", "close ms", "peak RSS MiB", "RSS growth MiB", "ok"],
      rows,
    ),
  );
  out.push("");
  out.push("spread over rounds (min..max)");
  out.push(
    formatTable(
      ["variant", "write chunks/s", "read chunks/s", "warm read chunks/s", "peak RSS MiB"],
      report.variants.map((v) => [
        v.label,
        range(v.writeChunksPerSec?.min, v.writeChunksPerSec?.max),
        range(v.readChunksPerSec?.min, v.readChunksPerSec?.max),
        range(v.warmReadChunksPerSec?.min, v.warmReadChunksPerSec?.max),
        range(v.peakRssBytes?.min, v.peakRssBytes?.max, (b) => mib(b)),
      ]),
    ),
  );
  out.push("");
  out.push("ratios of chunks/s (>1: h5nest faster); measured = median of per-round ratios");
  out.push(
    formatTable(
      ["ratio", "median", "min..max", "basis"],
      report.ratios.map((r) => [
        r.label,
        ratio(r.value?.median),
        range(r.value?.min, r.value?.max, (v) => v.toFixed(2)),
        r.basis === "measured" ? "measured in this run" : "REFERENCE FIGURE, not measured in this run",
      ]),
    ),
  );
  out.push("");
  out.push("what is timed:");
  for (const v of report.variants) out.push(`  ${v.label}: write = ${v.writeTimed}; read = ${v.readTimed}`);
  out.push("  open ms: h5nest = H5NestedStore.open + createV2Array (not in write; includes the worker threads' h5wasm start,");
  out.push("           since writing .zgroup/.zarray waits for a worker); Python = store + zarr.open_array (not in write)");
  out.push("  close ms: h5nest store.close() (flush + worker shutdown), included in write");
  out.push("  peak RSS: max over rounds of this Node process (threads included; 20 ms samples and VmHWM reset per variant);");
  out.push("            (py) = ru_maxrss of the Python process. RSS growth = peak minus RSS at the variant's start (median).");
  out.push("  reads follow the writes immediately: the files are in the page cache.");
  for (const v of report.variants) {
    for (const failure of v.failures) out.push(`*** FAILED ${v.label}: ${failure} ***`);
  }
  return out.join("\n");
}
