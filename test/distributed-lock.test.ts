/**
 * distributedLock across real processes (DESIGN.md guarantee 4: one writer
 * per shard). Children under test/children/ open the same store with
 * `distributedLock`, the first one serving leases on an abstract Unix socket
 * named after the store's identity (helpers/lock-harness.ts holds the
 * harness); the serving process logs every grant, renewal and release (H5NEST_LEASE_LOG)
 * and worker threads log every commit (H5NEST_TRACE_FILE), both in
 * CLOCK_MONOTONIC nanoseconds, comparable across processes.
 *
 * Checked here, with kill -9, SIGSTOP and a fuzzer:
 *  - no two leases of one shard overlap, across servers and takeovers;
 *  - no two commits of one shard overlap, each inside a lease of its token;
 *  - every chunk ends with a write that no later-acknowledged write superseded;
 *  - a dead holder's shards are granted again only after its term;
 *  - bad frames get a typed refusal or close their connection only, the
 *    server keeps serving; a connection without a probe file is refused;
 *  - a writer paused past its term fails with a typed error and renames nothing;
 *  - servers handing over (clean close, crash, close during a takeover wait),
 *    and a store opened through a symlink, never let two owners coexist.
 * Plus pure unit tests of LeaseTable, FrameDecoder and parseRequest.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { describe, type TestContext, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  encodeFrame,
  FrameDecoder,
  LeaseTable,
  type LocalLeaseProvider,
  MAX_FRAME_BYTES,
  MAX_TERM_MS,
  PROTOCOL_VERSION,
  ProtocolError,
  parseRequest,
  SAFETY_MARGIN_MS,
  timeLeftMs,
} from "@h5nest/coordinator";
import { latestSocket, openProvider, RawClient, storeLeases } from "./helpers/leases.js";
import {
  assertFinalChunks,
  assertLogs,
  CHUNKS,
  type Child,
  hr,
  leaseIntervals,
  type LeaseInterval,
  assertNoOverlappingLeases,
  ms,
  ownerPid,
  readArray,
  readLeaseLog,
  SHAPE,
  scenario,
  show,
  startChild,
  stopChildren,
  writerConfig,
  writesOf,
} from "./helpers/lock-harness.js";
import { tempDir } from "./helpers/tmp.js";

// ---------------------------------------------------------------------------

/** Each process test gets its own limit (a suite-wide one would add them up). */
const PROCESS_TEST = { timeout: 60_000 };

