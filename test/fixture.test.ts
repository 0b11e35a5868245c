/**
 * Reads the store written by Python's H5_Nested_Store (test/fixtures) and
 * checks every key's bytes, the key listing and every array's values against
 * the manifest that Python wrote beside it.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { H5NestedStore } from "h5nest";
import * as zarr from "zarrita";
import { cOrderBytes, collect, listFiles, sha256, sumOf } from "./helpers/arrays.ts";
import { copyFixture, FIXTURE } from "./helpers/tmp.ts";

interface Manifest {
  keys: Record<string, { bytes: number; sha256: string }>;
  arrays: Record<string, { shape: number[]; chunks: number[]; dtype: string; fill_value: number; sum: number; sha256_c_order_values: string }>;
  raw_over_shard: { key: string; shard_sha256: string };
  files: string[];
}

const manifest = JSON.parse(await fs.readFile(path.join(FIXTURE, "manifest.json"), "utf8")) as Manifest;

async function openFixture(t: import("node:test").TestContext): Promise<{ dir: string; store: H5NestedStore }> {
  const dir = await copyFixture(t);
  const store = await H5NestedStore.open(dir, { workers: 2 });
  t.after(() => store.close());
  return { dir, store };
}

test("the fixture copy holds exactly the files the manifest lists", async (t) => {
  const dir = await copyFixture(t);
  assert.deepEqual(await listFiles(dir), [...manifest.files].sort());
});

test("every manifest key reads byte-exact through store.get", async (t) => {
  const { store } = await openFixture(t);
  const keys = Object.keys(manifest.keys);
  assert.ok(keys.length > 50, `manifest lists ${keys.length} keys`);
  const values = await Promise.all(keys.map((key) => store.get(`/${key}`)));
  keys.forEach((key, i) => {
    const value = values[i];
    assert.ok(value, `key ${key} is missing`);
    assert.equal(value.byteLength, manifest.keys[key]!.bytes, `length of ${key}`);
    assert.equal(sha256(value), manifest.keys[key]!.sha256, `sha256 of ${key}`);
  });
  assert.equal(await store.get("/raw/vol3d/9/9/9"), undefined);
  assert.equal(await store.get("/nothing/.zarray"), undefined);
});

test("a key both raw and in its shard reads the raw file", async (t) => {
  const { dir, store } = await openFixture(t);
  const { key, shard_sha256 } = manifest.raw_over_shard;
  const rawBytes = new Uint8Array(await fs.readFile(path.join(dir, ...key.split("/"))));
  // The fixture is only a precedence test if the two values differ.
  assert.notEqual(sha256(rawBytes), shard_sha256);
  assert.equal(sha256(rawBytes), manifest.keys[key]!.sha256);
  const value = await store.get(`/${key}`);
  assert.ok(value);
  assert.equal(sha256(value), sha256(rawBytes));
  // Removing the raw file reveals the shard's value.
  await fs.rm(path.join(dir, ...key.split("/")));
  const revealed = await store.get(`/${key}`);
  assert.ok(revealed);
  assert.equal(sha256(revealed), shard_sha256);
});

test("keys() lists exactly the manifest's keys, each once (labels.h5 expanded)", async (t) => {
  const { store } = await openFixture(t);
  const listed = await collect(store.keys());
  const duplicates = listed.filter((key, i) => listed.indexOf(key) !== i);
  assert.deepEqual(duplicates, [], "keys listed twice");
  assert.deepEqual([...listed].sort(), Object.keys(manifest.keys).sort());
  for (const chunk of ["labels/line1d/0", "labels/line1d/1", "labels/line1d/2"]) assert.ok(listed.includes(chunk), chunk);
  assert.ok(!listed.some((key) => key.endsWith(".h5")), "no shard file is a key");
});

for (const [arrayPath, expected] of Object.entries(manifest.arrays)) {
  test(`zarrita reads ${arrayPath} (${expected.shape.length}-D ${expected.dtype}) with the manifest's values`, async (t) => {
    const { store } = await openFixture(t);
    const arr = await zarr.open.v2(zarr.root(store).resolve(arrayPath), { kind: "array" });
    assert.deepEqual(arr.shape, expected.shape);
    assert.deepEqual(arr.chunks, expected.chunks);
    const result = await zarr.get(arr, null);
    assert.deepEqual(result.shape, expected.shape);
    const data = result.data as unknown as ArrayLike<number> & ArrayBufferView;
    assert.equal(sha256(cOrderBytes({ data, shape: result.shape, stride: result.stride })), expected.sha256_c_order_values);
    const sum = sumOf(data);
    assert.ok(Math.abs(sum - expected.sum) <= 1e-6 * Math.max(1, Math.abs(expected.sum)), `sum ${sum} != ${expected.sum}`);
  });
}
