/**
 * A corrupt shard stops nothing else. In a store with raw chunk files pending
 * for two shards, one of those shards is overwritten with garbage (or
 * truncated): `h5nest verify` exits 1 and names it (stderr, --json);
 * `h5nest consolidate` exits non-zero, names it, leaves it and its raw files
 * byte-identical, and consolidates everything else.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { type TestContext, test } from "node:test";
import { createV2Array, H5NestedStore } from "h5nest";
import { listFiles, sha256 } from "./helpers/arrays.ts";
import { describeRun, exists, type FileState, fileState, h5nest, jsonLines } from "./helpers/cli.ts";
import { fillArray } from "./helpers/data.ts";
import { isMetadataKey, placement } from "./helpers/py-store.ts";
import { tempDir } from "./helpers/tmp.ts";

interface Damaged {
  root: string;
  /** vol/0.h5: damaged, with raw files pending. */
  bad: string;
  badRaw: string[];
  /** vol/1.h5: intact, with raw files pending. */
  good: string;
  goodRaw: string[];
  /** Chunks of raw4 (4-D, raw files only: its shards do not exist yet). */
  raw4: string[];
  /** sha256 of every chunk key, read through h5nest before the damage. */
  expected: Map<string, string>;
}

/** 32 bytes that no chunk of the store holds. */
function newChunk(seed: number): Uint8Array {
  return Uint8Array.from({ length: 32 }, (_, i) => (seed * 13 + i * 5 + 128) % 256);
}

async function buildStore(t: TestContext): Promise<Omit<Damaged, "bad" | "badRaw" | "good" | "goodRaw"> & { shards: string[] }> {
  const root = path.join(await tempDir(t), "store");
  {
    // vol: 3-D, shards vol/0.h5, vol/1.h5, vol/2.h5 with four 32-byte chunks each.
    const store = await H5NestedStore.open(root, { workers: 1 });
    try {
      const vol = await createV2Array(store, "vol", { shape: [3, 8, 8], chunks: [1, 4, 4], dtype: "<u2", compressor: null });
      await fillArray(vol, "<u2");
    } finally {
      await store.close();
    }
  }
  {
    // raw4: 4-D, written as NestedDirectoryStore would (raw files only).
    const store = await H5NestedStore.open(root, { workers: 1, writeDirect: false });
    try {
      const raw4 = await createV2Array(store, "raw4", { shape: [2, 2, 4, 4], chunks: [1, 1, 2, 2], dtype: "|u1", compressor: null });
      await fillArray(raw4, "|u1");
    } finally {
      await store.close();
    }
  }
  const files = await listFiles(root);
  const shards = files.filter((f) => f.endsWith(".h5"));
  assert.deepEqual(shards, ["vol/0.h5", "vol/1.h5", "vol/2.h5"]);
  const raw4 = files.filter((f) => f.startsWith("raw4/") && !isMetadataKey(f));
  assert.equal(raw4.length, 16);
  return { root, raw4, shards, expected: new Map() };
}

/** All chunk keys of the store. */
function allChunkKeys(raw4: string[]): string[] {
  const vol: string[] = [];
  for (let z = 0; z < 3; z++) for (let y = 0; y < 2; y++) for (let x = 0; x < 2; x++) vol.push(`vol/${z}/${y}/${x}`);
  return [...vol, ...raw4];
}

async function damagedStore(t: TestContext, damage: (file: string) => Promise<void>): Promise<Damaged> {
  const built = await buildStore(t);
  const { root } = built;
  // Raw files pending for vol/0.h5 and vol/1.h5 (newer values of chunks the shards hold).
  const badRaw = ["vol/0/0/1", "vol/0/1/1"];
  const goodRaw = ["vol/1/0/0", "vol/1/1/0"];
  let seed = 0;
  for (const key of [...badRaw, ...goodRaw]) {
    await fs.mkdir(path.dirname(path.join(root, key)), { recursive: true });
    await fs.writeFile(path.join(root, key), newChunk(++seed));
  }
  const expected = new Map<string, string>();
  const keys = allChunkKeys(built.raw4);
  const store = await H5NestedStore.open(root, { workers: 2 });
  try {
    const values = await Promise.all(keys.map((k) => store.get(`/${k}`)));
    keys.forEach((k, i) => {
      assert.ok(values[i], k);
      expected.set(k, sha256(values[i]!));
    });
  } finally {
    await store.close();
  }
  for (const key of [...badRaw, ...goodRaw]) assert.equal(expected.get(key), sha256(newChunk(badRaw.concat(goodRaw).indexOf(key) + 1)), `${key} reads its raw file`);

  // The intact store verifies clean: the failures below come from the damage.
  const args = ["verify", root, "--workers", "2"];
  const clean = await h5nest(args);
  assert.equal(clean.code, 0, describeRun(args, clean));
  assert.match(clean.stdout, /checked 3 shards, 12 datasets.*all readable/, describeRun(args, clean));

  const bad = path.join(root, "vol/0.h5");
  await damage(bad);
  return { root, raw4: built.raw4, expected, bad, badRaw, good: path.join(root, "vol/1.h5"), goodRaw };
}

async function states(root: string, keys: string[]): Promise<FileState[]> {
  return Promise.all(keys.map((k) => fileState(path.join(root, k))));
}