describe("distributedLock across processes", () => {
  test("4 processes write overlapping regions: right bytes, exclusive leases and commits", PROCESS_TEST, async (t) => {
    const s = await scenario(t, SHAPE, CHUNKS);
    const writers = Array.from({ length: 4 }, (_, i) =>
      startChild(t, `writer${i + 1}`, "lock-writer.mjs", [writerConfig(s, { mode: "random", id: i + 1, writes: 12, concurrency: 2, leaseMs: 2000, pauseMs: 10, holdOpen: true })], s.env),
    );
    // All stay open until all have written: this test is about concurrent writers (the next one
    // hands the server over mid-run).
    for (const w of writers) await w.waitFor((l) => l.startsWith("written "), "written", 40_000);
    for (const w of writers) w.send("exit");
    for (const w of writers) await w.waitFor((l) => l.startsWith("done "), "done", 20_000);
    for (const w of writers) {
      const exit = await w.closed;
      assert.equal(exit.code, 0, `${w.name} exited ${show(exit)}\n${w.describe()}`);
    }

    const writes = writers.flatMap((w) => writesOf(w));
    const failed = writes.filter((w) => !w.acked);
    assert.deepEqual(failed.map((w) => `${w.child} ${w.value} ${w.failure}`), [], "every write was acknowledged");
    assert.equal(writes.length, 48);
    const { contested } = assertFinalChunks(await readArray(s.storePath), s, writes);
    assert.ok(contested >= 16, `processes wrote the same chunks (${contested} chunks written by several)`);

    const { events, shared } = assertLogs(s);
    assert.ok(shared >= 4, `shards were committed by several processes (${shared})`);
    const servers = new Set(events.map((e) => e.server));
    const handoffs: string[] = [];
    for (let i = 1; i < events.length; i++) {
      if (events[i]!.server !== events[i - 1]!.server) handoffs.push(`${ms(events[i]!.at - events[i - 1]!.at).toFixed(0)} ms`);
    }
    t.diagnostic(`${events.length} lease events from ${servers.size} server(s); pauses at clean handoffs: ${handoffs.join(", ") || "none"}`);
    assert.ok([...servers].every((pid) => writers.some((w) => w.pid === pid)), "a writer served the leases");
  });

  test("writers that finish at different times hand the lease server over cleanly while others write", PROCESS_TEST, async (t) => {
    const s = await scenario(t, SHAPE, CHUNKS);
    // Each closes its store when done. The first serves and finishes first, handing the leases
    // over while the others write; the next server does the same, and so on.
    const start = (writes: number, i: number) =>
      startChild(t, `writer${i + 1}`, "lock-writer.mjs", [writerConfig(s, { mode: "random", id: i + 1, writes, concurrency: 2, leaseMs: 2000, pauseMs: 10, gate: true })], s.env);
    const writers = [start(4, 0)];
    await writers[0]!.waitFor((l) => l.startsWith("ready "), "ready");
    writers.push(...[8, 12, 16].map((writes, i) => start(writes, i + 1)));
    for (const w of writers) await w.waitFor((l) => l.startsWith("ready "), "ready");
    for (const w of writers) w.send("go");
    for (const w of writers) await w.waitFor((l) => l.startsWith("done "), "done", 40_000);
    for (const w of writers) assert.equal((await w.closed).code, 0, `${w.name} exited badly\n${w.describe()}`);
    const writes = writers.flatMap((w) => writesOf(w));
    assert.deepEqual(writes.filter((w) => !w.acked).map((w) => `${w.child} ${w.value} ${w.failure}`), [], "every write was acknowledged");
    assertFinalChunks(await readArray(s.storePath), s, writes);
    const { events } = assertLogs(s);
    const servers: number[] = [];
    for (const e of events) if (servers.at(-1) !== e.server) servers.push(e.server);
    t.diagnostic(`servers in turn: ${servers.join(" → ")}`);
    assert.ok(servers.length >= 2, "the lease server changed hands while others wrote");
    for (let i = 1; i < servers.length; i++) {
      const before = writers.find((w) => w.pid === servers[i - 1]);
      assert.ok(before && before.count("done ") === 1, `server ${servers[i - 1]} handed over when its writer finished`);
    }
  });

  test("processes opening the store by different paths (a symlink) share its leases", PROCESS_TEST, async (t) => {
    const s = await scenario(t, SHAPE, CHUNKS);
    const link = path.join(s.dir, "link-to-store");
    fs.symlinkSync(s.storePath, link);
    const writers = Array.from({ length: 4 }, (_, i) =>
      startChild(
        t,
        `writer${i + 1}${i % 2 ? " (via link)" : ""}`,
        "lock-writer.mjs",
        [JSON.stringify({ store: i % 2 ? link : s.storePath, array: "img", workers: 1, mode: "random", id: i + 1, writes: 10, concurrency: 2, leaseMs: 2000, pauseMs: 10, gate: true, holdOpen: true })],
        s.env,
      ),
    );
    for (const w of writers) await w.waitFor((l) => l.startsWith("ready "), "ready");
    for (const w of writers) w.send("go");
    for (const w of writers) await w.waitFor((l) => l.startsWith("written "), "written", 40_000);
    for (const w of writers) w.send("exit");
    for (const w of writers) assert.equal((await w.closed).code, 0, `${w.name} exited badly\n${w.describe()}`);
    const writes = writers.flatMap((w) => writesOf(w));
    assert.deepEqual(writes.filter((w) => !w.acked).map((w) => `${w.child} ${w.value} ${w.failure}`), [], "every write was acknowledged");
    assertFinalChunks(await readArray(s.storePath), s, writes);
    const { events, commits } = assertLogs(s); // leases and commits compared by the shards' real paths
    assert.equal(new Set(events.map((e) => e.server)).size, 1, "one lease server for both paths");
    const viaLink = commits.filter((c) => writers.some((w, i) => i % 2 === 1 && w.pid === c.pid)).map((c) => c.owner);
    const direct = new Set(commits.filter((c) => writers.some((w, i) => i % 2 === 0 && w.pid === c.pid)).map((c) => c.owner));
    assert.ok(viaLink.filter((owner) => direct.has(owner)).length >= 4, "both kinds of writer committed the same shards");
  });

  test("kill -9 of the process serving leases: another takes over, nothing acknowledged is lost", PROCESS_TEST, async (t) => {
    const s = await scenario(t, SHAPE, CHUNKS);
    const writers = Array.from({ length: 4 }, (_, i) =>
      startChild(t, `writer${i + 1}`, "lock-writer.mjs", [writerConfig(s, { mode: "random", id: i + 1, writes: 12, concurrency: 2, leaseMs: 2000, pauseMs: 10, holdOpen: true })], s.env),
    );
    // Wait until every writer made progress and the server is known from the log.
    let server: Child | undefined;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const grant = readLeaseLog(s.leaseLog).find((e) => e.event === "grant");
      server = grant && writers.find((w) => w.pid === grant.server);
      // Kill once every writer is under way (or the server got far ahead of a slow starter).
      if (server && server.count("ack ") >= 3 && (writers.every((w) => w.count("ack ") >= 2) || server.count("ack ") >= 6)) break;
      await sleep(10);
    }
    assert.ok(server, "a writer serves the leases");
    assert.ok(server.alive && server.count("written ") === 0, "the server is still writing when it is killed");
    const killedAt = await server.kill9();
    const diedAt = server.exit!.at;
    const survivors = writers.filter((w) => w !== server);
    for (const w of survivors) await w.waitFor((l) => l.startsWith("written "), "written after the takeover", 40_000);
    for (const w of survivors) w.send("exit");
    for (const w of survivors) await w.waitFor((l) => l.startsWith("done "), "done", 20_000);
    for (const w of survivors) assert.equal((await w.closed).code, 0, `${w.name} exited badly\n${w.describe()}`);

    const writes = [...writesOf(server, diedAt), ...survivors.flatMap((w) => writesOf(w))];
    const failed = survivors.flatMap((w) => writesOf(w)).filter((w) => !w.acked);
    assert.deepEqual(failed.map((w) => `${w.child} ${w.value} ${w.failure}`), [], "the survivors' writes were all acknowledged");
    assertFinalChunks(await readArray(s.storePath), s, writes);

    const { events } = assertLogs(s);
    const old = events.filter((e) => e.server === server.pid);
    const successors = events.filter((e) => e.server !== server.pid && e.at > killedAt);
    assert.ok(old.length > 0 && old.every((e) => e.at < diedAt), "the killed server logged before it died");
    assert.ok(successors.length > 0, "a later log line names another server");
    assert.ok(successors.every((e) => survivors.some((w) => w.pid === e.server)), "a surviving writer took over");
    // The successor grants nothing before every lease of the dead server has expired.
    const lastExpiry = old.reduce((max, e) => (e.expires > max ? e.expires : max), 0n);
    const firstGrant = successors.find((e) => e.event === "grant")!;
    assert.ok(firstGrant.at >= lastExpiry, `the successor granted ${ms(lastExpiry - firstGrant.at)} ms before the dead server's leases expired`);
    const firstBegin = writers.flatMap((w) => writesOf(w)).reduce((min, w) => (w.begin < min ? w.begin : min), killedAt);
    t.diagnostic(
      `first write ${ms(killedAt - firstBegin).toFixed(0)} ms before the kill; successor ${firstGrant.server} granted ` +
        `${ms(firstGrant.at - killedAt).toFixed(0)} ms after it (dead leases ran ${ms(lastExpiry - killedAt).toFixed(0)} ms past it); ` +
        `survivors done ${ms(survivors.reduce((max, w) => (w.exit!.at > max ? w.exit!.at : max), 0n) - killedAt).toFixed(0)} ms after it`,
    );
    for (const w of survivors) {
      const acksAfter = writesOf(w).filter((x) => x.acked && x.end! > firstGrant.at).length;
      assert.ok(acksAfter > 0, `${w.name} wrote after the takeover`);
    }
  });

  test("kill -9 of a lease holder (LocalLeaseProvider): its shards are granted again only after its term", PROCESS_TEST, async (t) => {
    const s = await scenario(t, SHAPE, CHUNKS);
    const term = 1500;
    const server = startChild(t, "server", "lease-client.mjs", [s.storePath, String(term)], s.env);
    assert.match(await server.waitFor((l) => l.startsWith("open "), "open"), /^open 1 /, "the first process serves");
    const holder = startChild(t, "holder", "lease-client.mjs", [s.storePath, String(term)], s.env);
    const waiter = startChild(t, "waiter", "lease-client.mjs", [s.storePath, String(term)], s.env);
    assert.match(await holder.waitFor((l) => l.startsWith("open "), "open"), /^open 0 /);
    assert.match(await waiter.waitFor((l) => l.startsWith("open "), "open"), /^open 0 /);
    for (const shard of ["s/a", "s/b"]) holder.send(`acquire ${shard} renew`);
    await holder.waitFor((l) => l.startsWith("granted s/a "), "grant of s/a");
    await holder.waitFor((l) => l.startsWith("granted s/b "), "grant of s/b");
    await holder.waitFor((l) => l.startsWith("renewed s/a "), "a renewal", 5000);
    waiter.send("acquire s/a"); // queued at the server behind the holder
    await sleep(200 + Math.random() * 300);
    assert.equal(waiter.count("granted "), 0, "s/a is not granted while its holder lives");

    const poker = await startPoker(s.storePath, ["s/a", "s/b"]);
    const killedAt = await holder.kill9();
    waiter.send("acquire s/b"); // asked only after the death
    const grants = new Map<string, bigint>();
    for (const shard of ["s/a", "s/b"]) {
      const line = await waiter.waitFor((l) => l.startsWith(`granted ${shard} `), `grant of ${shard}`, 10_000);
      grants.set(shard, BigInt(line.split(" ")[4]!));
    }
    await poker.stop();

    const events = readLeaseLog(s.leaseLog);
    const intervals = leaseIntervals(events);
    assertNoOverlappingLeases(intervals);
    assert.ok(events.every((e) => e.server === server.pid), "one server throughout");
    for (const shard of ["s/a", "s/b"]) {
      const dead = [...intervals.values()].filter((i) => i.shard === shard && ownerPid(i.owner) === holder.pid);
      assert.equal(dead.length, 1);
      assert.ok(!dead[0]!.released, "the holder never released");
      const expires = dead[0]!.end;
      const next = [...intervals.values()].find((i) => i.shard === shard && ownerPid(i.owner) === waiter.pid)!;
      assert.ok(next.start >= expires, `${shard} granted again ${ms(expires - next.start)} ms before the dead holder's lease expired`);
      const remaining = ms(expires - killedAt);
      const waited = ms(grants.get(shard)! - killedAt);
      assert.ok(remaining > 300, `the holder had ${remaining} ms of its term left (renewed every ${term / 3} ms)`);
      assert.ok(waited >= remaining - 5, `${shard}: the waiter got it ${waited} ms after the kill, before the ${remaining} ms left of the term`);
      assert.ok(waited <= remaining + 1000, `${shard}: granted ${waited - remaining} ms after the term ran out`);
      t.diagnostic(`${shard}: ${remaining.toFixed(0)} ms of the term left at the kill, granted to the waiter ${waited.toFixed(0)} ms after it`);
    }
    server.send("exit");
    waiter.send("exit");
    assert.equal((await server.closed).code, 0);
  });

  test("kill -9 of a store writer holding a lease: its shards wait out the term", PROCESS_TEST, async (t) => {
    const s = await scenario(t, SHAPE, CHUNKS);
    const term = 1500;
    const server = startChild(t, "server", "lease-client.mjs", [s.storePath, String(term)], s.env);
    assert.match(await server.waitFor((l) => l.startsWith("open "), "open"), /^open 1 /);
    const next = startChild(t, "next", "lock-writer.mjs", [writerConfig(s, { mode: "commands", leaseMs: term })], s.env);
    await next.waitFor((l) => l.startsWith("ready "), "ready");

    // Kill a continuously writing process at a moment the log shows it holding a lease.
    let victim: Child | undefined;
    let killedAt = 0n;
    let held: LeaseInterval[] = [];
    for (let attempt = 1; attempt <= 4 && held.length === 0; attempt++) {
      victim = startChild(t, `victim${attempt}`, "lock-writer.mjs", [writerConfig(s, { mode: "random", id: attempt, writes: 100_000, concurrency: 2, leaseMs: term, workers: 2 })], s.env);
      await victim.waitFor((l) => l.startsWith("ack "), "a first write", 20_000);
      const until = Date.now() + 5000;
      while (Date.now() < until) {
        const live = new Map<number, boolean>();
        for (const e of readLeaseLog(s.leaseLog)) {
          if (ownerPid(e.owner) !== victim.pid) continue;
          if (e.event === "grant") live.set(e.token, true);
          else if (e.event === "release") live.delete(e.token);
        }
        if (live.size > 0) break;
        await sleep(1);
      }
      killedAt = await victim.kill9();
      held = [...leaseIntervals(readLeaseLog(s.leaseLog)).values()].filter((i) => ownerPid(i.owner) === victim!.pid && !i.released && i.end > killedAt);
    }
    assert.ok(victim && held.length > 0, "the victim died holding a lease");
    t.diagnostic(`victim ${victim.name} killed holding ${held.length} lease(s)`);

    const poker = await startPoker(s.storePath, held.map((i) => i.shard));
    next.send(`write 7 ${JSON.stringify(s.shape.map((n, axis) => [0, n / s.chunks[axis]!]))}`);
    const ack = await next.waitFor((l) => l.startsWith("ack 7 ") || l.startsWith("fail 7 "), "the whole-array write", 15_000);
    await poker.stop();
    assert.match(ack, /^ack 7 /);
    const acked = BigInt(ack.split(" ")[2]!);

    assertLogs(s);
    const intervals = leaseIntervals(readLeaseLog(s.leaseLog)); // the names the server used, like `held`
    const latest = held.reduce((max, i) => (i.end > max ? i.end : max), 0n);
    for (const lease of held) {
      const regrant = [...intervals.values()].find((i) => i.shard === lease.shard && ownerPid(i.owner) === next.pid);
      assert.ok(regrant, `${lease.shard} was granted to the next writer`);
      assert.ok(regrant.start >= lease.end, `${lease.shard} granted ${ms(lease.end - regrant.start)} ms before the dead writer's lease expired`);
    }
    const remaining = ms(latest - killedAt);
    assert.ok(remaining > 200, `the dead writer's lease had ${remaining} ms left`);
    t.diagnostic(`${remaining.toFixed(0)} ms of the term left at the kill; the next whole-array write finished ${ms(acked - killedAt).toFixed(0)} ms after it`);
    assert.ok(ms(acked - killedAt) >= remaining - 5, `the next write finished ${ms(acked - killedAt)} ms after the kill, within the ${remaining} ms left`);
    const data = await readArray(s.storePath);
    assert.ok(data.every((v) => v === 7), "the next writer's data is everywhere");
    next.send("exit");
    server.send("exit");
    assert.equal((await next.closed).code, 0, next.describe());
  });
});

