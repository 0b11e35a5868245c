/**
 * `h5nest consolidate` (child process) on stores written by Python:
 *   1) a copy of the Python H5_Nested_Store fixture (raw files pending for
 *      three shards, one key both raw and in its shard);
 *   2) a store written by Python zarr's NestedDirectoryStore (1-D to 5-D
 *      arrays, raw/zlib/blosc, one array inside the group "v1.2").
 * Afterwards h5nest, Python zarr + h5py (H5_Nested_Store's read path) and
 * h5dump read every value exactly as before, and the file tree is what
 * docs/format.md sections 3, 5 and 7 say.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { type TestContext, test } from "node:test";
import { H5NestedStore } from "h5nest";
import * as zarr from "zarrita";
import { cOrderBytes, collect, listFiles, sha256, sumOf } from "./helpers/arrays.ts";
import { describeRun, exists, type FileState, fileState, h5nest, jsonLines } from "./helpers/cli.ts";
import { isMetadataKey, makeNestedStore, NESTED_SPECS, placement, PY_READ, type PyReadReport } from "./helpers/py-store.ts";
import { h5dump, pythonJson, requirePython } from "./helpers/python.ts";
import { copyFixture, FIXTURE, tempDir } from "./helpers/tmp.ts";

interface Manifest {
  keys: Record<string, { bytes: number; sha256: string }>;
  arrays: Record<string, { shape: number[]; chunks: number[]; dtype: string; sum: number; sha256_c_order_values: string }>;
  raw_over_shard: { key: string; shard_sha256: string };
  files: string[];
}

const manifest = JSON.parse(await fs.readFile(path.join(FIXTURE, "manifest.json"), "utf8")) as Manifest;

/** Arrays whose chunks h5nest puts into shards (docs/format.md section 7: at least D = 3 dimensions, no '.' in the path). */
const FIXTURE_SHARDABLE = ["raw/img5d", "raw/vol3d", "sparse/s4d"];

function arrayOfKey(key: string, arrays: string[]): string | undefined {
  return arrays.find((a) => key.startsWith(`${a}/`));
}

async function openStore(t: TestContext, root: string): Promise<H5NestedStore> {
  const store = await H5NestedStore.open(root, { workers: 2 });
  t.after(() => store.close());
  return store;
}

/** Runs `work` over `items` with at most `limit` running at once. */
async function inParallel<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

/** h5dump -H of every shard lists exactly the datasets h5py saw. */
async function h5dumpHeaders(root: string, report: PyReadReport, shards: string[]): Promise<void> {
  await inParallel(shards, 4, async (shard) => {
    const header = await h5dump(["-H", path.join(root, shard)]);
    const names = [...header.matchAll(/DATASET "([^"]+)"/g)].map((m) => m[1]!);
    assert.deepEqual(names.sort(), Object.keys(report.shards[shard]!.datasets).sort(), `h5dump -H ${shard}`);
  });
}

/** The bytes of one dataset as `h5dump -b` writes them. */
async function h5dumpBytes(dir: string, shardFile: string, dataset: string): Promise<Uint8Array> {
  const out = path.join(dir, `${sha256(new TextEncoder().encode(`${shardFile}:${dataset}`))}.bin`);
  await h5dump(["-d", `/${dataset}`, "-b", "LE", "-o", out, shardFile]);
  return new Uint8Array(await fs.readFile(out));
}

// ---------------------------------------------------------------------------
// 1) the Python H5_Nested_Store fixture

