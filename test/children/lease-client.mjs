/**
 * Child process for the distributed-lock tests: a LocalLeaseProvider driven
 * by stdin, so that a test can hold shard leases in a process it then kills.
 *
 * argv: <storeRoot> <termMs>   (the store's identity is recorded with the default layout if missing)
 * stdin lines:
 *   acquire <shard> [renew]   acquire (and, with "renew", renew every term/3 like the store does)
 *   release <shard>
 *   serving                   print whether this process serves the leases
 *   exit
 * stdout lines (fs.writeSync, so kill -9 loses none; hrtime = process.hrtime.bigint()):
 *   open <serving 0|1> <pid> <hrtime>
 *   granted <shard> <token> <sent hrtime> <received hrtime> <deadline hrtime>
 *   renewed <shard> <token> <hrtime> <deadline hrtime>
 *   lost <shard> <token> <code>
 *   released <shard> <hrtime>
 *   serving <0|1>
 *   error <command> <code> <message JSON>
 */
import fs from "node:fs";
import readline from "node:readline";
import { LocalLeaseProvider } from "@h5nest/coordinator";
import { leaseStateFolder, recordStoreIdentity } from "../../packages/core/dist/identity.js";

const [storeRoot, termText] = process.argv.slice(2);
const termMs = Number(termText);
const say = (line) => fs.writeSync(1, `${line}\n`);
const hr = () => process.hrtime.bigint().toString();

// Leases are keyed by the store's identity (recorded with the default layout if missing).
const identity = await recordStoreIdentity(storeRoot, { consolidateDepth: 3, containerExt: ".h5" });
const provider = await LocalLeaseProvider.open({ namespace: identity.id, stateDir: leaseStateFolder(storeRoot), termMs, connectTimeoutMs: 20_000 });
say(`open ${provider.serving ? 1 : 0} ${process.pid} ${hr()}`);

const held = new Map();

async function acquire(shard, renew) {
  const sent = hr();
  const lease = await provider.acquire(shard);
  say(`granted ${shard} ${lease.token} ${sent} ${hr()} ${Atomics.load(lease.deadline, 0)}`);
  const entry = { lease, timer: null };
  if (renew) {
    entry.timer = setInterval(() => {
      provider.renew(lease).then(
        () => say(`renewed ${shard} ${lease.token} ${hr()} ${Atomics.load(lease.deadline, 0)}`),
        (error) => {
          clearInterval(entry.timer);
          say(`lost ${shard} ${lease.token} ${error?.code ?? "unknown"}`);
        },
      );
    }, Math.floor(termMs / 3));
  }
  held.set(shard, entry);
}

async function release(shard) {
  const entry = held.get(shard);
  if (!entry) return;
  clearInterval(entry.timer);
  held.delete(shard);
  await provider.release(entry.lease);
  say(`released ${shard} ${hr()}`);
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const [command, shard, flag] = line.trim().split(" ");
  const run = async () => {
    if (command === "acquire") await acquire(shard, flag === "renew");
    else if (command === "release") await release(shard);
    else if (command === "serving") say(`serving ${provider.serving ? 1 : 0}`);
  };
  if (command === "exit") break;
  // Commands run concurrently (an acquire may wait a long time in the server's queue).
  run().catch((error) => say(`error ${command} ${error?.code ?? "unknown"} ${JSON.stringify(String(error?.message ?? error))}`));
}
for (const entry of held.values()) clearInterval(entry.timer);
await provider.close();
process.exit(0);
