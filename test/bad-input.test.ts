/**
 * The real store under bad input: hostile keys, bad options, truncated and
 * corrupt shards, bad values, use after close, and the public API surface.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { describe, test, type TestContext } from "node:test";
import { inspect } from "node:util";
import {
  CorruptShardError,
  H5NestedStore,
  type H5NestedStoreOptions,
  InvalidKeyError,
  InvalidOptionError,
  InvalidValueError,
  Layout,
  StoreClosedError,
} from "h5nest";
import { copyFixture, FIXTURE, tempDir } from "./helpers/tmp.ts";

const HEX32 = "0123456789abcdef0123456789abcdef";

interface Manifest {
  files: string[];
  keys: Record<string, { bytes: number; sha256: string }>;
}

const manifest = JSON.parse(await fs.readFile(path.join(FIXTURE, "manifest.json"), "utf8")) as Manifest;

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Every file and folder below `dir`: type, size, content hash and mtime. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const visit = async (folder: string): Promise<void> => {
    for (const entry of await fs.readdir(folder, { withFileTypes: true })) {
      const full = path.join(folder, entry.name);
      const rel = path.relative(dir, full);
      const stat = await fs.lstat(full);
      if (entry.isDirectory()) {
        out[`${rel}/`] = `dir ${stat.mtimeMs}`; // a file created and removed inside changes it
        await visit(full);
      } else {
        out[rel] = `${stat.size} ${stat.mtimeMs} ${sha256(await fs.readFile(full))}`;
      }
    }
  };
  await visit(dir);
  return out;
}

async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    () => true,
    () => false,
  );
}

async function open(t: TestContext, dir: string, options: H5NestedStoreOptions = {}): Promise<H5NestedStore> {
  const store = await H5NestedStore.open(dir, { workers: 2, ...options });
  let closed = false;
  const close = store.close.bind(store);
  store.close = async () => {
    closed = true;
    await close();
  };
  t.after(async () => {
    if (!closed) await close();
  });
  return store;
}

// ---------------------------------------------------------------------------
// (a) hostile keys

const HOSTILE_KEYS = [
  "",
  "/",
  "..",
  ".",
  "/..",
  "../escape",
  "/../escape",
  "../../escape",
  "../../../../../../../../tmp/h5nest-escape",
  "raw/../../escape",
  "raw/vol3d/1/0/../../../../../escape",
  "raw/./vol3d/1/0/0",
  "raw//vol3d/1/0/0",
  "raw/vol3d/1/0/0/",
  "//etc/passwd",
  "//tmp/h5nest-escape",
  "raw\\vol3d\\1\\0\\0",
  "..\\escape",
  "raw/vol3d/1/0/0\0",
  "raw/vol3d/1/0\0/0",
  "raw/vol3d/0.h5",
  "/labels.h5",
  "labels/mask2d.h5",
  "raw/img5d/0/0/1.h5",
  `raw/vol3d/1/0/0.${HEX32}.partial`,
  `/raw/.zgroup.${HEX32}.partial`,
];

describe("(a) hostile keys", () => {
  test("get, set and delete refuse every hostile key, and nothing is written anywhere", async (t) => {
    const store = await copyFixture(t);
    const sandbox = path.dirname(store); // the temp folder holding the store
    // Files that a refused key would reach if it were not refused.
    await fs.writeFile(path.join(store, "raw/vol3d/1/0", `0.${HEX32}.partial`), "temp");
    await fs.writeFile(path.join(store, "raw", `.zgroup.${HEX32}.partial`), "temp");
    const outside = [
      path.resolve(store, "../escape"),
      path.resolve(store, "../../escape"),
      "/tmp/h5nest-escape",
      "/escape",
      "/etc/passwd",
    ];
    const outsideBefore = await Promise.all(outside.map(async (f) => [f, await exists(f)] as const));
    const passwd = await fs.readFile("/etc/passwd").catch(() => null);
    const before = await snapshot(sandbox);

    const s = await open(t, store, { workers: 2 });
    const value = new Uint8Array([1, 2, 3, 4]);
    const invalid = (key: string) => (error: unknown) => {
      assert.ok(error instanceof InvalidKeyError, `${JSON.stringify(key)}: ${String(error)}`);
      assert.equal(error.name, "InvalidKeyError");
      assert.equal(error.code, "H5NEST_INVALID_KEY");
      assert.equal(error.key, key);
      assert.ok(error.message.startsWith(`invalid key ${JSON.stringify(key)}: `), error.message);
      return true;
    };
    for (const key of HOSTILE_KEYS) {
      await assert.rejects(s.get(key), invalid(key), `get ${JSON.stringify(key)}`);
      await assert.rejects(s.set(key, value), invalid(key), `set ${JSON.stringify(key)}`);
      await assert.rejects(s.delete(key), invalid(key), `delete ${JSON.stringify(key)}`);
    }
    // All at once too (writes batch per shard in the coordinator).
    const all = await Promise.allSettled(HOSTILE_KEYS.flatMap((key) => [s.set(key, value), s.delete(key), s.get(key)]));
    for (const [i, outcome] of all.entries()) {
      assert.equal(outcome.status, "rejected", `call ${i}`);
      assert.ok((outcome as PromiseRejectedResult).reason instanceof InvalidKeyError);
    }
    await s.flush();
    assert.deepEqual(await snapshot(sandbox), before, "the store folder changed before close");

    // The store still works after the refusals.
    const good = await s.get("raw/vol3d/1/0/0");
    assert.equal(sha256(good!), manifest.keys["raw/vol3d/1/0/0"]!.sha256);
    await s.close();

    assert.deepEqual(await snapshot(sandbox), before, "the store folder changed");
    for (const [file, existed] of outsideBefore) assert.equal(await exists(file), existed, file);
    if (passwd) assert.deepEqual(await fs.readFile("/etc/passwd"), passwd);
  });

  test("a single leading '/' is zarrita's form: /etc/passwd is the store key etc/passwd", async (t) => {
    const dir = path.join(await tempDir(t), "store");
    const s = await open(t, dir, { workers: 1 });
    assert.equal(await s.get("/etc/passwd"), undefined);
    await s.set("/etc/passwd", new Uint8Array([7]));
    assert.deepEqual(await fs.readFile(path.join(dir, "etc/passwd")), Buffer.from([7]));
    assert.deepEqual(await s.get("etc/passwd"), new Uint8Array([7]));
    await s.delete("/etc/passwd");
    assert.equal(await exists(path.join(dir, "etc/passwd")), false);
  });

  test(
    "a key whose middle segment ends in the container extension cannot block a shard",

    async (t) => {
      const dir = path.join(await tempDir(t), "store");
      const s = await open(t, dir, { workers: 1 });
      await assert.rejects(s.set("arr/0.h5/1/2", new Uint8Array([9])), InvalidKeyError);
      assert.equal(await exists(path.join(dir, "arr/0.h5")), false);
    },
  );
});

// ---------------------------------------------------------------------------
// (b) options

interface OptionCase {
  options: unknown;
  option: string;
  message?: string;
}

const BAD_OPTIONS: OptionCase[] = [
  {
    options: { consolidateDepth: 1 },
    option: "consolidateDepth",
    message: "option consolidateDepth: must be an integer from 2 to 64, got 1",
  },
  {
    options: { consolidateDepth: 2.5 },
    option: "consolidateDepth",
    message: "option consolidateDepth: must be an integer from 2 to 64, got 2.5",
  },
  { options: { consolidateDepth: 0 }, option: "consolidateDepth" },
  { options: { consolidateDepth: -3 }, option: "consolidateDepth" },
  { options: { consolidateDepth: "3" }, option: "consolidateDepth" },
  { options: { consolidateDepth: Number.NaN }, option: "consolidateDepth" },
  { options: { consolidateDepth: Number.POSITIVE_INFINITY }, option: "consolidateDepth" },
  { options: { consolidateDepth: null }, option: "consolidateDepth" },
  {
    options: { containerExt: "" },
    option: "containerExt",
    message: 'option containerExt: must be a non-empty file extension, got ""',
  },
  {
    options: { containerExt: "." },
    option: "containerExt",
    message: 'option containerExt: must be a non-empty file extension, got "."',
  },
  { options: { containerExt: "h5/x" }, option: "containerExt" },
  { options: { containerExt: "../h5" }, option: "containerExt" },
  { options: { containerExt: "h\\5" }, option: "containerExt" },
  { options: { containerExt: "h5\0" }, option: "containerExt" },
  { options: { containerExt: 5 }, option: "containerExt" },
  { options: { workers: 0 }, option: "workers", message: "option workers: must be an integer from 1 to 64, got 0" },
  { options: { workers: 1.5 }, option: "workers" },
  { options: { workers: -1 }, option: "workers" },
  { options: { workers: "2" }, option: "workers" },
  { options: { writeDirect: "yes" }, option: "writeDirect", message: 'option writeDirect: must be true or false, got "yes"' },
  { options: { writeDirect: 1 }, option: "writeDirect" },
  { options: { writeDirect: null }, option: "writeDirect" },
  { options: { fsync: "false" }, option: "fsync", message: 'option fsync: must be true or false, got "false"' },
  { options: { maxPendingBytes: 0 }, option: "maxPendingBytes" },
  { options: { maxPendingBytes: 1e3 + 0.5 }, option: "maxPendingBytes" },
  {
    options: { bogus: 1 },
    option: "bogus",
    message: "option bogus: unknown option (known: consolidateDepth, containerExt, writeDirect, fsync, workers, maxPendingBytes, distributedLock)",
  },
  { options: { consolidatedepth: 3 }, option: "consolidatedepth" },
  { options: { workers: 1, container_ext: ".h5" }, option: "container_ext" },
  { options: { threads: 2 }, option: "threads" },
  { options: null, option: "options", message: "option options: must be an object" },
  { options: [], option: "options" },
  { options: "workers=1", option: "options" },
  { options: 3, option: "options" },
];

describe("(b) options", () => {
  for (const c of BAD_OPTIONS) {
    test(`${inspect(c.options, { breakLength: Infinity })} -> InvalidOptionError(${c.option})`, async (t) => {
      const dir = path.join(await tempDir(t), "store");
      await assert.rejects(H5NestedStore.open(dir, c.options as H5NestedStoreOptions), (error: unknown) => {
        assert.ok(error instanceof InvalidOptionError, String(error));
        assert.equal(error.name, "InvalidOptionError");
        assert.equal(error.code, "H5NEST_INVALID_OPTION");
        assert.equal(error.option, c.option);
        if (c.message !== undefined) assert.equal(error.message, c.message);
        else assert.ok(error.message.startsWith(`option ${c.option}: `), error.message);
        return true;
      });
      assert.equal(await exists(dir), false, "a refused open must not create the store folder");
    });
  }

  test("valid options are resolved: extension with or without its dot, defaults filled in", async (t) => {
    const base = await tempDir(t);
    const a = await open(t, path.join(base, "a"), { workers: 1, containerExt: "hdf5" });
    assert.equal(a.options.containerExt, ".hdf5");
    assert.equal(a.options.consolidateDepth, 3);
    assert.equal(a.options.writeDirect, true);
    assert.equal(a.options.fsync, false);
    assert.equal(a.options.workers, 1);
    assert.ok(Object.isFrozen(a.options));
    const b = await open(t, path.join(base, "b"), { workers: 1, containerExt: ".hdf5", consolidateDepth: 2, writeDirect: false });
    assert.equal(b.options.containerExt, ".hdf5");
    assert.equal(b.options.consolidateDepth, 2);
    assert.equal(b.options.writeDirect, false);
    const c = await open(t, path.join(base, "c"), { workers: 1, consolidateDepth: undefined });
    assert.equal(c.options.consolidateDepth, 3);
    // The extension given without its dot names the same shards: a chunk lands in <...>.hdf5.
    await a.set("arr/.zarray", zarray([4, 4, 4], [2, 2, 2]));
    await a.set("arr/0/1/1", new Uint8Array([5]));
    await a.close();
    assert.equal(await exists(path.join(base, "a", "arr", "0.hdf5")), true);
    assert.equal(await exists(path.join(base, "a", "arr", "0.hdf5.h5")), false);
  });
});

function zarray(shape: number[], chunks: number[]): Uint8Array {
  return new TextEncoder().encode(
    JSON.stringify({
      chunks,
      compressor: null,
      dimension_separator: "/",
      dtype: "|u1",
      fill_value: 0,
      filters: null,
      order: "C",
      shape,
      zarr_format: 2,
    }),
  );
}

// ---------------------------------------------------------------------------
// (c) truncated and corrupt shards

interface Damaged {
  store: string;
  truncated: string;
  corrupt: string;
  damagedBytes: Map<string, string>;
  layout: Layout;
}

async function damagedFixture(t: TestContext): Promise<Damaged> {
  const store = await copyFixture(t);
  const truncated = path.join(store, "raw/img5d/0/0/1.h5");
  const corrupt = path.join(store, "raw/vol3d/0.h5");
  const { size } = await fs.stat(truncated);
  await fs.truncate(truncated, Math.floor(size / 2));
  const corruptSize = (await fs.stat(corrupt)).size;
  await fs.writeFile(corrupt, randomBytes(corruptSize));
  const damagedBytes = new Map<string, string>();
  for (const file of [truncated, corrupt]) damagedBytes.set(file, sha256(await fs.readFile(file)));
  return { store, truncated, corrupt, damagedBytes, layout: new Layout({ root: store, depth: 3, ext: ".h5" }) };
}

/** The damaged shard a key's value lives in, or null when it is elsewhere (or a raw file shadows it). */
async function damagedShardOf(d: Damaged, key: string): Promise<string | null> {
  const location = d.layout.locate(key);
  if (location.kind !== "chunk" || !location.shard) return null;
  if (!d.damagedBytes.has(location.shard.path)) return null;
  if (await exists(location.rawPath)) return null;
  return location.shard.path;
}

