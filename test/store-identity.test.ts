/**
 * The store's identity record, `.h5nest/store.json` (issue items 1 and 4):
 * - made once, atomically: processes that record it at the same time all
 *   get the same id (the first link wins);
 * - 4. recorded configuration: opening a store with a consolidateDepth or
 *   containerExt other than the recorded one fails with a typed error;
 *   leaving them out takes the recorded ones; stores without a record
 *   (written by Python) take the options given, and the first writer of
 *   shards records them (a writeDirect: false writer records nothing);
 * - the folder is not part of the data: keys() does not list it, keys in it
 *   are refused, and Python zarr (NestedDirectoryStore, and the read path of
 *   H5_Nested_Store) opens, lists and reads the store as if it were not there.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import * as zarr from "zarrita";
import { createV2Array, H5NestedStore, InvalidKeyError, StoreConfigMismatchError, StoreIdentityError } from "h5nest";
import { collect } from "./helpers/arrays.js";
import { PY_MINI_STORE } from "./helpers/py-store.js";
import { pythonJson, requirePython } from "./helpers/python.js";
import { copyFixture, tempDir } from "./helpers/tmp.js";

const IDENTITY_MODULE = path.resolve(import.meta.dirname, "../packages/core/dist/identity.js");
const SHAPE = [1, 2, 2, 32, 32];
const CHUNKS = [1, 1, 1, 16, 16];

async function record(root: string): Promise<Record<string, unknown> | null> {
  try {
    return JSON.parse(await fsp.readFile(path.join(root, ".h5nest", "store.json"), "utf8")) as Record<string, unknown>;
  } catch {
    return null;
  }
}

/** A store with one 5-D array written in full (shards) with `options`. */
async function writtenStore(root: string, options: Parameters<typeof H5NestedStore.open>[1] = {}): Promise<void> {
  const store = await H5NestedStore.open(root, { workers: 1, ...options });
  try {
    const array = await createV2Array(store, "img", { shape: SHAPE, chunks: CHUNKS, dtype: "<u2", compressor: null });
    await zarr.set(array as zarr.Array<"uint16", H5NestedStore>, null, 5);
  } finally {
    await store.close();
  }
}

const mismatch = (option: string, recorded: unknown, given: unknown) => (error: unknown) => {
  assert.ok(error instanceof StoreConfigMismatchError, `a StoreConfigMismatchError, got ${String(error)}`);
  assert.equal(error.code, "H5NEST_CONFIG_MISMATCH");
  assert.equal(error.option, option);
  assert.equal(error.recorded, recorded);
  assert.equal(error.given, given);
  return true;
};

test("4. a store opened with another consolidateDepth or containerExt than it records fails with StoreConfigMismatchError", async (t) => {
  const root = path.join(await tempDir(t), "store");
  await writtenStore(root, { consolidateDepth: 4, containerExt: "hdf5" });
  const recorded = await record(root);
  assert.ok(recorded, "the first write of shards recorded the store's identity");
  assert.match(String(recorded.id), /^[0-9a-f]{32}$/);
  assert.equal(recorded.consolidateDepth, 4);
  assert.equal(recorded.containerExt, ".hdf5");
  assert.ok(fs.existsSync(path.join(root, "img", "0", "0.hdf5")), "depth 4 shards");

  const before = (await fsp.readdir(root, { recursive: true })).sort();
  await assert.rejects(H5NestedStore.open(root, { workers: 1, consolidateDepth: 3, containerExt: ".hdf5" }), mismatch("consolidateDepth", 4, 3));
  await assert.rejects(H5NestedStore.open(root, { workers: 1, containerExt: ".h5" }), mismatch("containerExt", ".hdf5", ".h5"));
  await assert.rejects(H5NestedStore.open(root, { workers: 1, consolidateDepth: 2, distributedLock: true }), mismatch("consolidateDepth", 4, 2));
  assert.deepEqual((await fsp.readdir(root, { recursive: true })).sort(), before, "a refused open changes nothing");

  // Options left out take the recorded layout: every key reads right, and writes land in the right shards.
  const store = await H5NestedStore.open(root, { workers: 1 });
  try {
    assert.equal(store.options.consolidateDepth, 4);
    assert.equal(store.options.containerExt, ".hdf5");
    const keys = (await collect(store.keys("img/"))).filter((k) => !k.endsWith(".zarray"));
    assert.equal(keys.length, 2 * 2 * 2 * 2);
    for (const key of keys) assert.deepEqual(await store.get(key), new Uint8Array(new Uint16Array(16 * 16).fill(5).buffer), key);
    await store.set("img/0/1/1/1/1", new Uint8Array(512).fill(1));
  } finally {
    await store.close();
  }
  assert.deepEqual(await record(root), recorded, "written once: the record never changes");
  for (const options of [{ consolidateDepth: 4, containerExt: ".hdf5" }, { consolidateDepth: 4 }, { containerExt: "hdf5" }]) {
    const same = await H5NestedStore.open(root, { workers: 1, ...options });
    assert.equal(same.options.containerExt, ".hdf5");
    await same.close();
  }
});

