/**
 * Local lease faults (issue items 6, 7, 8 and 13), each run for real:
 *
 * 6. Rejected requests never loop: a leaseMs over the protocol's longest
 *    term is an InvalidOptionError at open; a key whose lease name (its
 *    shard's path) is over the protocol's limit is an InvalidKeyError, and
 *    other writes go on; the server answers a bad field with a typed refusal.
 * 7. A stopped (SIGSTOP) lease server: other processes' writes fail with
 *    LockUnavailableError within a deadline; the next write elects another
 *    server, which waits out the stopped one's leases; the stopped server,
 *    resumed, sees it was replaced and serves no more.
 * 8. A lease server that cannot write its state file (a full disk) refuses
 *    grants with LockUnavailableError and reports it; its process lives on,
 *    and grants resume when there is room again.
 * 13. Every close() ends with nothing left listening or connected, even when
 *    it lands in the middle of a takeover; concurrent `h5nest consolidate
 *    --lock` processes all exit, many times over.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { LeaseRefusedError, LocalLeaseProvider, RedisLeaseProvider, socketName } from "@h5nest/coordinator";
import { H5NestedStore, InvalidKeyError, InvalidOptionError } from "h5nest";
import { buildWithH5nest, CLI, checkWithH5nest, type RawStoreSpec, recordManifest } from "./helpers/consolidate-store.js";
import { RawClient, storeLeases } from "./helpers/leases.js";
import {
  assertNoOverlappingLeases,
  CHUNKS,
  hr,
  leaseIntervals,
  ms,
  ownerPid,
  readArray,
  readLeaseLog,
  SHAPE,
  scenario,
  startChild,
  writerConfig,
} from "./helpers/lock-harness.js";
import { requireRedis, startRedis } from "./helpers/redis.js";
import { tempDir } from "./helpers/tmp.js";
import { within } from "./helpers/within.js";
import { leaveRoom, withTmpfs } from "./helpers/tmpfs.js";

const PROCESS_TEST = { timeout: 120_000 };

const describe = (error: unknown) => {
  const e = error as { name?: string; code?: string; message?: string };
  return `${e?.name ?? "?"} ${e?.code ?? ""}: ${e?.message ?? String(error)}`;
};

// ---------------------------------------------------------------------------
// 6. Rejected requests

test("6. leaseMs over the longest term the lease protocol grants is an InvalidOptionError, not a set that spins forever", async (t) => {
  const dir = await tempDir(t);
  for (const [name, lock] of [
    ["local", { leaseMs: 130_000 }],
    ["redis (unreachable: the options are checked first)", { leaseMs: 130_000, redis: "redis://127.0.0.1:1" }],
  ] as const) {
    let opened: H5NestedStore | null = null;
    const outcome = await within(
      (async () => {
        opened = await H5NestedStore.open(path.join(dir, "store"), { workers: 1, distributedLock: lock });
        await opened.set("a/.zattrs", new TextEncoder().encode("{}"));
        return "the set resolved";
      })().then(
        (done) => done,
        (error: unknown) => (error instanceof InvalidOptionError ? `InvalidOptionError ${error.option}` : describe(error)),
      ),
      8000,
      "still pending after 8 s",
    );
    if (opened) void (opened as H5NestedStore).close().catch(() => {});
    assert.equal(outcome, "InvalidOptionError distributedLock.leaseMs", name);
  }
  // The longest term is accepted.
  const store = await H5NestedStore.open(path.join(dir, "store"), { workers: 1, distributedLock: { leaseMs: 120_000 } });
  await store.set("a/.zattrs", new TextEncoder().encode("{}"));
  await store.close();
});

test("6. a key whose lease name is over the protocol's limit is an InvalidKeyError at once; other writes go on", async (t) => {
  const root = path.join(await tempDir(t), "store");
  const store = await H5NestedStore.open(root, { workers: 1, distributedLock: { leaseMs: 2000 } });
  // 20 folders of 250 bytes: the shard's path in the store is about 4.5 KB (the limit is 4096 bytes).
  const long = [...Array.from({ length: 20 }, (_, i) => `${i}`.padEnd(250, "d")), "0", "0"].join("/");
  const started = Date.now();
  const longSet = store.set(long, new Uint8Array(8)).then(
    () => "resolved",
    (error: unknown) => (error instanceof InvalidKeyError ? "InvalidKeyError" : describe(error)),
  );
  let others = 0;
  const writes = (async () => {
    for (let i = 0; i < 20; i++) {
      await store.set(`n/${i}/.zattrs`, new TextEncoder().encode(`{"i":${i}}`));
      others += 1;
    }
  })();
  assert.equal(await within(longSet, 5000, "still pending after 5 s"), "InvalidKeyError");
  assert.ok(Date.now() - started < 2000, "refused up front");
  await assert.rejects(store.delete(long), InvalidKeyError);
  assert.equal(await within(writes.then(() => "done"), 15_000, "starved"), "done", `other writes finished (${others} of 20)`);

  // Below the store: the providers refuse such a name without sending it, typed.
  const leases = await storeLeases(root);
  const provider = await LocalLeaseProvider.open({ ...leases, termMs: 2000 });
  await assert.rejects(provider.acquire("s".repeat(5000)), LeaseRefusedError);
  // And the server answers a request it cannot accept with a typed refusal, keeping the connection.
  const raw = await RawClient.toStore(root);
  const refused = await raw.request({ v: 1, op: "acquire", owner: "raw:0:0", shard: "s".repeat(5000), termMs: 1000 });
  assert.deepEqual([refused.ok, refused.code], [false, "H5NEST_LEASE_REFUSED"]);
  const tooLong = await raw.request({ v: 1, op: "acquire", owner: "raw:0:0", shard: "s", termMs: 130_000 });
  assert.deepEqual([tooLong.ok, tooLong.code], [false, "H5NEST_LEASE_REFUSED"]);
  const granted = await raw.request({ v: 1, op: "acquire", owner: "raw:0:0", shard: "s", termMs: 1000 });
  assert.equal(granted.ok, true, "the same connection still gets grants");
  raw.close();
  await provider.close();
  await store.close();
});

test("6. Redis leases refuse an over-long lease name up front too", async (t) => {
  if (!requireRedis(t)) return;
  const redis = await startRedis(t);
  const provider = await RedisLeaseProvider.open({ url: redis.url, namespace: "long", termMs: 2000 });
  t.after(() => provider.close());
  await assert.rejects(provider.acquire("s".repeat(5000)), LeaseRefusedError);
  assert.ok((await provider.acquire("s")).token > 0);
});

// ---------------------------------------------------------------------------
// 7. A stopped lease server

test("7. a stopped lease server: writes fail with LockUnavailableError in bounded time, the serving role moves on, nothing overlaps", PROCESS_TEST, async (t) => {
  const s = await scenario(t, SHAPE, CHUNKS);
  const term = 2000;
  const whole = JSON.stringify(s.shape.map((n, axis) => [0, n / s.chunks[axis]!]));
  const server = startChild(t, "server", "lease-client.mjs", [s.storePath, String(term)], s.env);
  assert.match(await server.waitFor((l) => l.startsWith("open "), "open"), /^open 1 /);
  const writer = startChild(t, "writer", "lock-writer.mjs", [writerConfig(s, { mode: "commands", leaseMs: term })], s.env);
  await writer.waitFor((l) => l.startsWith("ready "), "ready");
  writer.send(`write 1 ${whole}`);
  assert.match(await writer.waitFor((l) => l.startsWith("ack 1 ") || l.startsWith("fail 1 "), "write 1"), /^ack 1 /);
  // A third process holds a shard's lease, granted by the server about to stop.
  const holder = startChild(t, "holder", "lease-client.mjs", [s.storePath, String(term)], s.env);
  assert.match(await holder.waitFor((l) => l.startsWith("open "), "open"), /^open 0 /);
  holder.send("acquire img/0/0/0.h5 renew");
  await holder.waitFor((l) => l.startsWith("renewed img/0/0/0.h5 "), "a renewal");

  server.signal("SIGSTOP");
  t.after(() => server.signal("SIGCONT"));
  const stoppedAt = hr();
  writer.send(`write 2 ${whole}`);
  const second = await writer.waitFor((l) => l.startsWith("ack 2 ") || l.startsWith("fail 2 "), "write 2's outcome while the server is stopped", 15_000);
  assert.match(second, /^fail 2 \d+ H5NEST_LOCK_UNAVAILABLE /, "the write fails with LockUnavailableError");
  const failedAfter = ms(BigInt(second.split(" ")[2]!) - stoppedAt);
  assert.ok(failedAfter < 8000, `within the deadline (${failedAfter.toFixed(0)} ms)`);

  // The next write stands for election, waits out the stopped server's leases, and succeeds.
  writer.send(`write 3 ${whole}`);
  const third = await writer.waitFor((l) => l.startsWith("ack 3 ") || l.startsWith("fail 3 "), "write 3", 30_000);
  assert.match(third, /^ack 3 /, "a retry succeeds under a new server");
  await holder.waitFor((l) => l.startsWith("lost img/0/0/0.h5 "), "the holder's renewals failing", 10_000);
  t.diagnostic(`write 2 failed ${failedAfter.toFixed(0)} ms after the stop; write 3 done ${ms(BigInt(third.split(" ")[2]!) - stoppedAt).toFixed(0)} ms after it`);

  // Resumed, the old server sees it was replaced: it serves no more, and its process is a client now.
  server.signal("SIGCONT");
  await sleep(1500);
  server.send("serving");
  assert.equal(await server.waitFor((l) => l.startsWith("serving "), "serving"), "serving 0");
  server.send("acquire after");
  await server.waitFor((l) => l.startsWith("granted after "), "a grant from the new server", 10_000);

  const events = readLeaseLog(s.leaseLog);
  assertNoOverlappingLeases(leaseIntervals(events));
  assert.ok(new Set(events.map((e) => e.server)).size >= 2, "another process served after the stop");
  const writerGrant = events.find((e) => e.event === "grant" && e.shard === "img/0/0/0.h5" && ownerPid(e.owner) === writer.pid && e.server === writer.pid);
  assert.ok(writerGrant, "the writer, now serving, granted itself the held shard");
  assert.ok(server.alive, "the stopped server's process lives on");
  const data = await readArray(s.storePath);
  assert.ok(data.every((v) => v === 3), "write 3 is everywhere (write 2 wrote nothing)");
  for (const child of [server, writer, holder]) child.send("exit");
  for (const child of [server, writer, holder]) assert.equal((await child.closed).code, 0, `${child.name}\n${child.describe()}`);
});

// ---------------------------------------------------------------------------
// 8. A lease server that cannot write its state

test("8. a full disk: the lease server refuses grants with LockUnavailableError and reports it, never crashes; grants resume with room", PROCESS_TEST, async (t) => {
  const logs = await tempDir(t);
  const ok = await withTmpfs(t, 4 * 1024 * 1024, async (mount) => {
    const storePath = path.join(mount, "store");
    await fsp.mkdir(storePath);
    const env = { ...process.env, H5NEST_LEASE_LOG: path.join(logs, "leases.jsonl") };
    const term = 1000; // the horizon moves every ~500 ms of grants
    const server = startChild(t, "server", "lease-client.mjs", [storePath, String(term)], env);
    assert.match(await server.waitFor((l) => l.startsWith("open "), "open"), /^open 1 /);
    const client = startChild(t, "client", "lease-client.mjs", [storePath, String(term)], env);
    assert.match(await client.waitFor((l) => l.startsWith("open "), "open"), /^open 0 /);
    client.send("acquire first");
    await client.waitFor((l) => l.startsWith("granted first "), "a grant");

    const filler = await leaveRoom(mount, 0);
    let refused: string | undefined;
    for (let i = 0; i < 40 && !refused; i++) {
      client.send(`acquire full${i}`);
      await sleep(100);
      refused = client.lines.find((l) => l.startsWith("error acquire "));
    }
    assert.ok(server.alive, `the serving process lives on\n${server.describe()}`);
    assert.ok(refused, `an acquire was refused once the state could not be written\n${client.describe()}\n${server.describe()}`);
    assert.match(refused, /^error acquire H5NEST_LOCK_UNAVAILABLE .*ENOSPC/, "typed, and says why");
    assert.match(server.stderr, /H5NEST_LEASE_SERVER.*ENOSPC/, "the serving process reports it");

    await fsp.rm(filler);
    client.send("acquire later");
    await client.waitFor((l) => l.startsWith("granted later "), "a grant once there is room", 10_000);
    assert.ok(server.alive);
    assertNoOverlappingLeases(leaseIntervals(readLeaseLog(env.H5NEST_LEASE_LOG)));
    for (const child of [client, server]) child.send("exit");
    for (const child of [client, server]) assert.equal((await child.closed).code, 0, `${child.name}\n${child.describe()}`);
  });
  void ok;
});

// ---------------------------------------------------------------------------
// 13. Every close() ends, with nothing left open

/** Connects to `name`; true when something accepts (a lease server still listening). */
function listening(name: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.createConnection(name);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

test("13. a store closed while it takes over the serving role leaves nothing listening (many times)", async (t) => {
  const dir = await tempDir(t);
  const leaks: string[] = [];
  const before = process.getActiveResourcesInfo().filter((r) => r.startsWith("Pipe")).length;
  for (let round = 0; round < 40; round++) {
    const root = path.join(dir, `store${round}`);
    const first = await H5NestedStore.open(root, { workers: 1, distributedLock: { leaseMs: 1000 } }); // serves
    const second = await H5NestedStore.open(root, { workers: 1, distributedLock: { leaseMs: 1000 } }); // a client
    // The serving store closes; the other one starts taking over at once and is closed meanwhile.
    const closing = first.close();
    await sleep(round % 8);
    await Promise.all([closing, second.close()]);
    await sleep(20);
    const { namespace, stateDir } = await storeLeases(root);
    const generations = fs.readdirSync(stateDir).filter((f) => /^server\.\d+\.json$/.test(f)).length;
    for (let generation = 1; generation <= generations + 3; generation++) {
      if (await listening(socketName(namespace, generation))) leaks.push(`round ${round}: generation ${generation} still listening`);
    }
  }
  await sleep(200); // the probing connections above finish closing
  const resources = process.getActiveResourcesInfo();
  const after = resources.filter((r) => r.startsWith("Pipe")).length;
  assert.deepEqual(leaks, [], "no lease server outlives the stores that closed");
  assert.ok(after <= before, `no pipe handle left open (${before} before, ${after} after: ${resources.join(", ")})`);
});

test("13. concurrent `h5nest consolidate --lock` jobs on one 256-shard store all exit, many times", { timeout: 300_000 }, async (t) => {
  const dir = await tempDir(t);
  const template = path.join(dir, "template");
  const spec: RawStoreSpec = { seed: 13, shardable: [{ path: "img", shape: [1, 1, 256, 2, 2], chunks: [1, 1, 1, 1, 1] }], rawOnly: [], preShards: [] };
  await buildWithH5nest(template, spec);
  const manifest = await recordManifest(template);
  const ROUNDS = Number(process.env.H5NEST_CLI_ROUNDS ?? 8);
  for (let round = 0; round < ROUNDS; round++) {
    const root = path.join(dir, `round${round}`);
    await fsp.cp(template, root, { recursive: true });
    const started = Date.now();
    const jobs = [0, 1].map(() => {
      const child = spawn(process.execPath, [CLI, "consolidate", root, "--lock", "--lease-ms", "2000", "--workers", "1", "--json"], { stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (text: string) => (stdout += text));
      child.stderr.setEncoding("utf8").on("data", (text: string) => (stderr += text));
      const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on("close", (code, signal) => resolve({ code, signal })));
      return { child, exit, output: () => ({ stdout: stdout.slice(-2000), stderr: stderr.slice(-2000) }) };
    });
    t.after(() => {
      for (const job of jobs) if (job.child.exitCode === null && job.child.signalCode === null) job.child.kill("SIGKILL");
    });
    for (const [i, job] of jobs.entries()) {
      const exit = await within(job.exit, 60_000, null);
      assert.ok(exit, `round ${round}: job ${i} (pid ${job.child.pid}) had not exited 60 s after it started: ${JSON.stringify(job.output())}`);
      assert.deepEqual(exit, { code: 0, signal: null }, `round ${round}: job ${i}: ${JSON.stringify(job.output())}`);
      assert.match(job.output().stdout, /"event":"summary"/, "it printed its summary");
    }
    const problems = await checkWithH5nest(root, manifest);
    assert.deepEqual(problems, [], `round ${round}: every key reads as before`);
    t.diagnostic(`round ${round}: both jobs exited ${Date.now() - started} ms after they started`);
  }
});
