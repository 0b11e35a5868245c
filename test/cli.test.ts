/**
 * The h5nest command line as a child process: `info` (JSON and text) before
 * and after consolidating a NestedDirectoryStore written by Python zarr,
 * `ls` with and without a prefix, and usage errors (exit code 2) and bad
 * store paths (non-zero, a clear message, nothing touched).
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { createV2Array, H5NestedStore, type StoreInfo } from "h5nest";
import * as zarr from "zarrita";
import { listFiles } from "./helpers/arrays.ts";
import { describeRun, exists, fileState, h5nest, jsonLines, mapLimit } from "./helpers/cli.ts";
import { isMetadataKey, makeNestedStore, NESTED_SPECS, placement } from "./helpers/py-store.ts";
import { requirePython } from "./helpers/python.ts";
import { copyFixture, FIXTURE, tempDir } from "./helpers/tmp.ts";

interface Manifest {
  keys: Record<string, { bytes: number; sha256: string }>;
}

const manifest = JSON.parse(await fs.readFile(path.join(FIXTURE, "manifest.json"), "utf8")) as Manifest;
const MANIFEST_KEYS = Object.keys(manifest.keys).sort();

async function info(root: string): Promise<StoreInfo> {
  const args = ["info", root, "--json", "--workers", "2"];
  const run = await h5nest(args);
  assert.equal(run.code, 0, describeRun(args, run));
  const lines = jsonLines<StoreInfo>(run.stdout);
  assert.equal(lines.length, 1, describeRun(args, run));
  return lines[0]!;
}

async function sizeOf(root: string, files: string[]): Promise<number> {
  let total = 0;
  for (const file of files) total += (await fs.stat(path.join(root, file))).size;
  return total;
}

// ---------------------------------------------------------------------------
// 3) info

test("info --json and text, before and after consolidating a NestedDirectoryStore", async (t) => {
  if (!(await requirePython(t))) return;
  const dir = await tempDir(t);
  const ns = await makeNestedStore(dir);
  const { root } = ns;
  const metadata = ns.files.filter(isMetadataKey);
  const chunks = ns.files.filter((f) => !isMetadataKey(f));
  const stay = NESTED_SPECS.filter((s) => !s.sharded).flatMap((s) => ns.chunksOf.get(s.path)!);
  const moved = NESTED_SPECS.filter((s) => s.sharded).flatMap((s) => ns.chunksOf.get(s.path)!);
  const shards = [...new Set(moved.map((k) => placement(k).shard))].sort();

  const notes: Record<string, RegExp> = {
    line1: /too few dimensions/,
    "g/img2": /too few dimensions/,
    "v1.2/img4": /'\.'/,
  };
  const checkArrays = (got: StoreInfo) => {
    assert.deepEqual(
      got.arrays.map((a) => a.path),
      NESTED_SPECS.map((s) => s.path).sort((a, b) => a.localeCompare(b)),
      "arrays listed",
    );
    for (const spec of NESTED_SPECS) {
      const a = got.arrays.find((x) => x.path === spec.path)!;
      assert.equal(a.zarrFormat, 2, spec.path);
      assert.deepEqual(a.shape, spec.shape, spec.path);
      assert.deepEqual(a.chunks, spec.chunks, spec.path);
      assert.equal(a.dtype, spec.dtype, spec.path);
      assert.equal(a.sharded, spec.sharded, spec.path);
      if (spec.sharded) assert.equal(a.note, undefined, spec.path);
      else assert.match(a.note ?? "", notes[spec.path]!, spec.path);
    }
  };

  const before = await info(root);
  await t.test("before: every chunk is a raw file, no shard", async () => {
    checkArrays(before);
    assert.equal(before.rawChunkFiles, chunks.length);
    assert.equal(before.rawChunkBytes, await sizeOf(root, chunks));
    assert.equal(before.metadataFiles, metadata.length);
    assert.equal(before.shards, 0);
    assert.equal(before.shardBytes, 0);
    assert.equal(before.datasets, 0);
    assert.equal(before.reclaimableBytes, 0);
    assert.equal(before.tempFiles, 0);
    assert.deepEqual(before.unreadableShards, []);
  });

  await t.test("text mode names every array and how its chunks are stored", async () => {
    const args = ["info", root, "--workers", "2"];
    const run = await h5nest(args);
    assert.equal(run.code, 0, describeRun(args, run));
    for (const spec of NESTED_SPECS) {
      const line = run.stdout.split("\n").find((l) => l.trim().startsWith(`${spec.path} `));
      assert.ok(line, `${spec.path} is not mentioned:\n${run.stdout}`);
      assert.ok(line.includes(`shape ${spec.shape.join("x")}`), line);
      assert.ok(line.includes(`chunks ${spec.chunks.join("x")}`), line);
      if (spec.sharded) assert.match(line, /\(sharded\)/);
      else assert.match(line, notes[spec.path]!);
    }
    assert.match(run.stdout, new RegExp(`raw chunk files\\s+${chunks.length}\\b`));
    assert.match(run.stdout, /shards\s+0\b/);
  });

  const args = ["consolidate", root, "--workers", "2", "--json"];
  const run = await h5nest(args);
  assert.equal(run.code, 0, describeRun(args, run));

  const after = await info(root);
  await t.test("after: the arrays are unchanged, counts and bytes are exact", async () => {
    checkArrays(after);
    assert.deepEqual(after.arrays, before.arrays);
    assert.deepEqual((await listFiles(root)).filter((f) => f.endsWith(".h5")), shards, "shards on disk");
    assert.equal(after.rawChunkFiles, stay.length);
    assert.equal(after.rawChunkBytes, await sizeOf(root, stay));
    assert.equal(after.metadataFiles, metadata.length);
    assert.equal(after.shards, shards.length);
    assert.equal(after.shardBytes, await sizeOf(root, shards));
    assert.equal(after.datasets, moved.length);
    // An estimate (see compact.test.ts for its exact-zero todo): far below compact's default 20%.
    assert.ok(after.reclaimableBytes < 0.1 * after.shardBytes, `reclaimable ${after.reclaimableBytes} of ${after.shardBytes} bytes`);
    assert.equal(after.tempFiles, 0);
    assert.deepEqual(after.unreadableShards, []);
  });

  await t.test("text mode after: shard and raw file counts", async () => {
    const textArgs = ["info", root, "--workers", "2"];
    const text = await h5nest(textArgs);
    assert.equal(text.code, 0, describeRun(textArgs, text));
    assert.match(text.stdout, new RegExp(`raw chunk files\\s+${stay.length}\\b`));
    assert.match(text.stdout, new RegExp(`shards\\s+${shards.length} \\(.*, ${moved.length} chunks\\)`));
    for (const spec of NESTED_SPECS) assert.ok(text.stdout.includes(spec.path), spec.path);
  });
});

// ---------------------------------------------------------------------------
// 6) ls

async function ls(root: string, prefix?: string, json = false): Promise<string[]> {
  const args = ["ls", root, ...(prefix === undefined ? [] : [prefix]), "--workers", "2", ...(json ? ["--json"] : [])];
  const run = await h5nest(args);
  assert.equal(run.code, 0, describeRun(args, run));
  assert.equal(run.stderr, "", describeRun(args, run));
  const lines = run.stdout.split("\n").filter((l) => l !== "");
  return json ? lines.map((l) => JSON.parse(l) as string) : lines;
}

function assertListing(got: string[], want: string[], label: string): void {
  const duplicates = got.filter((key, i) => got.indexOf(key) !== i);
  assert.deepEqual(duplicates, [], `${label}: keys listed twice`);
  assert.deepEqual([...got].sort(), [...want].sort(), label);
}

test("ls lists exactly the fixture's keys, each once (text and --json)", async (t) => {
  const root = await copyFixture(t);
  assertListing(await ls(root), MANIFEST_KEYS, "ls");
  assertListing(await ls(root, undefined, true), MANIFEST_KEYS, "ls --json");
});

const PREFIXES = [
  "raw/vol3d", // raw files and shards of a 3-D array
  "raw/img5d/0/1/2", // a shard (…/2.h5) beside the folder of its raw files; one key both raw and in the shard
  "/raw/vol3d/2", // zarrita's leading '/'
  "labels/mask2d", // the array's shard labels/mask2d.h5 lies beside its folder
  "sparse/s4d/2",
  "labels", // labels.h5 (1-D labels/line1d) in the store root
  "raw/img5d/.z",
  "nothing/here",
];

test("ls <prefix> lists exactly the keys that start with it", async (t) => {
  const root = await copyFixture(t);
  const listings = await mapLimit(PREFIXES, 2, (prefix) => ls(root, prefix));
  PREFIXES.forEach((prefix, i) => {
    const bare = prefix.replace(/^\//, "");
    const want = MANIFEST_KEYS.filter((k) => k.startsWith(bare));
    assertListing(listings[i]!, want, `ls ${prefix}`);
  });
  // The filter is a test, not a no-op.
  assert.equal((await ls(root, "labels/mask2d")).length, 5);
});

test(
  "ls <prefix> finds keys whose shard lies above the prefix's folder (labels.h5, labels/mask2d.h5)",
  async (t) => {
    const root = await copyFixture(t);
    for (const prefix of ["labels/line1d", "labels/line1d/", "labels/", "labels/mask2d/", "labels/mask2d/0"]) {
      const want = MANIFEST_KEYS.filter((k) => k.startsWith(prefix));
      assertListing(await ls(root, prefix), want, `ls ${prefix}`);
    }
  },
);

// ---------------------------------------------------------------------------
// 7) usage errors and bad store paths

test("usage errors exit with code 2 and a message, before touching any store", async (t) => {
  const dir = await tempDir(t);
  const missing = path.join(dir, "never-created");
  const cases: [string[], RegExp][] = [
    [["frobnicate", missing], /unknown command 'frobnicate'/],
    [["info", missing, "--bogus"], /unknown option '--bogus'/],
    [["consolidate", missing, "--workers", "0"], /--workers.*invalid.*positive integer/],
    [["consolidate", missing, "--workers", "two"], /--workers.*invalid/],
    [["compact", missing, "--min-waste", "150%"], /--min-waste.*invalid.*percentage/],
    [["compact", missing, "--min-waste", "lots"], /--min-waste.*invalid/],
    [["info"], /missing required argument 'store'/],
    [["ls"], /missing required argument 'store'/],
    [["ls", missing, "a", "b"], /too many arguments|unknown/i],
    [[], /Usage: h5nest/],
  ];
  const runs = await mapLimit(cases, 2, ([args]) => h5nest(args));
  cases.forEach(([args, message], i) => {
    const run = runs[i]!;
    assert.equal(run.code, 2, describeRun(args, run));
    assert.match(run.stderr, message, describeRun(args, run));
    assert.equal(run.stdout, "", describeRun(args, run));
  });
  assert.equal(await exists(missing), false, "a usage error created the store folder");
});

test("invalid store options (--depth 1, --ext '', --workers 65) are usage errors: exit code 2, the store untouched", async (t) => {
  const dir = await tempDir(t);
  const missing = path.join(dir, "never-created");
  const cases: [string[], RegExp][] = [
    [["info", missing, "--depth", "1"], /consolidateDepth|--depth/],
    [["consolidate", missing, "--ext", ""], /containerExt|--ext/],
    [["consolidate", missing, "--workers", "65"], /workers/],
  ];
  const runs = await mapLimit(cases, 2, ([args]) => h5nest(args));
  cases.forEach(([args, message], i) => {
    const run = runs[i]!;
    assert.match(run.stderr, message, describeRun(args, run));
    assert.equal(run.code, 2, describeRun(args, run));
  });
  assert.equal(await exists(missing), false, "an invalid option created the store folder");
});

test("a store path that is a file, or lies below one: non-zero exit naming the path, the file untouched", async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, "not-a-store.h5");
  await fs.writeFile(file, "just a file\n");
  const before = await fileState(file);
  for (const command of ["info", "consolidate", "compact", "verify", "ls"]) {
    const args = [command, file, "--workers", "1"];
    const run = await h5nest(args);
    assert.notEqual(run.code, 0, describeRun(args, run));
    assert.notEqual(run.code, null, describeRun(args, run));
    assert.match(run.stderr, /^h5nest: /, describeRun(args, run));
    assert.ok(run.stderr.includes(file), `the message names the path: ${describeRun(args, run)}`);
    assert.doesNotMatch(run.stderr, /\n\s+at /, `no stack trace: ${describeRun(args, run)}`);
  }
  const below = path.join(file, "store");
  const args = ["info", below];
  const run = await h5nest(args);
  assert.notEqual(run.code, 0, describeRun(args, run));
  assert.match(run.stderr, /not a (directory|folder)/, describeRun(args, run));
  assert.deepEqual(await fileState(file), before, "the file was modified");
  assert.deepEqual(await fs.readdir(dir), ["not-a-store.h5"]);
});

test(
  "a store path that is a file: the message says it is not a folder",
  async (t) => {
    const dir = await tempDir(t);
    const file = path.join(dir, "plain-file");
    await fs.writeFile(file, "x");
    const args = ["info", file];
    const run = await h5nest(args);
    assert.equal(run.code, 1, describeRun(args, run));
    assert.match(run.stderr, /is not a (folder|directory)/, describeRun(args, run));
  },
);

test(
  "read-only commands (info, verify, ls, compact) on a missing store path fail instead of creating an empty store",
  async (t) => {
    const dir = await tempDir(t);
    for (const command of ["info", "verify", "ls", "compact"]) {
      const missing = path.join(dir, `typo-${command}`);
      const args = [command, missing, "--workers", "1"];
      const run = await h5nest(args);
      assert.notEqual(run.code, 0, describeRun(args, run));
      assert.equal(await exists(missing), false, `${command} created ${missing}`);
    }
  },
);

test("h5nest demo (npm start) builds, consolidates, verifies and reads back a store, keeping it when given a folder", async (t) => {
  const dir = await tempDir(t);
  const args = ["demo", dir];
  const run = await h5nest(args, 120_000);
  assert.equal(run.code, 0, describeRun(args, run));
  assert.doesNotMatch(run.stdout, /MISMATCH|CORRUPT/, describeRun(args, run));
  assert.equal([...run.stdout.matchAll(/every value matches/g)].length, 4, describeRun(args, run));
  assert.match(run.stdout, /moved 2080 chunks .* into 40 shards/);
  assert.ok(await exists(path.join(dir, "demo.zarr/raw/img/0/0/0.h5")), "the store stays in the folder given");
  assert.ok(await exists(path.join(dir, "demo.zarr/raw/direct/0/0/7.h5")), "the direct write made shards");
});

test("consolidate --lock takes shard leases from the server of a store open elsewhere with distributedLock", async (t) => {
  const root = path.join(await tempDir(t), "store");
  const raw = await H5NestedStore.open(root, { workers: 1, writeDirect: false });
  const array = await createV2Array(raw, "img", { shape: [1, 1, 4, 64, 64], chunks: [1, 1, 1, 32, 32], dtype: "<u2", compressor: null });
  await zarr.set(array, null, 9);
  await raw.close();
  // This process serves the leases; the CLI must connect to it and finish.
  const writer = await H5NestedStore.open(root, { workers: 1, distributedLock: { leaseMs: 2000 } });
  t.after(() => writer.close());
  const bad = ["consolidate", root, "--lock", "--lease-ms", "500"];
  const refused = await h5nest(bad);
  assert.equal(refused.code, 2, describeRun(bad, refused));
  assert.match(refused.stderr, /distributedLock\.leaseMs/);
  const args = ["consolidate", root, "--lock", "--lease-ms", "2000", "--workers", "1", "--json"];
  const run = await h5nest(args, 60_000);
  assert.equal(run.code, 0, describeRun(args, run));
  assert.equal(jsonLines(run.stdout).at(-1)!.chunks, 16, describeRun(args, run));
  const files = await listFiles(root);
  assert.deepEqual(files.filter((f) => f.endsWith(".h5")).sort(), ["img/0/0/0.h5", "img/0/0/1.h5", "img/0/0/2.h5", "img/0/0/3.h5"]);
  assert.deepEqual(await writer.get("/img/0/0/3/1/1"), new Uint8Array(new Uint16Array(32 * 32).fill(9).buffer));
});
