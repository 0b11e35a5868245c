/**
 * A folder inside the store that is a symbolic link to a folder elsewhere:
 * deleting and folding through it never removes a folder outside the store,
 * even one it empties.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { H5NestedStore } from "h5nest";
import { tempDir } from "./helpers/tmp.js";

test("deleting through a symlinked folder removes the value but no folder outside the store", async (t) => {
  const dir = await tempDir(t);
  const root = path.join(dir, "store");
  const outside = path.join(dir, "elsewhere");
  fs.mkdirSync(path.join(root, "img"), { recursive: true });
  fs.writeFileSync(path.join(root, "img/.zarray"), JSON.stringify({ zarr_format: 2, shape: [1, 1, 1, 8, 8], chunks: [1, 1, 1, 4, 4], dtype: "|u1", compressor: null, fill_value: 0, order: "C", filters: null, dimension_separator: "/" }));
  // img/0/0/0 (the raw folder of shard img/0/0/0.h5) lives elsewhere.
  fs.mkdirSync(path.join(outside, "plane/1"), { recursive: true });
  fs.writeFileSync(path.join(outside, "plane/1/1"), new Uint8Array(16).fill(7));
  fs.mkdirSync(path.join(root, "img/0/0"), { recursive: true });
  fs.symlinkSync(path.join(outside, "plane"), path.join(root, "img/0/0/0"));

  const store = await H5NestedStore.open(root, { workers: 1 });
  t.after(() => store.close());
  assert.deepEqual(await store.get("img/0/0/0/1/1"), new Uint8Array(16).fill(7));
  await store.delete("img/0/0/0/1/1");
  assert.equal(await store.get("img/0/0/0/1/1"), undefined);
  assert.ok(fs.existsSync(path.join(outside, "plane/1")), "the emptied folder outside the store stays");
  assert.ok(fs.existsSync(path.join(outside, "plane")), "and so does its parent");

  // Consolidation does not follow the link (it changes only the store's own
  // tree): the raw file stays readable, the outside folders stay.
  fs.writeFileSync(path.join(outside, "plane/1/0"), new Uint8Array(16).fill(3));
  await store.consolidate();
  assert.deepEqual(await store.get("img/0/0/0/1/0"), new Uint8Array(16).fill(3));
  assert.ok(fs.existsSync(path.join(outside, "plane/1")), "consolidation leaves the outside folder");
});