// ---------------------------------------------------------------------------
// Fuzzing the lease server

/**
 * A bad frame, what it is, and what the server must do: close the connection
 * after `replies` answers, or (`stays`: a well-formed request with a bad
 * field, which has an id to answer) refuse it, typed, and keep the connection.
 */
type Corrupt = { bytes: Buffer[]; end: boolean; replies: number; kind: string; stays?: boolean };

const frame = (message: Record<string, unknown>): Buffer => encodeFrame(message as never);

function rawFrame(body: Buffer, length = body.length): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(length >>> 0, 0);
  return Buffer.concat([head, body]);
}

/** An owner string that makes the msgpack body of `message` exactly `bodyBytes` long. */
function ownerFilling(message: Record<string, unknown>, bodyBytes: number): string {
  let length = bodyBytes - 40;
  for (let i = 0; i < 10; i++) {
    const size = encodeFrame({ ...message, owner: "o".repeat(length) } as never).length - 4;
    if (size === bodyBytes) return "o".repeat(length);
    length += bodyBytes - size;
  }
  throw new Error("no owner length fills the frame exactly");
}

function pick<T>(list: readonly T[]): T {
  return list[Math.floor(Math.random() * list.length)]!;
}

function randomBytes(n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(Math.random() * 256);
  return out;
}

const MISSING = Symbol("missing");

function validRequest(op: string): Record<string, unknown> {
  const base = { v: 1, id: 1 + Math.floor(Math.random() * 1000), owner: "fuzz:0:0" };
  if (op === "hello") return { ...base, op };
  if (op === "acquire") return { ...base, op, shard: `fuzz/${Math.random()}`, termMs: 1000 };
  if (op === "renew") return { ...base, op, shard: "fuzz/x", token: 5, termMs: 1000 };
  return { ...base, op: "release", shard: "fuzz/x", token: 5 };
}

