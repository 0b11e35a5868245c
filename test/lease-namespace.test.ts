/**
 * One store, one lease namespace, whatever reaches it (issue items 1-3):
 * leases are keyed by the store's identity record (`.h5nest/store.json`),
 * and the local lease servers keep their state inside the store.
 *
 * 1. One store, two paths: writers through the store's path and a
 *    consolidation through a bind mount of it, with local leases and with
 *    Redis, lose no acknowledged write; leases and commits stay exclusive.
 * 2. Two users, one machine: a process of another uid writing a shared
 *    (world-writable) store shares the lease server; one that cannot write
 *    the lease folder is refused with LeaseNamespaceError.
 * 3. Takeover with another XDG_RUNTIME_DIR: a process whose runtime folder
 *    differs, elected after the server died, grants nothing before the dead
 *    server's leases expire.
 * And a copy of a store, which keeps its identity, is refused local leases
 * (LeaseNamespaceError) while the original is written, until its record goes.
 *
 * Every scenario runs for real (mount --bind, setpriv, kill -9) and fails on
 * the code before the identity record (checked).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { type TestContext, test } from "node:test";
import {
  assertFinalChunks,
  assertLogs,
  CHUNKS,
  type Commit,
  leaseIntervals,
  ms,
  ownerPid,
  readArray,
  readLeaseLog,
  readTrace,
  SHAPE,
  scenario,
  shardNamer,
  startChild,
  writerConfig,
  writesOf,
} from "./helpers/lock-harness.js";
import { H5NestedStore, LeaseNamespaceError } from "h5nest";
import { requireRedis, startRedis } from "./helpers/redis.js";
import { OTHER_UID, openUpPath, otherUser, withBindMount } from "./helpers/system.js";
import { tempDir } from "./helpers/tmp.js";

const PROCESS_TEST = { timeout: 120_000 };
const LEASE_MS = 2000;

/** No two commits of one shard overlap (any process, any lease service). Returns the shards committed by several processes. */
function assertTraceExclusive(commits: Commit[]): number {
  const byShard = new Map<string, Commit[]>();
  for (const c of commits) byShard.set(c.owner, [...(byShard.get(c.owner) ?? []), c]);
  let shared = 0;
  for (const [shard, list] of byShard) {
    list.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    for (let i = 1; i < list.length; i++) {
      const a = list[i - 1]!;
      const b = list[i]!;
      assert.ok(b.start >= a.end, `${shard}: commit of pid ${b.pid} (token ${b.lease}) overlaps commit of pid ${a.pid} (token ${a.lease})`);
    }
    if (new Set(list.map((c) => c.pid)).size > 1) shared += 1;
  }
  return shared;
}

// ---------------------------------------------------------------------------
// 1. One store, two paths

