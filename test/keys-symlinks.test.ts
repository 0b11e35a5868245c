/**
 * keys() agrees with get() about symbolic links (issue 9): a link to a file
 * is a key, a link to a folder is walked like that folder (raw folders still
 * pair with their shards), a link back to a folder on the walk's path is not
 * entered, dangling and looping links are skipped. Every key is listed once.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import * as zarr from "zarrita";
import { createV2Array, H5NestedStore } from "h5nest";
import { tempDir } from "./helpers/tmp.js";

const shape = [1, 1, 2, 64, 64];
const chunks = [1, 1, 1, 16, 16]; // two shards of 16 chunks (512 bytes) each

const bytesOf = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7) & 0xff);

async function allKeys(store: H5NestedStore, prefix = ""): Promise<string[]> {
  const keys: string[] = [];
  for await (const key of store.keys(prefix)) keys.push(key);
  return keys;
}

/** An array `name` in a new store at `root`: both shards written, and one raw file shadowing a shard dataset. */
async function writeArray(root: string, name: string): Promise<void> {
  const writer = await H5NestedStore.open(root, { workers: 1 });
  const array = await createV2Array(writer, name, { shape, chunks, dtype: "<u2", compressor: null });
  await zarr.set(array, null, 5);
  await writer.close();
  const raw = await H5NestedStore.open(root, { workers: 1, writeDirect: false });
  await raw.set(`${name}/0/0/0/1/2`, bytesOf(512, 1));
  await raw.close();
}

test("keys() lists exactly the keys get() reads through symbolic links, each once", async (t) => {
  const dir = await tempDir(t);
  const root = path.join(dir, "store");
  const outside = path.join(dir, "elsewhere");
  await writeArray(root, "img");
  await writeArray(path.join(outside, "other"), "vol");

  const probe = await H5NestedStore.open(root, { workers: 1 });
  const before = await allKeys(probe);
  await probe.close();
  const other = await H5NestedStore.open(path.join(outside, "other"), { workers: 1 });
  const volKeys = (await allKeys(other)).filter((key) => key.startsWith("vol/"));
  await other.close();
  assert.ok(before.includes("img/0/0/0/1/2") && volKeys.includes("vol/0/0/0/1/2"));

  // A link to a file: shadowing a shard dataset, and a new key.
  fs.writeFileSync(path.join(outside, "loose"), bytesOf(512, 2));
  fs.mkdirSync(path.join(root, "img/0/0/0/2"));
  fs.symlinkSync(path.join(outside, "loose"), path.join(root, "img/0/0/0/2/3"));
  fs.symlinkSync(path.join(outside, "loose"), path.join(root, "img/0/0/0/2/9"));
  // A raw folder (a z-plane) on another disk, beside its shard img/0/0/1.h5;
  // inside it, a link back to itself (a cycle).
  fs.mkdirSync(path.join(outside, "plane/0"), { recursive: true });
  fs.mkdirSync(path.join(outside, "plane/3"));
  fs.writeFileSync(path.join(outside, "plane/0/0"), bytesOf(512, 3));
  fs.writeFileSync(path.join(outside, "plane/3/9"), bytesOf(512, 4));
  fs.symlinkSync(path.join(outside, "plane"), path.join(outside, "plane/back"));
  fs.symlinkSync(path.join(outside, "plane"), path.join(root, "img/0/0/1"));
  // An array folder outside the store, under two names.
  fs.symlinkSync(path.join(outside, "other/vol"), path.join(root, "vol"));
  fs.symlinkSync(path.join(outside, "other/vol"), path.join(root, "alias"));
  // Cycles: the store root inside itself, an array inside its own raw folder.
  fs.symlinkSync(root, path.join(root, "self"));
  fs.symlinkSync(path.join(root, "img"), path.join(root, "img/0/0/0/up"));
  // Dangling links (to a file, to a folder) and a loop of links (ELOOP).
  fs.symlinkSync(path.join(outside, "nothing"), path.join(root, "img/0/0/0/2/8"));
  fs.symlinkSync(path.join(outside, "gone"), path.join(root, "ghost"));
  fs.symlinkSync(path.join(root, "b"), path.join(root, "a"));
  fs.symlinkSync(path.join(root, "a"), path.join(root, "b"));

  const store = await H5NestedStore.open(root, { workers: 1 });
  t.after(() => store.close());
  const keys = await allKeys(store);
  assert.equal(new Set(keys).size, keys.length, `no key twice: ${keys.filter((k, i) => keys.indexOf(k) !== i).join(", ")}`);
  const expected = new Set([
    ...before,
    "img/0/0/0/2/9",
    "img/0/0/1/3/9",
    ...volKeys,
    ...volKeys.map((key) => key.replace(/^vol\//, "alias/")),
  ]);
  assert.deepEqual(new Set(keys), expected);

  // Every key listed reads back, through the links, with the linked bytes.
  for (const key of keys) assert.ok((await store.get(key)) instanceof Uint8Array, `get(${key})`);
  assert.deepEqual(await store.get("img/0/0/0/2/3"), bytesOf(512, 2), "a linked file shadows the shard dataset");
  assert.deepEqual(await store.get("img/0/0/1/0/0"), bytesOf(512, 3), "a linked raw folder shadows its shard");
  assert.deepEqual(await store.get("img/0/0/1/3/9"), bytesOf(512, 4));
  assert.deepEqual(await store.get("alias/0/0/0/1/2"), bytesOf(512, 1));
  // And the other way round: of every chunk key of the three arrays' grids
  // (and beyond them), get() reads exactly those listed; dangling links read nothing.
  const listed = new Set(keys);
  for (const name of ["img", "vol", "alias", "ghost"]) {
    for (let z = 0; z < 2; z++) {
      for (let y = 0; y < 10; y++) {
        for (let x = 0; x < 10; x++) {
          const key = `${name}/0/0/${z}/${y}/${x}`;
          assert.equal((await store.get(key)) !== undefined, listed.has(key), key);
        }
      }
    }
  }
  assert.equal(await store.get("img/0/0/0/2/8"), undefined);

  // A prefix lists what the whole walk lists under it, through links and past cycles.
  for (const prefix of ["img/0/0/1/", "alias/", "img/0/0/0/up/", "self/"]) {
    assert.deepEqual(new Set(await allKeys(store, prefix)), new Set(keys.filter((key) => key.startsWith(prefix))), prefix);
  }

  // info and verify read through the links too (and end); consolidation
  // changes only the store's own tree, so the linked raw files stay.
  const volShards = 2;
  assert.equal((await store.info()).shards, 2 + 2 * volShards);
  const verified = await store.verify();
  assert.equal(verified.shards, 2 + 2 * volShards);
  assert.deepEqual(verified.corrupt, []);
  await store.consolidate();
  assert.ok(fs.existsSync(path.join(outside, "plane/3/9")));
  assert.ok(fs.existsSync(path.join(outside, "other/vol/0/0/0/1/2")));
  assert.deepEqual(new Set(await allKeys(store)), expected);
});