/** Fields each op checks, with values that must be refused. */
const BAD_FIELDS: Record<string, unknown[]> = {
  v: [0, 2, "1", null, 1.5, true, [1], MISSING, PROTOCOL_VERSION + 1],
  id: [-1, 1.5, "1", null, MISSING, 2 ** 53, true, Number.NaN, {}],
  owner: ["", 5, "o".repeat(257), null, MISSING, ["a"], { a: 1 }],
  shard: ["", 9, "s".repeat(4097), null, MISSING, { a: 1 }, [1]],
  termMs: [99, MAX_TERM_MS + 1, "2000", 1.5, -5, MISSING, Number.POSITIVE_INFINITY, null],
  token: [0, -1, "3", 1.5, MISSING, 2 ** 53, null],
  op: ["grab", "", "ACQUIRE", 7, null, MISSING, "__proto__", "constructor", "toString", ["hello"]],
};
const FIELDS_OF: Record<string, string[]> = {
  hello: ["v", "id", "owner", "op"],
  acquire: ["v", "id", "owner", "op", "shard", "termMs"],
  renew: ["v", "id", "owner", "op", "shard", "token", "termMs"],
  release: ["v", "id", "owner", "op", "shard", "token"],
};

/** One bad frame of a random kind, and what the server must do with it. */
function badFrame(): Corrupt {
  const kind = pick(["zero", "oversized", "field", "field", "field", "nonmap", "undecodable", "trailing", "maxsize", "truncated", "garbage", "split-oversized", "after-hello"]);
  switch (kind) {
    case "zero":
      return { kind, bytes: [Buffer.concat([Buffer.alloc(4), randomBytes(Math.floor(Math.random() * 8))])], end: false, replies: 0 };
    case "oversized": {
      const length = MAX_FRAME_BYTES + 1 + Math.floor(Math.random() * (2 ** 32 - MAX_FRAME_BYTES - 2));
      return { kind, bytes: [rawFrame(randomBytes(Math.floor(Math.random() * 64)), Math.random() < 0.3 ? MAX_FRAME_BYTES + 1 : length)], end: false, replies: 0 };
    }
    case "split-oversized": {
      const bytes = rawFrame(Buffer.alloc(0), 0xffffffff);
      return { kind, bytes: [...bytes].map((b) => Buffer.from([b])), end: false, replies: 0 };
    }
    case "field": {
      const op = pick(Object.keys(FIELDS_OF));
      const request = validRequest(op);
      const name = pick(FIELDS_OF[op]!);
      const value = pick(BAD_FIELDS[name]!);
      if (value === MISSING) delete request[name];
      else request[name] = value;
      // Without a valid version and id there is nothing to answer: the connection closes.
      const stays = name !== "v" && name !== "id";
      return { kind: `${kind}:${op}.${name}=${String(value === MISSING ? "missing" : JSON.stringify(value))}`, bytes: [frame(request)], end: false, replies: stays ? 1 : 0, stays };
    }
    case "nonmap": {
      const value = pick([[1, "acquire"], "hello", 42, null, true, Buffer.from("xx"), [validRequest("hello")]]);
      return { kind, bytes: [frame(value as never)], end: false, replies: 0 };
    }
    case "undecodable": {
      const body = pick([
        Buffer.from([0xd4, 0x05, 0x00]), // unknown extension
        Buffer.alloc(2000, 0x91), // arrays nested 2000 deep, the last one truncated
        Buffer.alloc(16_000, 0x91), // nested deeper than the stack
        Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]), // array32 of 4G elements, none present
        Buffer.from([0xdf, 0xff, 0xff, 0xff, 0xff]), // map32 likewise
        Buffer.from([0xdb, 0xff, 0xff, 0xff, 0xff, 0x61]), // str32 longer than the frame
        Buffer.from([0x81, 0x91, 0x01, 0x01]), // a map with an array key
        frame(validRequest("acquire")).subarray(4, 12), // a request cut short inside its own frame
      ]);
      return { kind, bytes: [rawFrame(body)], end: false, replies: 0 };
    }
    case "trailing": {
      const body = frame(validRequest("hello")).subarray(4);
      return { kind, bytes: [rawFrame(Buffer.concat([body, randomBytes(1 + Math.floor(Math.random() * 8))]))], end: false, replies: 0 };
    }
    case "maxsize": {
      // A frame of exactly MAX_FRAME_BYTES (accepted as a frame) whose owner is far too long.
      const bytes = frame({ v: 1, id: 1, op: "hello", owner: ownerFilling({ v: 1, id: 1, op: "hello" }, MAX_FRAME_BYTES) });
      assert.equal(bytes.length, 4 + MAX_FRAME_BYTES);
      return { kind, bytes: [bytes], end: false, replies: 1, stays: true };
    }
    case "truncated": {
      // Cannot be told from a slow client until the peer ends: then the server must close too.
      const whole = frame(validRequest(pick(Object.keys(FIELDS_OF))));
      return { kind, bytes: [whole.subarray(0, 1 + Math.floor(Math.random() * (whole.length - 1)))], end: true, replies: 0 };
    }
    case "garbage":
      return { kind, bytes: [randomBytes(1 + Math.floor(Math.random() * 64))], end: true, replies: 0 };
    default: {
      // A good hello (answered: refused without a probe), then a bad frame on the same connection.
      const bad = badFrame();
      if (bad.end || bad.replies) return bad;
      return { kind: `hello+${bad.kind}`, bytes: [frame(validRequest("hello")), ...bad.bytes], end: false, replies: 1 };
    }
  }
}

/**
 * Sends `bad` on a new connection (after the answer to a leading good
 * request, if any); resolves with the replies once the connection closed
 * ("closed"), or for a refusal that keeps it, once answered ("answered").
 */
function sendBad(socketPath: string, bad: Corrupt): Promise<{ replies: Record<string, unknown>[]; outcome: "closed" | "answered" | "left open" | "no connection" | "bad reply" }> {
  return new Promise((resolve) => {
    const socket = net.createConnection(socketPath);
    const decoder = new FrameDecoder();
    const replies: Record<string, unknown>[] = [];
    let connected = false;
    let outcome: "closed" | "answered" | "left open" | "no connection" | "bad reply" | null = null;
    let onReply: (() => void) | null = null;
    const timer = setTimeout(() => {
      outcome ??= "left open";
      socket.destroy();
    }, 3000);
    socket.on("data", (chunk: Buffer) => {
      try {
        replies.push(...(decoder.push(chunk) as Record<string, unknown>[]));
      } catch {
        outcome ??= "bad reply";
        socket.destroy();
      }
      onReply?.();
    });
    socket.on("error", () => {}); // ECONNRESET when the server destroys the connection
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ replies, outcome: outcome ?? (connected ? "closed" : "no connection") });
    });
    socket.once("connect", async () => {
      connected = true;
      let pieces = bad.bytes;
      if (bad.replies > 0) {
        socket.write(pieces[0]!);
        pieces = pieces.slice(1);
        await new Promise<void>((next) => {
          onReply = () => replies.length >= bad.replies && next();
          onReply();
        });
      }
      for (const piece of pieces) {
        if (socket.destroyed) return;
        socket.write(piece);
        if (pieces.length > 1) await sleep(0);
      }
      if (bad.end && !socket.destroyed) socket.end();
      if (bad.stays && !socket.destroyed) {
        await new Promise<void>((next) => {
          onReply = () => replies.length >= bad.replies && next();
          onReply();
        });
        outcome ??= "answered";
        socket.destroy();
      }
    });
  });
}

