/**
 * `h5nest consolidate` as a command: --json output, and SIGINT (Ctrl-C).
 *   - --json: every stdout line is JSON; one {"event":"shard"} per shard
 *     folded (with its raw files and bytes) and a final {"event":"summary"}
 *     whose chunks is the number of raw chunk files moved; leftover
 *     `.partial` files are swept and counted.
 *   - SIGINT: the job stops after the commits in flight, exits 130, leaves
 *     no `.partial` and every original value; a rerun finishes. A second
 *     SIGINT leaves at once (exit 130), still a valid store.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { type TestContext, test } from "node:test";
import {
  buildRawStore,
  census,
  checkWithH5nest,
  checkWithPython,
  EXT,
  jsonLines,
  type RawStoreSpec,
  recordManifest,
  runCli,
  startCli,
} from "./helpers/consolidate-store.ts";
import { requirePython } from "./helpers/python.ts";
import { tempDir } from "./helpers/tmp.ts";

/** 24 + 4 + 2 shards to fold (two exist already), and a 2-D array that stays raw. */
const SPEC: RawStoreSpec = {
  seed: 99,
  shardable: [
    { path: "img5", shape: [1, 2, 12, 128, 128], chunks: [1, 1, 1, 16, 16] },
    { path: "grp/vol", shape: [4, 128, 128], chunks: [1, 16, 16] },
  ],
  rawOnly: [{ path: "grp/flat", shape: [64, 64], chunks: [16, 16] }],
  preShards: [
    { folder: "img5/0/1/3", every: 3, opaque: true },
    { folder: "grp/vol/2", every: 2, opaque: false },
  ],
  v3: { shape: [2, 64, 64], chunks: [1, 16, 16] },
};
const SHARDS = 24 + 4 + 2;
const WORKERS = 2;

interface Fixture {
  dir: string;
  root: string;
  manifest: Map<string, string>;
  hasPython: boolean;
}

async function setup(t: TestContext): Promise<Fixture> {
  const hasPython = await requirePython(t);
  const dir = await tempDir(t);
  const root = path.join(dir, "store");
  await buildRawStore(root, SPEC);
  return { dir, root, manifest: await recordManifest(root), hasPython };
}

async function assertIntact(f: Fixture, when: string): Promise<void> {
  const problems = await checkWithH5nest(f.root, f.manifest);
  if (f.hasPython) problems.push(...(await checkWithPython(f.root, f.manifest, f.dir)));
  assert.deepEqual(problems.slice(0, 20), [], `${when}: ${problems.length} problems`);
}

/** The shard a raw chunk file (store-relative path) belongs to: drop the last D-1 = 2 segments. */
function shardOf(rawFile: string): string {
  return rawFile.split("/").slice(0, -2).join("/") + EXT;
}

function partialSuffix(): string {
  return `.${randomBytes(16).toString("hex")}.partial`;
}

