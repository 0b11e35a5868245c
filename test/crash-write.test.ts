/**
 * kill -9 a process in the middle of writing through zarrita, again and
 * again. After each kill every chunk holds the value of its last
 * acknowledged write (or of the one write in flight), every shard opens in
 * this project and in h5py, and no temporary file is listed as a key.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import * as zarr from "zarrita";
import { createV2Array, H5NestedStore } from "h5nest";
import { python, requirePython } from "./helpers/python.js";
import { tempDir } from "./helpers/tmp.js";

const KILLS = Number(process.env.H5NEST_CRASH_ROUNDS ?? 6);
const shape = [1, 4, 8, 128, 128];
const child = path.join(import.meta.dirname, "children", "lane-writer.ts");

interface Begun {
  value: number;
  c: [number, number];
  z: [number, number];
}

/** Runs the writer until `killAfterMs` after it is ready, kills it with SIGKILL, returns its lines. */
async function runAndKill(storePath: string, iteration: number, killAfterMs: number): Promise<string[]> {
  const proc = spawn(process.execPath, ["--import", "tsx", child, storePath, String(iteration)], { stdio: ["ignore", "pipe", "inherit"] });
  let output = "";
  let timer: NodeJS.Timeout | undefined;
  proc.stdout.setEncoding("utf8");
  proc.stdout.on("data", (text: string) => {
    output += text;
    if (!timer && output.includes("ready\n")) timer = setTimeout(() => proc.kill("SIGKILL"), killAfterMs);
  });
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => proc.on("exit", (c, s) => resolve([c, s])));
  assert.equal(signal, "SIGKILL", `writer exited by itself (code ${code}) instead of being killed`);
  return output.split("\n").filter(Boolean);
}

test(`kill -9 during writes, ${KILLS} times: acknowledged chunks survive, shards stay readable`, async (t) => {
  const hasPython = await requirePython(t);
  const dir = await tempDir(t);
  const storePath = path.join(dir, "store");
  const setup = await H5NestedStore.open(storePath, { workers: 1 });
  await createV2Array(setup, "img", { shape, chunks: [1, 1, 1, 64, 64], dtype: "<u4", compressor: null });
  await setup.close();

  // model[c][z][lane] = the value that chunk holds (0 = never written).
  let model = Array.from({ length: 4 }, () => Array.from({ length: 8 }, () => [0, 0, 0, 0]));
  let acknowledged = 0;
  for (let iteration = 1; iteration <= KILLS; iteration++) {
    const lines = await runAndKill(storePath, iteration, 150 + Math.random() * 900);
    const begun = new Map<number, Begun[]>();
    const acked = new Set<number>();
    for (const line of lines) {
      const [kind, lane, value, c0, c1, z0, z1] = line.split(" ");
      if (kind === "begin") {
        const list = begun.get(Number(lane)) ?? [];
        list.push({ value: Number(value), c: [Number(c0), Number(c1)], z: [Number(z0), Number(z1)] });
        begun.set(Number(lane), list);
      } else if (kind === "ack") acked.add(Number(value));
    }
    acknowledged += acked.size;

    const store = await H5NestedStore.open(storePath, { workers: 2 });
    try {
      const array = await zarr.open.v2(zarr.root(store).resolve("img"), { kind: "array" });
      const data = (await zarr.get(array, null)).data as Uint32Array;
      const next = model.map((zs) => zs.map((lanes) => [...lanes]));
      for (let c = 0; c < 4; c++) {
        for (let z = 0; z < 8; z++) {
          for (let lane = 0; lane < 4; lane++) {
            const y0 = (lane >> 1) * 64;
            const x0 = (lane & 1) * 64;
            const base = ((c * 8 + z) * 128 + y0) * 128 + x0;
            const value = data[base]!;
            assert.equal(data[base + 63 * 128 + 63], value, `chunk c${c} z${z} lane${lane} is torn`);
            const writes = (begun.get(lane) ?? []).filter((w) => c >= w.c[0] && c < w.c[1] && z >= w.z[0] && z < w.z[1]);
            const lastAcked = writes.filter((w) => acked.has(w.value)).at(-1);
            const allowed = new Set([lastAcked?.value ?? model[c]![z]![lane]!]);
            for (const w of writes) if (!acked.has(w.value) && (!lastAcked || w.value > lastAcked.value)) allowed.add(w.value);
            assert.ok(allowed.has(value), `iteration ${iteration}: chunk c${c} z${z} lane${lane} holds ${value}, expected one of ${[...allowed]}`);
            next[c]![z]![lane] = value;
          }
        }
      }
      model = next;
      for await (const key of store.keys()) assert.ok(!key.endsWith(".partial"), `temporary file listed as key ${key}`);
    } finally {
      await store.close();
    }
    if (hasPython) {
      // Every shard must open and read in HDF5 1.10 too, right after the kill.
      await python(
        "import h5py, glob, sys\nfor p in glob.glob(sys.argv[1] + '/**/*.h5', recursive=True):\n  with h5py.File(p, 'r') as f:\n    for k in f: f[k][()].tobytes()",
        [storePath],
      );
    }
  }
  assert.ok(acknowledged > KILLS * 2, `the writer made progress before the kills (${acknowledged} acknowledged writes)`);
});