function corruptShard(file: string) {
  return (error: unknown) => {
    assert.ok(error instanceof CorruptShardError, String(error));
    assert.equal(error.name, "CorruptShardError");
    assert.equal(error.code, "H5NEST_CORRUPT_SHARD");
    assert.equal(error.file, file);
    assert.ok(error.message.startsWith(`corrupt or unreadable shard ${file}: `), error.message);
    return true;
  };
}

async function assertDamagedUnchanged(d: Damaged): Promise<void> {
  for (const [file, hash] of d.damagedBytes) {
    assert.equal(sha256(await fs.readFile(file)), hash, `${file} changed`);
  }
  for (const file of d.damagedBytes.keys()) {
    const siblings = await fs.readdir(path.dirname(file));
    const base = path.basename(file);
    assert.deepEqual(
      siblings.filter((name) => name.startsWith(`${base}.`)),
      [],
      `temporary files left beside ${file}`,
    );
  }
}

describe("(c) truncated and corrupt shards", () => {
  test("reads of damaged shards fail with CorruptShardError; every other key reads byte-exact; the store keeps working", async (t) => {
    const d = await damagedFixture(t);
    const s = await open(t, d.store, { workers: 2 });
    const keys = Object.keys(manifest.keys);
    const damagedKeys = new Map<string, string>();
    for (const key of keys) {
      const shard = await damagedShardOf(d, key);
      if (shard) damagedKeys.set(key, shard);
    }
    // 9 chunks of img5d in the truncated shard, 9 chunks of vol3d in the corrupt one.
    assert.equal([...damagedKeys.values()].filter((f) => f === d.truncated).length, 9);
    assert.equal([...damagedKeys.values()].filter((f) => f === d.corrupt).length, 9);

    const check = async (round: string, settled: PromiseSettledResult<Uint8Array | undefined>[]): Promise<void> => {
      for (const [i, outcome] of settled.entries()) {
        const key = keys[i]!;
        const shard = damagedKeys.get(key);
        if (shard) {
          assert.equal(outcome.status, "rejected", `${round}: ${key} should fail`);
          corruptShard(shard)((outcome as PromiseRejectedResult).reason);
        } else {
          assert.equal(outcome.status, "fulfilled", `${round}: ${key}: ${String((outcome as PromiseRejectedResult).reason)}`);
          const bytes = (outcome as PromiseFulfilledResult<Uint8Array | undefined>).value;
          assert.ok(bytes, `${round}: ${key} is missing`);
          assert.equal(bytes.byteLength, manifest.keys[key]!.bytes, `${round}: ${key}`);
          assert.equal(sha256(bytes), manifest.keys[key]!.sha256, `${round}: ${key}`);
        }
      }
    };
    // Everything at once: damaged and healthy keys share read batches.
    await check("concurrent", await Promise.allSettled(keys.map((key) => s.get(key))));
    // One at a time, after the errors.
    const sequential: PromiseSettledResult<Uint8Array | undefined>[] = [];
    for (const key of keys) sequential.push(await Promise.allSettled([s.get(key)]).then((r) => r[0]!));
    await check("sequential", sequential);
    // Again at once: the worker threads survived.
    await check("again", await Promise.allSettled(keys.map((key) => s.get(key))));

    // Writes to healthy arrays still work.
    const chunk = randomBytes(1000);
    await s.set("raw/img5d/0/0/0/1/1", chunk);
    await s.set("sparse/s4d/1/1/0/0", chunk);
    assert.deepEqual(await s.get("raw/img5d/0/0/0/1/1"), new Uint8Array(chunk));
    assert.deepEqual(await s.get("sparse/s4d/1/1/0/0"), new Uint8Array(chunk));
    await s.delete("sparse/s4d/1/1/0/0");
    assert.equal(await s.get("sparse/s4d/1/1/0/0"), undefined);
    await assert.rejects(s.get("raw/vol3d/0/2/2"), corruptShard(d.corrupt));
    await s.close(); // flushes: must not trip over the damaged shards nobody wrote to
    await assertDamagedUnchanged(d);

    // A fresh store on the same folder reads the new value and the old healthy ones.
    const again = await open(t, d.store, { workers: 1 });
    assert.deepEqual(await again.get("raw/img5d/0/0/0/1/1"), new Uint8Array(chunk));
    assert.equal(sha256((await again.get("raw/img5d/0/0/2/2/2"))!), manifest.keys["raw/img5d/0/0/2/2/2"]!.sha256);
  });

  test("set and delete into a damaged shard's array fail with CorruptShardError and leave the shard file alone", async (t) => {
    const d = await damagedFixture(t);
    const s = await open(t, d.store, { workers: 2 });
    const corruptSize = (await fs.stat(d.corrupt)).size;
    const truncatedSize = (await fs.stat(d.truncated)).size;
    // Values as big as the shard: the store must rewrite the shard, which it cannot read.
    await assert.rejects(s.set("raw/vol3d/0/0/0", randomBytes(corruptSize)), corruptShard(d.corrupt));
    await assert.rejects(s.set("raw/img5d/0/0/1/0/0", randomBytes(truncatedSize)), corruptShard(d.truncated));
    await assert.rejects(s.delete("raw/vol3d/0/1/1"), corruptShard(d.corrupt));
    await assert.rejects(s.delete("raw/img5d/0/0/1/2/2"), corruptShard(d.truncated));
    await assertDamagedUnchanged(d);
    // Nothing was written as a raw file either: the keys still fail to read.
    assert.equal(await exists(path.join(d.store, "raw/vol3d/0/0/0")), false);
    assert.equal(await exists(path.join(d.store, "raw/img5d/0/0/1/0/0")), false);
    await assert.rejects(s.get("raw/vol3d/0/0/0"), corruptShard(d.corrupt));
    await assert.rejects(s.get("raw/img5d/0/0/1/0/0"), corruptShard(d.truncated));
    // The store keeps working.
    const bytes = randomBytes(64);
    await s.set("raw/vol3d/2/2/2", bytes);
    assert.deepEqual(await s.get("raw/vol3d/2/2/2"), new Uint8Array(bytes));
    assert.equal(sha256((await s.get("raw/vol3d/1/1/1"))!), manifest.keys["raw/vol3d/1/1/1"]!.sha256);
    await s.close();
    await assertDamagedUnchanged(d);
  });

  test(
    "a small set into a damaged shard's array fails too, and close() still succeeds",

    async (t) => {
      const d = await damagedFixture(t);
      const s = await H5NestedStore.open(d.store, { workers: 1 });
      let failure: unknown;
      try {
        await assert.rejects(s.set("raw/img5d/0/0/1/0/0", new Uint8Array(16)), corruptShard(d.truncated));
        await assert.rejects(s.set("raw/vol3d/0/0/0", new Uint8Array(16)), corruptShard(d.corrupt));
        await assertDamagedUnchanged(d);
      } catch (error) {
        failure = error;
      }
      const closing = s.close();
      if (failure) {
        await closing.catch(() => {});
        throw failure;
      }
      await closing; // must not reject
      await assertDamagedUnchanged(d);
    },
  );

  test(
    "CorruptShardError.detail says what HDF5 found, not only its banner line",

    async (t) => {
      const d = await damagedFixture(t);
      const s = await open(t, d.store, { workers: 1 });
      for (const [key, file] of [
        ["raw/vol3d/0/0/0", d.corrupt],
        ["raw/img5d/0/0/1/0/0", d.truncated],
      ] as const) {
        await assert.rejects(s.get(key), (error: unknown) => {
          corruptShard(file)(error);
          const detail = (error as CorruptShardError).detail;
          assert.doesNotMatch(detail, /^HDF5-DIAG: Error detected in HDF5 \([^)]*\):?$/);
          assert.match(detail, /signature|truncat|eof|eoa|superblock/i);
          return true;
        });
      }
    },
  );
});

