/**
 * kill -9 `h5nest consolidate` at random moments, again and again, on the
 * same store. After every kill each key reads its original bytes, in this
 * project (a fresh H5NestedStore: keys() and get()) and in Python (docs/format.md's
 * read path: raw file first, else h5py `f[dataset][()].tobytes()` in the
 * shard), and keys() lists exactly the original keys. A last run finishes:
 * exit 0, no raw chunk file left in the shardable arrays, no `.partial` file.
 *
 * The store: Python zarr's NestedDirectoryStore (or h5nest with
 * writeDirect: false without Python) with a 5-D v2 array (48 shards of 64
 * chunks), a 3-D v2 array (8 shards of 64), a 3-D v3 array (2 shards of 16)
 * and a 2-D array that stays raw; two shards exist beforehand (one written by
 * h5py as OPAQUE scalars, one as 1-D uint8), holding chunks that raw files
 * shadow with newer bytes and chunks that only they hold. So folds both
 * create and rewrite shards.
 *
 * H5NEST_CONSOLIDATE_KILLS sets the number of kills (default 20).
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import {
  buildRawStore,
  census,
  emptyFolders,
  checkWithH5nest,
  checkWithPython,
  jsonLines,
  type RawStoreSpec,
  recordManifest,
  runCli,
  startCli,
} from "./helpers/consolidate-store.ts";
import { requirePython } from "./helpers/python.ts";
import { tempDir } from "./helpers/tmp.ts";

const KILLS = Number(process.env.H5NEST_CONSOLIDATE_KILLS ?? 20);
const WORKERS = "2";

const SPEC: RawStoreSpec = {
  seed: 20240611,
  shardable: [
    { path: "img5", shape: [1, 4, 12, 128, 128], chunks: [1, 1, 1, 16, 16] },
    { path: "grp/vol", shape: [8, 128, 128], chunks: [1, 16, 16] },
  ],
  rawOnly: [{ path: "grp/flat", shape: [64, 64], chunks: [16, 16] }],
  preShards: [
    { folder: "img5/0/0/0", every: 3, opaque: true },
    { folder: "grp/vol/1", every: 2, opaque: false },
  ],
  v3: { shape: [2, 64, 64], chunks: [1, 16, 16] },
};

test(`kill -9 during h5nest consolidate, ${KILLS} times: every key keeps its bytes, a rerun finishes`, async (t) => {
  const hasPython = await requirePython(t);
  const dir = await tempDir(t);
  const root = path.join(dir, "store");
  const builtWith = await buildRawStore(root, SPEC);
  const manifest = await recordManifest(root);
  const initial = await census(root, SPEC);
  assert.ok(initial.shardableRaw.length > 3000, `a few thousand raw chunks (${initial.shardableRaw.length})`);
  assert.deepEqual(initial.shards, ["grp/vol/1.h5", "img5/0/0/0.h5"], "the two pre-existing shards");
  assert.equal(initial.rawOnly.length, 16);
  // Both readers at once (they only read).
  const check = async (when: string) => {
    const found = await Promise.all([checkWithH5nest(root, manifest), hasPython ? checkWithPython(root, manifest, dir) : []]);
    const problems = found.flat();
    assert.deepEqual(problems.slice(0, 20), [], `${when}: ${problems.length} problems`);
  };
  await check("before consolidating");

  // Calibrate on a copy: a full run, then a run with nothing to do (start-up and walk).
  const copy = path.join(dir, "calibration");
  await fs.cp(root, copy, { recursive: true });
  const full = await runCli(["consolidate", copy, "--workers", WORKERS, "--json"]);
  assert.equal(full.code, 0, full.stderr);
  const idle = await runCli(["consolidate", copy, "--workers", WORKERS, "--json"]);
  assert.equal(idle.code, 0, idle.stderr);
  await fs.rm(copy, { recursive: true });
  t.diagnostic(`built with ${builtWith}: ${manifest.size} keys, ${initial.shardableRaw.length} raw chunks to move`);
  t.diagnostic(`full run ${full.ms.toFixed(0)} ms, idle run ${idle.ms.toFixed(0)} ms`);
  // The pace of this machine, updated after every round (shared machines drift): start-up
  // (spawn to work, from runs with nothing to do) and time per chunk moved.
  const pace = { startMs: idle.ms, chunkMs: Math.max(0.01, (full.ms - idle.ms) / initial.shardableRaw.length) };
  const blend = (old: number, sample: number) => (Number.isFinite(sample) && sample > 0 ? (old + sample) / 2 : old);

  let midWork = 0;
  let partialsSeen = 0;
  let remaining = initial.shardableRaw.length;
  for (let round = 1; round <= KILLS; round++) {
    // Where the kill lands. A quarter of the rounds (and all once nothing is left to move):
    // a uniform moment in the start-up (the walk, sweeping the last kill's leftovers, the first
    // commits). The others: once the child reports its first folded shard (so it is moving
    // chunks, whatever the machine's load), after a uniform delay in 0 .. the share of the
    // remaining work that makes the job last for about all the kills: a moment inside a full
    // run, spread over the whole job rather than finishing it in the first three rounds.
    const remainingMs = remaining * pace.chunkMs;
    const anchored = remaining > 0 && Math.random() < 0.75;
    const delay = Math.random() * (anchored ? remainingMs / (KILLS - round + 1) : pace.startMs);
    const run = startCli(["consolidate", root, "--workers", WORKERS, "--json"]);
    let timer: NodeJS.Timeout | undefined;
    const kill = () => (timer = setTimeout(() => run.child.kill("SIGKILL"), delay));
    if (anchored) run.onLine((text) => void (!timer && text.includes('"event":"shard"') && kill()));
    else kill();
    const result = await run.done;
    clearTimeout(timer);

    const after = await census(root, SPEC);
    const moved = remaining - after.shardableRaw.length;
    // Whole lines only (the kill may cut the last one), each with its arrival time.
    const events: (Record<string, unknown> & { ms: number })[] = run.lines.filter((line) => line.text).map((line) => ({ ...jsonLines(line.text)[0]!, ms: line.ms }));
    const shards = events.filter((e) => e.event === "shard");
    const reportedChunks = shards.reduce((sum, e) => sum + (e.chunks as number), 0);
    const entry =
      `round ${round}: kill ${delay.toFixed(0)} ms after ${anchored ? "the first shard" : "the spawn"}, ${result.signal ?? `exit ${result.code}`}, ` +
      `moved ${moved} (reported ${reportedChunks}), ${after.shardableRaw.length} left, ${after.partials.length} partials`;
    t.diagnostic(entry);
    if (result.signal !== "SIGKILL") {
      // It finished before the kill: then it must have finished everything.
      assert.equal(result.code, 0, `${entry}\n${result.stderr}`);
      assert.equal(after.shardableRaw.length, 0, entry);
      const summary = events.at(-1)!;
      pace.startMs = blend(pace.startMs, summary.ms - moved * pace.chunkMs);
    }
    if (shards.length >= 2) {
      pace.chunkMs = blend(pace.chunkMs, (shards.at(-1)!.ms - shards[0]!.ms) / (reportedChunks - (shards[0]!.chunks as number)));
    }
    assert.ok(moved >= reportedChunks, `${entry}: chunks reported as moved are gone from the raw folders`);
    assert.deepEqual(after.rawOnly, initial.rawOnly, `${entry}: the raw-only array is left alone`);
    if (result.signal === "SIGKILL" && after.shardableRaw.length > 0 && (moved > 0 || after.partials.length > 0)) midWork += 1;
    partialsSeen += after.partials.length;
    remaining = after.shardableRaw.length;
    await check(entry);
  }
  t.diagnostic(`${midWork} kills interrupted a run with work in progress; ${partialsSeen} leftover .partial files seen`);
  if (KILLS >= 10) {
    assert.ok(midWork >= 1, "no kill landed while chunks were being moved");
    assert.ok(remaining < initial.shardableRaw.length, "the killed runs made progress");
  }

  const last = await runCli(["consolidate", root, "--workers", WORKERS, "--json"]);
  assert.equal(last.code, 0, last.stderr);
  assert.equal(last.signal, null);
  const summary = jsonLines(last.stdout).at(-1)!;
  assert.equal(summary.event, "summary");
  assert.equal(summary.chunks, remaining, "the last run moves what the kills left");
  const end = await census(root, SPEC);
  assert.deepEqual(end.shardableRaw, [], "no raw chunk file of a shardable array remains");
  assert.deepEqual(end.partials, [], "no .partial file remains");
  assert.deepEqual(end.rawOnly, initial.rawOnly, "the 2-D array's chunks stay raw files");
  assert.equal(end.shards.length, 58, "48 + 8 + 2 shards");
  await check("after the final run");
  // Known bug (todo test in consolidate-cli.test.ts): a kill between a commit's raw-file deletions
  // and its folder removal leaves empty folders that no later run removes. Reported, not asserted.
  const empty = await emptyFolders(root);
  t.diagnostic(`${empty.length} empty folders left${empty.length ? `: ${empty.slice(0, 5).join(", ")}` : ""}`);
  const verify = await runCli(["verify", root, "--workers", WORKERS]);
  assert.equal(verify.code, 0, verify.stderr);
});
