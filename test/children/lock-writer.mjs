/**
 * Child process for the distributed-lock tests: opens the store with
 * `distributedLock: { leaseMs }` and writes chunk-aligned boxes of one v2
 * array through zarrita, each box with its own value. Compile-free (.mjs,
 * imports the built "h5nest") so that it starts fast.
 *
 * argv[2]: JSON { store, array, leaseMs, workers, mode, id, writes, concurrency, seed, pauseMs, gate, holdOpen }
 *   mode "random":   (with gate: after "go" on stdin) `writes` random boxes (`concurrency` at a time), flush, print "written";
 *                    with holdOpen wait for "exit" on stdin; then close, print "done".
 *   mode "commands": stdin lines "write <value> <box JSON>" (one at a time, in order) and "exit".
 *
 * config.redis: a redis:// URL for distributedLock { redis } (else local leases).
 *
 * Every line goes out with fs.writeSync(1, ...) so that kill -9 loses none:
 *   open-failed <code> <message JSON>     (then exit 3)
 *   ready <pid> <hrtime>
 *   begin <value> <hrtime> <box JSON>     (box: [from, to) per axis, in chunks)
 *   ack <value> <hrtime>
 *   fail <value> <hrtime> <code> <message JSON>
 *   written <hrtime>
 *   done <hrtime>
 * hrtime is process.hrtime.bigint() (CLOCK_MONOTONIC, comparable across processes).
 */
import readline from "node:readline";
import * as zarr from "zarrita";
import { hr, openLocked, say } from "./locked-store.mjs";

const config = JSON.parse(process.argv[2]);
const store = await openLocked(config);
const array = await zarr.open.v2(zarr.root(store).resolve(config.array ?? "img"), { kind: "array" });
const grid = array.shape.map((size, axis) => Math.ceil(size / array.chunks[axis]));
say(`ready ${process.pid} ${hr()}`);

async function write(value, box) {
  const selection = box.map(([from, to], axis) => zarr.slice(from * array.chunks[axis], to * array.chunks[axis]));
  say(`begin ${value} ${hr()} ${JSON.stringify(box)}`);
  try {
    await zarr.set(array, selection, value);
    say(`ack ${value} ${hr()}`);
  } catch (error) {
    say(`fail ${value} ${hr()} ${error?.code ?? error?.name ?? "unknown"} ${JSON.stringify(String(error?.message ?? error))}`);
  }
}

/** mulberry32: a seeded generator, so that a failing run can be replayed. */
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const input = readline.createInterface({ input: process.stdin });
const commands = input[Symbol.asyncIterator]();
async function waitFor(word) {
  for (;;) {
    const { value, done } = await commands.next();
    if (done || value.trim() === word) return;
  }
}

if (config.mode === "random") {
  if (config.gate) await waitFor("go");
  const next = random(config.seed ?? config.id);
  let seq = 0;
  const lane = async () => {
    while (seq < config.writes) {
      seq += 1;
      const value = config.id * 100_000 + seq;
      const box = grid.map((n) => {
        const a = Math.floor(next() * n);
        const b = Math.floor(next() * n);
        return [Math.min(a, b), Math.max(a, b) + 1];
      });
      await write(value, box);
      if (config.pauseMs) await new Promise((resolve) => setTimeout(resolve, next() * config.pauseMs));
    }
  };
  await Promise.all(Array.from({ length: config.concurrency ?? 1 }, lane));
  await store.flush();
  say(`written ${hr()}`);
  if (config.holdOpen) await waitFor("exit");
  await store.close();
  say(`done ${hr()}`);
  process.exit(0);
} else {
  for (;;) {
    const { value: line, done } = await commands.next();
    if (done) break;
    const [command, value, ...rest] = line.trim().split(" ");
    if (command === "write") await write(Number(value), JSON.parse(rest.join(" ")));
    else if (command === "exit") break;
  }
  await store.close();
  say(`done ${hr()}`);
  process.exit(0);
}