// ---------------------------------------------------------------------------
// (d) bad values, use after close

describe("(d) values and closed stores", () => {
  test("set() with anything but a Uint8Array is refused with InvalidValueError, nothing written", async (t) => {
    const dir = path.join(await tempDir(t), "store");
    const s = await open(t, dir, { workers: 1 });
    await s.set("arr/.zarray", zarray([4, 4, 4], [2, 2, 2]));
    const before = await snapshot(dir);
    const values: unknown[] = [
      "abc",
      [1, 2, 3],
      new ArrayBuffer(3),
      new DataView(new ArrayBuffer(3)),
      new Uint16Array(3),
      new Int8Array(3),
      new Uint8ClampedArray(3),
      null,
      undefined,
      42,
      { length: 3, 0: 1, 1: 2, 2: 3 },
    ];
    for (const key of ["arr/0/0/0", "/arr/0/0/1", "arr/.zattrs", "loose"]) {
      for (const value of values) {
        await assert.rejects(s.set(key, value as Uint8Array), (error: unknown) => {
          assert.ok(error instanceof InvalidValueError, String(error));
          assert.equal(error.name, "InvalidValueError");
          assert.equal(error.code, "H5NEST_INVALID_VALUE");
          assert.equal(error.key, key);
          assert.equal(error.message, `value for key ${JSON.stringify(key)} must be a Uint8Array`);
          return true;
        });
      }
    }
    await s.flush();
    assert.deepEqual(await snapshot(dir), before);
    // A Buffer is a Uint8Array and is accepted.
    await s.set("arr/0/0/0", Buffer.from([1, 2, 3]));
    assert.deepEqual(await s.get("arr/0/0/0"), new Uint8Array([1, 2, 3]));
  });

  test("every call after close() throws StoreClosedError; close() again is fine", async (t) => {
    const dir = path.join(await tempDir(t), "store");
    const s = await H5NestedStore.open(dir, { workers: 1 });
    await s.set("a/.zattrs", new TextEncoder().encode("{}"));
    await s.close();
    const closed = (error: unknown) => {
      assert.ok(error instanceof StoreClosedError, String(error));
      assert.equal(error.name, "StoreClosedError");
      assert.equal(error.code, "H5NEST_STORE_CLOSED");
      assert.equal(error.root, s.root);
      assert.equal(error.message, `the store at ${s.root} is closed`);
      return true;
    };
    await assert.rejects(s.get("a/.zattrs"), closed);
    await assert.rejects(s.get("a/0/0/0"), closed);
    await assert.rejects(s.set("a/0/0/0", new Uint8Array(1)), closed);
    await assert.rejects(s.set("a/0/0/0", "not bytes" as unknown as Uint8Array), closed);
    await assert.rejects(s.set("../escape", new Uint8Array(1)), closed);
    await assert.rejects(s.delete("a/.zattrs"), closed);
    await assert.rejects(s.flush(), closed);
    assert.throws(() => s.keys(), closed);
    await s.close();
    assert.equal(await exists(path.join(dir, "a/0")), false);
    assert.equal(await exists(path.join(dir, "a/.zattrs")), true);
  });
});

