/**
 * Consolidate benchmark (see bench/README.md): a NestedDirectoryStore of the
 * benchmark's array (raw chunk files of 8 KiB, the same bytes every round)
 * is consolidated in place by h5nest's store.consolidate(), against a plain
 * Node fs "move by copy" of the same files (read, write elsewhere, unlink,
 * remove the emptied folders) and, with H5NEST_PY_STORE, against the Python
 * H5_Nested_Store's consolidate(). Rounds are interleaved, figures are
 * medians, ratios are medians of per-round ratios. The CLI is timed once.
 * With --consolidate-scale, single runs at two store sizes show whether the
 * peak RSS of the consolidation stays flat as the store grows.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { promisify } from "node:util";
import { createV2Array, H5NestedStore, type V2ArrayOptions } from "h5nest";
import * as zarr from "zarrita";
import { describe, provenance, rebuiltSince } from "./provenance.js";
import { PYTHON } from "./python.js";
import { type RssReport, RssSampler } from "./rss.js";
import { pairedRatio, rotate, type Stat, stat } from "./stats.js";
import { formatTable, mib, num, range, ratio } from "./table.js";
import { ARRAY_PATH, assertSameValues, CHUNK_BYTES, CHUNK_EDGE, CHUNKS_PER_PLANE, chunkBytesOf, fillValues, mainGrid, MemoryStore, PLANE, type TempRoot } from "./workloads.js";

const run = promisify(execFile);
const PY_SCRIPT = path.join(import.meta.dirname, "consolidate_py.py");
export const CLI = path.resolve(import.meta.dirname, "..", "packages", "core", "dist", "cli.js");
const TIME = "/usr/bin/time";

/** Python H5_Nested_Store.consolidate() measured earlier on this machine class (used when H5NEST_PY_STORE is unset). */
export const REFERENCE_PY_CONSOLIDATE_CHUNKS_PER_SEC = 6500;
/** Targets of the issue, printed next to the ratios. */
export const TARGETS = { vsPython: 5, vsFs: 0.5 };

export interface ConsolidateBenchOptions {
  chunks: number;
  rounds: number;
  workers: number | undefined;
  fsConcurrency: number;
  /** Also run the single-run scale comparison at `chunks` and `scaleChunks`. */
  scale: boolean;
  scaleChunks: number;
}

interface Run {
  /** The timed part (see the variant's `timed`). */
  ms: number;
  /** h5nest: H5NestedStore.open (worker start) and store.close(), timed apart. */
  openMs?: number;
  closeMs?: number;
  /** Node process RSS while it ran (h5nest, fs). */
  rss?: RssReport;
  /** Python process ru_maxrss. */
  childMaxRssBytes?: number;
  /** h5nest: RSS when 1/8, 2/8, ... of the chunks were moved (from onProgress). */
  rssTrace?: number[];
  note?: string;
}

interface Variant {
  id: "h5nest" | "fs" | "py";
  label: string;
  timed: string;
  /** `readBack`: also read the values back (not timed); the summary and the files left are checked every time. */
  run(dir: string, planes: number, readBack: boolean): Promise<Run>;
}

interface Setup {
  temp: TempRoot;
  workers: number | undefined;
  fsConcurrency: number;
}

function since(start: number): number {
  return performance.now() - start;
}

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

// ---------------------------------------------------------------- raw store