test("consolidate a copy of the Python fixture: every key, array and shard reads the same in h5nest, Python and h5dump", async (t) => {
  if (!(await requirePython(t))) return;
  const root = await copyFixture(t);
  const manifestKeys = Object.keys(manifest.keys).sort();
  const chunkKeys = manifestKeys.filter((k) => !isMetadataKey(k));

  // Raw files of the 1-D and 2-D arrays (same bytes as their shards hold): their
  // shards lie outside the array folder (labels.h5, labels/mask2d.h5), so they must stay raw.
  const labelRaw = ["labels/line1d/1", "labels/mask2d/0/1"];
  {
    const store = await H5NestedStore.open(root, { workers: 1 });
    try {
      for (const key of labelRaw) {
        const value = await store.get(`/${key}`);
        assert.ok(value, key);
        await fs.mkdir(path.dirname(path.join(root, key)), { recursive: true });
        await fs.writeFile(path.join(root, key), value);
      }
    } finally {
      await store.close();
    }
  }
  // A leftover temporary file of a crashed NestedDirectoryStore write, among raw chunks.
  const leftover = "raw/vol3d/2/0/0.0123456789abcdef0123456789abcdef.partial";
  await fs.writeFile(path.join(root, leftover), "half a chunk");
  const anHourAgo = new Date(Date.now() - 3600_000); // abandoned, not a live writer's
  await fs.utimes(path.join(root, leftover), anHourAgo, anHourAgo);

  const filesBefore = await listFiles(root);
  const pendingRaw = filesBefore.filter((f) => !isMetadataKey(f) && arrayOfKey(f, FIXTURE_SHARDABLE));
  assert.equal(pendingRaw.length, 19, "the fixture has 19 raw chunk files of shardable arrays");
  const foldedShards = [...new Set(pendingRaw.map((f) => placement(f).shard))].sort();
  assert.deepEqual(foldedShards, ["raw/img5d/0/1/2.h5", "raw/vol3d/1.h5", "raw/vol3d/2.h5"]);
  const shardsBefore = new Map<string, FileState>();
  for (const f of filesBefore.filter((f) => f.endsWith(".h5"))) shardsBefore.set(f, await fileState(path.join(root, f)));
  const labelRawBefore = await Promise.all(labelRaw.map((k) => fileState(path.join(root, k))));

  const args = ["consolidate", root, "--workers", "2", "--json"];
  const run = await h5nest(args);
  assert.equal(run.code, 0, describeRun(args, run));
  assert.equal(run.stderr, "", describeRun(args, run));
  const lines = jsonLines<{ event: string; shard?: string; chunks?: number } & Record<string, unknown>>(run.stdout);
  const summary = lines.find((l) => l.event === "summary");
  assert.ok(summary, describeRun(args, run));
  assert.equal(summary.chunks, 19);
  assert.equal(summary.shards, 3);
  assert.equal(summary.swept, 1, "the leftover .partial file was swept");
  assert.deepEqual(summary.errors, []);
  assert.equal(summary.fatal, null);
  assert.equal(summary.interrupted, false);
  const shardEvents = lines.filter((l) => l.event === "shard");
  assert.deepEqual(shardEvents.map((e) => path.relative(root, e.shard!)).sort(), foldedShards);
  assert.equal(
    shardEvents.reduce((s, e) => s + e.chunks!, 0),
    19,
  );

  const filesAfter = await listFiles(root);

  await t.test("no raw chunk file of a shardable array remains (raw/vol3d, 3-D, included); the labels' raw files stay", async () => {
    const expected = [
      ...manifest.files.filter((f) => isMetadataKey(f) || !arrayOfKey(f, FIXTURE_SHARDABLE)),
      "raw/vol3d/2.h5", // new: the Python store never consolidates 3-D arrays
      ".h5nest/store.json", // new: the layout the consolidation wrote shards with
      ...labelRaw,
    ].sort();
    assert.deepEqual(filesAfter, expected);
    for (const folder of ["raw/vol3d/1", "raw/vol3d/2", "raw/img5d/0/1/2"]) {
      assert.equal(await exists(path.join(root, folder)), false, `emptied folder ${folder} was removed`);
    }
    const labelRawAfter = await Promise.all(labelRaw.map((k) => fileState(path.join(root, k))));
    assert.deepEqual(labelRawAfter, labelRawBefore, "raw files of the 1-D and 2-D arrays are untouched");
  });

  await t.test("shards with nothing to fold (labels.h5 and labels/mask2d.h5 included) are untouched", async () => {
    for (const [shard, before] of shardsBefore) {
      if (foldedShards.includes(shard)) continue;
      assert.deepEqual(await fileState(path.join(root, shard)), before, shard);
    }
  });

  const store = await openStore(t, root);

  await t.test("a fresh H5NestedStore reads every manifest key byte-exact, and lists each once", async () => {
    const values = await Promise.all(manifestKeys.map((key) => store.get(`/${key}`)));
    manifestKeys.forEach((key, i) => {
      assert.ok(values[i], `${key} is missing`);
      assert.equal(sha256(values[i]!), manifest.keys[key]!.sha256, key);
    });
    const listed = await collect(store.keys());
    assert.deepEqual([...listed].sort(), manifestKeys);
    assert.equal(new Set(listed).size, listed.length, "a key was listed twice");
  });

  await t.test("zarrita reads every array's manifest values", async () => {
    for (const [arrayPath, expected] of Object.entries(manifest.arrays)) {
      const arr = await zarr.open.v2(zarr.root(store).resolve(arrayPath), { kind: "array" });
      const result = await zarr.get(arr, null);
      const data = result.data as unknown as ArrayLike<number> & ArrayBufferView;
      assert.equal(sha256(cOrderBytes({ data, shape: result.shape, stride: result.stride })), expected.sha256_c_order_values, arrayPath);
    }
  });

  const report = await pythonJson<PyReadReport>(PY_READ, [root, JSON.stringify(Object.keys(manifest.arrays))]);

  await t.test("Python zarr through the H5_Nested_Store read path reads every array's values (sha256, sum)", () => {
    for (const [arrayPath, expected] of Object.entries(manifest.arrays)) {
      const got = report.arrays[arrayPath];
      assert.ok(got, arrayPath);
      assert.deepEqual(got.shape, expected.shape, arrayPath);
      assert.equal(got.sha256, expected.sha256_c_order_values, `values of ${arrayPath}`);
      assert.ok(Math.abs(got.sum - expected.sum) <= 1e-9 * Math.max(1, Math.abs(expected.sum)), `sum of ${arrayPath}: ${got.sum} != ${expected.sum}`);
    }
  });

  await t.test("h5py reads every chunk from its shard; the raw file's bytes won over the shard's old value", () => {
    const shardsOnDisk = filesAfter.filter((f) => f.endsWith(".h5"));
    assert.deepEqual(Object.keys(report.shards).sort(), shardsOnDisk);
    const expectedDatasets = new Map<string, string[]>();
    for (const key of chunkKeys) {
      const { shard, dataset } = placement(key);
      expectedDatasets.set(shard, [...(expectedDatasets.get(shard) ?? []), dataset]);
      const d = report.shards[shard]?.datasets[dataset];
      assert.ok(d, `${key}: no dataset ${dataset} in ${shard}`);
      assert.equal(d.sha256, manifest.keys[key]!.sha256, `${key} in ${shard}:${dataset}`);
    }
    for (const shard of shardsOnDisk) {
      assert.deepEqual(Object.keys(report.shards[shard]!.datasets).sort(), (expectedDatasets.get(shard) ?? []).sort(), `datasets of ${shard}`);
    }
    const { key, shard_sha256 } = manifest.raw_over_shard;
    const { shard, dataset } = placement(key);
    assert.notEqual(report.shards[shard]!.datasets[dataset]!.sha256, shard_sha256, "the shard's old value survived consolidation");
  });

  await t.test("h5dump -H reads every shard; h5dump -b gives the raw-over-shard key's raw bytes", async () => {
    await h5dumpHeaders(root, report, filesAfter.filter((f) => f.endsWith(".h5")));
    const { key } = manifest.raw_over_shard;
    const { shard, dataset } = placement(key);
    const bytes = await h5dumpBytes(await tempDir(t, "h5nest-h5dump-"), path.join(root, shard), dataset);
    assert.equal(sha256(bytes), manifest.keys[key]!.sha256);
  });
});

