/**
 * `h5nest compact` (child process): HDF5 never reclaims the space of a
 * deleted dataset, and the Python store deletes and recreates a dataset on
 * every overwrite (docs/format.md section 4), so its shards only grow. Compaction
 * rewrites the shards whose dead space reaches --min-waste, keeps every
 * key's bytes, and leaves the other shards alone.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { type TestContext, test } from "node:test";
import { createV2Array, H5NestedStore, type StoreInfo } from "h5nest";
import { listFiles, sha256 } from "./helpers/arrays.ts";
import { describeRun, type FileState, fileState, h5nest, jsonLines } from "./helpers/cli.ts";
import { fillArray } from "./helpers/data.ts";
import { isMetadataKey, placement, PY_READ, type PyReadReport } from "./helpers/py-store.ts";
import { h5dump, pythonJson, requirePython } from "./helpers/python.ts";
import { copyFixture, FIXTURE, tempDir } from "./helpers/tmp.ts";

interface Manifest {
  keys: Record<string, { bytes: number; sha256: string }>;
  arrays: Record<string, { shape: number[]; sum: number; sha256_c_order_values: string }>;
}

const manifest = JSON.parse(await fs.readFile(path.join(FIXTURE, "manifest.json"), "utf8")) as Manifest;

interface CompactEvent {
  event: "shard";
  shard: string;
  before: number;
  after: number;
}

interface CompactSummaryLine {
  event: "summary";
  shardsSeen: number;
  shardsRewritten: number;
  bytesBefore: number;
  bytesAfter: number;
  reclaimedBytes: number;
  errors: unknown[];
  fatal: string | null;
  interrupted: boolean;
}

async function compactJson(root: string, minWaste: string): Promise<{ events: CompactEvent[]; summary: CompactSummaryLine }> {
  const args = ["compact", root, "--min-waste", minWaste, "--json", "--workers", "2"];
  const run = await h5nest(args);
  assert.equal(run.code, 0, describeRun(args, run));
  assert.equal(run.stderr, "", describeRun(args, run));
  const lines = jsonLines<CompactEvent | CompactSummaryLine>(run.stdout);
  const summary = lines.at(-1);
  assert.ok(summary && summary.event === "summary", describeRun(args, run));
  assert.deepEqual(summary.errors, []);
  assert.equal(summary.fatal, null);
  return { events: lines.filter((l): l is CompactEvent => l.event === "shard"), summary };
}

async function info(root: string): Promise<StoreInfo> {
  const args = ["info", root, "--json", "--workers", "2"];
  const run = await h5nest(args);
  assert.equal(run.code, 0, describeRun(args, run));
  return JSON.parse(run.stdout) as StoreInfo;
}

/**
 * H5_Nested_Store._toh5, once a write: open with 'a' and libver='latest',
 * delete the dataset, create it again as np.void. argv[2]: rounds of
 * [dataset, length, seed] writes. Prints the file size after each round.
 */
const PY_OVERWRITE = `
import sys, os, json, h5py, numpy as np
archive, rounds = sys.argv[1], json.loads(sys.argv[2])
sizes = []
for writes in rounds:
    for name, length, seed in writes:
        value = bytes((i * 7 + seed * 31) % 256 for i in range(length))
        with h5py.File(archive, 'a', libver='latest', locking=True) as f:
            if name in f:
                del f[name]
            f.create_dataset(name, data=np.void(value))
    sizes.append(os.stat(archive).st_size)
print(json.dumps(sizes))
`;

/** The bytes PY_OVERWRITE writes. */
function overwriteBytes(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 7 + seed * 31) % 256);
}

/** Every key's bytes through a fresh H5NestedStore. */
async function readAll(root: string, keys: string[]): Promise<Map<string, string>> {
  const store = await H5NestedStore.open(root, { workers: 2 });
  try {
    const values = await Promise.all(keys.map((k) => store.get(`/${k}`)));
    return new Map(keys.map((k, i) => [k, values[i] ? sha256(values[i]!) : "missing"]));
  } finally {
    await store.close();
  }
}

/** Every key's bytes through h5py (from its shard: these keys have no raw file). */
async function readAllH5py(root: string, keys: string[]): Promise<Map<string, string>> {
  const report = await pythonJson<PyReadReport>(PY_READ, [root, "[]"]);
  return new Map(
    keys.map((k) => {
      const { shard, dataset } = placement(k);
      return [k, report.shards[shard]?.datasets[dataset]?.sha256 ?? "missing"];
    }),
  );
}

async function states(root: string, files: string[]): Promise<Map<string, FileState>> {
  const out = new Map<string, FileState>();
  for (const f of files) out.set(f, await fileState(path.join(root, f)));
  return out;
}

