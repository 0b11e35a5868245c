/** Typed errors for inputs that used to surface as plain Node errors. */
import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { H5NestedStore, InvalidKeyError, InvalidOptionError, NotAStoreError } from "h5nest";
import { tempDir } from "./helpers/tmp.js";

test("open() of something that is not a path is NotAStoreError", async () => {
  for (const bad of [123, "", null, undefined, "a\0b"]) {
    await assert.rejects(H5NestedStore.open(bad as never), NotAStoreError, String(bad));
  }
});

test("consolidateDepth is bounded up front (2**32+2 used to throw RangeError later)", async (t) => {
  const root = path.join(await tempDir(t), "s");
  await assert.rejects(H5NestedStore.open(root, { consolidateDepth: 2 ** 32 + 2 }), InvalidOptionError);
  await assert.rejects(H5NestedStore.open(root, { consolidateDepth: 65 }), InvalidOptionError);
});

test("a key segment too long for a file name is InvalidKeyError, not ENAMETOOLONG", async (t) => {
  const store = await H5NestedStore.open(path.join(await tempDir(t), "s"), { workers: 1 });
  t.after(() => store.close());
  const long = "a".repeat(215);
  await assert.rejects(store.set(`${long}/.zattrs`, new Uint8Array(2)), InvalidKeyError);
  await assert.rejects(store.set(`grp/${long}.json`, new Uint8Array(2)), InvalidKeyError);
  await assert.rejects(store.get(`${long}/.zattrs`), InvalidKeyError);
  await store.set(`${"b".repeat(214)}/.zattrs`, new Uint8Array([1])); // the longest that fits
  assert.deepEqual(await store.get(`${"b".repeat(214)}/.zattrs`), new Uint8Array([1]));
});
