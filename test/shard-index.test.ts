/**
 * The shard index (indexShard / indexShardFile) answers exactly what h5py
 * (HDF5 1.10.8) reads, dataset by dataset: for every flavour of file
 * test/python/make_flavours.py writes, for the shards of the Python-written
 * fixture store, for shards h5nest writes itself, and for a shard that h5py
 * edits in place after it was indexed.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { type TestContext, test } from "node:test";
import * as zarr from "zarrita";
import { createV2Array, H5NestedStore } from "h5nest";
import { type IndexOutcome, indexShard, indexShardFile } from "@h5nest/workers";
import { listFiles } from "./helpers/arrays.ts";
import { fillArray, makeChunk } from "./helpers/data.ts";
import { python, requirePython } from "./helpers/python.ts";
import { copyFixture, tempDir } from "./helpers/tmp.ts";
import { compareWithH5py, describeFiles, makeFlavours } from "./python/h5py-reference.ts";

/** Flavours the index hands to h5wasm as a whole, and why. */
const NOT_INDEXED: Record<string, RegExp> = {
  "huge-link-name": /huge objects/,
  // File-wide settings HDF5 decodes on open (shared-message index, paged file space).
  sohm: /superblock has an extension/,
  "page-strategy": /superblock has an extension/,
};

/** Indexes every file and compares each with h5py; fails listing every difference. */
async function assertMatchesH5py(files: string[], flavourOf: (file: string) => string = () => "") {
  const views = await describeFiles(files);
  const problems: string[] = [];
  for (const file of files) {
    const flavour = flavourOf(file);
    const outcome = indexShardFile(file);
    const expectedReason = NOT_INDEXED[flavour];
    if (expectedReason) {
      if (outcome.ok || !expectedReason.test(outcome.reason)) problems.push(`${file}: expected { ok: false } matching ${expectedReason}, got ${JSON.stringify(outcome.ok ? "ok" : outcome)}`);
      continue;
    }
    problems.push(...compareWithH5py(file, outcome, views[file]!));
  }
  assert.deepEqual(problems, [], problems.slice(0, 40).join("\n"));
}

function placedCount(outcome: IndexOutcome): number {
  if (!outcome.ok) return 0;
  return [...outcome.index.datasets.values()].filter((p) => !("unplaced" in p)).length;
}

test("every h5py flavour: the index lists h5py's datasets and places their bytes where h5py reads them", async (t) => {
  if (!(await requirePython(t))) return;
  const dir = await tempDir(t, "h5nest-flavours-");
  const manifest = await makeFlavours(dir);
  const files = Object.keys(manifest).sort();
  const flavourOf = (file: string) => path.basename(file, ".h5");
  // The flavours the index must cover are all there (make_flavours.py names them).
  for (const name of [
    "earliest-small",
    "earliest-deep",
    "earliest-sym-k2",
    "v108-dense",
    "latest-dense-1200",
    "many-5000-latest",
    "track-order",
    "track-order-latest",
    "userblock",
    "userblock-latest",
    "chunked-gzip",
    "chunked-plain",
    "compact-layout",
    "compact-layout-earliest",
    "attrs-subgroups",
    "earliest-opaque",
    "latest-opaque",
    "edited-in-place-earliest",
    "edited-in-place-latest",
  ]) {
    assert.ok(files.some((f) => flavourOf(f) === name), `flavour ${name} was written`);
  }
  await assertMatchesH5py(files, flavourOf);

  // The manifest (h5py's own list of datasets with their sha256) agrees too: every dataset is listed and placed or unplaced.
  for (const file of files) {
    const outcome = indexShardFile(file);
    if (!outcome.ok) continue;
    for (const name of Object.keys(manifest[file]!)) assert.ok(outcome.index.datasets.has(name), `${file}: "${name}" listed`);
  }
  // Spot checks that the comparison has teeth: these flavours place every dataset.
  for (const [name, count] of [["earliest-deep", 1500], ["many-5000-latest", 5000], ["latest-dense-1200", 1200], ["userblock", 30], ["compact-layout", 10], ["earliest-opaque", 20]] as const) {
    assert.equal(placedCount(indexShardFile(path.join(dir, `${name}.h5`))), count, `${name}: every dataset placed`);
  }
});