async function writersAndConsolidation(t: TestContext, lockMode: "local" | "redis"): Promise<void> {
  let redisUrl: string | undefined;
  if (lockMode === "redis") {
    if (!requireRedis(t)) return;
    redisUrl = (await startRedis(t)).url;
  }
  const s = await scenario(t, SHAPE, CHUNKS, { fill: 7 });
  await withBindMount(t, s.storePath, async (other) => {
    assert.notEqual(fs.realpathSync(other), fs.realpathSync(s.storePath), "two paths that no realpath unifies");
    const lock = { leaseMs: LEASE_MS, ...(redisUrl ? { redis: redisUrl } : {}) };
    const writers = Array.from({ length: 3 }, (_, i) =>
      startChild(
        t,
        `writer${i + 1}`,
        "lock-writer.mjs",
        [writerConfig(s, { ...lock, mode: "random", id: i + 1, writes: 14, concurrency: 2, pauseMs: 20, gate: true, holdOpen: true })],
        s.env,
      ),
    );
    const consolidator = startChild(t, "consolidator (other path)", "consolidator.mjs", [JSON.stringify({ store: other, ...lock })], s.env);
    for (const w of [...writers, consolidator]) await w.waitFor((l) => l.startsWith("ready "), "ready", 30_000);
    for (const w of writers) w.send("go");
    for (const w of writers) await w.waitFor((l) => l.startsWith("written "), "written", 90_000);
    consolidator.send("stop");
    const done = await consolidator.waitFor((l) => l.startsWith("done "), "the consolidation's end", 30_000);
    for (const w of writers) w.send("exit");
    for (const w of [...writers, consolidator]) assert.equal((await w.closed).code, 0, `${w.name} exited badly\n${w.describe()}`);

    const writes = [...s.setup, ...writers.flatMap((w) => writesOf(w))];
    assert.deepEqual(writes.filter((w) => !w.acked).map((w) => `${w.child} ${w.value} ${w.failure}`), [], "every write was acknowledged");
    const errors = consolidator.lines.filter((l) => l.startsWith("error "));
    assert.deepEqual(errors, [], "the consolidation ran without errors");
    const [, passes, folded] = done.split(" ");
    t.diagnostic(`${lockMode}: the consolidation through ${other} made ${passes} passes and folded ${folded} raw chunk files`);
    assert.ok(Number(folded) > 0, "the consolidation folded raw files the writers left");

    // Every acknowledged value is there (the bug lost 4-16 per run).
    assertFinalChunks(await readArray(s.storePath), s, writes);
    // One owner per shard at a time, across both paths.
    const aliases: [string, string][] = [[other, s.storePath]];
    if (lockMode === "local") {
      const { events, shared } = assertLogs(s, aliases);
      const consolidatorGrants = events.filter((e) => e.event === "grant" && ownerPid(e.owner) === consolidator.pid);
      assert.ok(consolidatorGrants.length > 0, "the consolidation took leases from the same servers as the writers");
      assert.ok(shared >= 2, `shards were committed by several processes (${shared})`);
    } else {
      const canonical = shardNamer(s.storePath, aliases);
      const commits = readTrace(s.traceFile).map((c) => ({ ...c, owner: canonical(c.owner) }));
      const shared = assertTraceExclusive(commits);
      assert.ok(commits.some((c) => c.pid === consolidator.pid), "the consolidation committed shards");
      assert.ok(shared >= 2, `shards were committed by several processes (${shared})`);
    }
  });
}

test("1. one store, two paths (bind mount), local leases: writers and a consolidation lose no acknowledged write", PROCESS_TEST, (t) =>
  writersAndConsolidation(t, "local"),
);

test("1. one store, two paths (bind mount), Redis leases: writers and a consolidation lose no acknowledged write", PROCESS_TEST, (t) =>
  writersAndConsolidation(t, "redis"),
);

// ---------------------------------------------------------------------------
// 2. Two users, one machine

/**
 * A shared lab folder: the store is world-writable and everything in it is
 * created world-writable (umask 0 in this process and its children), so that
 * a second user can write it at all.
 */
async function sharedScenario(t: TestContext) {
  const mask = process.umask(0);
  t.after(() => void process.umask(mask));
  const s = await scenario(t, SHAPE, CHUNKS, { fill: 7 });
  await openUpPath(s.dir);
  await fsp.chmod(s.storePath, 0o777);
  for (const file of [s.leaseLog, s.traceFile]) {
    await fsp.writeFile(file, "");
    await fsp.chmod(file, 0o666);
  }
  return s;
}

