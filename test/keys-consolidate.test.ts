/**
 * keys() while a consolidation moves raw files into shards: every key once,
 * none missed. The listing runs slowly (a pause per key) so that folds land
 * between its steps, in every order of shard and raw folder.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { test } from "node:test";
import { H5NestedStore } from "h5nest";
import { tempDir } from "./helpers/tmp.js";

const PLANES = 24;
const SIDE = 4; // 16 chunks per shard

async function rawStore(root: string): Promise<Set<string>> {
  const keys = new Set<string>([".zgroup", "img/.zarray"]);
  await fs.mkdir(path.join(root, "img"), { recursive: true });
  await fs.writeFile(path.join(root, ".zgroup"), JSON.stringify({ zarr_format: 2 }));
  const zarray = { zarr_format: 2, shape: [1, 1, PLANES, SIDE * 8, SIDE * 8], chunks: [1, 1, 1, 8, 8], dtype: "|u1", compressor: null, fill_value: 0, order: "C", filters: null, dimension_separator: "/" };
  await fs.writeFile(path.join(root, "img/.zarray"), JSON.stringify(zarray));
  for (let z = 0; z < PLANES; z++) {
    for (let y = 0; y < SIDE; y++) {
      await fs.mkdir(path.join(root, `img/0/0/${z}/${y}`), { recursive: true });
      for (let x = 0; x < SIDE; x++) {
        const key = `img/0/0/${z}/${y}/${x}`;
        await fs.writeFile(path.join(root, key), new Uint8Array(64).fill(z));
        keys.add(key);
      }
    }
  }
  // Half the planes already have a shard holding some of their chunks (the raw files are newer).
  return keys;
}

test("keys() during a consolidation lists every key exactly once", { timeout: 120_000 }, async (t) => {
  const root = path.join(await tempDir(t), "store");
  const expected = await rawStore(root);
  const listing = await H5NestedStore.open(root, { workers: 1 });
  t.after(() => listing.close());
  // A few shards exist before (written from part of the planes' raw files), so shard and raw folder coexist.
  const seed = await H5NestedStore.open(root, { workers: 1 });
  for (let z = 0; z < PLANES; z += 3) await seed.set(`img/0/0/${z}/0/0`, new Uint8Array(64).fill(z));
  await seed.flush();
  await seed.close();

  let rounds = 0;
  for (let attempt = 0; attempt < 3; attempt++) {
    if (attempt > 0) {
      // Back to raw files for the next attempt: write every chunk again as a raw file.
      const raw = await H5NestedStore.open(root, { workers: 1, writeDirect: false });
      for (const key of expected) if (!key.endsWith(".zarray") && !key.endsWith(".zgroup")) await raw.set(key, new Uint8Array(64).fill(attempt));
      await raw.close();
    }
    const consolidator = await H5NestedStore.open(root, { workers: 2 });
    const job = consolidator.consolidate();
    let done = false;
    void job.finally(() => (done = true));
    while (!done || rounds === 0) {
      const listed: string[] = [];
      for await (const key of listing.keys()) {
        listed.push(key);
        await sleep(Math.random() < 0.1 ? 2 : 0);
      }
      const duplicates = listed.filter((key, i) => listed.indexOf(key) !== i);
      assert.deepEqual(duplicates, [], "no key listed twice");
      assert.deepEqual(new Set(listed), expected, "no key missed, none invented");
      rounds += 1;
    }
    await job;
    await consolidator.close();
  }
  t.diagnostic(`${rounds} listings during consolidations`);
});
