/** The store-level benchmark's one table: medians, spreads and h5nest / baseline ratios per workload and operation. */
import { pairedRatio, type Stat, stat } from "./stats.js";
import type { Op, StoreRounds, StoreVariant, StoreWorkload, Timings } from "./store-bench.js";
import { formatTable, num, range } from "./table.js";

const OP_LABELS: Record<Op, string> = {
  write: "write all, all in flight",
  read: "read all, all in flight",
  random: "random N keys, 1 at a time",
  open: "open + first read",
};
const OP_ORDER: Op[] = ["write", "read", "random", "open"];

export interface StoreRow {
  workload: string;
  operation: string;
  variant: string;
  /** Null when measured; else why the row is empty. */
  notMeasured: string | null;
  ok: number;
  runs: number;
  ms: Stat | null;
  chunksPerSec: Stat | null;
  mbPerSec: Stat | null;
  /** h5nest's rate / this row's rate (for open: this row's ms / h5nest's ms), median of per-round ratios. */
  h5nestOverThis: Stat | null;
}

export interface StoreReport {
  config: Record<string, unknown>;
  notices: string[];
  rows: StoreRow[];
  failures: string[];
  failed: boolean;
}

function present(values: (number | null)[]): number[] {
  return values.filter((v): v is number => v != null);
}

export function summarizeStore(
  workloads: StoreWorkload[],
  variants: StoreVariant[],
  results: StoreRounds,
  missing: { label: string; reason: string }[],
  config: Record<string, unknown>,
  notices: string[],
  rebuilt: boolean,
): StoreReport {
  const rows: StoreRow[] = [];
  const failures: string[] = [];
  for (const w of workloads) {
    const g = w.grid;
    const chunks = g.planes * (g.height / g.chunkHeight) * (g.width / g.chunkWidth);
    const chunkBytes = g.chunkHeight * g.chunkWidth * 2;
    const count: Record<Op, number> = { write: chunks, read: chunks, random: w.randomReads, open: 1 };
    const byVariant = results.get(w.id)!;
    const msOf = (id: string, op: Op): (number | null)[] => (byVariant.get(id) ?? []).map((r) => (typeof r === "string" ? null : (r[op] ?? null)));
    const rate = (id: string, op: Op): (number | null)[] => msOf(id, op).map((ms) => (ms == null ? null : count[op] / (ms / 1000)));
    for (const v of variants) {
      for (const r of byVariant.get(v.id) ?? []) if (typeof r === "string") failures.push(`${w.label} ${v.label}: ${r}`);
    }
    const workload = `${w.label} (${g.planes} shards)`;
    for (const op of OP_ORDER) {
      for (const v of variants.filter((x) => x.ops.includes(op))) {
        const list: (Timings | string)[] = byVariant.get(v.id) ?? [];
        const rates = present(rate(v.id, op));
        rows.push({
          workload,
          operation: OP_LABELS[op].replace("N", String(w.randomReads)),
          variant: v.label,
          notMeasured: null,
          ok: list.filter((r) => typeof r !== "string").length,
          runs: list.length,
          ms: stat(present(msOf(v.id, op))),
          chunksPerSec: op === "open" ? null : stat(rates),
          mbPerSec: op === "open" ? null : stat(rates.map((c) => (c * chunkBytes) / 1e6)),
          h5nestOverThis: v.id === "h5nest" ? null : pairedRatio(rate("h5nest", op), rate(v.id, op)),
        });
      }
      for (const m of missing) {
        rows.push({ workload, operation: OP_LABELS[op].replace("N", String(w.randomReads)), variant: m.label, notMeasured: m.reason, ok: 0, runs: 0, ms: null, chunksPerSec: null, mbPerSec: null, h5nestOverThis: null });
      }
    }
  }
  return { config, notices, rows, failures, failed: rebuilt || failures.length > 0 };
}

/** 3 significant digits, small ratios (against the Map) included. */
function times(value: number): string {
  return value >= 100 ? value.toFixed(0) : value.toPrecision(3);
}

function ratioCell(s: Stat | null): string {
  return s ? `${times(s.median)}x (${times(s.min)}..${times(s.max)})` : "-";
}

export function renderStore(report: StoreReport): string {
  const c = report.config;
  const out: string[] = [];
  out.push(
    `h5nest store-level benchmark: store.set / store.get of the same encoded chunks (uint16, no compressor, zarr v2 keys arr/0/0/z/y/x, ` +
      `one shard per z-plane); ${c.rounds} interleaved rounds (variant order rotated), medians; h5nest workers=${c.workers}; node ${c.node}; MB = 10^6 bytes`,
  );
  out.push(String(c.code));
  for (const notice of report.notices) out.push(`*** NOTICE: ${notice} ***`);
  out.push("");
  let last = "";
  const rows = report.rows.map((r) => {
    const group = `${r.workload}|${r.operation}`;
    const head = group === last ? ["", ""] : [r.workload, r.operation];
    last = group;
    if (r.notMeasured) return [...head, r.variant, "*** NOT MEASURED ***", "", "", "", "", ""];
    const open = r.chunksPerSec === null;
    return [
      ...head,
      r.variant,
      num(r.ms?.median),
      num(r.chunksPerSec?.median),
      num(r.mbPerSec?.median),
      open ? range(r.ms?.min, r.ms?.max) + " ms" : range(r.chunksPerSec?.min, r.chunksPerSec?.max),
      ratioCell(r.h5nestOverThis),
      `${r.ok}/${r.runs}`,
    ];
  });
  out.push(
    formatTable(
      ["workload", "operation", "variant", "ms", "chunks/s", "MB/s", "min..max chunks/s (open: ms)", "h5nest / this (min..max)", "ok"],
      rows,
      ["left", "left", "left", "right", "right", "right", "right", "right", "right"],
    ),
  );
  out.push("");
  out.push("h5nest / this: h5nest's chunks/s over this row's in the same round (open: this row's ms over h5nest's), median of the per-round ratios; >1 = h5nest faster.");
  out.push("what is timed (Node: performance.now() around the calls; Python: perf_counter inside one /usr/bin/python3 process per workload, variant and round):");
  out.push("  write all: store.set(key, bytes) of every chunk, all issued at once (Promise.all), then store.flush() for h5nest; metadata set first, untimed;");
  out.push("             h5nest's open, its worker start (with the metadata writes) and its close are not timed. Python: store[key] = bytes in a loop.");
  out.push(`  open + first read: a fresh store object (h5nest: H5NestedStore.open with default options, only read from) + get of one chunk;`);
  out.push(`                     median of ${c.openReps} fresh opens a round.`);
  out.push("  read all: store.get of every chunk, all issued at once, on the store of the last open. Python: store[key] in a loop.");
  out.push("  random keys: store.get awaited one at a time on another fresh store (opened untimed), keys in a seeded random order");
  out.push("               (the same for every variant); chunks/s = 1 / mean latency.");
  out.push("  every value read is compared with the bytes written, after the timing. Files are in the page cache (reads follow the writes).");
  for (const failure of report.failures) out.push(`*** FAILED ${failure} ***`);
  return out.join("\n");
}
