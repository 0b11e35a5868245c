/**
 * `h5nest refs`: a kerchunk reference set (version 1) whose byte ranges are
 * the bytes the store returns: metadata inlined, chunks as [url, offset,
 * length] into shards and raw files, names percent-encoded in http URLs,
 * one array or group on its own, datasets the index cannot place inlined or
 * listed as errors, the file written whole or not at all, streamed.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { Writable } from "node:stream";
import { test, type TestContext } from "node:test";
import { ReferenceStore } from "@zarrita/storage";
import { createV2Array, H5NestedStore, writeRefs } from "h5nest";
import * as zarr from "zarrita";
import { describeRun, h5nest } from "./helpers/cli.ts";
import { startStatic } from "./helpers/http.ts";
import { python, requirePython } from "./helpers/python.ts";
import { tempDir } from "./helpers/tmp.ts";

interface RefsFile {
  version: number;
  h5nest: { snapshot: string; created: string; store: string; path: string; url: string | null };
  refs: Record<string, string | [string, number, number]>;
  h5nest_summary: { keys: number; metadata: number; shardRanges: number; rawFiles: number; inlined: number; files: number; errors: { key: string; reason: string }[]; errorCount: number };
}

const ODD = "odd name#1%"; // a name that needs percent-encoding in a URL

async function makeStore(t: TestContext): Promise<{ dir: string; root: string; keys: string[] }> {
  const dir = await tempDir(t, "h5nest-refs-");
  const root = path.join(dir, "store");
  const store = await H5NestedStore.open(root, { workers: 1 });
  try {
    for (const name of ["img", "img2"]) {
      const array = await createV2Array(store, name, { shape: [1, 1, 2, 32, 32], chunks: [1, 1, 1, 16, 16], dtype: "<u2", compressor: null });
      await zarr.set(array, null, name.length);
    }
    // zarrita cannot name this array (it percent-encodes keys): keys set directly.
    await store.set(`g/${ODD}/.zarray`, (await store.get("img/.zarray"))!);
    await Promise.all([0, 1].map((z) => store.set(`g/${ODD}/0/0/${z}/0/0`, new Uint8Array(512).fill(z + 1))));
    const plane = await createV2Array(store, "g/plane", { shape: [32, 32], chunks: [16, 16], dtype: "|u1", compressor: null });
    await zarr.set(plane, null, 3); // 2-D: raw chunk files
    await store.set("img/0/0/1/1/1", new Uint8Array(0)); // an empty chunk in a shard
    await store.set("g/plane/1/1", new Uint8Array(0)); // an empty raw file
    await store.set("g/.zattrs", new TextEncoder().encode(JSON.stringify({ note: "h\u00e9llo" })));
  } finally {
    await store.close();
  }
  const reader = await H5NestedStore.open(root);
  const keys: string[] = [];
  for await (const key of reader.keys()) keys.push(key);
  await reader.close();
  return { dir, root, keys: keys.sort() };
}

async function refs(args: string[]): Promise<RefsFile> {
  const run = await h5nest(["refs", ...args]);
  assert.equal(run.code, 0, describeRun(["refs", ...args], run));
  const out = args.indexOf("--out");
  return JSON.parse(out >= 0 ? await fsp.readFile(args[out + 1]!, "utf8") : run.stdout) as RefsFile;
}

/** The bytes a reference stands for, read from the file it names. */
function resolve(ref: string | [string, number, number], root: string, prefix: string): Buffer {
  if (typeof ref === "string") return ref.startsWith("base64:") ? Buffer.from(ref.slice(7), "base64") : Buffer.from(ref, "utf8");
  const [url, offset, length] = ref;
  assert.ok(url.startsWith(prefix), url);
  const segments = url.slice(prefix.length).split("/");
  const file = path.join(root, ...(url.startsWith("file:") ? segments : segments.map(decodeURIComponent)));
  const fd = fs.openSync(file, "r");
  try {
    const out = Buffer.alloc(length);
    assert.equal(fs.readSync(fd, out, 0, length, offset), length, `${url} holds ${offset}+${length}`);
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

test("every key, as the bytes the store returns: metadata inlined, chunks as ranges of shards and raw files", async (t) => {
  const s = await makeStore(t);
  const out = path.join(s.dir, "refs.json");
  const spec = await refs([s.root, "--out", out]);
  assert.equal(spec.version, 1);
  assert.match(spec.h5nest.snapshot, /make the refs again after writing/, "the file says it is a snapshot");
  assert.ok(Date.now() - Date.parse(spec.h5nest.created) < 60_000);
  assert.deepEqual(Object.keys(spec.refs).sort(), s.keys, "every key of the store, each once");
  const store = await H5NestedStore.open(s.root);
  t.after(() => store.close());
  for (const key of s.keys) {
    const ref = spec.refs[key]!;
    const want = Buffer.from((await store.get(key))!);
    assert.ok(resolve(ref, s.root, `file://${s.root}/`).equals(want), `${key}: ${JSON.stringify(ref).slice(0, 120)}`);
    if (key.endsWith(".zarray") || key.endsWith(".zattrs") || key.endsWith(".zgroup")) assert.equal(typeof ref, "string", `${key} is inlined as text`);
  }
  assert.deepEqual(spec.refs["g/.zattrs"], JSON.stringify({ note: "h\u00e9llo" }), "UTF-8 text stays text");
  assert.equal((spec.refs["img/0/0/0/0/1"] as unknown[])[0], `file://${s.root}/img/0/0/0.h5`, "a chunk in a shard");
  assert.deepEqual(spec.refs["g/plane/0/0"], [`file://${s.root}/g/plane/0/0`, 0, 256], "a raw file: [url, 0, size] (zarrita's ReferenceStore cannot read [url])");
  assert.equal(spec.refs["img/0/0/1/1/1"], "base64:", "an empty chunk is inlined (an empty string reads as missing in zarrita)");
  assert.equal(spec.refs["g/plane/1/1"], "base64:");
  const summary = spec.h5nest_summary;
  assert.equal(summary.keys, s.keys.length);
  assert.equal(summary.errorCount, 0);
  assert.equal(summary.shardRanges + summary.rawFiles + summary.inlined + summary.metadata, summary.keys);
  assert.equal(summary.rawFiles, 3);
  assert.equal(summary.files, 2 * 2 + 2 + 3, "6 shards and 3 raw files");
  // Standard output without --out: the same entries.
  const again = await refs([s.root]);
  assert.deepEqual(again.refs, spec.refs);
});

test("--url: http URLs under the prefix, names percent-encoded; zarrita's ReferenceStore reads through a static server", async (t) => {
  const s = await makeStore(t);
  const files = await startStatic(t, s.dir);
  const out = path.join(s.dir, "refs-http.json");
  const spec = await refs([s.root, "--out", out, "--url", `${files.url}store`]);
  assert.equal(spec.h5nest.url, `${files.url}store`);
  assert.equal((spec.refs[`g/${ODD}/0/0/1/0/0`] as unknown[])[0], `${files.url}store/g/odd%20name%231%25/0/0/1.h5`);
  const reference = await ReferenceStore.fromUrl(`${files.url}refs-http.json`);
  const img2 = await zarr.get(await zarr.open.v2(zarr.root(reference).resolve("img2"), { kind: "array" }), null);
  assert.ok((img2.data as Uint16Array).every((v) => v === 4), "img2: the values written");
  // The encoded URL names the file on the static server: its range is the chunk.
  const [url, offset, length] = spec.refs[`g/${ODD}/0/0/1/0/0`] as [string, number, number];
  const ranged = await fetch(url, { headers: { Range: `bytes=${offset}-${offset + length - 1}` } });
  assert.equal(ranged.status, 206);
  assert.deepEqual(Buffer.from(await ranged.arrayBuffer()), Buffer.alloc(512, 2));
  // img's plane 1 holds the empty chunk, which no codec decodes: plane 0 only.
  const img = await zarr.get(await zarr.open.v2(zarr.root(reference).resolve("img"), { kind: "array" }), [0, 0, 0, null, null]);
  assert.ok((img.data as Uint16Array).every((v) => v === 3), "img plane 0");
  const run = await h5nest(["refs", s.root, "--url", "not a url"]);
  assert.equal(run.code, 2, "a prefix that is no absolute URL is a usage error");
  assert.match(run.stderr, /not an absolute URL/);
});

test("one array or group: its keys and the group metadata above it, nothing else", async (t) => {
  const s = await makeStore(t);
  const spec = await refs([s.root, "img"]);
  const keys = Object.keys(spec.refs).sort();
  assert.deepEqual(keys, s.keys.filter((k) => k === ".zgroup" || k.startsWith("img/")).sort(), "not img2, not g");
  assert.equal(spec.h5nest.path, "img");
  const group = await refs([s.root, "/g/"]);
  assert.deepEqual(Object.keys(group.refs).sort(), s.keys.filter((k) => k === ".zgroup" || k.startsWith("g/")).sort());
  const inner = await refs([s.root, `g/${ODD}`]);
  assert.ok(inner.refs["g/.zgroup"] && inner.refs["g/.zattrs"] && inner.refs[".zgroup"], "the groups above");
  assert.ok(Object.keys(inner.refs).every((k) => !k.startsWith("g/plane")));
  const out = path.join(s.dir, "none.json");
  const none = await h5nest(["refs", s.root, "nothing/here", "--out", out]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /nothing in the store under "nothing\/here"/);
  assert.ok(!fs.existsSync(out), "no refs file for a path that holds nothing");
  const bad = await h5nest(["refs", s.root, "../x"]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /invalid key/);
});

test("datasets the index cannot place: inlined when small, else listed as errors (exit 1, the rest written)", async (t) => {
  if (!(await requirePython(t))) return;
  const s = await makeStore(t);
  // h5py rewrites two datasets of one shard chunked and gzip-filtered: small (512 B) and large (64 KiB).
  await python(
    `
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "a") as f:
    small = np.frombuffer(f["0.0"][()].tobytes(), dtype=np.uint8)
    del f["0.0"]
    f.create_dataset("0.0", data=small, chunks=(100,), compression="gzip")
    f.create_dataset("0.9", data=np.arange(65536, dtype=np.uint32).view(np.uint8)[:65536], chunks=(4096,), compression="gzip")
`,
    [path.join(s.root, "img/0/0/0.h5")],
  );
  const out = path.join(s.dir, "refs.json");
  const args = ["refs", s.root, "--out", out, "--max-inline", "4096"];
  const run = await h5nest(args);
  assert.equal(run.code, 1, describeRun(args, run));
  assert.match(run.stderr, /not in the refs: img\/0\/0\/0\/0\/9: dataset 0\.9 of .*img\/0\/0\/0\.h5 is (chunked|filtered) in the HDF5 file \(65536 bytes, over the 4096-byte inline limit\)/);
  const spec = JSON.parse(await fsp.readFile(out, "utf8")) as RefsFile;
  assert.equal(spec.refs["img/0/0/0/0/9"], undefined);
  assert.deepEqual(spec.h5nest_summary.errors.map((e) => e.key), ["img/0/0/0/0/9"]);
  const small = spec.refs["img/0/0/0/0/0"];
  assert.equal(typeof small, "string");
  assert.deepEqual(Buffer.from(String(small).slice(7), "base64"), Buffer.from(new Uint16Array(256).fill(3).buffer), "inlined, the bytes of the value");
  assert.ok(Array.isArray(spec.refs["img/0/0/0/0/1"]), "the other datasets of that shard keep their byte ranges");
  const ok = await h5nest(["refs", s.root, "--out", out, "--max-inline", "100000"]);
  assert.equal(ok.code, 0, ok.stderr);
});

test("the file is written whole or not at all, and the output streams in bounded pieces", async (t) => {
  const s = await makeStore(t);
  const out = path.join(s.dir, "out", "refs.json");
  await fsp.mkdir(path.dirname(out));
  const failed = await h5nest(["refs", s.root, "--out", out, "--url", "::"]);
  assert.equal(failed.code, 2);
  assert.deepEqual(await fsp.readdir(path.dirname(out)), [], "no file, no leftover .partial");

  // A store with many keys: the refs leave in writes of about 64 KiB, never all at once.
  const root = path.join(s.dir, "many");
  const writer = await H5NestedStore.open(root, { workers: 1 });
  const array = await createV2Array(writer, "a", { shape: [1, 1, 40, 64, 64], chunks: [1, 1, 1, 4, 4], dtype: "|u1", compressor: null });
  await zarr.set(array, null, 1);
  await writer.close();
  const sizes: number[] = [];
  const sink = new Writable({
    highWaterMark: 16 * 1024,
    write(chunk: Buffer, _encoding, done) {
      sizes.push(chunk.length);
      setImmediate(done);
    },
  });
  const store = await H5NestedStore.open(root);
  const summary = await writeRefs(store, sink);
  await store.close();
  assert.equal(summary.keys, 40 * 256 + 2);
  assert.ok(sizes.length > 10, `${sizes.length} writes`);
  assert.ok(Math.max(...sizes) < 70 * 1024, `largest write ${Math.max(...sizes)} bytes`);
});