test("indexShard on an open descriptor names the file in a CorruptShardError", async (t) => {
  if (!(await requirePython(t))) return;
  const dir = await tempDir(t, "h5nest-flavours-");
  await makeFlavours(dir, ["earliest-small"]);
  const file = path.join(dir, "earliest-small.h5");
  const handle = await fs.open(file, "r");
  try {
    const size = (await handle.stat()).size;
    assert.equal(placedCount(indexShard(handle.fd, size, file)), 5);
    // A size smaller than the superblock's end-of-file address is a truncated file.
    assert.throws(() => indexShard(handle.fd, size - 1, "the-name-given.h5"), (error: Error) => {
      assert.equal(error.name, "CorruptShardError");
      assert.match(error.message, /the-name-given\.h5/);
      assert.match(error.message, /truncated/);
      return true;
    });
  } finally {
    await handle.close();
  }
});

test("the Python-written fixture store: every shard indexes to what h5py reads", async (t) => {
  if (!(await requirePython(t))) return;
  const root = await copyFixture(t);
  const shards = (await listFiles(root)).filter((f) => f.endsWith(".h5")).map((f) => path.join(root, f));
  assert.ok(shards.length >= 5, `fixture shards: ${shards.length}`);
  await assertMatchesH5py(shards);
  const placed = shards.reduce((n, file) => n + placedCount(indexShardFile(file)), 0);
  assert.ok(placed > 0, "the fixture's chunks are placed");
});

test("shards written by h5nest: every shard indexes to what h5py reads", async (t) => {
  if (!(await requirePython(t))) return;
  const root = path.join(await tempDir(t), "store");
  const store = await H5NestedStore.open(root, { workers: 2 });
  try {
    // Whole shards of 5-D uint16 chunks, 3-D int32, and uint8 with a partial edge chunk.
    const img = await createV2Array(store, "img", { shape: [1, 1, 2, 64, 64], chunks: [1, 1, 1, 16, 16], dtype: "<u2", compressor: null });
    await fillArray(img, "<u2");
    const vol = await createV2Array(store, "vol", { shape: [3, 20, 20], chunks: [1, 8, 8], dtype: "<i4", compressor: null });
    await fillArray(vol, "<i4");
    const edge = await createV2Array(store, "edge", { shape: [2, 9, 7], chunks: [1, 4, 4], dtype: "|u1", compressor: null });
    await fillArray(edge, "|u1");
    // Small updates become raw files, which flush() folds into a rewritten shard; a deleted chunk leaves its shard.
    await zarr.set(img, [0, 0, 0, zarr.slice(0, 16), zarr.slice(0, 16)], makeChunk("<u2", [16, 16]) as never);
    await store.delete("/vol/1/0/0");
    await store.flush();
  } finally {
    await store.close();
  }
  const shards = (await listFiles(root)).filter((f) => f.endsWith(".h5")).map((f) => path.join(root, f));
  assert.ok(shards.length >= 6, `h5nest shards: ${shards.join(", ")}`);
  await assertMatchesH5py(shards);
  const vol1 = indexShardFile(path.join(root, "vol/1.h5"));
  assert.ok(vol1.ok && !vol1.index.datasets.has("0.0") && vol1.index.datasets.has("0.1"), "the deleted chunk is gone, its neighbour stays");
});

/** h5py edits a file in place, as the Python H5_Nested_Store does. */
async function editWithH5py(file: string, script: string): Promise<void> {
  await python(`import sys, h5py, numpy as np\nrng = np.random.default_rng(3)\nwith h5py.File(sys.argv[1], 'a') as f:\n${script}`, [file]);
}