/**
 * Makes the server re-examine `shards` every 20 ms (a release with a token
 * nobody holds is refused but makes the server serve that shard's queue), so
 * that a lease the server frees too early is granted early, not at the timer
 * the server armed for its expiry.
 */
async function startPoker(storePath: string, shards: string[]): Promise<{ stop(): Promise<void> }> {
  const client = await RawClient.toStore(storePath);
  let running = true;
  const loop = (async () => {
    while (running && !client.closed) {
      await Promise.all(shards.map((shard) => client.request({ v: 1, op: "release", owner: "poker:0:0", shard, token: 1 })));
      await sleep(20);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      client.close();
    },
  };
}

test("fuzzing the lease server: each bad frame is refused (typed) or closes its connection only; grants go on", { timeout: 60_000 }, async (t) => {
  const s = await scenario(t, SHAPE, CHUNKS);
  const server = startChild(t, "server", "lock-writer.mjs", [writerConfig(s, { mode: "commands", leaseMs: 2000 })], s.env);
  await server.waitFor((l) => l.startsWith("ready "), "ready");
  const writer = startChild(t, "writer", "lock-writer.mjs", [writerConfig(s, { mode: "random", id: 2, writes: 100_000, concurrency: 2, leaseMs: 2000, pauseMs: 5 })], s.env);
  await writer.waitFor((l) => l.startsWith("ack "), "a first write");
  const leases = await storeLeases(s.storePath);
  const socketPath = await latestSocket(s.storePath);
  // A connection must first prove, with a probe file, that it can write this store's lease folder.
  const stranger = await RawClient.connect(socketPath);
  for (const request of [validRequest("acquire"), validRequest("renew"), validRequest("release"), validRequest("hello")]) {
    const reply = await stranger.request(request);
    assert.equal(reply.ok, false, `${request.op} without a probe is refused`);
    assert.equal(reply.code, "H5NEST_LEASE_REFUSED");
  }
  const foreign = await stranger.request({ ...validRequest("hello"), probe: `probe.${"0".repeat(32)}` });
  assert.equal(foreign.code, "H5NEST_LEASE_NAMESPACE", "a probe the server cannot see: another store with this identity");
  stranger.close();

  // A well-behaved connection that keeps talking during the whole fuzz run.
  const good = await RawClient.connect(socketPath, leases);
  let goodReplies = 0;
  let fuzzing = true;
  const chatter = (async () => {
    while (fuzzing) {
      const reply = await good.request({ v: 1, op: "hello", owner: "good:0:0" });
      assert.equal(reply.ok, true);
      goodReplies += 1;
      await sleep(20);
    }
  })();

  const FRAMES = 1200;
  const CONNECTIONS = 16;
  const fuzzStart = hr();
  let sent = 0;
  const failures: string[] = [];
  const kinds = new Map<string, number>();
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      // At least FRAMES frames, and for long enough to see the store writer's grants go on.
      while ((sent < FRAMES || ms(hr() - fuzzStart) < 1500) && failures.length < 20) {
        sent += 1;
        const bad = badFrame();
        const family = bad.kind.split(":")[0]!;
        kinds.set(family, (kinds.get(family) ?? 0) + 1);
        const { outcome, replies } = await sendBad(socketPath, bad);
        if (outcome !== (bad.stays ? "answered" : "closed")) failures.push(`${bad.kind}: ${outcome}`);
        else if (replies.length !== bad.replies) failures.push(`${bad.kind}: ${replies.length} replies: ${JSON.stringify(replies)}`);
        else if (bad.stays && (replies.at(-1)!.ok !== false || replies.at(-1)!.code !== "H5NEST_LEASE_REFUSED")) {
          failures.push(`${bad.kind}: not a typed refusal: ${JSON.stringify(replies.at(-1))}`);
        }
      }
    }),
  );
  const fuzzEnd = hr();
  fuzzing = false;
  await chatter;
  assert.deepEqual(failures.slice(0, 10), [], `${failures.length} bad frames were not refused`);
  assert.ok(sent >= 1000, `${sent} bad frames sent`);
  t.diagnostic(`${sent} bad frames on ${CONNECTIONS} connections in ${ms(fuzzEnd - fuzzStart).toFixed(0)} ms: ${show(Object.fromEntries(kinds))}`);
  for (const family of ["zero", "oversized", "field", "nonmap", "undecodable", "truncated", "after-hello", "maxsize"]) {
    assert.ok([...kinds.keys()].some((k) => k.startsWith(family) || (family === "after-hello" && k.startsWith("hello+"))), `no ${family} frame was sent`);
  }

  // The good connection stayed open and answered throughout.
  assert.equal(good.closed, false, "the well-behaved connection was not closed");
  assert.ok(goodReplies >= 5, `the good connection got ${goodReplies} replies during the fuzzing`);
  assert.equal((await good.request({ v: 1, op: "hello", owner: "good:0:0" })).ok, true);

  // The store writer kept getting grants while the fuzzer ran.
  const acks = writesOf(writer)
    .filter((w) => w.acked)
    .map((w) => w.end!)
    .sort((a, b) => (a < b ? -1 : 1));
  const during = acks.filter((a) => a >= fuzzStart && a <= fuzzEnd);
  assert.ok(during.length >= 3, `the store writer finished ${during.length} writes during ${ms(fuzzEnd - fuzzStart)} ms of fuzzing`);
  let last = fuzzStart;
  for (const a of [...during, fuzzEnd]) {
    assert.ok(ms(a - last) < 2500, `the store writer stalled ${ms(a - last)} ms during the fuzzing`);
    last = a;
  }
  const grantsDuring = readLeaseLog(s.leaseLog).filter((e) => e.event === "grant" && e.at >= fuzzStart && e.at <= fuzzEnd && ownerPid(e.owner) === writer.pid);
  assert.ok(grantsDuring.length >= 3, "the server granted leases during the fuzzing");

  // Afterwards the same server process is alive and serves.
  assert.ok(server.alive, `the server died\n${server.describe()}`);
  process.kill(server.pid, 0);
  const fresh = await RawClient.connect(socketPath, leases);
  const hello = await fresh.request({ v: 1, op: "hello", owner: "after:0:0" });
  assert.equal(hello.ok, true);
  const grant = await fresh.request({ v: 1, op: "acquire", owner: "after:0:0", shard: "fuzz/after", termMs: 1000 });
  assert.equal(grant.ok, true);
  assert.equal(typeof grant.token, "number");
  assert.equal((await fresh.request({ v: 1, op: "release", owner: "after:0:0", shard: "fuzz/after", token: grant.token })).ok, true);
  fresh.close();
  good.close();
  server.send(`write 9 ${JSON.stringify(s.shape.map((n, axis) => [0, n / s.chunks[axis]!]))}`);
  assert.match(await server.waitFor((l) => l.startsWith("ack 9 ") || l.startsWith("fail 9 "), "a write after the fuzzing"), /^ack 9 /);
  const events = readLeaseLog(s.leaseLog);
  assert.ok(events.every((e) => e.server === server.pid), "no takeover: the first server served throughout");
  assertNoOverlappingLeases(leaseIntervals(events));
  await writer.kill9();
  server.send("exit");
  assert.equal((await server.closed).code, 0, server.describe());
});