test("compact rewrites a shard that h5py grew by overwriting chunks, and only that one", async (t) => {
  if (!(await requirePython(t))) return;
  const root = path.join(await tempDir(t), "store");
  // A 3-D array: shards vol/0.h5 and vol/1.h5, four 32-byte chunks each.
  {
    const store = await H5NestedStore.open(root, { workers: 1 });
    try {
      const arr = await createV2Array(store, "vol", { shape: [2, 8, 8], chunks: [1, 4, 4], dtype: "<u2", compressor: null });
      await fillArray(arr, "<u2");
    } finally {
      await store.close();
    }
  }
  const grown = "vol/0.h5";
  const clean = "vol/1.h5";
  const shardFiles = [grown, clean];
  assert.deepEqual(
    (await listFiles(root)).filter((f) => f.endsWith(".h5")),
    shardFiles,
  );
  const keys = (await listFiles(root)).filter((f) => !isMetadataKey(f) && !f.endsWith(".h5"));
  assert.deepEqual(keys, [], "no raw chunk files");
  const chunkKeys = ["vol/0/0/0", "vol/0/0/1", "vol/0/1/0", "vol/0/1/1", "vol/1/0/0", "vol/1/0/1", "vol/1/1/0", "vol/1/1/1"];
  const original = await readAll(root, chunkKeys);

  // Three rounds of Python overwrites of three chunks of vol/0.h5, different sizes each round.
  const rounds: [string, number, number][][] = [
    [
      ["0.0", 6000, 1],
      ["0.1", 9000, 2],
      ["1.0", 3000, 3],
    ],
    [
      ["0.0", 12000, 4],
      ["0.1", 2000, 5],
      ["1.0", 7000, 6],
    ],
    [
      ["0.0", 2500, 7],
      ["0.1", 4000, 8],
      ["1.0", 1500, 9],
    ],
  ];
  const sizes = [(await fs.stat(path.join(root, grown))).size];
  sizes.push(...(await pythonJson<number[]>(PY_OVERWRITE, [path.join(root, grown), JSON.stringify(rounds)])));
  for (let i = 1; i < sizes.length; i++) assert.ok(sizes[i]! > sizes[i - 1]!, `the shard grows every round: ${sizes.join(" -> ")}`);
  const expected = new Map(original);
  for (const [dataset, length, seed] of rounds.at(-1)!) expected.set(`vol/0/${dataset.replace(".", "/")}`, sha256(overwriteBytes(length, seed)));

  const before = await readAll(root, chunkKeys);
  assert.deepEqual(before, expected, "h5nest reads Python's last writes");
  assert.deepEqual(await readAllH5py(root, chunkKeys), expected, "h5py reads Python's last writes");
  const statesBefore = await states(root, shardFiles);
  const infoBefore = await info(root);
  t.diagnostic(`before: ${JSON.stringify({ sizes: [...statesBefore].map(([f, s]) => `${f}=${s.size}`), reclaimable: infoBefore.reclaimableBytes })}`);
  assert.ok(infoBefore.reclaimableBytes > 0, "info reports reclaimable bytes before compaction");

  await t.test("--min-waste 99%: nothing reaches it, nothing is rewritten", async () => {
    const { events, summary } = await compactJson(root, "99%");
    assert.deepEqual(events, []);
    assert.equal(summary.shardsSeen, 2);
    assert.equal(summary.shardsRewritten, 0);
    assert.equal(summary.reclaimedBytes, 0);
    assert.deepEqual(await states(root, shardFiles), statesBefore);
  });

  const { events, summary } = await compactJson(root, "20%");
  const statesAfter = await states(root, shardFiles);

  await t.test("--min-waste 20% rewrites the grown shard: it shrinks by exactly the reclaimed bytes", () => {
    const sizeBefore = (f: string) => statesBefore.get(f)!.size;
    const sizeAfter = (f: string) => statesAfter.get(f)!.size;
    assert.deepEqual(
      events.map((e) => path.relative(root, e.shard)),
      [grown],
    );
    assert.equal(events[0]!.before, sizeBefore(grown));
    assert.equal(events[0]!.after, sizeAfter(grown));
    assert.equal(summary.shardsSeen, 2);
    assert.equal(summary.shardsRewritten, 1);
    assert.equal(summary.bytesBefore, sizeBefore(grown) + sizeBefore(clean));
    assert.equal(summary.bytesAfter, sizeAfter(grown) + sizeAfter(clean));
    assert.ok(summary.reclaimedBytes > 0, `reclaimed ${summary.reclaimedBytes}`);
    assert.equal(summary.reclaimedBytes, sizeBefore(grown) - sizeAfter(grown));
    assert.equal(summary.reclaimedBytes, summary.bytesBefore - summary.bytesAfter);
    assert.notEqual(statesAfter.get(grown)!.ino, statesBefore.get(grown)!.ino, "rewritten (renamed over)");
  });

  await t.test("the shard without waste is not rewritten (same inode, mtime and bytes)", () => {
    assert.deepEqual(statesAfter.get(clean), statesBefore.get(clean));
  });

  await t.test("every key reads the same bytes as before compaction, in h5nest and in h5py", async () => {
    assert.deepEqual(await readAll(root, chunkKeys), expected);
    assert.deepEqual(await readAllH5py(root, chunkKeys), expected);
    const header = await h5dump(["-H", path.join(root, grown)]);
    assert.deepEqual([...header.matchAll(/DATASET "([^"]+)"/g)].map((m) => m[1]).sort(), ["0.0", "0.1", "1.0", "1.1"]);
  });

  await t.test("info: reclaimable bytes ~0 after compaction", async () => {
    const after = await info(root);
    t.diagnostic(`reclaimable: ${infoBefore.reclaimableBytes} -> ${after.reclaimableBytes}`);
    assert.ok(after.reclaimableBytes <= 0.02 * after.shardBytes, `reclaimable ${after.reclaimableBytes} of ${after.shardBytes}`);
    assert.equal(after.shardBytes, statesAfter.get(grown)!.size + statesAfter.get(clean)!.size);
    assert.equal(after.datasets, 8);
  });

  await t.test("a second compact (text mode) rewrites nothing", async () => {
    const args = ["compact", root, "--workers", "2"];
    const run = await h5nest(args);
    assert.equal(run.code, 0, describeRun(args, run));
    assert.match(run.stdout, /rewrote 0 of 2 shards/, describeRun(args, run));
    assert.deepEqual(await states(root, shardFiles), statesAfter);
  });
});

test("compact a copy of the Python fixture: every manifest key and array reads the same in h5nest and Python", async (t) => {
  if (!(await requirePython(t))) return;
  const root = await copyFixture(t);
  const keys = Object.keys(manifest.keys).sort();
  const shardFiles = (await listFiles(root)).filter((f) => f.endsWith(".h5"));
  const sizesBefore = await states(root, shardFiles);
  const infoBefore = await info(root);
  assert.ok(infoBefore.reclaimableBytes > 0);

  const { events, summary } = await compactJson(root, "20%");
  assert.equal(summary.shardsSeen, shardFiles.length);
  assert.equal(summary.shardsRewritten, events.length);
  assert.ok(events.length > 0, "Python's shards hold dead space");
  let actual = 0;
  for (const f of shardFiles) actual += sizesBefore.get(f)!.size - (await fs.stat(path.join(root, f))).size;
  assert.equal(summary.reclaimedBytes, actual);
  assert.ok(actual > 0);

  const store = await H5NestedStore.open(root, { workers: 2 });
  t.after(() => store.close());
  const values = await Promise.all(keys.map((k) => store.get(`/${k}`)));
  keys.forEach((key, i) => {
    assert.ok(values[i], `${key} is missing`);
    assert.equal(sha256(values[i]!), manifest.keys[key]!.sha256, key);
  });
  const report = await pythonJson<PyReadReport>(PY_READ, [root, JSON.stringify(Object.keys(manifest.arrays))]);
  for (const [arrayPath, want] of Object.entries(manifest.arrays)) {
    assert.equal(report.arrays[arrayPath]?.sha256, want.sha256_c_order_values, arrayPath);
  }
  const infoAfter = await info(root);
  assert.ok(infoAfter.reclaimableBytes < infoBefore.reclaimableBytes / 4, `${infoBefore.reclaimableBytes} -> ${infoAfter.reclaimableBytes}`);
});

test(
  "compact leaves raw files of arrays whose shard lies outside their folder (labels.h5, labels/mask2d.h5) raw",
  async (t) => {
    const root = await copyFixture(t);
    const raws = ["labels/line1d/1", "labels/mask2d/0/1"];
    const store = await H5NestedStore.open(root, { workers: 1 });
    try {
      for (const key of raws) {
        const value = await store.get(`/${key}`);
        assert.ok(value, key);
        await fs.mkdir(path.dirname(path.join(root, key)), { recursive: true });
        await fs.writeFile(path.join(root, key), value); // the same bytes: values never change
      }
    } finally {
      await store.close();
    }
    const before = await states(root, raws);
    await compactJson(root, "0%");
    for (const key of raws) {
      const after = await fileState(path.join(root, key)).catch(() => null);
      assert.deepEqual(after, before.get(key), `${key} was folded into ${placement(key).shard}`);
    }
  },
);

async function tinyChunkStore(t: TestContext): Promise<string> {
  // Nine 1-byte chunks in one shard (v/0.h5): more links than HDF5's compact link storage holds.
  const root = path.join(await tempDir(t), "store");
  const store = await H5NestedStore.open(root, { workers: 1 });
  try {
    const arr = await createV2Array(store, "v", { shape: [1, 3, 3], chunks: [1, 1, 1], dtype: "|u1", compressor: null });
    await fillArray(arr, "|u1");
  } finally {
    await store.close();
  }
  assert.deepEqual(
    (await listFiles(root)).filter((f) => f.endsWith(".h5")),
    ["v/0.h5"],
  );
  return root;
}

test(
  "a shard h5nest just wrote has nothing to reclaim: info says 0, compact --min-waste 1% leaves it alone",
  async (t) => {
    const root = await tinyChunkStore(t);
    const state = await fileState(path.join(root, "v/0.h5"));
    assert.equal((await info(root)).reclaimableBytes, 0);
    const { summary } = await compactJson(root, "1%");
    assert.equal(summary.shardsRewritten, 0);
    assert.deepEqual(await fileState(path.join(root, "v/0.h5")), state);
  },
);
