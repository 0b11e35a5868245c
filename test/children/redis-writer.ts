/**
 * Child process for the Redis lock test: opens the store with
 * distributedLock { redis } and writes random chunk-aligned regions of the
 * uint32 array "img" through zarrita from LANES concurrent lanes, until told
 * to stop. Other children write overlapping regions at the same time.
 *
 * stdin: "go" starts the lanes, "stop" makes them finish their current write;
 * then the store is closed.
 * stdout (fs.writeSync, so no line is lost; t = process.hrtime.bigint(),
 * CLOCK_MONOTONIC, comparable between processes of one machine):
 *   ready
 *   begin <lane> <value> <c0> <c1> <z0> <z1> <y0> <y1> <x0> <x1> <t>   (chunk-index ranges [from, to))
 *   ack <lane> <value> <t>
 *   fail <lane> <value> <t> <code> <name> <message as JSON>
 *   closed <t>  |  close-failed <code> <message as JSON>
 * A write's chunk puts have all settled when its ack/fail line is printed
 * (the zarrita queue below waits for every chunk, not only for the first failure).
 * argv: <store> <child number 1..> <redis url> <leaseMs>
 */
import fs from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import * as zarr from "zarrita";
import { H5NestedStore } from "h5nest";

const [storePath, childText, redisUrl, leaseText] = process.argv.slice(2) as [string, string, string, string];
const child = Number(childText);
const LANES = 2;
const CHUNK = 64;

const say = (line: string): void => void fs.writeSync(1, `${line}\n`);
const now = (): string => process.hrtime.bigint().toString();

const store = await H5NestedStore.open(storePath, { workers: 2, distributedLock: { redis: redisUrl, leaseMs: Number(leaseText) } });
const array = await zarr.open.v2(zarr.root(store).resolve("img"), { kind: "array" });
const [, channels, planes, height, width] = array.shape as [number, number, number, number, number];
const grid = [channels, planes, height / CHUNK, width / CHUNK];

let go: () => void;
const started = new Promise<void>((resolve) => (go = resolve));
let stopping = false;
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (text: string) => {
  input += text;
  if (input.includes("go\n")) go();
  if (input.includes("stop\n")) {
    stopping = true;
    go();
  }
});
say("ready");

/** Like zarrita's default queue, but settles only when every chunk write has settled. */
function settleAll(): zarr.SetOptions {
  return {
    createQueue() {
      const promises: Promise<void>[] = [];
      return {
        add: (fn) => void promises.push(fn()),
        async onIdle() {
          const results = await Promise.allSettled(promises);
          const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
          if (failed) throw failed.reason;
          return [];
        },
      };
    },
  };
}

function range(n: number): [number, number] {
  const a = Math.floor(Math.random() * n);
  const b = Math.floor(Math.random() * n);
  return [Math.min(a, b), Math.max(a, b) + 1];
}

async function lane(index: number): Promise<void> {
  await started;
  for (let seq = 1; !stopping; seq++) {
    const [c, z, y, x] = grid.map(range) as [[number, number], [number, number], [number, number], [number, number]];
    const value = child * 1_000_000 + index * 100_000 + seq;
    const selection = [null, zarr.slice(...c), zarr.slice(...z), zarr.slice(y[0] * CHUNK, y[1] * CHUNK), zarr.slice(x[0] * CHUNK, x[1] * CHUNK)];
    say(`begin ${index} ${value} ${c.join(" ")} ${z.join(" ")} ${y.join(" ")} ${x.join(" ")} ${now()}`);
    try {
      await zarr.set(array, selection, value, settleAll());
      say(`ack ${index} ${value} ${now()}`);
    } catch (error) {
      const e = error as { code?: string; name?: string; message?: string };
      say(`fail ${index} ${value} ${now()} ${e.code ?? "NO_CODE"} ${e.name ?? "?"} ${JSON.stringify(e.message ?? String(error))}`);
      await sleep(50); // Redis down: don't spin
    }
    await sleep(Math.random() * 3);
  }
}

await Promise.all(Array.from({ length: LANES }, (_, i) => lane(i)));
process.stdin.destroy();
try {
  await store.close();
  say(`closed ${now()}`);
} catch (error) {
  const e = error as { code?: string; message?: string };
  say(`close-failed ${e.code ?? "NO_CODE"} ${JSON.stringify(e.message ?? String(error))}`);
  process.exitCode = 1;
}