test("2. two users write one shared store: one lease namespace, no acknowledged write lost", PROCESS_TEST, async (t) => {
  const asOther = await otherUser(t);
  if (!asOther) return;
  const s = await sharedScenario(t);
  const env = { ...s.env, HOME: "/" };
  const rootWriter = startChild(t, "writer (root)", "lock-writer.mjs", [writerConfig(s, { leaseMs: LEASE_MS, mode: "random", id: 1, writes: 14, concurrency: 2, pauseMs: 20, gate: true, holdOpen: true })], env);
  await rootWriter.waitFor((l) => l.startsWith("ready "), "ready", 30_000); // root serves first
  const otherWriter = startChild(
    t,
    `writer (uid ${OTHER_UID})`,
    "lock-writer.mjs",
    [writerConfig(s, { leaseMs: LEASE_MS, mode: "random", id: 2, writes: 14, concurrency: 2, pauseMs: 20, gate: true, holdOpen: true })],
    env,
    asOther,
  );
  const consolidator = startChild(t, `consolidator (uid ${OTHER_UID})`, "consolidator.mjs", [JSON.stringify({ store: s.storePath, leaseMs: LEASE_MS })], env, asOther);
  for (const w of [otherWriter, consolidator]) await w.waitFor((l) => l.startsWith("ready "), "ready", 30_000);
  for (const w of [rootWriter, otherWriter]) w.send("go");
  for (const w of [rootWriter, otherWriter]) await w.waitFor((l) => l.startsWith("written "), "written", 90_000);
  consolidator.send("stop");
  await consolidator.waitFor((l) => l.startsWith("done "), "the consolidation's end", 30_000);
  for (const w of [rootWriter, otherWriter]) w.send("exit");
  for (const w of [rootWriter, otherWriter, consolidator]) assert.equal((await w.closed).code, 0, `${w.name} exited badly\n${w.describe()}`);
  assert.equal(fs.statSync(`/proc/${process.pid}`).uid, 0);

  const writes = [...s.setup, ...[rootWriter, otherWriter].flatMap((w) => writesOf(w))];
  assert.deepEqual(writes.filter((w) => !w.acked).map((w) => `${w.child} ${w.value} ${w.failure}`), [], "every write was acknowledged");
  assertFinalChunks(await readArray(s.storePath), s, writes);
  const { events, shared } = assertLogs(s);
  const grantees = new Set(events.filter((e) => e.event === "grant").map((e) => ownerPid(e.owner)));
  for (const w of [rootWriter, otherWriter, consolidator]) assert.ok(grantees.has(w.pid), `${w.name} took its leases from the shared servers`);
  const servers = [...new Set(events.map((e) => e.server))];
  t.diagnostic(`lease servers (pids) in turn: ${servers.join(", ")}; shards committed by several processes: ${shared}`);
  assert.ok(shared >= 2, `both users committed the same shards (${shared})`);
});

test("2. a user who cannot write the store's lease folder is refused with LeaseNamespaceError", PROCESS_TEST, async (t) => {
  const asOther = await otherUser(t);
  if (!asOther) return;
  const s = await sharedScenario(t);
  const env = { ...s.env, HOME: "/" };
  const rootWriter = startChild(t, "writer (root)", "lock-writer.mjs", [writerConfig(s, { leaseMs: LEASE_MS, mode: "commands" })], env);
  await rootWriter.waitFor((l) => l.startsWith("ready "), "ready", 30_000);
  const leases = path.join(s.storePath, ".h5nest", "leases");
  await fsp.chmod(leases, 0o755); // the store stays writable, its lease folder does not
  const other = startChild(t, `writer (uid ${OTHER_UID})`, "lock-writer.mjs", [writerConfig(s, { leaseMs: LEASE_MS, mode: "commands" })], env, asOther);
  const line = await other.waitFor((l) => l.startsWith("open-failed ") || l.startsWith("ready "), "its open", 30_000);
  assert.match(line, /^open-failed H5NEST_LEASE_NAMESPACE /, `refused with a typed error, not given leases of its own\n${other.describe()}`);
  assert.match(line, /leases/, "the message names the lease folder");
  assert.match(line, new RegExp(`uid ${OTHER_UID}`), "and the user");
  assert.equal((await other.closed).code, 3);
  rootWriter.send("exit");
  assert.equal((await rootWriter.closed).code, 0, rootWriter.describe());
});

// ---------------------------------------------------------------------------
// 3. Takeover by a process with another XDG_RUNTIME_DIR

