/**
 * What the lease-test children share: line output that kill -9 cannot lose
 * (fs.writeSync), monotonic timestamps comparable across processes, and
 * opening the store with distributedLock (local, or Redis with config.redis),
 * or printing "open-failed <code> <message JSON>" and exiting 3.
 */
import fs from "node:fs";
import { H5NestedStore } from "h5nest";

export const say = (line) => fs.writeSync(1, `${line}\n`);
export const hr = () => process.hrtime.bigint().toString();

/** config: { store, leaseMs, redis?, workers? } */
export async function openLocked(config) {
  try {
    return await H5NestedStore.open(config.store, {
      workers: config.workers ?? 1,
      distributedLock: { leaseMs: config.leaseMs, ...(config.redis ? { redis: config.redis } : {}) },
    });
  } catch (error) {
    say(`open-failed ${error?.code ?? error?.name ?? "unknown"} ${JSON.stringify(String(error?.message ?? error))}`);
    process.exit(3);
  }
}
