/**
 * Child process for the lease tests: opens a store with distributedLock
 * (local, or Redis with config.redis) and consolidates it over and over,
 * beside writers, until "stop" on stdin; then closes the store.
 *
 * argv[2]: JSON { store, leaseMs, redis?, workers? }
 * stdout (fs.writeSync; hrtime = process.hrtime.bigint()):
 *   open-failed <code> <message JSON>     (then exit 3)
 *   ready <pid> <hrtime>
 *   pass <n> <chunks folded> <shards> <hrtime>
 *   error <code> <message JSON>
 *   done <passes> <total chunks> <hrtime>
 */
import { hr, openLocked, say } from "./locked-store.mjs";

const config = JSON.parse(process.argv[2]);
const store = await openLocked(config);
say(`ready ${process.pid} ${hr()}`);

let stopping = false;
process.stdin.setEncoding("utf8");
process.stdin.on("data", (text) => {
  if (text.includes("stop")) stopping = true;
});

let passes = 0;
let total = 0;
while (!stopping) {
  try {
    const summary = await store.consolidate();
    passes += 1;
    total += summary.chunks;
    if (summary.fatal) say(`error ${summary.fatal.code ?? "unknown"} ${JSON.stringify(summary.fatal.message)}`);
    say(`pass ${passes} ${summary.chunks} ${summary.shards} ${hr()}`);
  } catch (error) {
    say(`error ${error?.code ?? "unknown"} ${JSON.stringify(String(error?.message ?? error))}`);
  }
  await new Promise((resolve) => setTimeout(resolve, 5));
}
process.stdin.destroy();
await store.close();
say(`done ${passes} ${total} ${hr()}`);
process.exit(0);
