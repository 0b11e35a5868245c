/**
 * Issue 12: several processes consolidating (and compacting) one store
 * through one real redis-server share the job: every shard is folded once,
 * each process does part of it, the walk is split, and a process killed
 * with kill -9 in the middle leaves its work to the others. The processes
 * reach the store through different paths (bind mounts), as machines with
 * different mount points would.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import * as zarr from "zarrita";
import { SharedJob, type Task, type TaskContext } from "@h5nest/coordinator";
import { createV2Array, H5NestedStore } from "h5nest";
import { CLI, describeRun, h5nest } from "./helpers/cli.js";
import { requireRedis, startRedis } from "./helpers/redis.js";
import { python, requirePython } from "./helpers/python.js";
import { withBindMount } from "./helpers/system.js";
import { tempDir } from "./helpers/tmp.js";

const LEASE_MS = 2000;
const SHARDS = 96;

interface Running {
  child: ChildProcess;
  root: string;
  lines: Record<string, unknown>[];
  stderr: string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when this process has printed `n` shard events. */
  shards(n: number): Promise<void>;
}

function start(args: string[], root: string): Running {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const running: Running = {
    child,
    root,
    lines: [],
    stderr: "",
    exit: new Promise((resolve) => child.on("close", (code, signal) => resolve({ code, signal }))),
    shards: (n) =>
      new Promise((resolve) => {
        const check = () => {
          if (running.lines.filter((l) => l.event === "shard").length >= n) {
            child.stdout!.off("data", check);
            resolve();
          }
        };
        child.stdout!.on("data", check);
        check();
      }),
  };
  let partial = "";
  child.stdout!.setEncoding("utf8").on("data", (text: string) => {
    partial += text;
    const complete = partial.split("\n");
    partial = complete.pop()!;
    for (const line of complete) if (line.trim()) running.lines.push(JSON.parse(line) as Record<string, unknown>);
  });
  child.stderr!.setEncoding("utf8").on("data", (text: string) => (running.stderr += text));
  return running;
}

/** A store of SHARDS shards' worth of raw chunk files (64 chunks of 2 KiB each), and every key's bytes. */
async function rawStore(root: string): Promise<Map<string, Buffer | null>> {
  const store = await H5NestedStore.open(root, { workers: 1, writeDirect: false });
  const array = await createV2Array(store, "img", { shape: [1, 1, SHARDS, 256, 256], chunks: [1, 1, 1, 32, 32], dtype: "<u2", compressor: null });
  const values = new Uint16Array(SHARDS * 256 * 256);
  for (let i = 0; i < values.length; i++) values[i] = (i * 2654435761) >>> 16;
  await zarr.set(array, null, { data: values, shape: [1, 1, SHARDS, 256, 256], stride: [SHARDS * 65536, SHARDS * 65536, 65536, 256, 1] });
  await store.close();
  const expected = new Map<string, Buffer | null>();
  for (const entry of await fs.readdir(path.join(root, "img"), { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || entry.name.startsWith(".")) continue;
    const file = path.join(entry.parentPath, entry.name);
    expected.set(path.relative(root, file), await fs.readFile(file));
  }
  return expected;
}

/** Files under the store that are neither metadata nor shards: raw chunks and temporary files left. */
async function leftovers(root: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await fs.readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    if (entry.name.endsWith(".h5") || entry.name.startsWith(".z") || entry.name === "store.json") continue;
    found.push(path.relative(root, path.join(entry.parentPath, entry.name)));
  }
  return found;
}

/** Every key reads back byte-exact (null: reads as missing). */
async function assertEveryChunk(root: string, expected: Map<string, Buffer | null>): Promise<void> {
  const store = await H5NestedStore.open(root, { workers: 1 });
  try {
    for (const [key, bytes] of expected) {
      const got = await store.get(key);
      if (bytes === null) assert.equal(got, undefined, `${key} was deleted`);
      else assert.ok(got && Buffer.from(got).equals(bytes), `${key} does not read back byte-exact`);
    }
  } finally {
    await store.close();
  }
}

/** Shards each process reported folding, by path in the store. */
function foldsOf(run: Running): string[] {
  return run.lines.filter((l) => l.event === "shard" && (l.chunks as number) > 0).map((l) => path.relative(run.root, l.shard as string));
}

