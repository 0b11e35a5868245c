/**
 * Child process for the power-cut test: runs the steps of one scenario with
 * `fsync: true`, prints "ack <step>" after each resolves (synchronously, so
 * the parent knows exactly what was acknowledged), then waits to be killed
 * (its open files must not be closed before the parent cuts the power).
 * argv: <store>
 */
import fs from "node:fs";
import { createV2Array, H5NestedStore } from "h5nest";

const [root] = process.argv.slice(2) as [string];
const chunk = (fill: number) => new Uint8Array(new Uint16Array(16 * 16).fill(fill).buffer);
const ack = (step: string) => fs.writeSync(1, `ack ${step}\n`);

// Raw files first (NestedDirectoryStore form): img/0/0/0/1/1 = 1 and img/0/0/1/0/0 = 9.
const raw = await H5NestedStore.open(root, { workers: 1, writeDirect: false, fsync: true });
await createV2Array(raw, "img", { shape: [1, 1, 2, 64, 64], chunks: [1, 1, 1, 16, 16], dtype: "<u2", compressor: null });
await raw.set("img/0/0/0/1/1", chunk(1));
await raw.set("img/0/0/1/0/0", chunk(9));
await raw.close();
ack("raw");

const store = await H5NestedStore.open(root, { workers: 1, fsync: true });
// A whole shard: one commit writes it with 2 everywhere and absorbs the raw file holding 1.
await Promise.all(Array.from({ length: 16 }, (_, i) => store.set(`img/0/0/0/${i >> 2}/${i & 3}`, chunk(2))));
ack("shard");
await store.delete("img/0/0/1/0/0");
ack("delete");
setInterval(() => {}, 60_000);