// ---------------------------------------------------------------------------
// A writer suspended past its term

test("a writer paused (SIGSTOP) mid-commit past its lease fails with a typed error and renames nothing", { timeout: 60_000 }, async (t) => {
  // One shard of 32 chunks of 256 KiB: a whole-shard commit writes 8 MiB, long enough to be caught in.
  const s = await scenario(t, [1, 1, 1, 1024, 2048], [1, 1, 1, 256, 256]);
  const whole = JSON.stringify(s.shape.map((n, axis) => [0, n / s.chunks[axis]!]));
  const fresh = startChild(t, "fresh", "lock-writer.mjs", [writerConfig(s, { mode: "commands", leaseMs: 1000 })], s.env);
  await fresh.waitFor((l) => l.startsWith("ready "), "ready");
  fresh.send(`write 1 ${whole}`); // the fresh writer serves the leases and creates the shard
  const stale = startChild(t, "stale", "lock-writer.mjs", [writerConfig(s, { mode: "commands", leaseMs: 1000 })], s.env);
  await fresh.waitFor((l) => l.startsWith("ack 1 "), "first write");
  await stale.waitFor((l) => l.startsWith("ready "), "ready");
  assert.ok(readLeaseLog(s.leaseLog).every((e) => e.server === fresh.pid), "the fresh writer serves (the stale one must not)");

  const shardFolder = path.join(s.storePath, "img", "0", "0");
  const shardFile = path.join(shardFolder, "0.h5");
  assert.ok(fs.existsSync(shardFile));
  let caught: string | null = null;
  let value = 100;
  for (let attempt = 0; attempt < 6 && !caught; attempt++) {
    value += 1;
    const stopped = new Promise<string | null>((resolve) => {
      const watcher = fs.watch(shardFolder, (_event, name) => {
        if (!name || !/^0\.h5\.[0-9a-f]{32}\.partial$/.test(name) || !stale.alive) return;
        stale.signal("SIGSTOP");
        watcher.close();
        // The signal lands a moment later, and a commit writes its shard in a few large
        // writes: only a writer seen stopped with its temporary file still there was caught.
        waitUntilStopped(stale.pid);
        resolve(fs.existsSync(path.join(shardFolder, name)) ? name : null);
      });
      stale.waitFor((l) => l.startsWith(`ack ${value} `) || l.startsWith(`fail ${value} `), "its write", 20_000).then(
        () => {
          watcher.close();
          resolve(null);
        },
        () => resolve(null),
      );
    });
    stale.send(`write ${value} ${whole}`);
    caught = await stopped;
    if (!caught) {
      // Stopped after the rename (or not at all): let it finish and try again.
      stale.signal("SIGCONT");
      await stale.waitFor((l) => l.startsWith(`ack ${value} `) || l.startsWith(`fail ${value} `), "its write");
    }
  }
  assert.ok(caught, "the stale writer was stopped inside a commit, before its rename");
  t.diagnostic(`stopped inside a commit at attempt ${value - 100}`);
  const stoppedAt = hr();

  // The lease runs out while the stale writer sleeps; the fresh writer gets it and writes newer data.
  fresh.send(`write 2 ${whole}`);
  const ack = await fresh.waitFor((l) => l.startsWith("ack 2 ") || l.startsWith("fail 2 "), "the newer write", 15_000);
  assert.match(ack, /^ack 2 /);
  t.diagnostic(`the newer write finished ${ms(BigInt(ack.split(" ")[2]!) - stoppedAt).toFixed(0)} ms after the stop`);
  await sleep(100);
  stale.signal("SIGCONT");
  const outcome = await stale.waitFor((l) => l.startsWith(`ack ${value} `) || l.startsWith(`fail ${value} `), "the stale write's outcome", 15_000);
  assert.match(outcome, new RegExp(`^fail ${value} \\d+ (H5NEST_LEASE_EXPIRED|H5NEST_LEASE_LOST) `), "the stale commit fails with a typed lease error");

  assert.ok(!fs.existsSync(path.join(shardFolder, caught)), "the stale commit removed its temporary file");
  assert.deepEqual(
    fs.readdirSync(shardFolder).filter((f) => f.endsWith(".partial")),
    [],
    "no temporary file is left",
  );
  const data = await readArray(s.storePath);
  const wrong = data.findIndex((v) => v !== 2);
  assert.equal(wrong, -1, `element ${wrong} holds ${data[wrong]}, not the newer write's 2`);

  const intervals = leaseIntervals(readLeaseLog(s.leaseLog));
  assertNoOverlappingLeases(intervals);
  const staleLeases = [...intervals.values()].filter((i) => ownerPid(i.owner) === stale.pid);
  const newer = [...intervals.values()].filter((i) => ownerPid(i.owner) === fresh.pid).at(-1)!;
  assert.ok(staleLeases.every((i) => i.end <= newer.start), "the newer lease began after the stale one ended");
  fresh.send("exit");
  stale.send("exit");
  assert.equal((await fresh.closed).code, 0, fresh.describe());
  assert.equal((await stale.closed).code, 0, stale.describe());
});

// ---------------------------------------------------------------------------
// Lease servers handing over (in this process: several providers of one store)

/** Opens LocalLeaseProviders of one store in this process; closes them and removes the lease files after the test. */
async function providerFactory(t: TestContext): Promise<((termMs: number) => Promise<LocalLeaseProvider>) & { storeRoot: string }> {
  const open: LocalLeaseProvider[] = [];
  // Registered before the temp folder's removal: providers close first. Their state lives in the store.
  t.after(async () => {
    for (const provider of open.reverse()) await provider.close();
  });
  const dir = await tempDir(t, "h5nest-dlock-");
  const factory = async (termMs: number) => {
    const provider = await openProvider(dir, termMs);
    open.push(provider);
    return provider;
  };
  return Object.assign(factory, { storeRoot: dir });
}

test("a cleanly closed lease server hands over: its successor grants nothing before its leases end", { timeout: 20_000 }, async (t) => {
  const open = await providerFactory(t);
  const term = 1500;
  const first = await open(term);
  const holder = await open(term);
  const lease = await holder.acquire("s");
  const grantedAt = hr();
  await holder.close(); // leaves without releasing
  await first.close();
  const next = await open(term);
  assert.ok(next.serving, "the next process to open serves");
  const [again, other] = await Promise.all([next.acquire("s"), next.acquire("t")]);
  const after = ms(hr() - grantedAt);
  assert.ok(again.token > lease.token && other.token > lease.token, "tokens grow across servers");
  assert.ok(after >= term - SAFETY_MARGIN_MS, `granted again ${after.toFixed(0)} ms after a ${term} ms lease`);
  assert.ok(after <= term + 1000, `a clean stop records when its leases end: the successor waited ${after.toFixed(0)} ms`);
});