test("3 processes through 3 paths consolidate one store through Redis: each shard folded once, fair shares, one killed with kill -9 leaves its work to the others", { timeout: 180_000 }, async (t) => {
  if (!requireRedis(t)) return;
  const redis = await startRedis(t);
  const root = path.join(await tempDir(t), "store");
  const expected = await rawStore(root);
  await withBindMount(t, root, async (second) => {
    await withBindMount(t, root, async (third) => {
      const args = (at: string) => ["consolidate", at, "--workers", "1", "--redis", redis.url, "--lease-ms", String(LEASE_MS), "--json"];
      const runs = [start(args(root), root), start(args(second), second), start(args(third), third)];
      // Kill one in the middle of its work: after its second shard.
      const victim = runs[1]!;
      await victim.shards(2);
      victim.child.kill("SIGKILL");
      const exits = await Promise.all(runs.map((r) => r.exit));
      assert.equal(exits[1]!.signal, "SIGKILL");
      for (const i of [0, 2]) assert.equal(exits[i]!.code, 0, `process ${i}: ${JSON.stringify(exits[i])}\n${runs[i]!.stderr}`);

      // The commit log: every fold any process reported. No shard twice.
      const folds = runs.flatMap(foldsOf);
      const twice = folds.filter((shard, i) => folds.indexOf(shard) !== i);
      assert.deepEqual(twice, [], "shards folded by two processes");
      const survivors = [runs[0]!, runs[2]!];
      for (const run of survivors) {
        const share = foldsOf(run).length;
        assert.ok(share >= SHARDS / 6, `a process folded only ${share} of ${SHARDS} shards: ${survivors.map((r) => foldsOf(r).length)}`);
      }
      // The summaries see the whole job: all three processes, one walk between them.
      for (const run of survivors) {
        const summary = run.lines.find((l) => l.event === "summary") as { job: { processes: number; tasksFound: number; foldersScanned: number; remaining: number } };
        assert.equal(summary.job.processes, 3);
        assert.equal(summary.job.remaining, 0);
        assert.equal(summary.job.tasksFound, SHARDS, "each raw folder found once");
        // img, img/0 and img/0/0 above the raw folders, and the root: listed once each (a killed process's listing may be redone).
        assert.ok(summary.job.foldersScanned >= 4 && summary.job.foldersScanned <= 5, `folders listed: ${summary.job.foldersScanned}`);
      }
    });
  });
  assert.deepEqual(await leftovers(root), [], "raw chunk files or temporary files left");
  await assertEveryChunk(root, expected);
  const verified = await h5nest(["verify", root, "--workers", "1"], 60_000);
  assert.equal(verified.code, 0, describeRun(["verify"], verified));
  // The run ended: its queue is gone from Redis (only its counters stay, for an hour).
  const keys = (await redis.command("KEYS", "*")) as string[];
  assert.deepEqual(
    keys.filter((k) => !/^h5nest:(epoch|runid|[0-9a-f]+:(fence|job:consolidate:[0-9a-f]+:progress))$/.test(k)),
    [],
    `keys left in Redis: ${keys.join(", ")}`,
  );
  // A later job starts a new run: it finds nothing to do, and ends.
  const again = await h5nest(["consolidate", root, "--workers", "1", "--redis", redis.url, "--lease-ms", String(LEASE_MS)], 60_000);
  assert.equal(again.code, 0, describeRun(["consolidate again"], again));
  assert.match(again.stdout, /moved 0 chunks/);
});

/** Deletes, in place with h5py, the chunks of even x: HDF5 keeps their space (dead space a rewrite frees). */
const PY_DELETE_HALF = `
import sys, h5py
for archive in sys.argv[1:]:
    with h5py.File(archive, 'a') as f:
        for name in [name for name in f.keys() if int(name.split('.')[-1]) % 2 == 0]:
            del f[name]
`;

test("2 processes compact one store through Redis: each wasteful shard rewritten once, every chunk kept", { timeout: 120_000 }, async (t) => {
  if (!requireRedis(t) || !(await requirePython(t))) return;
  const redis = await startRedis(t);
  const root = path.join(await tempDir(t), "store");
  const expected = await rawStore(root);
  const consolidated = await h5nest(["consolidate", root, "--workers", "1"], 60_000);
  assert.equal(consolidated.code, 0, describeRun(["consolidate"], consolidated));
  // Deletes in place leave dead space in every shard.
  const shards = (await fs.readdir(path.join(root, "img/0/0"))).filter((name) => name.endsWith(".h5")).map((name) => path.join(root, "img/0/0", name));
  await python(PY_DELETE_HALF, shards);
  for (const key of expected.keys()) if (Number(key.split("/").at(-1)) % 2 === 0) expected.set(key, null);
  const args = ["compact", root, "--workers", "1", "--redis", redis.url, "--lease-ms", String(LEASE_MS), "--json"];
  const runs = [start(args, root), start(args, root)];
  const exits = await Promise.all(runs.map((r) => r.exit));
  for (const [i, exit] of exits.entries()) assert.equal(exit.code, 0, `${JSON.stringify(exit)} ${runs[i]!.stderr}`);
  const rewritten = runs.flatMap((r) => r.lines.filter((l) => l.event === "shard").map((l) => l.shard as string));
  assert.equal(new Set(rewritten).size, rewritten.length, "a shard rewritten twice");
  assert.equal(rewritten.length, SHARDS, "every wasteful shard rewritten");
  for (const run of runs) assert.ok(run.lines.filter((l) => l.event === "shard").length > 0, "both processes took part");
  await assertEveryChunk(root, expected);
});