test("4. a store without a record (written by Python) takes the options given; its first shard writer records them", async (t) => {
  const root = await copyFixture(t); // written by the Python H5_Nested_Store, depth 3, .h5
  assert.equal(await record(root), null);
  // Reading records nothing; nor does a writer of raw files only (its tree stays NestedDirectoryStore's).
  const reader = await H5NestedStore.open(root, { workers: 1, consolidateDepth: 3 });
  const keys = await collect(reader.keys());
  assert.ok(keys.length > 10);
  await reader.close();
  const raw = await H5NestedStore.open(root, { workers: 1, writeDirect: false });
  const chunkKey = keys.find((k) => /^raw\/img5d\/(\d+\/){4}\d+$/.test(k))!;
  assert.ok(chunkKey, "a chunk key of raw/img5d");
  await raw.set(chunkKey, new Uint8Array(8).fill(3));
  await raw.close();
  assert.equal(await record(root), null, "no record from reads or raw-file writes");

  const writer = await H5NestedStore.open(root, { workers: 1, consolidateDepth: 3 });
  await writer.consolidate();
  await writer.close();
  const recorded = await record(root);
  assert.ok(recorded, "the first writer of shards recorded the layout");
  assert.equal(recorded.consolidateDepth, 3);
  assert.equal(recorded.containerExt, ".h5");
  await assert.rejects(H5NestedStore.open(root, { workers: 1, consolidateDepth: 2 }), mismatch("consolidateDepth", 3, 2));
});

test("4. a writer whose layout differs from a record made meanwhile fails its writes with StoreConfigMismatchError", async (t) => {
  const root = path.join(await tempDir(t), "store");
  const late = await H5NestedStore.open(root, { workers: 1, consolidateDepth: 4 }); // no record yet
  t.after(() => late.close().catch(() => {}));
  await writtenStore(root, { consolidateDepth: 3 }); // another process records depth 3 first
  await assert.rejects(late.set("img/0/0/1/0/0", new Uint8Array(512)), mismatch("consolidateDepth", 3, 4));
  await assert.rejects(late.consolidate().then((s) => Promise.reject(s.fatal ?? new Error("no error"))), mismatch("consolidateDepth", 3, 4));
});

test("concurrent first writers agree on one identity (the first link wins)", async (t) => {
  const dir = await tempDir(t);
  for (let round = 0; round < 4; round++) {
    const root = path.join(dir, `store${round}`);
    await fsp.mkdir(root);
    const script = `
      const { recordStoreIdentity } = await import(${JSON.stringify(IDENTITY_MODULE)});
      await new Promise((r) => setTimeout(r, Number(process.argv[1]) - Date.now()));
      const identity = await recordStoreIdentity(${JSON.stringify(root)}, { consolidateDepth: 2 + Number(process.argv[2]), containerExt: ".h5" });
      console.log(JSON.stringify(identity));`;
    const at = Date.now() + 600;
    const outputs = await Promise.all(
      Array.from({ length: 6 }, (_, i) => {
        const child = spawn(process.execPath, ["--input-type=module", "-e", script, String(at), String(i)], { stdio: ["ignore", "pipe", "inherit"] });
        let out = "";
        child.stdout.setEncoding("utf8").on("data", (text: string) => (out += text));
        return new Promise<string>((resolve) => child.on("close", () => resolve(out.trim())));
      }),
    );
    const identities = outputs.map((o) => JSON.parse(o) as { id: string; consolidateDepth: number });
    assert.equal(new Set(identities.map((i) => i.id)).size, 1, `round ${round}: one id for all: ${outputs.join(" ")}`);
    assert.equal(new Set(identities.map((i) => i.consolidateDepth)).size, 1, `round ${round}: one layout for all`);
    assert.deepEqual((await fsp.readdir(path.join(root, ".h5nest"))).sort(), ["store.json"], "no temporary file left");
  }
});