test("a lease server closed during its wait after a clean handover keeps the handed-over lease for the next server", { timeout: 20_000 }, async (t) => {
  const open = await providerFactory(t);
  const term = 1500;
  const first = await open(term);
  assert.ok(first.serving);
  const holder = await open(term);
  const lease = await holder.acquire("s");
  const grantedAt = hr();
  await holder.close(); // leaves without releasing: the lease lives on until its term ends
  await first.close(); // a clean stop records that lease
  const waiting = await open(term);
  assert.ok(waiting.serving, "the next process to open serves");
  await waiting.close(); // and closes again before that lease ended
  const next = await open(term);
  const again = await next.acquire("s");
  const after = ms(hr() - grantedAt);
  assert.ok(
    after >= term - SAFETY_MARGIN_MS,
    `"s" granted again (token ${again.token}) ${after.toFixed(0)} ms after token ${lease.token} was granted for ${term} ms: two owners at once`,
  );
});

test("a lease server closed during its takeover wait after a crash keeps the crashed server's leases out", { timeout: 20_000 }, async (t) => {
  t.after(() => stopChildren(t)); // first of the after-hooks
  const open = await providerFactory(t);
  const storeRoot = open.storeRoot;
  const dir = await tempDir(t, "h5nest-dlock-");
  const leaseLog = path.join(dir, "leases.jsonl");
  const term = 1000;
  const crashed = startChild(t, "crashed", "lease-client.mjs", [storeRoot, String(term)], { ...process.env, H5NEST_LEASE_LOG: leaseLog });
  assert.match(await crashed.waitFor((l) => l.startsWith("open "), "open"), /^open 1 /);
  crashed.send("acquire s renew");
  await crashed.waitFor((l) => l.startsWith("renewed s "), "a renewal");
  await crashed.kill9(); // the server dies holding (its own) lease on "s"
  const expires = leaseIntervals(readLeaseLog(leaseLog)).values().next().value!.end;

  const waiting = await open(term);
  assert.ok(waiting.serving, "the next process to open serves, and waits out the crashed server's leases");
  await waiting.close(); // its store closes before that wait is over
  const next = await open(term);
  assert.ok(next.serving);
  let grantedAt: bigint | null = null;
  const acquiring = next.acquire("s").then(
    () => void (grantedAt = hr()),
    () => {},
  );
  while (hr() < expires + 50_000_000n && grantedAt === null) await sleep(10);
  assert.equal(grantedAt === null ? null : `${ms(expires - grantedAt!).toFixed(0)} ms early`, null, '"s" was granted again before the crashed server\'s lease expired');
  void acquiring;
});

test("a lease granted for less than asked says so (Lease.termMs), and renewing every termMs/3 of it keeps it", { timeout: 20_000 }, async (t) => {
  const open = await providerFactory(t);
  // The first opener serves and caps terms at its own 1000 ms; the second asks for 4500 ms.
  const first = await open(1000);
  const second = await open(4500);
  assert.ok(first.serving && !second.serving);
  const lease = await second.acquire("shard");
  const granted = (lease as { termMs?: number }).termMs;
  // The store renews every lease.termMs / 3 (store.ts execute); a lease must say what it got.
  assert.equal(granted, 1000, "the lease reports the term the server granted, not the one asked");
  const left = timeLeftMs(lease);
  assert.ok(left > 1000 - SAFETY_MARGIN_MS - 50 && left <= 1000 - SAFETY_MARGIN_MS, `${left.toFixed(0)} ms left`);
  for (let i = 0; i < 4; i++) {
    await sleep(granted / 3);
    await second.renew(lease); // throws LeaseLostError once the lease lapsed
  }
  assert.ok(timeLeftMs(lease) > 500, "renewals keep moving the deadline");
});

// ---------------------------------------------------------------------------
// Pure units

describe("LeaseTable", () => {
  test("one grant per shard until it expires or is released; tokens grow", () => {
    const table = new LeaseTable(1000);
    const a = table.tryGrant("s", "A", 100, 0)!;
    assert.ok(a.token > 1000);
    assert.equal(a.expiresAt, 100);
    assert.equal(table.tryGrant("s", "B", 100, 50), null, "held");
    assert.equal(table.tryGrant("s", "A", 100, 99), null, "held, even for its owner");
    assert.equal(table.holder("s", 99)?.owner, "A");
    assert.equal(table.holder("s", 100), undefined, "expired exactly at expiresAt");
    const b = table.tryGrant("s", "B", 100, 100)!;
    assert.ok(b.token > a.token);
    const other = table.tryGrant("t", "A", 100, 100)!;
    assert.ok(other.token > b.token, "tokens grow across shards");
  });

  test("renew extends only the live grant of the same owner and token", () => {
    const table = new LeaseTable(0);
    const a = table.tryGrant("s", "A", 100, 0)!;
    assert.equal(table.renew("s", "A", a.token + 1, 100, 10), null, "wrong token");
    assert.equal(table.renew("s", "B", a.token, 100, 10), null, "wrong owner");
    assert.equal(table.renew("t", "A", a.token, 100, 10), null, "wrong shard");
    assert.equal(table.renew("s", "A", a.token, 100, 90)?.expiresAt, 190);
    assert.equal(table.holder("s", 150)?.token, a.token);
    assert.equal(table.renew("s", "A", a.token, 100, 190), null, "expired leases are not revived");
    assert.equal(table.holder("s", 190), undefined);
    const b = table.tryGrant("s", "B", 100, 200)!;
    assert.equal(table.renew("s", "A", a.token, 100, 210), null, "a stale holder cannot renew over the new one");
    assert.equal(table.holder("s", 210)?.token, b.token);
  });

  test("release frees only with the right owner and token", () => {
    const table = new LeaseTable(0);
    const a = table.tryGrant("s", "A", 100, 0)!;
    assert.equal(table.release("s", "A", a.token - 1, 1), false);
    assert.equal(table.release("s", "B", a.token, 1), false);
    assert.equal(table.holder("s", 1)?.token, a.token, "a stale token freed nothing");
    assert.equal(table.release("s", "A", a.token, 2), true);
    assert.equal(table.holder("s", 2), undefined);
    const b = table.tryGrant("s", "B", 100, 3)!;
    assert.equal(table.release("s", "A", a.token, 4), false, "an old token cannot free the new grant");
    assert.equal(table.holder("s", 4)?.token, b.token);
  });

  test("live lists the unexpired grants; adopt takes over an earlier server's grant", () => {
    const table = new LeaseTable(0);
    assert.deepEqual(table.live(5), []);
    table.tryGrant("a", "A", 100, 0);
    table.tryGrant("b", "A", 300, 10);
    assert.deepEqual(table.live(20).map((g) => [g.shard, g.expiresAt]).sort(), [["a", 100], ["b", 310]]);
    assert.deepEqual(table.live(100).map((g) => g.shard), ["b"], "expired at expiresAt");
    assert.deepEqual(table.live(400), []);

    const next = new LeaseTable(10);
    next.adopt({ shard: "s", owner: "A", token: 500, expiresAt: 1000 });
    assert.equal(next.tryGrant("s", "B", 100, 999), null, "an adopted grant holds its shard");
    assert.ok(next.renew("s", "A", 500, 100, 999), "and can be renewed by its owner");
    assert.ok(next.tryGrant("t", "B", 100, 999)!.token > 500, "later tokens stay above adopted ones");
    assert.ok(next.release("s", "A", 500, 1000));
    assert.ok(next.tryGrant("s", "B", 100, 1000));
  });

  test("random operations against a model: never two live holders, tokens only grow", () => {
    const table = new LeaseTable(7);
    const model = new Map<string, { owner: string; token: number; expiresAt: number }>();
    let now = 0;
    let lastToken = 7;
    const shards = ["a", "b", "c"];
    const owners = ["A", "B", "C"];
    for (let step = 0; step < 20_000; step++) {
      now += Math.floor(Math.random() * 40);
      const shard = pick(shards);
      const owner = pick(owners);
      const live = model.get(shard);
      const alive = live && live.expiresAt > now ? live : undefined;
      const term = 1 + Math.floor(Math.random() * 100);
      const token = live && Math.random() < 0.7 ? live.token : 1 + Math.floor(Math.random() * (lastToken + 1));
      const op = pick(["grant", "renew", "release", "holder"]);
      if (op === "grant") {
        const grant = table.tryGrant(shard, owner, term, now);
        if (alive) assert.equal(grant, null, `step ${step}: granted a held shard`);
        else {
          assert.ok(grant, `step ${step}: refused a free shard`);
          assert.ok(grant.token > lastToken, "tokens grow");
          lastToken = grant.token;
          model.set(shard, { owner, token: grant.token, expiresAt: now + term });
        }
      } else if (op === "renew") {
        const renewed = table.renew(shard, owner, token, term, now);
        const ok = !!alive && alive.owner === owner && alive.token === token;
        assert.equal(!!renewed, ok, `step ${step}: renew`);
        if (ok) alive!.expiresAt = now + term;
      } else if (op === "release") {
        const released = table.release(shard, owner, token, now);
        const ok = !!alive && alive.owner === owner && alive.token === token;
        assert.equal(released, ok, `step ${step}: release`);
        if (ok) model.delete(shard);
      } else {
        assert.equal(table.holder(shard, now)?.token, alive?.token, `step ${step}: holder`);
      }
    }
  });
});

