import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, test } from "node:test";
import { ShardScheduler } from "@h5nest/coordinator";

interface Batch {
  owner: string;
  ops: number[];
  start: number;
  end: number;
}

/** A scheduler whose execute() records each batch and takes `delay(owner)` ms. */
function recorder(options: { concurrency: number; maxPendingBytes?: number; maxBatchBytes?: number; delay?: () => number }) {
  const batches: Batch[] = [];
  let clock = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  const scheduler = new ShardScheduler<number>({
    concurrency: options.concurrency,
    maxPendingBytes: options.maxPendingBytes ?? 1 << 30,
    maxBatchBytes: options.maxBatchBytes ?? 1 << 30,
    async execute(owner, ops) {
      inFlight += 1;
      maxInFlight = Math.max(maxInFlight, inFlight);
      const batch: Batch = { owner, ops, start: ++clock, end: 0 };
      await sleep(options.delay?.() ?? 1);
      batch.end = ++clock;
      batches.push(batch);
      inFlight -= 1;
    },
  });
  return { scheduler, batches, maxInFlight: () => maxInFlight };
}

describe("ShardScheduler", () => {
  test("ops of one owner run in call order, whether they wait for their shard size or not", async () => {
    const { scheduler, batches } = recorder({ concurrency: 2 });
    const slowSize = sleep(20).then(() => 4);
    const submits = [
      scheduler.submit("a", 1, 1, slowSize), // waits for its shard size
      scheduler.submit("a", 2, 1, 4), // known at once: must not overtake op 1
      scheduler.submit("a", 3, 1),
    ];
    await Promise.all(submits);
    await sleep(20).then(() => scheduler.submit("a", 4, 1, 4)); // the fast path once nothing waits
    assert.deepEqual(batches.flatMap((b) => b.ops), [1, 2, 3, 4]);
  });

  test("never runs two batches of one owner at once, under random load", async () => {
    const { scheduler, batches, maxInFlight } = recorder({ concurrency: 4, delay: () => Math.random() * 3 });
    const submits: Promise<void>[] = [];
    for (let wave = 0; wave < 20; wave++) {
      for (let i = 0; i < 50; i++) submits.push(scheduler.submit(`shard-${(wave * 7 + i) % 6}`, wave * 100 + i, 1));
      await sleep(Math.random() * 2);
    }
    await Promise.all(submits);
    const byOwner = new Map<string, Batch[]>();
    for (const b of batches) byOwner.set(b.owner, [...(byOwner.get(b.owner) ?? []), b]);
    for (const [owner, list] of byOwner) {
      list.sort((a, b) => a.start - b.start);
      for (let i = 1; i < list.length; i++) {
        assert.ok(list[i]!.start > list[i - 1]!.end, `${owner}: batch started before the previous one ended`);
      }
    }
    assert.equal(batches.flatMap((b) => b.ops).length, 1000, "every op ran exactly once");
    assert.ok(maxInFlight() > 1, "the test must exercise parallel batches");
    assert.ok(maxInFlight() <= 4, "concurrency limit respected");
  });

  test("ops submitted in one turn become one batch (group commit)", async () => {
    const { scheduler, batches } = recorder({ concurrency: 2 });
    await Promise.all(Array.from({ length: 300 }, (_, i) => scheduler.submit("s", i, 1)));
    assert.equal(batches.length, 1);
    assert.deepEqual(batches[0]!.ops, Array.from({ length: 300 }, (_, i) => i), "in submission order");
  });

  test("ops arriving while the owner is busy are grouped into its next batch", async () => {
    const { scheduler, batches } = recorder({ concurrency: 2, delay: () => 20 });
    const first = scheduler.submit("s", 0, 1);
    await sleep(5); // the first batch is now executing
    const rest = Array.from({ length: 50 }, (_, i) => scheduler.submit("s", i + 1, 1));
    await Promise.all([first, ...rest]);
    assert.deepEqual(
      batches.map((b) => b.ops.length),
      [1, 50],
    );
  });

  test("maxBatchBytes splits a long queue; a single oversized op still runs", async () => {
    const { scheduler, batches } = recorder({ concurrency: 1, maxBatchBytes: 100 });
    await Promise.all([...Array.from({ length: 10 }, (_, i) => scheduler.submit("s", i, 30)), scheduler.submit("s", 99, 500)]);
    assert.deepEqual(
      batches.map((b) => b.ops),
      [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9], [99]],
    );
  });

  test("backpressure: pending bytes never exceed maxPendingBytes", async () => {
    let pendingPeak = 0;
    const scheduler: ShardScheduler<number> = new ShardScheduler<number>({
      concurrency: 2,
      maxPendingBytes: 100,
      maxBatchBytes: 100,
      async execute() {
        pendingPeak = Math.max(pendingPeak, scheduler.pending);
        await sleep(2);
      },
    });
    let admitted = 0;
    const submits = Array.from({ length: 40 }, (_, i) =>
      scheduler.submit(`s${i % 5}`, i, 30).then(() => {
        admitted += 1;
      }),
    );
    await sleep(0);
    assert.ok(scheduler.pending <= 100, `pending ${scheduler.pending} right after submitting`);
    await Promise.all(submits);
    assert.equal(admitted, 40);
    assert.ok(pendingPeak <= 100, `peak ${pendingPeak}`);
    assert.equal(scheduler.pending, 0);
  });

  test("a failing batch rejects its own ops only; the owner keeps working", async () => {
    let calls = 0;
    const scheduler = new ShardScheduler<string>({
      concurrency: 2,
      maxPendingBytes: 1 << 20,
      maxBatchBytes: 1 << 20,
      async execute(_owner, ops) {
        calls += 1;
        if (ops.includes("bad")) throw new Error("disk full");
      },
    });
    const bad = scheduler.submit("s", "bad", 1);
    const sameBatch = scheduler.submit("s", "neighbour", 1);
    await assert.rejects(bad, /disk full/);
    await assert.rejects(sameBatch, /disk full/);
    await scheduler.submit("s", "good", 1);
    assert.equal(calls, 2);
    assert.equal(scheduler.pending, 0);
  });

  test("a batch that reaches its complete size starts before the turn ends", async () => {
    let startedAt: "microtask" | "macrotask" | null = null;
    let turnOver = false;
    const scheduler = new ShardScheduler<number>({
      concurrency: 1,
      maxPendingBytes: 1 << 20,
      maxBatchBytes: 1 << 20,
      async execute(_owner, ops) {
        startedAt ??= turnOver ? "macrotask" : "microtask";
        assert.equal(ops.length, 4);
      },
    });
    setImmediate(() => (turnOver = true));
    const done = Promise.all([0, 1, 2, 3].map((i) => scheduler.submit("s", i, 1, Promise.resolve(4))));
    await done;
    assert.equal(startedAt, "microtask");
  });

  test("drain() waits for queued and in-flight batches", async () => {
    const { scheduler, batches } = recorder({ concurrency: 1, delay: () => 5 });
    for (let i = 0; i < 5; i++) void scheduler.submit(`s${i}`, i, 1);
    await scheduler.drain();
    assert.equal(batches.length, 5);
  });
});
