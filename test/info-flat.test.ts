/** `info` on a store written by zarr-python's default DirectoryStore ("0.0" chunk keys): chunks are chunks, not metadata. */
import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { H5NestedStore } from "h5nest";
import { python, requirePython } from "./helpers/python.js";
import { tempDir } from "./helpers/tmp.js";

test("info counts flat chunk keys (0.0.0) as raw chunk files", async (t) => {
  if (!(await requirePython(t))) return;
  const root = path.join(await tempDir(t), "store");
  await python(
    `
import sys, zarr, numpy as np
root = zarr.open_group(zarr.DirectoryStore(sys.argv[1]), mode="w")
a = root.create_dataset("vol", shape=(4, 4, 4), chunks=(2, 2, 2), dtype="u1", compressor=None)
a[:] = np.arange(64, dtype="u1").reshape(4, 4, 4)
`,
    [root],
  );
  const store = await H5NestedStore.open(root, { workers: 1 });
  t.after(() => store.close());
  const info = await store.info();
  assert.equal(info.metadataFiles, 2, ".zgroup and vol/.zarray");
  assert.equal(info.rawChunkFiles, 8);
  assert.equal(info.rawChunkBytes, 64);
  assert.deepEqual(await store.get("vol/1.1.1"), Uint8Array.from([42, 43, 46, 47, 58, 59, 62, 63]));
});