describe("frames", () => {
  const hello = { v: 1, id: 3, op: "hello", owner: "h:1:ab" } as const;
  const acquire = { v: 1, id: 4, op: "acquire", owner: "h:1:ab", shard: "/s/img/0/0/0.h5", termMs: 2000 } as const;
  const renew = { v: 1, id: 5, op: "renew", owner: "h:1:ab", shard: "/s/x.h5", token: 17, termMs: 2000 } as const;
  const release = { v: 1, id: 6, op: "release", owner: "h:1:ab", shard: "/s/x.h5", token: 17 } as const;

  test("encodeFrame and FrameDecoder round-trip, however the stream is split", () => {
    const stream = Buffer.concat([hello, acquire, renew, release].map((m) => encodeFrame(m)));
    assert.equal(stream.readUInt32BE(0), encodeFrame(hello).length - 4, "4-byte big-endian length prefix");
    for (let cut = 0; cut <= stream.length; cut++) {
      const decoder = new FrameDecoder();
      const out = [...decoder.push(stream.subarray(0, cut)), ...decoder.push(stream.subarray(cut))];
      assert.deepEqual(out, [hello, acquire, renew, release], `cut at ${cut}`);
    }
    const decoder = new FrameDecoder();
    const out: unknown[] = [];
    for (const byte of stream) out.push(...decoder.push(Buffer.from([byte])));
    assert.deepEqual(out.map(parseRequest), [hello, acquire, renew, release]);
  });

  test("frame length limits: 1..MAX_FRAME_BYTES, refused as soon as the prefix arrives", () => {
    assert.throws(() => new FrameDecoder().push(Buffer.alloc(4)), ProtocolError);
    for (const length of [MAX_FRAME_BYTES + 1, 2 ** 31, 2 ** 32 - 1]) {
      const head = Buffer.alloc(4);
      head.writeUInt32BE(length, 0);
      assert.throws(() => new FrameDecoder().push(head), (e: unknown) => e instanceof ProtocolError && e.code === "H5NEST_PROTOCOL", `${length}`);
    }
    // A frame of exactly MAX_FRAME_BYTES passes; one byte more is refused by the encoder too.
    const owner = ownerFilling(hello, MAX_FRAME_BYTES);
    const exact = encodeFrame({ ...hello, owner } as never);
    assert.equal(exact.length, 4 + MAX_FRAME_BYTES);
    assert.equal(new FrameDecoder().push(exact).length, 1);
    assert.throws(() => encodeFrame({ ...hello, owner: `${owner}o` } as never), ProtocolError);
    // Incomplete frames wait for more bytes.
    assert.deepEqual(new FrameDecoder().push(exact.subarray(0, 100)), []);
  });

  test("undecodable bodies are ProtocolErrors", () => {
    const body = encodeFrame(hello).subarray(4);
    const bodies = [Buffer.from([0xd4, 0x05, 0x00]), Buffer.alloc(16_000, 0x91), body.subarray(0, body.length - 2), Buffer.concat([body, Buffer.from([1])]), Buffer.from([0x81, 0x91, 0x01, 0x01])];
    for (const bad of bodies) {
      assert.throws(() => new FrameDecoder().push(rawFrame(bad)), ProtocolError, bad.subarray(0, 8).toString("hex"));
    }
  });

  test("parseRequest accepts each op and keeps only its fields", () => {
    for (const request of [hello, acquire, renew, release]) assert.deepEqual(parseRequest({ ...request, extra: 1, token2: "x" }), request);
    assert.deepEqual(parseRequest({ ...acquire, termMs: 100 }).op, "acquire");
    assert.deepEqual(parseRequest({ ...acquire, termMs: MAX_TERM_MS }).op, "acquire");
    assert.equal(parseRequest({ ...hello, owner: "o".repeat(256) }).op, "hello");
    assert.equal(parseRequest({ ...acquire, shard: "s".repeat(4096) }).op, "acquire");
    assert.equal(parseRequest({ ...hello, id: 0 }).id, 0);
  });

  test("parseRequest refuses every malformed request with a ProtocolError", () => {
    const cases: unknown[] = [null, undefined, 1, "hello", [], [hello], true];
    for (const [op, fields] of Object.entries(FIELDS_OF)) {
      const valid = { hello, acquire, renew, release }[op]!;
      for (const name of fields) {
        for (const value of BAD_FIELDS[name]!) {
          const request: Record<string, unknown> = { ...valid };
          if (value === MISSING) delete request[name];
          else request[name] = value;
          cases.push(request);
        }
      }
    }
    for (const value of cases) {
      assert.throws(
        () => parseRequest(value),
        (e: unknown) => e instanceof ProtocolError && e.code === "H5NEST_PROTOCOL",
        `accepted ${JSON.stringify(value)?.slice(0, 120)}`,
      );
    }
    assert.ok(cases.length > 100);
  });
});

/** Waits (at most 2 s) until the process is in the stopped state, as /proc shows it. */
function waitUntilStopped(pid: number): void {
  const deadline = Date.now() + 2000;
  while (Date.now() < deadline) {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    if (/^\d+ \(.*\) [Tt] /.test(stat)) return;
  }
}