// ---------------------------------------------------------------------------
// (e) the public API

describe("(e) public API", () => {
  test("the names exported by h5nest", async () => {
    const api = await import("h5nest");
    assert.deepEqual(Object.keys(api).sort(), [
      "ChunkTooLargeError",
      "CorruptShardError",
      "FOLD_RATIO",
      "H5NestedStore",
      "InvalidKeyError",
      "InvalidOptionError",
      "InvalidRangeError",
      "InvalidValueError",
      "Layout",
      "LeaseExpiredError",
      "LeaseLostError",
      "LeaseNamespaceError",
      "LeaseRefusedError",
      "ListenFailedError",
      "LockRequiredError",
      "LockUnavailableError",
      "MAX_DATASET_BYTES",
      "NotAStoreError",
      "NothingToReferenceError",
      "ReadOnlyShardError",
      "StoreClosedError",
      "StoreConfigMismatchError",
      "StoreIdentityError",
      "WriteFailedError",
      "canWriteToShard",
      "createV2Array",
      "isTempName",
      "keySegments",
      "normalizeExt",
      "serveStore",
      "writeRefs",
    ]);
  });

  test("the error classes: names and codes", async () => {
    const api = await import("h5nest");
    const cases: [Error, string, string][] = [
      [new api.InvalidKeyError("k", "r"), "InvalidKeyError", "H5NEST_INVALID_KEY"],
      [new api.InvalidOptionError("o", "r"), "InvalidOptionError", "H5NEST_INVALID_OPTION"],
      [new api.InvalidValueError("k"), "InvalidValueError", "H5NEST_INVALID_VALUE"],
      [new api.InvalidRangeError("k", "r"), "InvalidRangeError", "H5NEST_INVALID_RANGE"],
      [new api.StoreClosedError("/r"), "StoreClosedError", "H5NEST_STORE_CLOSED"],
      [new api.CorruptShardError("/f", "d"), "CorruptShardError", "H5NEST_CORRUPT_SHARD"],
      [new api.ChunkTooLargeError("/f", 2, 1), "ChunkTooLargeError", "H5NEST_CHUNK_TOO_LARGE"],
      [new api.WriteFailedError("/f", "EIO", "d"), "WriteFailedError", "H5NEST_WRITE_FAILED"],
      [new api.LeaseExpiredError("/f"), "LeaseExpiredError", "H5NEST_LEASE_EXPIRED"],
      [new api.LeaseLostError("/f", "d"), "LeaseLostError", "H5NEST_LEASE_LOST"],
      [new api.LockUnavailableError("/s", "d"), "LockUnavailableError", "H5NEST_LOCK_UNAVAILABLE"],
      [new api.NotAStoreError("/s", "d"), "NotAStoreError", "H5NEST_NOT_A_STORE"],
      [new api.ListenFailedError("127.0.0.1:8080", "EADDRINUSE"), "ListenFailedError", "H5NEST_LISTEN_FAILED"],
      [new api.NothingToReferenceError("a/b"), "NothingToReferenceError", "H5NEST_NOTHING_TO_REFERENCE"],
      [new api.ReadOnlyShardError("k", "/f"), "ReadOnlyShardError", "H5NEST_READ_ONLY_SHARD"],
      [new api.StoreConfigMismatchError("/s", "consolidateDepth", 3, 4), "StoreConfigMismatchError", "H5NEST_CONFIG_MISMATCH"],
      [new api.StoreIdentityError("/s/.h5nest/store.json", "d"), "StoreIdentityError", "H5NEST_STORE_IDENTITY"],
      [new api.LeaseRefusedError("/s", "d"), "LeaseRefusedError", "H5NEST_LEASE_REFUSED"],
      [new api.LeaseNamespaceError("/s", "d"), "LeaseNamespaceError", "H5NEST_LEASE_NAMESPACE"],
      [new api.LockRequiredError("/s", "consolidate"), "LockRequiredError", "H5NEST_LOCK_REQUIRED"],
    ];
    for (const [error, name, code] of cases) {
      assert.ok(error instanceof Error, name);
      assert.equal(error.name, name);
      assert.equal((error as Error & { code: string }).code, code);
    }
  });
});