for (const flavour of ["earliest-small", "v108-compact-links", "v108-dense", "latest-dense-200", "earliest-opaque"]) {
  test(`an in-place h5py edit of an indexed shard (${flavour}) is seen on re-index`, async (t: TestContext) => {
    if (!(await requirePython(t))) return;
    const dir = await tempDir(t, "h5nest-edit-");
    await makeFlavours(dir, [flavour]);
    const file = path.join(dir, `${flavour}.h5`);
    const before = indexShardFile(file);
    assert.ok(before.ok);
    await assertMatchesH5py([file]);
    const names = [...before.index.datasets.keys()].sort();
    const victim = names[0]!;
    const place = before.index.datasets.get(victim)!;
    assert.ok(!("unplaced" in place));

    // Delete and recreate one dataset with other bytes of the same size, and add one.
    await editWithH5py(
      file,
      `    name = ${JSON.stringify(victim)}
    old = f[name]
    shape, dtype, value = old.shape, old.dtype, old[()]
    del f[name]
    if shape == ():
        f.create_dataset(name, data=np.void(bytes(255 - b for b in value.tobytes())))
    else:
        f.create_dataset(name, data=(255 - value).astype(dtype))
    f.create_dataset('added', data=rng.integers(0, 256, size=77, dtype='u1'))
`,
    );
    const after = indexShardFile(file);
    assert.ok(after.ok);
    assert.deepEqual([...after.index.datasets.keys()].sort(), [...names, "added"].sort());
    const moved = after.index.datasets.get(victim)!;
    assert.ok(!("unplaced" in moved) && moved.length === place.length, "recreated with the same size");
    await assertMatchesH5py([file]);

    // Delete one and add it back under a new name; the old name must be gone.
    await editWithH5py(file, `    f.move(${JSON.stringify(victim)}, 'renamed')\n`);
    const renamed = indexShardFile(file);
    assert.ok(renamed.ok && !renamed.index.datasets.has(victim) && renamed.index.datasets.has("renamed"));
    await assertMatchesH5py([file]);
  });
}

test("an h5py edit of an h5nest shard (as H5_Nested_Store edits in place) is seen on re-index", async (t) => {
  if (!(await requirePython(t))) return;
  const root = path.join(await tempDir(t), "store");
  const store = await H5NestedStore.open(root, { workers: 1 });
  try {
    const vol = await createV2Array(store, "vol", { shape: [2, 16, 16], chunks: [1, 8, 8], dtype: "|u1", compressor: null });
    await fillArray(vol, "|u1");
  } finally {
    await store.close();
  }
  const shard = path.join(root, "vol/0.h5");
  const before = indexShardFile(shard);
  assert.ok(before.ok);
  assert.deepEqual([...before.index.datasets.keys()].sort(), ["0.0", "0.1", "1.0", "1.1"]);
  await assertMatchesH5py([shard]);

  await editWithH5py(
    shard,
    `    old = f['0.1'][()]
    del f['0.1']
    f.create_dataset('0.1', data=(255 - old).astype('u1'))
    f.create_dataset('2.0', data=np.arange(64, dtype='u1'))
`,
  );
  const after = indexShardFile(shard);
  assert.ok(after.ok);
  assert.deepEqual([...after.index.datasets.keys()].sort(), ["0.0", "0.1", "1.0", "1.1", "2.0"]);
  const oldPlace = before.index.datasets.get("0.1") as { offset: number; length: number };
  const newPlace = after.index.datasets.get("0.1") as { offset: number; length: number };
  assert.equal(newPlace.length, oldPlace.length);
  const bytes = await fs.readFile(shard);
  const fresh = bytes.subarray(newPlace.offset, newPlace.offset + newPlace.length);
  assert.ok(fresh.every((b, i) => b === 255 - makeChunk("|u1", [2, 16, 16]).data[(i >> 3) * 16 + 8 + (i & 7)]!), "the recreated dataset's new bytes");
  await assertMatchesH5py([shard]);
});