test("the .h5nest folder is not data: keys() skips it, its keys are refused, a damaged record is a typed error", async (t) => {
  const root = path.join(await tempDir(t), "store");
  await writtenStore(root, { distributedLock: { leaseMs: 1000 } });
  assert.ok(fs.existsSync(path.join(root, ".h5nest", "leases")), "the lease folder lives in the store");
  const store = await H5NestedStore.open(root, { workers: 1 });
  try {
    const keys = await collect(store.keys());
    assert.deepEqual(keys.filter((k) => k.startsWith(".h5nest")), []);
    const info = await store.info();
    assert.equal(info.metadataFiles, 2, ".zgroup and img/.zarray only");
    for (const key of [".h5nest/store.json", "/.h5nest/store.json", ".h5nest/leases/x", ".h5nest"]) {
      await assert.rejects(store.set(key, new Uint8Array(1)), InvalidKeyError, key);
      await assert.rejects(store.get(key), InvalidKeyError, key);
    }
  } finally {
    await store.close();
  }
  await fsp.writeFile(path.join(root, ".h5nest", "store.json"), "{not json");
  await assert.rejects(H5NestedStore.open(root, { workers: 1 }), (error: unknown) => error instanceof StoreIdentityError && error.code === "H5NEST_STORE_IDENTITY");
});

test("Python zarr ignores .h5nest: NestedDirectoryStore and the H5_Nested_Store read path open, list and read the store", async (t) => {
  if (!(await requirePython(t))) return;
  const dir = await tempDir(t);
  const grouped = path.join(dir, "grouped");
  await writtenStore(grouped, { distributedLock: { leaseMs: 1000 } }); // .h5nest/store.json and .h5nest/leases/server.1.json
  // A store whose root is an array: Python's consolidation walks the whole store then.
  const rootArray = path.join(dir, "root-array");
  const store = await H5NestedStore.open(rootArray, { workers: 1, distributedLock: { leaseMs: 1000 } });
  await zarr.set((await createV2Array(store, "", { shape: SHAPE, chunks: CHUNKS, dtype: "<u2", compressor: null })) as zarr.Array<"uint16", H5NestedStore>, null, 5);
  await store.close();
  for (const root of [grouped, rootArray]) assert.ok(fs.readdirSync(path.join(root, ".h5nest", "leases")).some((f) => f.startsWith("server.")));

  const report = await pythonJson<Record<string, { members: string[]; kind: string; values: number[]; minis: number[]; ndsKeys: string[] }>>(
    `${PY_MINI_STORE}
import sys, json
import numpy as np, zarr
out = {}
for root, array in ((sys.argv[1], 'img'), (sys.argv[2], '')):
    nds = zarr.storage.NestedDirectoryStore(root)
    node = zarr.open(nds, mode='r')
    kind = type(node).__name__
    members = sorted(node.keys()) if kind == 'Group' else []
    values = np.unique(zarr.open_array(nds, mode='r', path=array)[...]).tolist() if kind == 'Group' else []
    minis = np.unique(zarr.open_array(MiniH5NestedStore(root), mode='r', path=array)[...]).tolist()
    out[root] = {'members': members, 'kind': kind, 'values': values, 'minis': minis,
                 'ndsKeys': sorted(k for k in nds.keys() if k.startswith('.h5nest'))}
print(json.dumps(out))
`,
    [grouped, rootArray],
  );
  const g = report[grouped]!;
  assert.equal(g.kind, "Group");
  assert.deepEqual(g.members, ["img"], "zarr's hierarchy does not see .h5nest");
  assert.deepEqual(g.minis, [5], "the H5_Nested_Store read path reads every chunk");
  assert.deepEqual(g.values, [0], "(NestedDirectoryStore alone does not read shards: fill values)");
  const r = report[rootArray]!;
  assert.equal(r.kind, "Array", "a root array opens as an array");
  assert.deepEqual(r.minis, [5]);
  // The low-level key listing shows the files, as it shows any file in the folder.
  assert.ok(g.ndsKeys.includes(".h5nest/store.json"), JSON.stringify(g.ndsKeys));
});