test("consolidate --json: JSON lines, one shard event per shard folded, a summary counting the raw files moved", async (t) => {
  const f = await setup(t);
  // Leftovers of an earlier crash: raw writes' temporary files (as Python zarr leaves them) inside
  // a raw folder and in the raw-only array. (A shard's own leftover: see the swept test below.)
  const planted = [`img5/0/0/3/1/2${partialSuffix()}`, `grp/vol/1/4${partialSuffix()}`, `grp/flat/0/1${partialSuffix()}`];
  // Abandoned an hour ago (a fresh one could be a live writer's: see test/sweep.test.ts).
  const anHourAgo = new Date(Date.now() - 3600_000);
  for (const file of planted) {
    await fs.writeFile(path.join(f.root, file), randomBytes(3000));
    await fs.utimes(path.join(f.root, file), anHourAgo, anHourAgo);
  }
  const before = await census(f.root, SPEC);
  assert.deepEqual(before.partials, [...planted].sort());
  const expected = new Map<string, { chunks: number; bytes: number }>();
  for (const file of before.shardableRaw) {
    const entry = expected.get(shardOf(file)) ?? { chunks: 0, bytes: 0 };
    entry.chunks += 1;
    entry.bytes += (await fs.stat(path.join(f.root, file))).size;
    expected.set(shardOf(file), entry);
  }
  assert.equal(expected.size, SHARDS);

  const run = await runCli(["consolidate", f.root, "--workers", String(WORKERS), "--json"]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stderr, "", "nothing on stderr");
  assert.ok(run.stdout.endsWith("\n"));
  const events = jsonLines(run.stdout); // throws on a line that is not JSON
  const shards = events.filter((e) => e.event === "shard");
  const summary = events.at(-1)!;
  assert.equal(summary.event, "summary", "the last line is the summary");
  assert.equal(events.length, shards.length + 1, "only shard events and the summary");

  const seen = new Set<string>();
  for (const event of shards) {
    const shard = path.relative(f.root, event.shard as string).split(path.sep).join("/");
    assert.ok(!seen.has(shard), `one event per shard: ${shard} twice`);
    seen.add(shard);
    const want = expected.get(shard);
    assert.ok(want, `event for a shard that had no raw files: ${shard}`);
    assert.equal(event.chunks, want.chunks, `${shard}: raw files moved`);
    assert.equal(event.bytes, want.bytes, `${shard}: bytes moved`);
    assert.equal(event.shardBytes, (await fs.stat(path.join(f.root, shard))).size, `${shard}: size after the commit`);
  }
  assert.deepEqual([...seen].sort(), [...expected.keys()].sort(), "an event for every shard folded");

  assert.equal(summary.chunks, before.shardableRaw.length, "summary.chunks = raw chunk files moved");
  assert.equal(summary.shards, SHARDS);
  assert.equal(summary.bytes, [...expected.values()].reduce((sum, e) => sum + e.bytes, 0));
  assert.equal(summary.swept, planted.length, "the leftover .partial files are swept and counted");
  assert.deepEqual(summary.errors, []);
  assert.equal(summary.fatal, null);
  assert.equal(summary.interrupted, false);
  assert.equal(typeof summary.seconds, "number");

  const after = await census(f.root, SPEC);
  assert.deepEqual(after.shardableRaw, []);
  assert.deepEqual(after.partials, []);
  assert.deepEqual(after.rawOnly, before.rawOnly);
  await assertIntact(f, "after consolidate --json");

  // Nothing left to do: the summary alone, with zeros.
  const again = await runCli(["consolidate", f.root, "--workers", String(WORKERS), "--json"]);
  assert.equal(again.code, 0, again.stderr);
  const lines = jsonLines(again.stdout);
  assert.equal(lines.length, 1, again.stdout);
  assert.equal(lines[0]!.event, "summary");
  assert.equal(lines[0]!.chunks, 0);
  assert.equal(lines[0]!.shards, 0);
});

test("SIGINT: consolidate stops after the commits in flight, exits 130, leaves a clean store; a rerun finishes", async (t) => {
  const f = await setup(t);
  const before = await census(f.root, SPEC);
  const run = startCli(["consolidate", f.root, "--workers", String(WORKERS), "--json"]);
  let linesAtSignal = -1;
  run.onLine((text) => {
    if (linesAtSignal < 0 && text.includes('"event":"shard"')) {
      linesAtSignal = run.lines.length;
      run.child.kill("SIGINT");
    }
  });
  const result = await run.done;
  assert.ok(linesAtSignal > 0, `the job folded a shard before it ended: ${result.stdout}`);
  assert.equal(result.signal, null, "it exits by itself, not killed by the signal");
  assert.equal(result.code, 130, result.stderr);
  assert.doesNotMatch(result.stderr, /h5nest:/, "no error");

  const events = jsonLines(result.stdout);
  const summary = events.at(-1)!;
  assert.equal(summary.event, "summary");
  assert.equal(summary.interrupted, true);
  assert.equal(summary.fatal, null);
  assert.deepEqual(summary.errors, []);
  const shards = events.filter((e) => e.event === "shard");
  assert.equal(summary.shards, shards.length);
  // At the signal at most 2 × workers shards are in flight (queued or committing), and none
  // starts after it. Slack of 3 for a loaded machine: shards that finished between our read of
  // the first line and the child's handler running (each let one more start).
  const afterSignal = shards.length - linesAtSignal; // every line before the summary is a shard event
  t.diagnostic(`${linesAtSignal} shards folded when SIGINT was sent, ${afterSignal} after it`);
  assert.ok(afterSignal <= 2 * WORKERS + 3, `${afterSignal} shards folded after the signal`);
  assert.ok(shards.length < SHARDS, "it stopped before the end");

  const after = await census(f.root, SPEC);
  assert.deepEqual(after.partials, [], "a SIGINT stop leaves no .partial file");
  assert.equal(before.shardableRaw.length - after.shardableRaw.length, summary.chunks, "summary.chunks = raw files moved");
  assert.ok(after.shardableRaw.length > 0);
  // Shards of the events are complete: none of their raw files is left.
  for (const event of shards) {
    const shard = path.relative(f.root, event.shard as string).split(path.sep).join("/");
    assert.ok(!after.shardableRaw.some((file) => shardOf(file) === shard), `${shard} was reported folded but keeps raw files`);
  }
  await assertIntact(f, "after SIGINT");

  const rerun = await runCli(["consolidate", f.root, "--workers", String(WORKERS), "--json"]);
  assert.equal(rerun.code, 0, rerun.stderr);
  assert.equal(jsonLines(rerun.stdout).at(-1)!.chunks, after.shardableRaw.length);
  const end = await census(f.root, SPEC);
  assert.deepEqual(end.shardableRaw, []);
  assert.deepEqual(end.partials, []);
  assert.equal(end.shards.length, SHARDS);
  await assertIntact(f, "after the rerun");
});