test("Redis killed in the middle of a shared consolidation: each process stops with a typed error in bounded time, nothing is lost, a rerun finishes", { timeout: 180_000 }, async (t) => {
  if (!requireRedis(t)) return;
  const redis = await startRedis(t);
  const root = path.join(await tempDir(t), "store");
  const expected = await rawStore(root);
  const args = ["consolidate", root, "--workers", "1", "--redis", redis.url, "--lease-ms", String(LEASE_MS), "--json"];
  const runs = [start(args, root), start(args, root)];
  await runs[0]!.shards(2);
  await redis.kill("SIGKILL");
  const killedAt = performance.now();
  const exits = await Promise.all(runs.map((r) => r.exit));
  const seconds = (performance.now() - killedAt) / 1000;
  assert.ok(seconds < 60, `the processes took ${seconds.toFixed(1)} s to stop`);
  for (const [i, exit] of exits.entries()) {
    assert.equal(exit.code, 1, `process ${i}: ${JSON.stringify(exit)}\n${runs[i]!.stderr}`);
    assert.match(runs[i]!.stderr, /stopped: lock service redis:\/\/.* unavailable/, runs[i]!.stderr);
    const summary = runs[i]!.lines.find((l) => l.event === "summary");
    assert.ok(summary && typeof summary.fatal === "string", `process ${i} printed its summary`);
  }
  // Every chunk readable all along; a rerun (Redis back, new to h5nest: it waits a term) finishes the job.
  await assertEveryChunk(root, expected);
  await redis.restart();
  const rerun = await h5nest(args.slice(0, -1), 90_000);
  assert.equal(rerun.code, 0, describeRun(args, rerun));
  assert.deepEqual(await leftovers(root), [], "raw chunk files or temporary files left");
  await assertEveryChunk(root, expected);
});

test("Ctrl-C stops a shared consolidation after its shards in flight; the next process resumes the same run and finishes it", { timeout: 180_000 }, async (t) => {
  if (!requireRedis(t)) return;
  const redis = await startRedis(t);
  const root = path.join(await tempDir(t), "store");
  const expected = await rawStore(root);
  const args = ["consolidate", root, "--workers", "1", "--redis", redis.url, "--lease-ms", String(LEASE_MS), "--json"];
  const first = start(args, root);
  await first.shards(2);
  first.child.kill("SIGINT");
  const exit = await first.exit;
  assert.equal(exit.code, 130, first.stderr);
  const stopped = first.lines.find((l) => l.event === "summary") as { interrupted: boolean; chunks: number; job?: { runId: string } };
  assert.equal(stopped.interrupted, true);
  assert.ok(stopped.chunks < expected.size, "stopped before the end");
  const second = start(args, root);
  assert.equal((await second.exit).code, 0, second.stderr);
  const finished = second.lines.find((l) => l.event === "summary") as { chunks: number; job: { runId: string; chunks: number; tasksDone: number } };
  assert.equal(finished.job.runId, stopped.job?.runId ?? finished.job.runId, "the same run, resumed");
  assert.equal(stopped.chunks + finished.chunks, expected.size, "each chunk moved once, by one of the two");
  assert.equal(finished.job.chunks, expected.size);
  assert.deepEqual(await leftovers(root), []);
  await assertEveryChunk(root, expected);
});

test("a shared job whose listings wait for room (many shards waiting) still ends: shard tasks have slots of their own", { timeout: 120_000 }, async (t) => {
  if (!requireRedis(t)) return;
  const redis = await startRedis(t);
  const options = { url: redis.url, namespace: "room", kind: "consolidate", termMs: LEASE_MS, concurrency: 1, maxWaiting: 5 };
  // Two processes' worth of jobs in one (one slot each): each listing finds 40 shards, far more than may wait.
  const jobs = [await SharedJob.join(options, { type: "scan", path: "" }), await SharedJob.join(options, { type: "scan", path: "" })];
  t.after(() => Promise.all(jobs.map((job) => job.close())));
  assert.equal(jobs[1]!.runId, jobs[0]!.runId, "the second joins the first's run");
  const done = new Map<string, number>();
  const handle = async (task: Task, context: TaskContext) => {
    if (task.type === "scan") {
      // Four listings: once the first has added its shards, the others wait for room, as many as there are slots.
      if (task.path === "") await context.add(["a", "b", "c", "d"].map((name) => ({ type: "scan" as const, path: name })));
      else await context.add(Array.from({ length: 40 }, (_, i) => ({ type: "work" as const, path: `${task.path}/${i}` })));
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
    done.set(task.path, (done.get(task.path) ?? 0) + 1);
  };
  const ended = await Promise.race([
    Promise.all(jobs.map((job) => job.run(handle))).then(() => true),
    new Promise<false>((resolve) => setTimeout(() => resolve(false), 60_000)),
  ]);
  assert.ok(ended, "the job did not end: listings waiting for room held every slot");
  assert.equal(done.size, 160);
  assert.ok([...done.values()].every((n) => n === 1), "a shard task ran twice");
  const progress = await jobs[0]!.progress();
  assert.equal(progress.tasksFound, 160);
  assert.equal(progress.tasksDone, 160);
  assert.equal(progress.foldersScanned, 5);
});
