/**
 * Many concurrent zarrita writers on overlapping regions of one array, in one
 * process with several worker threads. Every chunk must end with the value of
 * a write that no later write superseded, and the ownership trace written by
 * the workers must show no two commits of one shard overlapping in time.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import * as zarr from "zarrita";
import { createV2Array, H5NestedStore } from "h5nest";
import { tempDir } from "./helpers/tmp.js";

const shape = [1, 2, 8, 128, 128];
const chunks = [1, 1, 1, 32, 32];
const grid = shape.map((s, i) => s / chunks[i]!);
const WRITERS = 12;
const ROUNDS = 6;

interface Write {
  value: number;
  start: number;
  end: number;
  /** Chunk-index ranges [from, to) per axis. */
  box: [number, number][];
}

function randomBox(): [number, number][] {
  return grid.map((n) => {
    const a = Math.floor(Math.random() * n);
    const b = Math.floor(Math.random() * n);
    return [Math.min(a, b), Math.max(a, b) + 1];
  });
}

function covers(box: [number, number][], chunk: number[]): boolean {
  return box.every(([from, to], axis) => chunk[axis]! >= from && chunk[axis]! < to);
}

function* allChunks(): Generator<number[]> {
  const idx = grid.map(() => 0);
  for (;;) {
    yield [...idx];
    let axis = grid.length - 1;
    while (axis >= 0 && ++idx[axis]! === grid[axis]) idx[axis--] = 0;
    if (axis < 0) return;
  }
}

test("concurrent overlapping writers: no stale chunk wins, one owner per shard at a time", async (t) => {
  const dir = await tempDir(t);
  const traceFile = path.join(dir, "trace.jsonl");
  const storePath = path.join(dir, "store");
  process.env.H5NEST_TRACE_FILE = traceFile; // read by worker threads when they start
  t.after(() => {
    delete process.env.H5NEST_TRACE_FILE;
  });
  const store = await H5NestedStore.open(storePath, { workers: 3 });
  const writes: Write[] = [];
  try {
    const array = await createV2Array(store, "img", { shape, chunks, dtype: "<u2", compressor: null });
    await Promise.all(
      Array.from({ length: WRITERS }, async (_, writer) => {
        for (let round = 0; round < ROUNDS; round++) {
          await sleep(Math.random() * 4);
          const box = randomBox();
          const value = writer * 100 + round + 1;
          const selection = box.map(([from, to], axis) => zarr.slice(from * chunks[axis]!, to * chunks[axis]!));
          const start = performance.now();
          await zarr.set(array, selection, value);
          writes.push({ value, start, end: performance.now(), box });
        }
      }),
    );
    // Read through the same store while its handles may be cached, then through a fresh one.
    const seen = (await zarr.get(array, null)).data as Uint16Array;
    await store.close();
    const reopened = await H5NestedStore.open(storePath, { workers: 2 });
    const again = await zarr.get(await zarr.open.v2(zarr.root(reopened).resolve("img"), { kind: "array" }), null);
    await reopened.close();
    assert.deepEqual(again.data, seen, "the reopened store reads what the live one read");

    const stride = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
    for (const chunk of allChunks()) {
      const origin = chunk.map((c, axis) => c * chunks[axis]!);
      const at = (offset: number[]) => seen[offset.reduce((sum, o, axis) => sum + (origin[axis]! + o) * stride[axis]!, 0)]!;
      const value = at([0, 0, 0, 0, 0]);
      assert.equal(at([0, 0, 0, 31, 31]), value, `chunk ${chunk} is uniform`);
      assert.equal(at([0, 0, 0, 17, 5]), value, `chunk ${chunk} is uniform`);
      const covering = writes.filter((w) => covers(w.box, chunk));
      if (covering.length === 0) {
        assert.equal(value, 0, `chunk ${chunk} was never written`);
        continue;
      }
      const winner = covering.find((w) => w.value === value);
      assert.ok(winner, `chunk ${chunk} holds ${value}, which no write of it produced`);
      const later = covering.find((w) => w.start > winner.end);
      assert.equal(later, undefined, `chunk ${chunk}: write ${later?.value} started after ${value} was acknowledged, yet lost`);
    }

    const trace = (await fs.readFile(traceFile, "utf8"))
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { thread: number; owner: string; start: string; end: string });
    const byOwner = new Map<string, { start: bigint; end: bigint; thread: number }[]>();
    for (const e of trace) {
      const list = byOwner.get(e.owner) ?? [];
      list.push({ start: BigInt(e.start), end: BigInt(e.end), thread: e.thread });
      byOwner.set(e.owner, list);
    }
    let multiCommitOwners = 0;
    for (const [owner, list] of byOwner) {
      list.sort((a, b) => (a.start < b.start ? -1 : 1));
      for (let i = 1; i < list.length; i++) {
        assert.ok(list[i]!.start > list[i - 1]!.end, `${owner}: two commits overlapped (threads ${list[i - 1]!.thread}, ${list[i]!.thread})`);
      }
      if (list.length > 1) multiCommitOwners += 1;
    }
    assert.ok(new Set(trace.map((e) => e.thread)).size >= 2, "commits ran on several worker threads");
    assert.ok(multiCommitOwners >= 4, "shards were committed repeatedly, so overlap was possible");

    const leftovers = (await fs.readdir(storePath, { recursive: true })).filter((f) => f.endsWith(".partial"));
    assert.deepEqual(leftovers, [], "no temporary files remain");
  } finally {
    await store.close();
  }
});