const DAMAGES: [string, (file: string) => Promise<void>][] = [
  [
    "overwritten with garbage",
    async (file) => {
      const { size } = await fs.stat(file);
      await fs.writeFile(file, randomBytes(size));
    },
  ],
  [
    "truncated",
    async (file) => {
      const { size } = await fs.stat(file);
      await fs.truncate(file, Math.floor(size / 2));
    },
  ],
];

for (const [label, damage] of DAMAGES) {
  const json = label === "truncated";
  test(`a shard ${label}: verify and consolidate name it, keep it and its raw files, and do everything else`, async (t) => {
    const d = await damagedStore(t, damage);
    const { root, bad } = d;
    const badState = await fileState(bad);
    const badRawStates = await states(root, d.badRaw);
    const otherShard = path.join(root, "vol/2.h5");
    const otherState = await fileState(otherShard);

    await t.test("verify exits 1 and names the damaged shard on stderr, only it", async () => {
      const args = ["verify", root, "--workers", "2"];
      const run = await h5nest(args);
      assert.equal(run.code, 1, describeRun(args, run));
      assert.ok(run.stderr.includes(`CORRUPT ${bad}`), describeRun(args, run));
      for (const other of ["vol/1.h5", "vol/2.h5"]) assert.ok(!run.stderr.includes(other), describeRun(args, run));
      assert.match(run.stdout, /checked 3 shards, 8 datasets.*1 corrupt/, describeRun(args, run));
    });

    await t.test("verify --json: the damaged shard is not ok, the others are; the summary lists it", async () => {
      const args = ["verify", root, "--workers", "2", "--json"];
      const run = await h5nest(args);
      assert.equal(run.code, 1, describeRun(args, run));
      const lines = jsonLines<{ event: string; file?: string; ok?: boolean; error?: string; corrupt?: { file: string; code: string }[] }>(run.stdout);
      const shards = lines.filter((l) => l.event === "shard");
      assert.deepEqual(
        shards.map((l) => [path.relative(root, l.file!), l.ok]).sort(),
        [
          ["vol/0.h5", false],
          ["vol/1.h5", true],
          ["vol/2.h5", true],
        ],
      );
      assert.match(shards.find((l) => l.file === bad)!.error ?? "", /corrupt|unreadable/i);
      const summary = lines.find((l) => l.event === "summary")!;
      assert.deepEqual(
        summary.corrupt!.map((c) => [c.file, c.code]),
        [[bad, "H5NEST_CORRUPT_SHARD"]],
      );
    });

    const args = ["consolidate", root, "--workers", "2", ...(json ? ["--json"] : [])];
    const run = await h5nest(args);

    await t.test(`consolidate${json ? " --json" : ""} exits non-zero and names the damaged shard`, () => {
      assert.notEqual(run.code, 0, describeRun(args, run));
      assert.notEqual(run.code, null, describeRun(args, run));
      assert.ok(run.stderr.includes(bad), describeRun(args, run));
      assert.match(run.stderr, /skipped/, describeRun(args, run));
      if (json) {
        const summary = jsonLines<{ event: string; errors?: { file: string }[]; shards?: number; chunks?: number; fatal?: unknown }>(run.stdout).find(
          (l) => l.event === "summary",
        )!;
        assert.deepEqual(
          summary.errors!.map((e) => e.file),
          [bad],
        );
        assert.equal(summary.fatal, null);
        assert.equal(summary.shards, 5, "vol/1.h5 and the four raw4 shards");
        assert.equal(summary.chunks, 2 + 16);
      } else {
        assert.match(run.stdout, /moved 18 chunks .* into 5 shards/, describeRun(args, run));
      }
    });

    await t.test("the damaged shard and its raw files are byte-identical (same inodes)", async () => {
      assert.deepEqual(await fileState(bad), badState);
      assert.deepEqual(await states(root, d.badRaw), badRawStates);
    });

    await t.test("everything else is consolidated: raw files gone, shards written, other shards untouched", async () => {
      for (const key of [...d.goodRaw, ...d.raw4]) assert.equal(await exists(path.join(root, key)), false, `${key} is still a raw file`);
      const files = await listFiles(root);
      assert.deepEqual(
        files.filter((f) => !isMetadataKey(f) && !f.endsWith(".h5")),
        d.badRaw,
        "raw chunk files left",
      );
      assert.deepEqual(
        files.filter((f) => f.endsWith(".h5")),
        ["raw4/0/0.h5", "raw4/0/1.h5", "raw4/1/0.h5", "raw4/1/1.h5", "vol/0.h5", "vol/1.h5", "vol/2.h5"],
      );
      assert.deepEqual(await fileState(otherShard), otherState);
    });

    await t.test("every key outside the damaged shard reads the same; its raw files still read; its other keys fail loudly", async () => {
      const store = await H5NestedStore.open(root, { workers: 2 });
      t.after(() => store.close());
      const badShard = path.relative(root, bad);
      for (const [key, want] of d.expected) {
        if (placement(key).shard === badShard && !d.badRaw.includes(key)) {
          await assert.rejects(store.get(`/${key}`), (e: { code?: string; file?: string }) => e.code === "H5NEST_CORRUPT_SHARD" && e.file === bad, key);
          continue;
        }
        const value = await store.get(`/${key}`);
        assert.ok(value, `${key} is missing`);
        assert.equal(sha256(value), want, key);
      }
    });
  });
}