/** Resolves once `condition` holds (polled every 5 ms), or rejects after `ms`. */
async function waitFor(condition: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** True once a shard of img5 is being written or has been written (its folder holds a .h5 or a .partial). */
async function commitsStarted(root: string): Promise<boolean> {
  for (const folder of ["img5/0/0", "img5/0/1"]) {
    const names = await fs.readdir(path.join(root, folder)).catch(() => [] as string[]);
    if (names.some((name) => name.endsWith(".partial") || (name.endsWith(EXT) && name !== "3.h5"))) return true;
  }
  return false;
}

test("a second SIGINT leaves at once (exit 130): the store stays valid and a rerun sweeps what it left", async (t) => {
  const f = await setup(t);
  // Text mode: the first Ctrl-C prints "stopping after the commits in flight (Ctrl-C again to leave now)".
  const run = startCli(["consolidate", f.root, "--workers", String(WORKERS)]);
  let exited = false;
  void run.done.then(() => (exited = true));
  await waitFor(async () => exited || (await commitsStarted(f.root)), 60_000, "the first commit");
  run.child.kill("SIGINT");
  await waitFor(() => exited || run.stderrSoFar().includes("Ctrl-C again"), 60_000, "the first SIGINT's message");
  run.child.kill("SIGINT");
  const result = await run.done;
  assert.equal(result.signal, null);
  assert.equal(result.code, 130, result.stderr);
  assert.match(result.stderr, /stopping after the commits in flight/);
  assert.doesNotMatch(result.stdout, /moved \d+ chunks/, "it left at once, without waiting for the commits in flight");
  const after = await census(f.root, SPEC);
  t.diagnostic(`${after.partials.length} .partial files left by the second Ctrl-C`);
  assert.ok(after.shardableRaw.length > 0, "it stopped before the end");
  await assertIntact(f, "after a double SIGINT");

  const rerun = await runCli(["consolidate", f.root, "--workers", String(WORKERS), "--json"]);
  assert.equal(rerun.code, 0, rerun.stderr);
  const summary = jsonLines(rerun.stdout).at(-1)!;
  assert.equal(summary.swept, after.partials.length, "the rerun sweeps each leftover once");
  const end = await census(f.root, SPEC);
  assert.deepEqual(end.shardableRaw, []);
  assert.deepEqual(end.partials, []);
  await assertIntact(f, "after the rerun");
});

test(
  "a raw folder emptied by a crash (raw files gone, folders not yet) is removed, not reported as a folded shard",
  async (t) => {
    const f = await setup(t);
    const first = await runCli(["consolidate", f.root, "--workers", String(WORKERS), "--json"]);
    assert.equal(first.code, 0, first.stderr);
    // What a kill -9 between a commit's raw-file deletions and its folder removal leaves.
    await fs.mkdir(path.join(f.root, "img5/0/1/4/7"), { recursive: true });
    await fs.mkdir(path.join(f.root, "img5/0/1/4/2"), { recursive: true });
    const run = await runCli(["consolidate", f.root, "--workers", String(WORKERS), "--json"]);
    assert.equal(run.code, 0, run.stderr);
    const shards = jsonLines(run.stdout).filter((e) => e.event === "shard");
    await assertIntact(f, "after consolidating empty folders");
    const left = await fs.stat(path.join(f.root, "img5/0/1/4")).then(
      () => true,
      () => false,
    );
    assert.equal(left, false, "docs/format.md: folders left empty are removed");
    assert.deepEqual(shards, [], "no shard was folded");
  },
);

test(
  "summary.swept counts a shard's leftover .partial file once",
  async (t) => {
    const dir = await tempDir(t);
    const root = path.join(dir, "store");
    const spec: RawStoreSpec = { seed: 5, shardable: [{ path: "img5", shape: [1, 1, 1, 64, 64], chunks: [1, 1, 1, 16, 16] }], rawOnly: [], preShards: [] };
    await buildRawStore(root, spec);
    const leftover = path.join(root, `img5/0/0/0${EXT}${partialSuffix()}`);
    await fs.writeFile(leftover, randomBytes(100));
    const anHourAgo = new Date(Date.now() - 3600_000); // abandoned, not a live writer's
    await fs.utimes(leftover, anHourAgo, anHourAgo);
    const run = await runCli(["consolidate", root, "--workers", String(WORKERS), "--json"]);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual((await census(root, spec)).partials, []);
    assert.equal(jsonLines(run.stdout).at(-1)!.swept, 1);
  },
);