// ---------------------------------------------------------------------------
// 2) a store written by Python zarr's NestedDirectoryStore

test("consolidate a NestedDirectoryStore written by Python zarr: values read the same everywhere; 1-D, 2-D and v1.2 chunks stay raw", async (t) => {
  if (!(await requirePython(t))) return;
  const dir = await tempDir(t);
  const ns = await makeNestedStore(dir);
  const { root } = ns;
  const sharded = NESTED_SPECS.filter((s) => s.sharded);
  const unsharded = NESTED_SPECS.filter((s) => !s.sharded);
  for (const spec of NESTED_SPECS) assert.ok(ns.chunksOf.get(spec.path)!.length > 0, `${spec.path} has chunk files`);
  // g/vol3 was written for z < 3 only: its last chunk row along z is missing (fill values).
  assert.ok(!ns.chunksOf.get("g/vol3")!.some((k) => k.startsWith("g/vol3/2/")));

  const moved = sharded.flatMap((s) => ns.chunksOf.get(s.path)!).sort();
  const stay = unsharded.flatMap((s) => ns.chunksOf.get(s.path)!).sort();
  const expectedShards = [...new Set(moved.map((k) => placement(k).shard))].sort();
  const rawSha = new Map<string, string>();
  for (const file of ns.files) rawSha.set(file, sha256(new Uint8Array(await fs.readFile(path.join(root, file)))));
  const stayBefore = await Promise.all(stay.map((f) => fileState(path.join(root, f))));

  const args = ["consolidate", root, "--workers", "2"];
  const run = await h5nest(args);
  assert.equal(run.code, 0, describeRun(args, run));
  assert.match(run.stdout, new RegExp(`moved ${moved.length} chunks \\(.*\\) into ${expectedShards.length} shards`), describeRun(args, run));

  const filesAfter = await listFiles(root);

  await t.test("the tree: metadata, the raw files of line1, g/img2 and v1.2/img4 (untouched), and the shards", async () => {
    const metadata = ns.files.filter(isMetadataKey);
    assert.deepEqual(filesAfter, [...metadata, ...stay, ...expectedShards, ".h5nest/store.json"].sort()); // and the layout recorded
    assert.deepEqual(await Promise.all(stay.map((f) => fileState(path.join(root, f)))), stayBefore);
    assert.ok(!filesAfter.some((f) => f.startsWith("v1.2/") && f.endsWith(".h5")), "no shard inside v1.2");
    assert.equal(await exists(path.join(dir, "store.h5")), false, "no shard beside the store folder");
    assert.equal(await exists(path.join(root, "g/img2.h5")), false, "no shard beside g/img2");
    assert.equal(await exists(path.join(root, "g.h5")), false);
  });

  const report = await pythonJson<PyReadReport>(PY_READ, [root, JSON.stringify(NESTED_SPECS.map((s) => s.path))]);

  await t.test("Python zarr (H5_Nested_Store read path) reads every array exactly as NestedDirectoryStore wrote it", () => {
    for (const spec of NESTED_SPECS) {
      assert.deepEqual(report.arrays[spec.path], ns.digests[spec.path], spec.path);
    }
  });

  await t.test("h5py: every moved chunk is a dataset holding the raw file's bytes, and nothing else", () => {
    assert.deepEqual(Object.keys(report.shards).sort(), expectedShards);
    const expectedDatasets = new Map<string, string[]>();
    for (const key of moved) {
      const { shard, dataset } = placement(key);
      expectedDatasets.set(shard, [...(expectedDatasets.get(shard) ?? []), dataset]);
      const d = report.shards[shard]!.datasets[dataset];
      assert.ok(d, `${key}: no dataset ${dataset} in ${shard}`);
      assert.equal(d.sha256, rawSha.get(key), key);
    }
    for (const shard of expectedShards) {
      assert.deepEqual(Object.keys(report.shards[shard]!.datasets).sort(), expectedDatasets.get(shard)!.sort(), shard);
    }
  });

  await t.test("h5dump -H reads every shard; h5dump -b of one dataset a shard gives the raw bytes", async () => {
    await h5dumpHeaders(root, report, expectedShards);
    const out = await tempDir(t, "h5nest-h5dump-");
    await inParallel(expectedShards, 4, async (shard) => {
      const key = moved.find((k) => placement(k).shard === shard)!;
      const bytes = await h5dumpBytes(out, path.join(root, shard), placement(key).dataset);
      assert.equal(sha256(bytes), rawSha.get(key), key);
    });
  });

  await t.test("a second consolidate moves nothing and rewrites no shard", async () => {
    const shardStates = await Promise.all(expectedShards.map((f) => fileState(path.join(root, f))));
    const again = ["consolidate", root, "--workers", "2", "--json"];
    const second = await h5nest(again);
    assert.equal(second.code, 0, describeRun(again, second));
    const summary = jsonLines<{ event: string; chunks?: number; shards?: number }>(second.stdout).find((l) => l.event === "summary");
    assert.equal(summary?.chunks, 0, describeRun(again, second));
    assert.equal(summary?.shards, 0, describeRun(again, second));
    assert.deepEqual(await Promise.all(expectedShards.map((f) => fileState(path.join(root, f)))), shardStates);
    assert.deepEqual(await listFiles(root), filesAfter);
  });

  await t.test("a fresh H5NestedStore reads every chunk's bytes and, through zarrita, every array's values", async () => {
    const store = await openStore(t, root);
    const keys = [...moved, ...stay];
    const values = await Promise.all(keys.map((k) => store.get(`/${k}`)));
    keys.forEach((key, i) => {
      assert.ok(values[i], `${key} is missing`);
      assert.equal(sha256(values[i]!), rawSha.get(key), key);
    });
    for (const spec of NESTED_SPECS) {
      const arr = await zarr.open.v2(zarr.root(store).resolve(spec.path), { kind: "array" });
      const result = await zarr.get(arr, null);
      const data = result.data as unknown as ArrayLike<number> & ArrayBufferView;
      assert.equal(sha256(cOrderBytes({ data, shape: result.shape, stride: result.stride })), ns.digests[spec.path]!.sha256, spec.path);
      const sum = sumOf(data);
      const want = ns.digests[spec.path]!.sum;
      assert.ok(Math.abs(sum - want) <= 1e-9 * Math.max(1, Math.abs(want)), `sum of ${spec.path}: ${sum} != ${want}`);
    }
  });
});
