/**
 * Child process for the crash test: writes chunk-aligned regions of the
 * array "img" through zarrita forever, from 4 concurrent lanes that share
 * shards but never chunks. Before each write it prints "begin", after it
 * resolves "ack", synchronously (fs.writeSync), so no line is lost to kill -9.
 * argv: <store> <iteration>
 */
import fs from "node:fs";
import * as zarr from "zarrita";
import { H5NestedStore } from "h5nest";

const [storePath, iterationText] = process.argv.slice(2) as [string, string];
const iteration = Number(iterationText);
export const LANES = 4;

const store = await H5NestedStore.open(storePath, { workers: 2 });
const array = await zarr.open.v2(zarr.root(store).resolve("img"), { kind: "array" });
const [, channels, planes] = array.shape as [number, number, number, number, number];
// The worker threads start on the first write: start them before the kill window opens.
await store.set("img/.zattrs", new TextEncoder().encode(JSON.stringify({ iteration })));
fs.writeSync(1, "ready\n");

async function lane(laneIndex: number): Promise<void> {
  const cy = laneIndex >> 1;
  const cx = laneIndex & 1;
  for (let seq = 1; ; seq++) {
    const c0 = Math.floor(Math.random() * channels);
    const c1 = c0 + 1 + Math.floor(Math.random() * (channels - c0));
    const z0 = Math.floor(Math.random() * planes);
    const z1 = z0 + 1 + Math.floor(Math.random() * (planes - z0));
    const value = iteration * 1_000_000 + laneIndex * 100_000 + seq;
    fs.writeSync(1, `begin ${laneIndex} ${value} ${c0} ${c1} ${z0} ${z1}\n`);
    await zarr.set(array, [null, zarr.slice(c0, c1), zarr.slice(z0, z1), zarr.slice(cy * 64, cy * 64 + 64), zarr.slice(cx * 64, cx * 64 + 64)], value);
    fs.writeSync(1, `ack ${laneIndex} ${value}\n`);
  }
}

await Promise.all(Array.from({ length: LANES }, (_, i) => lane(i)));
