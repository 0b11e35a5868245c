/**
 * The legacy `<store>.h5` beside the store folder (a root array of the Python
 * store with fewer dimensions than the consolidate depth): h5nest reads it and
 * never writes it, so deleting a key it holds is refused with a typed error
 * (a delete that left it there would bring the old value back).
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { H5NestedStore, ReadOnlyShardError } from "h5nest";
import { python, requirePython } from "./helpers/python.js";
import { tempDir } from "./helpers/tmp.js";

test("delete of a key held in the legacy root shard is refused; the value stays readable", async (t) => {
  if (!(await requirePython(t))) return;
  const root = path.join(await tempDir(t), "store");
  await fs.mkdir(root);
  await fs.writeFile(path.join(root, ".zarray"), JSON.stringify({ zarr_format: 2, shape: [8, 8], chunks: [4, 4], dtype: "|u1", compressor: null, fill_value: 0, order: "C", filters: null, dimension_separator: "/" }));
  await python(
    `
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "w") as f:
    f.create_dataset("0.1", data=np.void(bytes(range(16))))
`,
    [root + ".h5"],
  );
  const store = await H5NestedStore.open(root, { workers: 1 });
  t.after(() => store.close());
  assert.deepEqual(await store.get("0/1"), Uint8Array.from({ length: 16 }, (_, i) => i));
  await assert.rejects(store.delete("0/1"), (error: unknown) => error instanceof ReadOnlyShardError && error.file === root + ".h5");
  assert.deepEqual(await store.get("0/1"), Uint8Array.from({ length: 16 }, (_, i) => i), "nothing changed");
  // Keys the legacy shard does not hold delete as usual (a raw file).
  await store.set("1/1", new Uint8Array([1, 2, 3]));
  await store.delete("1/1");
  assert.equal(await store.get("1/1"), undefined);
});