test("3. a successor with another XDG_RUNTIME_DIR grants nothing before the dead server's leases expire", PROCESS_TEST, async (t) => {
  const s = await scenario(t, SHAPE, CHUNKS);
  const term = 4000;
  const runtime = await fsp.mkdtemp(path.join(os.tmpdir(), "h5nest-xdg-"));
  t.after(() => fsp.rm(runtime, { recursive: true, force: true }));
  const xdg = async (name: string) => {
    const folder = path.join(runtime, name);
    await fsp.mkdir(folder, { mode: 0o700 });
    return { ...s.env, XDG_RUNTIME_DIR: folder };
  };
  const envA = await xdg("a");
  const server = startChild(t, "server (XDG a)", "lease-client.mjs", [s.storePath, String(term)], envA);
  assert.match(await server.waitFor((l) => l.startsWith("open "), "open"), /^open 1 /, "the first process serves");
  const holder = startChild(t, "holder (XDG a)", "lease-client.mjs", [s.storePath, String(term)], envA);
  assert.match(await holder.waitFor((l) => l.startsWith("open "), "open"), /^open 0 /);
  holder.send("acquire s renew");
  await holder.waitFor((l) => l.startsWith("renewed s "), "a renewal", 10_000);
  // The holder is paused (it cannot stand for election); the server dies.
  holder.signal("SIGSTOP");
  t.after(() => holder.signal("SIGCONT"));
  const killedAt = await server.kill9();
  const held = [...leaseIntervals(readLeaseLog(s.leaseLog)).values()].find((i) => i.shard === "s" && ownerPid(i.owner) === holder.pid);
  assert.ok(held && !held.released, "the holder's lease is in the dead server's log");
  const left = ms(held.end - killedAt);
  assert.ok(left > 1000, `the holder's lease had ${left.toFixed(0)} ms to run at the kill`);

  const successor = startChild(t, "successor (XDG b)", "lease-client.mjs", [s.storePath, String(term)], await xdg("b"));
  assert.match(await successor.waitFor((l) => l.startsWith("open "), "open", 20_000), /^open 1 /, "the successor is elected");
  successor.send("acquire s");
  const granted = await successor.waitFor((l) => l.startsWith("granted s "), "its grant of s", 20_000);
  const grantedAt = BigInt(granted.split(" ")[4]!);
  t.diagnostic(`the dead server's lease on s had ${left.toFixed(0)} ms left; the successor granted s ${ms(grantedAt - killedAt).toFixed(0)} ms after the kill`);
  assert.ok(grantedAt >= held.end, `s granted ${ms(held.end - grantedAt).toFixed(0)} ms before the paused holder's lease expired: two owners`);
  successor.send("exit");
  assert.equal((await successor.closed).code, 0, successor.describe());
});

// ---------------------------------------------------------------------------
// A copy keeps its identity

test("a copy of a store (same identity, another folder) is refused local leases while the original is written, until its record is removed", async (t) => {
  const dir = await tempDir(t);
  const original = path.join(dir, "original");
  const store = await H5NestedStore.open(original, { workers: 1, distributedLock: { leaseMs: LEASE_MS } });
  t.after(() => store.close());
  await store.set("a/.zattrs", new TextEncoder().encode("{}"));
  const copy = path.join(dir, "copy");
  await fsp.cp(original, copy, { recursive: true });
  await assert.rejects(H5NestedStore.open(copy, { workers: 1, distributedLock: { leaseMs: LEASE_MS } }), (error: unknown) => {
    assert.ok(error instanceof LeaseNamespaceError, String(error));
    assert.equal(error.code, "H5NEST_LEASE_NAMESPACE");
    assert.match(error.message, /copy/);
    return true;
  });
  await fsp.rm(path.join(copy, ".h5nest", "store.json"));
  const own = await H5NestedStore.open(copy, { workers: 1, distributedLock: { leaseMs: LEASE_MS } });
  await own.set("a/.zattrs", new TextEncoder().encode("{}"));
  await own.close();
  const ids = await Promise.all([original, copy].map(async (root) => JSON.parse(await fsp.readFile(path.join(root, ".h5nest", "store.json"), "utf8")).id));
  assert.notEqual(ids[0], ids[1], "the copy has an identity of its own now");
});
