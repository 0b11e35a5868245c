/**
 * One writer process of the distributed ingest benchmark. argv[2] is a JSON
 * IngestJob. It opens the store (worker threads started), fills the values
 * of its part of the workload, prints "ready <open ms>", waits for "go" on
 * stdin, then issues every zarr.set of its part at once (like one big
 * zarr.set), closes the store and prints
 * "done <set ms> <close ms> <chunks> <maxRSS KiB>". A failure prints
 * "error <code> <message as JSON>" and exits 1.
 */
import fs from "node:fs";
import { performance } from "node:perf_hooks";
import { H5NestedStore, type H5NestedStoreOptions } from "h5nest";
import * as zarr from "zarrita";
import { ARRAY_PATH, CHUNK_EDGE, fillValues, PLANE } from "./workloads.js";

export interface IngestJob {
  dir: string;
  planes: number;
  /** "all": every plane; "split": a contiguous share of the planes; "interleaved": a share of the chunk rows of every plane. */
  part: "all" | "split" | "interleaved";
  index: number;
  of: number;
  workers: number | null;
  lock: null | "local" | { redis: string };
}

const say = (line: string): void => void fs.writeSync(1, `${line}\n`);

/** [plane, first chunk row, end chunk row) blocks of this process. */
export function blocksOf(job: Pick<IngestJob, "planes" | "part" | "index" | "of">): [number, number, number][] {
  const rows = PLANE / CHUNK_EDGE;
  const blocks: [number, number, number][] = [];
  if (job.part === "interleaved") {
    for (let z = 0; z < job.planes; z++) for (let r = job.index; r < rows; r += job.of) blocks.push([z, r, r + 1]);
  } else {
    const from = job.part === "all" ? 0 : Math.floor((job.planes * job.index) / job.of);
    const to = job.part === "all" ? job.planes : Math.floor((job.planes * (job.index + 1)) / job.of);
    for (let z = from; z < to; z++) blocks.push([z, 0, rows]);
  }
  return blocks;
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2]!) as IngestJob;
  const options: H5NestedStoreOptions = { writeDirect: true };
  if (job.workers) options.workers = job.workers;
  if (job.lock === "local") options.distributedLock = true;
  else if (job.lock) options.distributedLock = { redis: job.lock.redis };

  const t0 = performance.now();
  const store = await H5NestedStore.open(job.dir, options);
  const arr = (await zarr.open.v2(zarr.root(store).resolve(ARRAY_PATH), { kind: "array" })) as zarr.Array<"uint16", H5NestedStore>;
  const openMs = performance.now() - t0;

  // Each block is contiguous in C order: its values are those of the whole array at its offset.
  const blocks = blocksOf(job).map(([z, r0, r1]) => {
    const rows = (r1 - r0) * CHUNK_EDGE;
    const data = new Uint16Array(rows * PLANE);
    fillValues(data, (z * PLANE + r0 * CHUNK_EDGE) * PLANE);
    const selection = [null, null, zarr.slice(z, z + 1), zarr.slice(r0 * CHUNK_EDGE, r1 * CHUNK_EDGE), null];
    return { selection, value: { data, shape: [1, 1, 1, rows, PLANE], stride: [rows * PLANE, rows * PLANE, rows * PLANE, PLANE, 1] } };
  });
  const chunks = blocks.reduce((sum, b) => sum + (b.value.shape[3]! / CHUNK_EDGE) * (PLANE / CHUNK_EDGE), 0);

  say(`ready ${openMs.toFixed(1)}`);
  await new Promise<void>((resolve) => {
    let input = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (text: string) => {
      input += text;
      if (input.includes("go\n")) resolve();
    });
  });
  process.stdin.destroy();

  const t1 = performance.now();
  await Promise.all(blocks.map((b) => zarr.set(arr, b.selection, b.value)));
  const setMs = performance.now() - t1;
  const t2 = performance.now();
  await store.close();
  const closeMs = performance.now() - t2;
  say(`done ${setMs.toFixed(1)} ${closeMs.toFixed(1)} ${chunks} ${process.resourceUsage().maxRSS}`);
}

try {
  await main();
} catch (error) {
  const e = error as { code?: string; message?: string };
  say(`error ${e.code ?? "NO_CODE"} ${JSON.stringify(e.message ?? String(error))}`);
  process.exitCode = 1;
}