/** Runs `job` over `items` with at most `limit` in flight. */
async function forEachBounded<T>(items: AsyncIterable<T> | Iterable<T>, limit: number, job: (item: T) => Promise<void>): Promise<void> {
  const inFlight = new Set<Promise<void>>();
  let failure: unknown = null;
  for await (const item of items) {
    if (failure) break;
    const running: Promise<void> = job(item).then(
      () => void inFlight.delete(running),
      (error: unknown) => {
        inFlight.delete(running);
        failure ??= error;
      },
    );
    inFlight.add(running);
    if (inFlight.size >= limit) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  if (failure) throw failure;
}

/** The encoded bytes of chunk (z, cy, cx) of the main array (64 x 64 uint16, the values of workloads.ts). */
function chunkBytes(z: number, cy: number, cx: number): Uint8Array {
  return chunkBytesOf(mainGrid(z + 1), z, cy, cx);
}

function arrayOptions(planes: number): V2ArrayOptions {
  return { shape: [1, 1, planes, PLANE, PLANE], chunks: [1, 1, 1, CHUNK_EDGE, CHUNK_EDGE], dtype: "<u2", compressor: null, fillValue: 0 };
}

/** The metadata files createV2Array writes (.zgroup, arr/.zarray), as relative paths. */
async function metadataFiles(planes: number): Promise<Map<string, Uint8Array>> {
  const store = new MemoryStore();
  await createV2Array(store, ARRAY_PATH, arrayOptions(planes));
  return new Map([...store.map].map(([key, bytes]) => [key.replace(/^\//, ""), bytes]));
}

/**
 * Checks once that chunkBytes() produces what zarrita encodes (plane 0 and
 * the metadata zarrita reads back), so the raw store is a faithful
 * NestedDirectoryStore of the benchmark's array.
 */
export async function checkChunkEncoding(): Promise<void> {
  const store = new MemoryStore();
  const arr = (await createV2Array(store, ARRAY_PATH, arrayOptions(1))) as unknown as zarr.Array<"uint16", zarr.Mutable>;
  const data = new Uint16Array(PLANE * PLANE);
  fillValues(data, 0);
  await zarr.set(arr, null, { data, shape: [1, 1, 1, PLANE, PLANE], stride: [PLANE * PLANE, PLANE * PLANE, PLANE * PLANE, PLANE, 1] });
  const side = PLANE / CHUNK_EDGE;
  for (let cy = 0; cy < side; cy++) {
    for (let cx = 0; cx < side; cx++) {
      const key = `/${ARRAY_PATH}/0/0/0/${cy}/${cx}`;
      const want = store.map.get(key);
      if (!want) throw new Error(`zarrita wrote no ${key}`);
      assertSameValues(`raw chunk ${key}`, chunkBytes(0, cy, cx), want);
    }
  }
}

/** Writes the NestedDirectoryStore (metadata + planes*256 raw chunk files) into `dir`. Not timed. */
export async function writeRawStore(dir: string, planes: number, concurrency: number): Promise<void> {
  for (const [rel, bytes] of await metadataFiles(planes)) {
    await fsp.mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
    await fsp.writeFile(path.join(dir, rel), bytes);
  }
  const side = PLANE / CHUNK_EDGE;
  const base = path.join(dir, ARRAY_PATH, "0", "0");
  for (let z = 0; z < planes; z++) {
    for (let cy = 0; cy < side; cy++) await fsp.mkdir(path.join(base, String(z), String(cy)), { recursive: true });
  }
  function* chunks(): Generator<[number, number, number]> {
    for (let z = 0; z < planes; z++) for (let cy = 0; cy < side; cy++) for (let cx = 0; cx < side; cx++) yield [z, cy, cx];
  }
  await forEachBounded(chunks(), concurrency, ([z, cy, cx]) => fsp.writeFile(path.join(base, String(z), String(cy), String(cx)), chunkBytes(z, cy, cx)));
}

// ---------------------------------------------------------------- checks (not timed)

/** Consolidated in place: arr/0/0 holds exactly one .h5 shard per plane and nothing else. */
export async function expectShards(dir: string, planes: number, who: string): Promise<void> {
  const folder = path.join(dir, ARRAY_PATH, "0", "0");
  const names = await fsp.readdir(folder);
  const shards = names.filter((n) => n.endsWith(".h5")).length;
  if (shards !== planes || names.length !== planes) {
    throw new Error(`${who}: expected ${planes} shards and nothing else in ${folder}, found ${shards} shards among ${names.length} entries`);
  }
}

function planesToVerify(planes: number): number[] {
  return planes <= 16 ? Array.from({ length: planes }, (_, z) => z) : [...new Set([0, planes >> 1, planes - 1])];
}

/** Reads planes back through a fresh h5nest store and compares them with the benchmark's values. */
export async function verifyThroughH5nest(dir: string, planes: number, workers: number | undefined, who: string): Promise<void> {
  const reader = await H5NestedStore.open(dir, workers ? { workers } : {});
  try {
    const array = (await zarr.open.v2(zarr.root(reader).resolve(ARRAY_PATH), { kind: "array" })) as zarr.Array<"uint16", zarr.Readable>;
    const want = new Uint16Array(PLANE * PLANE);
    for (const z of planesToVerify(planes)) {
      const got = await zarr.get(array, [0, 0, z, null, null]);
      fillValues(want, z * PLANE * PLANE);
      assertSameValues(`${who} plane ${z}`, got.data, want);
    }
  } finally {
    await reader.close();
  }
}

// ---------------------------------------------------------------- variants

function h5nestVariant(setup: Setup): Variant {
  return {
    id: "h5nest",
    label: "h5nest store.consolidate()",
    timed: "await store.consolidate() on an open store (open and close timed apart)",
    async run(dir, planes, readBack) {
      const options = setup.workers ? { workers: setup.workers } : {};
      const sampler = new RssSampler();
      let rss: RssReport;
      let openMs: number;
      let ms: number;
      let closeMs: number;
      const rssTrace: number[] = [];
      try {
        const t0 = performance.now();
        const store = await H5NestedStore.open(dir, options);
        openMs = since(t0);
        let summary;
        const total = planes * CHUNKS_PER_PLANE;
        let moved = 0;
        const onProgress = (p: { chunks: number }): void => {
          const before = Math.floor((moved * 8) / total);
          moved += p.chunks;
          for (let k = before; k < Math.floor((moved * 8) / total); k++) rssTrace.push(process.memoryUsage.rss());
        };
        try {
          const t1 = performance.now();
          summary = await store.consolidate({ onProgress });
          ms = since(t1);
        } finally {
          const t2 = performance.now();
          await store.close();
          closeMs = since(t2);
        }
        rss = sampler.stop();
        const chunks = planes * CHUNKS_PER_PLANE;
        if (summary.fatal) throw summary.fatal;
        if (summary.errors.length || summary.chunks !== chunks || summary.shards !== planes || summary.bytes !== chunks * CHUNK_BYTES) {
          throw new Error(`h5nest consolidate: summary ${JSON.stringify({ ...summary, fatal: undefined })}, expected ${chunks} chunks in ${planes} shards`);
        }
      } finally {
        sampler.stop();
      }
      await expectShards(dir, planes, "h5nest consolidate");
      if (readBack) await verifyThroughH5nest(dir, planes, setup.workers, "h5nest consolidate");
      return { ms, openMs, closeMs, rss, rssTrace };
    },
  };
}

/** Chunk files under `folder` (names without a leading dot), depth first; `folders` collects every folder seen. */
async function* chunkFiles(folder: string, folders: string[]): AsyncGenerator<string> {
  folders.push(folder);
  const entries = await fsp.readdir(folder, { withFileTypes: true });
  for (const entry of entries) {
    if (entry.name.startsWith(".")) continue;
    const full = path.join(folder, entry.name);
    if (entry.isDirectory()) yield* chunkFiles(full, folders);
    else yield full;
  }
}

function fsVariant(setup: Setup): Variant {
  return {
    id: "fs",
    label: "plain fs move-by-copy (Node)",
    timed: `walk the store; per chunk file readFile + writeFile to a new file elsewhere + unlink (${setup.fsConcurrency} in flight); rmdir the emptied folders`,
    async run(dir, planes) {
      const target = await setup.temp.fresh("fs-target");
      try {
        const sampler = new RssSampler();
        let rss: RssReport;
        let ms: number;
        try {
          const t0 = performance.now();
          const folders: string[] = [];
          const made = new Map<string, Promise<unknown>>();
          const source = path.join(dir, ARRAY_PATH);
          await forEachBounded(chunkFiles(source, folders), setup.fsConcurrency, async (file) => {
            const destination = path.join(target, path.relative(dir, file));
            const parent = path.dirname(destination);
            let mkdir = made.get(parent);
            if (!mkdir) made.set(parent, (mkdir = fsp.mkdir(parent, { recursive: true })));
            const bytes = await fsp.readFile(file);
            await mkdir;
            await fsp.writeFile(destination, bytes);
            await fsp.unlink(file);
          });
          // h5nest removes the emptied raw folders as well.
          for (const folder of folders.reverse()) {
            if (folder === source) continue;
            await fsp.rmdir(folder);
          }
          ms = since(t0);
          rss = sampler.stop();
        } finally {
          sampler.stop();
        }
        // Not timed: every chunk moved with its bytes.
        const left = await fsp.readdir(path.join(dir, ARRAY_PATH));
        if (left.some((n) => !n.startsWith("."))) throw new Error(`fs move-by-copy: left ${left.join(", ")} in the source`);
        const side = PLANE / CHUNK_EDGE;
        let moved = 0;
        for (let z = 0; z < planes; z++) {
          for (let cy = 0; cy < side; cy++) moved += (await fsp.readdir(path.join(target, ARRAY_PATH, "0", "0", String(z), String(cy)))).length;
        }
        if (moved !== planes * CHUNKS_PER_PLANE) throw new Error(`fs move-by-copy: ${moved} files at the target, expected ${planes * CHUNKS_PER_PLANE}`);
        for (const z of planesToVerify(planes)) {
          const file = path.join(target, ARRAY_PATH, "0", "0", String(z), "7", "9");
          assertSameValues(`fs move-by-copy ${file}`, await fsp.readFile(file), chunkBytes(z, 7, 9));
        }
        return { ms, rss };
      } finally {
        await setup.temp.remove(target);
      }
    },
  };
}

interface PyResult {
  consolidate_s: number;
  scheduler: string;
  problems: string[];
  maxrss_kib: number;
}

function pyVariant(root: string): Variant {
  return {
    id: "py",
    label: "Python H5_Nested_Store.consolidate()",
    timed: "store.consolidate() inside Python (its prints to /dev/null; imports and store creation not timed)",
    async run(dir, planes, readBack) {
      const config = { root, path: dir, planes, verify: readBack ? planesToVerify(planes) : [] };
      let stdout: string;
      try {
        ({ stdout } = await run(PYTHON, [PY_SCRIPT, JSON.stringify(config)], { maxBuffer: 16 * 1024 * 1024 }));
      } catch (error) {
        const e = error as { stderr?: string; message: string };
        throw new Error(`python failed: ${(e.stderr || e.message).trim()}`);
      }
      const result = JSON.parse(stdout.trim().split("\n").pop()!) as PyResult;
      if (result.problems.length) throw new Error(`Python consolidate: ${result.problems.join("; ")}`);
      return { ms: result.consolidate_s * 1000, childMaxRssBytes: result.maxrss_kib * 1024, note: result.scheduler };
    },
  };
}

/** Null when the Python H5_Nested_Store can be imported from `root`, else why not. */
async function probePython(root: string): Promise<string | null> {
  const file = path.join(root, "zarr_stores", "h5_nested_store.py");
  if (!fs.existsSync(file)) return `${file} does not exist`;
  try {
    await run(PYTHON, ["-c", `import sys; sys.path.insert(0, ${JSON.stringify(root)}); import h5py, numpy, zarr, zarr_stores.h5_nested_store`]);
    return null;
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    return (e.stderr || e.message).trim().split("\n").pop() ?? "failed";
  }
}

/** Runs `variant` on a freshly written raw store (writing it is not timed). */
async function onFreshStore(setup: Setup, variant: Variant, planes: number, readBack: boolean): Promise<Run> {
  const dir = await setup.temp.fresh(`consolidate-${variant.id}`);
  try {
    await writeRawStore(dir, planes, setup.fsConcurrency);
    return await variant.run(dir, planes, readBack);
  } finally {
    await setup.temp.remove(dir);
  }
}

// ---------------------------------------------------------------- CLI (single run)

export interface CliRun {
  /** Spawn to exit: node start, module load, worker start, consolidate, close. */
  wallMs: number;
  /** The CLI's own "seconds" (store opened to consolidation done). */
  internalMs: number;
  maxRssBytes: number | null;
}

async function runCli(setup: Setup, planes: number): Promise<CliRun> {
  const dir = await setup.temp.fresh("consolidate-cli");
  try {
    await writeRawStore(dir, planes, setup.fsConcurrency);
    const timeFile = path.join(setup.temp.dir, "cli-time.txt");
    const cliArgs = [CLI, "consolidate", dir, "--json", ...(setup.workers ? ["--workers", String(setup.workers)] : [])];
    const withTime = fs.existsSync(TIME);
    const [command, args] = withTime ? [TIME, ["-f", "%M", "-o", timeFile, process.execPath, ...cliArgs]] : [process.execPath, cliArgs];
    const t0 = performance.now();
    let stdout: string;
    try {
      ({ stdout } = await run(command, args, { maxBuffer: 64 * 1024 * 1024 }));
    } catch (error) {
      const e = error as { stderr?: string; message: string };
      throw new Error(`h5nest consolidate (CLI) failed: ${(e.stderr || e.message).trim()}`);
    }
    const wallMs = since(t0);
    const summary = JSON.parse(stdout.trim().split("\n").pop()!) as { event: string; chunks: number; seconds: number };
    if (summary.event !== "summary" || summary.chunks !== planes * CHUNKS_PER_PLANE) throw new Error(`h5nest consolidate (CLI): unexpected summary ${JSON.stringify(summary)}`);
    await expectShards(dir, planes, "h5nest consolidate (CLI)");
    await verifyThroughH5nest(dir, planes, setup.workers, "h5nest consolidate (CLI)");
    const kib = withTime ? Number(fs.readFileSync(timeFile, "utf8").trim().split("\n").pop()) : Number.NaN;
    return { wallMs, internalMs: summary.seconds * 1000, maxRssBytes: Number.isFinite(kib) ? kib * 1024 : null };
  } finally {
    await setup.temp.remove(dir);
  }
}

// ---------------------------------------------------------------- the benchmark

export interface ConsolidateVariantSummary {
  id: string;
  label: string;
  timed: string;
  ok: number;
  failures: string[];
  chunksPerSec: Stat | null;
  mbPerSec: Stat | null;
  /** h5nest: rate over open + consolidate + close. */
  withOpenCloseChunksPerSec: Stat | null;
  openMs: Stat | null;
  closeMs: Stat | null;
  peakRssBytes: Stat | null;
  rssGrowthBytes: Stat | null;
  rssOf: "node" | "python" | null;
  notes: string[];
}

export interface ConsolidateRatio {
  label: string;
  basis: "measured" | "reference";
  target: number;
  value: Stat | null;
}

export interface ScalePoint {
  chunks: number;
  /** Per variant id: the single run, or the error message. */
  runs: Record<string, Run | string>;
}

export interface ConsolidateReport {
  config: Record<string, unknown>;
  notices: string[];
  variants: ConsolidateVariantSummary[];
  ratios: ConsolidateRatio[];
  cli: CliRun | string | null;
  scale: ScalePoint[] | string | null;
  /** Set when packages/*\/dist changed during the run. */
  rebuilt: string | null;
}

export async function freeBytes(dir: string): Promise<number> {
  const s = await fsp.statfs(dir);
  return s.bavail * s.bsize;
}

export async function runConsolidateBench(temp: TempRoot, options: ConsolidateBenchOptions): Promise<ConsolidateReport> {
  const code = provenance();
  const setup: Setup = { temp, workers: options.workers, fsConcurrency: options.fsConcurrency };
  const notices: string[] = [];
  await checkChunkEncoding();

  const variants: Variant[] = [h5nestVariant(setup), fsVariant(setup)];
  const pyRoot = process.env.H5NEST_PY_STORE ? path.resolve(process.env.H5NEST_PY_STORE) : null;
  let pyMeasured = false;
  if (pyRoot) {
    const missing = await probePython(pyRoot);
    if (missing) notices.push(`H5NEST_PY_STORE=${pyRoot} unusable (${missing}): Python consolidate not measured, reference figure used`);
    else {
      variants.push(pyVariant(pyRoot));
      pyMeasured = true;
    }
  }
  for (const notice of notices) log(`\n*** NOTICE: ${notice} ***\n`);

  const planes = options.chunks / CHUNKS_PER_PLANE;
  const needed = 3 * options.chunks * CHUNK_BYTES + 2 ** 30;
  if ((await freeBytes(temp.dir)) < needed) throw new Error(`consolidate benchmark: less than ${(needed / 2 ** 30).toFixed(1)} GiB free under ${temp.dir}`);

  log(`consolidate warm-up (not counted): h5nest, fs`);
  for (const v of variants.filter((x) => x.id !== "py")) await onFreshStore(setup, v, planes, true);

  const rounds = new Map<string, (Run | string)[]>(variants.map((v) => [v.id, []]));
  for (let round = 0; round < options.rounds; round++) {
    const parts: string[] = [];
    for (const v of rotate(variants, round)) {
      let outcome: Run | string;
      try {
        // Values are read back in the first round (and the warm-up, CLI and scale runs); later rounds check summaries and files only.
        outcome = await onFreshStore(setup, v, planes, round === 0);
        parts.push(`${v.id} ${outcome.ms.toFixed(0)} ms`);
      } catch (error) {
        outcome = error instanceof Error ? error.message : String(error);
        parts.push(`${v.id} FAILED`);
        log(`*** consolidate ${v.id} failed in round ${round + 1}: ${outcome}`);
      }
      rounds.get(v.id)![round] = outcome;
    }
    log(`consolidate round ${round + 1}/${options.rounds}: ${parts.join("; ")}`);
  }

  let cli: CliRun | string | null;
  try {
    cli = await runCli(setup, planes);
    log(`consolidate CLI (single run): ${cli.wallMs.toFixed(0)} ms wall`);
  } catch (error) {
    cli = error instanceof Error ? error.message : String(error);
    log(`*** ${cli}`);
  }

  let scale: ScalePoint[] | string | null = null;
  if (options.scale) scale = await runScale(setup, variants, [options.chunks, options.scaleChunks]);

  const rebuilt = rebuiltSince(code);
  if (rebuilt) notices.push(rebuilt);
  const { summaries, ratios } = summarize(variants, rounds, options.chunks, pyMeasured);
  return {
    config: {
      code: describe(code),
      commit: code.commit,
      rounds: options.rounds,
      chunks: options.chunks,
      chunkBytes: CHUNK_BYTES,
      planes,
      workers: options.workers ?? `default (${os.availableParallelism()})`,
      fsConcurrency: options.fsConcurrency,
      tmpdir: os.tmpdir(),
      node: process.version,
      pythonStoreMeasured: pyMeasured,
      pythonStoreRoot: pyMeasured ? pyRoot : null,
      referencePythonChunksPerSec: REFERENCE_PY_CONSOLIDATE_CHUNKS_PER_SEC,
      scaleChunks: options.scale ? options.scaleChunks : null,
    },
    notices,
    variants: summaries,
    ratios,
    cli,
    scale,
    rebuilt,
  };
}

async function runScale(setup: Setup, variants: Variant[], sizes: number[]): Promise<ScalePoint[] | string> {
  const largest = Math.max(...sizes);
  const needed = 3 * largest * CHUNK_BYTES + 2 ** 30;
  const free = await freeBytes(setup.temp.dir);
  if (free < needed) {
    return `only ${(free / 2 ** 30).toFixed(1)} GiB free under ${setup.temp.dir}, need ${(needed / 2 ** 30).toFixed(1)} GiB: consolidate scale run skipped`;
  }
  const points: ScalePoint[] = [];
  for (const chunks of sizes) {
    const point: ScalePoint = { chunks, runs: {} };
    for (const v of variants) {
      log(`consolidate scale: ${v.id} at ${chunks} chunks ...`);
      try {
        point.runs[v.id] = await onFreshStore(setup, v, chunks / CHUNKS_PER_PLANE, true);
      } catch (error) {
        point.runs[v.id] = error instanceof Error ? error.message : String(error);
        log(`*** consolidate scale ${v.id} at ${chunks} chunks failed: ${point.runs[v.id]}`);
      }
    }
    points.push(point);
  }
  return points;
}

function summarize(variants: Variant[], rounds: Map<string, (Run | string)[]>, chunks: number, pyMeasured: boolean) {
  const ok = (list: (Run | string)[]): (Run | null)[] => list.map((r) => (typeof r === "string" ? null : r));
  const pick = (list: (Run | string)[], f: (r: Run) => number | undefined): (number | null)[] => ok(list).map((r) => (r ? (f(r) ?? null) : null));
  const present = (values: (number | null)[]): number[] => values.filter((v): v is number => v != null);
  const rates = new Map<string, (number | null)[]>();
  const summaries = variants.map((v): ConsolidateVariantSummary => {
    const list = rounds.get(v.id) ?? [];
    const rate = pick(list, (r) => chunks / (r.ms / 1000));
    rates.set(v.id, rate);
    const peak = present(pick(list, (r) => r.childMaxRssBytes ?? r.rss?.peakBytes));
    return {
      id: v.id,
      label: v.label,
      timed: v.timed,
      ok: ok(list).filter(Boolean).length,
      failures: list.filter((r): r is string => typeof r === "string"),
      chunksPerSec: stat(present(rate)),
      mbPerSec: stat(present(rate).map((c) => (c * CHUNK_BYTES) / 1e6)),
      withOpenCloseChunksPerSec: stat(present(pick(list, (r) => (r.openMs != null && r.closeMs != null ? chunks / ((r.openMs + r.ms + r.closeMs) / 1000) : undefined)))),
      openMs: stat(present(pick(list, (r) => r.openMs))),
      closeMs: stat(present(pick(list, (r) => r.closeMs))),
      peakRssBytes: stat(peak),
      rssGrowthBytes: stat(present(pick(list, (r) => (r.rss ? r.rss.peakBytes - r.rss.startBytes : undefined)))),
      rssOf: peak.length === 0 ? null : v.id === "py" ? "python" : "node",
      notes: [...new Set(ok(list).flatMap((r) => (r?.note ? [r.note] : [])))],
    };
  });
  const ratios: ConsolidateRatio[] = [];
  const h5 = rates.get("h5nest") ?? [];
  ratios.push({ label: "h5nest consolidate / plain fs move-by-copy", basis: "measured", target: TARGETS.vsFs, value: pairedRatio(h5, rates.get("fs") ?? []) });
  if (pyMeasured) {
    ratios.push({ label: "h5nest consolidate / Python H5_Nested_Store consolidate", basis: "measured", target: TARGETS.vsPython, value: pairedRatio(h5, rates.get("py") ?? []) });
  } else {
    ratios.push({
      label: `h5nest consolidate / Python H5_Nested_Store ${REFERENCE_PY_CONSOLIDATE_CHUNKS_PER_SEC} chunks/s`,
      basis: "reference",
      target: TARGETS.vsPython,
      value: stat(present(h5).map((v) => v / REFERENCE_PY_CONSOLIDATE_CHUNKS_PER_SEC)),
    });
  }
  return { summaries, ratios };
}

/** True when anything failed or the code changed during the run. */
export function consolidateFailed(report: ConsolidateReport): boolean {
  const scaleFailed = Array.isArray(report.scale) && report.scale.some((p) => Object.values(p.runs).some((r) => typeof r === "string"));
  return report.rebuilt !== null || scaleFailed || typeof report.cli === "string" || report.variants.some((v) => v.failures.length > 0);
}

// ---------------------------------------------------------------- output

function verdict(value: number | undefined, target: number): string {
  if (value == null) return "-";
  return `>=${target}x: ${value >= target ? "met" : "NOT met"}`;
}

export function renderConsolidate(report: ConsolidateReport): string {
  const c = report.config;
  const chunks = Number(c.chunks);
  const out: string[] = [];
  out.push(
    `consolidate benchmark: NestedDirectoryStore of ${chunks} raw chunk files x ${CHUNK_BYTES / 1024} KiB = ${((chunks * CHUNK_BYTES) / 2 ** 20).toFixed(1)} MiB ` +
      `(uint16 [1,1,${c.planes},1024,1024], chunks [1,1,1,64,64]), consolidated in place into ${c.planes} shards`,
  );
  out.push(
    `${c.rounds} interleaved rounds (order rotated each round); medians over rounds; h5nest workers=${c.workers}; fs concurrency ${c.fsConcurrency}; ` +
      `node ${c.node}; tmp ${c.tmpdir}; MB = 10^6 bytes`,
  );
  out.push(String(c.code));
  for (const notice of report.notices) out.push(`*** NOTICE: ${notice} ***`);
  out.push("");
  out.push(
    formatTable(
      ["variant", "chunks/s", "MB/s", "incl. open+close chunks/s", "open ms", "close ms", "peak RSS MiB", "RSS growth MiB", "ok"],
      report.variants.map((v) => [
        v.label + (v.notes.length ? ` (${v.notes.join(", ")})` : ""),
        num(v.chunksPerSec?.median),
        num(v.mbPerSec?.median),
        num(v.withOpenCloseChunksPerSec?.median),
        num(v.openMs?.median),
        num(v.closeMs?.median),
        v.peakRssBytes ? `${mib(v.peakRssBytes.max)}${v.rssOf === "python" ? " (py)" : ""}` : "-",
        mib(v.rssGrowthBytes?.median),
        `${v.ok}/${v.ok + v.failures.length}`,
      ]),
    ),
  );
  out.push("");
  out.push("spread over rounds (min..max)");
  out.push(
    formatTable(
      ["variant", "chunks/s", "MB/s", "peak RSS MiB"],
      report.variants.map((v) => [
        v.label,
        range(v.chunksPerSec?.min, v.chunksPerSec?.max),
        range(v.mbPerSec?.min, v.mbPerSec?.max),
        range(v.peakRssBytes?.min, v.peakRssBytes?.max, (b) => mib(b)),
      ]),
    ),
  );
  out.push("");
  out.push("ratios of chunks/s (>1: h5nest faster); measured = median of per-round ratios");
  out.push(
    formatTable(
      ["ratio", "median", "min..max", "target", "basis"],
      report.ratios.map((r) => [
        r.label,
        ratio(r.value?.median),
        range(r.value?.min, r.value?.max, (v) => v.toFixed(2)),
        verdict(r.value?.median, r.target),
        r.basis === "measured" ? "measured in this run" : "reference figure, not measured in this run",
      ]),
    ),
  );
  out.push("");
  if (report.cli === null) out.push("h5nest CLI consolidate: not run");
  else if (typeof report.cli === "string") out.push(`*** FAILED h5nest CLI consolidate: ${report.cli} ***`);
  else {
    const cli = report.cli;
    out.push(
      `h5nest CLI \`h5nest consolidate --json\` (single run, ${chunks} chunks): ${num(chunks / (cli.wallMs / 1000))} chunks/s over ${num(cli.wallMs)} ms wall ` +
        `(node start + worker start + consolidate + close); ${num(chunks / (cli.internalMs / 1000))} chunks/s by its own timer (${num(cli.internalMs)} ms); ` +
        `peak RSS ${cli.maxRssBytes == null ? "n/a" : `${mib(cli.maxRssBytes)} MiB`}`,
    );
  }
  if (report.scale !== null) {
    out.push("");
    out.push(renderScale(report.scale));
  }
  out.push("");
  out.push("what is timed:");
  for (const v of report.variants) out.push(`  ${v.label}: ${v.timed}`);
  out.push("  every variant gets a freshly written raw store (not timed; its files are in the page cache) and is checked afterwards (not timed):");
  out.push("  its summary, no raw chunk file left, one shard per plane (h5nest, Python: and 256 datasets each), files and bytes at the target (fs);");
  out.push("  values read back (h5nest through a fresh store, Python through H5_Nested_Store) in the warm-up, round 1, the CLI and scale runs.");
  out.push("  open ms = H5NestedStore.open (worker threads' h5wasm start); close ms = store.close(). peak RSS: max over rounds of the Node");
  out.push("  process (threads included; 20 ms samples + VmHWM reset), (py) = ru_maxrss of the Python process; RSS growth = peak - RSS at start.");
  for (const v of report.variants) for (const failure of v.failures) out.push(`*** FAILED ${v.label}: ${failure} ***`);
  return out.join("\n");
}

function renderScale(scale: ScalePoint[] | string): string {
  if (typeof scale === "string") return `*** NOTICE: ${scale} ***`;
  const out: string[] = [];
  out.push("consolidate at two store sizes (single run each, in this order): is the peak RSS flat as the store grows?");
  const rate = (r: Run | string | undefined, chunks: number): number | undefined => (r && typeof r !== "string" ? chunks / (r.ms / 1000) : undefined);
  const rows = scale.map((p) => {
    const h5 = p.runs.h5nest;
    const fsRun = p.runs.fs;
    const py = p.runs.py;
    const h5Run = h5 && typeof h5 !== "string" ? h5 : null;
    const h5Rate = rate(h5, p.chunks);
    const fsRate = rate(fsRun, p.chunks);
    const pyRate = rate(py, p.chunks);
    return [
      String(p.chunks),
      mib(p.chunks * CHUNK_BYTES),
      typeof h5 === "string" ? "FAILED" : num(h5Rate),
      num(h5Rate == null ? undefined : (h5Rate * CHUNK_BYTES) / 1e6),
      mib(h5Run?.rss?.peakBytes),
      mib(h5Run?.rss?.startBytes),
      mib(h5Run?.rss ? h5Run.rss.peakBytes - h5Run.rss.startBytes : undefined),
      String(h5Run?.rss?.samples ?? "-"),
      typeof fsRun === "string" ? "FAILED" : num(fsRate),
      ratio(h5Rate != null && fsRate != null ? h5Rate / fsRate : undefined),
      py === undefined ? "not run" : typeof py === "string" ? "FAILED" : num(pyRate),
      ratio(h5Rate != null && pyRate != null ? h5Rate / pyRate : undefined),
      py && typeof py !== "string" ? mib(py.childMaxRssBytes) : "-",
    ];
  });
  out.push(
    formatTable(
      ["chunks", "MiB", "h5nest chunks/s", "MB/s", "peak RSS MiB", "RSS start MiB", "RSS growth MiB", "samples", "fs copy chunks/s", "h5nest/fs", "Python chunks/s", "h5nest/Python", "Python maxrss MiB"],
      rows,
    ),
  );
  const runs = scale.map((p) => p.runs.h5nest).filter((r): r is Run => r !== undefined && typeof r !== "string" && r.rss !== undefined);
  if (runs.length === scale.length && runs.length >= 2) {
    const first = runs[0]!.rss!;
    const last = runs[runs.length - 1]!.rss!;
    const growthDelta = last.peakBytes - last.startBytes - (first.peakBytes - first.startBytes);
    out.push(
      `h5nest peak RSS ${mib(first.peakBytes)} -> ${mib(last.peakBytes)} MiB, RSS growth ${mib(first.peakBytes - first.startBytes)} -> ${mib(last.peakBytes - last.startBytes)} MiB ` +
        `(${growthDelta >= 0 ? "+" : ""}${mib(growthDelta)} MiB for ${scale[scale.length - 1]!.chunks / scale[0]!.chunks}x the chunks)`,
    );
  }
  for (const p of scale) {
    const h5 = p.runs.h5nest;
    if (h5 && typeof h5 !== "string" && h5.rssTrace?.length) out.push(`h5nest RSS MiB after 1/8..8/8 of the ${p.chunks} chunks: ${h5.rssTrace.map((b) => mib(b)).join(" ")}`);
  }
  for (const p of scale) for (const [id, r] of Object.entries(p.runs)) if (typeof r === "string") out.push(`*** FAILED ${id} at ${p.chunks} chunks: ${r} ***`);
  return out.join("\n");
}
