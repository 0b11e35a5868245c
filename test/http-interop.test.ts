/**
 * What h5nest serves and exports is read by the tools users look at data
 * with, and equals the values written (test/helpers/served-store.ts: shards,
 * raw files, a raw file shadowing a shard dataset, a gzip-chunked dataset
 * only h5wasm reads, missing chunks, a zarr v3 sharded array):
 *
 * - Python (Debian's python3-fsspec, zarr 2.13): the refs file locally and
 *   over HTTP (ReferenceFileSystem), and `h5nest serve` (fsspec's HTTP mapper);
 * - zarrita: FetchStore against `h5nest serve`, ReferenceStore on the refs file;
 * - Debian's chromium: the viewer at `/`, its canvas checked pixel by pixel.
 */
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { FetchStore, ReferenceStore } from "@zarrita/storage";
import * as zarr from "zarrita";
import { Browser, requireChromium } from "./helpers/chromium.ts";
import { describeRun, h5nest } from "./helpers/cli.ts";
import { type ServerProcess, startServe, startStatic } from "./helpers/http.ts";
import { python, requirePython } from "./helpers/python.ts";
import { bytesOfData, makeServedStore, requireFsspec, type ServedStore } from "./helpers/served-store.ts";

/** Reads every zarr v2 array of the manifest with zarr 2.13 through a mapper; prints per array whether it equals the values written. */
const PY_CHECK = `
import sys, json, os
import numpy as np, zarr, fsspec
mode, target, expected = sys.argv[1], sys.argv[2], sys.argv[3]
manifest = json.load(open(os.path.join(expected, "manifest.json")))
if mode == "refs":
    mapper = fsspec.filesystem("reference", fo=target).get_mapper("")
elif mode == "refs-http":
    mapper = fsspec.filesystem("reference", fo=target, remote_protocol="http").get_mapper("")
else:
    mapper = fsspec.get_mapper(target)
root = zarr.open_consolidated(mapper, mode="r")
out = {}
for name, spec in manifest.items():
    a = root[name][...]
    want = np.fromfile(os.path.join(expected, name.replace("/", "_") + ".bin"), dtype=spec["dtype"]).reshape(spec["shape"])
    out[name] = {"equal": bool(np.array_equal(a, want)), "shape": list(a.shape), "dtype": a.dtype.str}
print(json.dumps(out))
`;

async function pythonReads(mode: "refs" | "refs-http" | "serve", target: string, s: ServedStore): Promise<void> {
  const out = JSON.parse(await python(PY_CHECK, [mode, target, path.join(s.dir, "expected")])) as Record<string, { equal: boolean; shape: number[]; dtype: string }>;
  const v2 = Object.entries(s.arrays).filter(([, a]) => a.zarrFormat === 2);
  assert.deepEqual(Object.keys(out).sort(), v2.map(([name]) => name).sort(), "every v2 array was read");
  for (const [name, spec] of v2) {
    assert.deepEqual(out[name], { equal: true, shape: spec.shape, dtype: spec.dtype }, `${mode}: ${name}`);
  }
}

async function zarritaReads(label: string, store: zarr.Readable, s: ServedStore): Promise<void> {
  const root = zarr.root(store);
  for (const [name, spec] of Object.entries(s.arrays)) {
    const location = root.resolve(name);
    const array = spec.zarrFormat === 3 ? await zarr.open.v3(location, { kind: "array" }) : await zarr.open.v2(location, { kind: "array" });
    assert.deepEqual(array.shape, spec.shape, `${label}: ${name} shape`);
    const got = await zarr.get(array, null);
    assert.ok(bytesOfData(got.data as ArrayBufferView).equals(await s.bytes(name)), `${label}: ${name} equals the values written`);
  }
}

async function makeRefs(s: ServedStore, file: string, extra: string[] = []): Promise<void> {
  const args = ["refs", s.root, "--out", file, ...extra];
  const run = await h5nest(args);
  assert.equal(run.code, 0, describeRun(args, run));
}

test("Python, zarrita and chromium read what h5nest serves and exports", async (t) => {
  if (!(await requirePython(t)) || !(await requireFsspec(t))) return;
  const s = await makeServedStore(t);
  const serve: ServerProcess = await startServe(t, s.root);
  // Any static HTTP server can serve the shards the refs point into: here serve-static over the folder.
  const files: ServerProcess = await startStatic(t, s.dir);
  const localRefs = path.join(s.dir, "refs.json");
  const httpRefs = path.join(s.dir, "refs-http.json");
  await makeRefs(s, localRefs);
  await makeRefs(s, httpRefs, ["--url", `${files.url}store/`]);

  await t.test("the refs point into shards, raw files and inline what the index cannot place", async () => {
    const spec = JSON.parse(await fs.readFile(httpRefs, "utf8")) as { version: number; refs: Record<string, unknown>; h5nest_summary: Record<string, number> };
    assert.equal(spec.version, 1);
    assert.equal((spec.refs["img/0/0/1/1/1"] as unknown[])[0], `${files.url}store/img/0/0/1.h5`, "a chunk in a shard");
    assert.equal((spec.refs["img/0/1/2/0/1"] as unknown[])[0], `${files.url}store/img/0/1/2/0/1`, "the raw file wins over its shard dataset");
    assert.match(String(spec.refs["img/0/0/1/1/2"]), /^base64:/, "the gzip-chunked dataset is inlined");
    assert.equal(typeof spec.refs["img/.zarray"], "string", "metadata inlined as text");
    assert.equal(spec.h5nest_summary.errorCount, 0);
  });

  await t.test("Python: fsspec ReferenceFileSystem on the refs file (local file://)", () => pythonReads("refs", localRefs, s));
  await t.test("Python: fsspec ReferenceFileSystem on the refs file over HTTP", () => pythonReads("refs-http", `${files.url}refs-http.json`, s));
  await t.test("Python: fsspec HTTP mapper on h5nest serve", () => pythonReads("serve", serve.url, s));
  await t.test("zarrita: FetchStore on h5nest serve (v2 arrays, and v3 sharded by Range)", () => zarritaReads("FetchStore", new FetchStore(serve.url), s));
  await t.test("zarrita: ReferenceStore on the refs file (shard byte ranges over HTTP, v3 sharded included)", async () =>
    zarritaReads("ReferenceStore", await ReferenceStore.fromUrl(`${files.url}refs-http.json`), s),
  );

  await t.test("chromium: the viewer lists the arrays and draws the chosen slice", async (tt) => {
    if (!requireChromium(tt)) return;
    const browser = await Browser.launch(tt);
    const page = await browser.newPage();
    await page.goto(serve.url);
    await page.waitFor("document.body?.dataset.state === 'rendered'", "the first slice");
    const rows = await page.evaluate<string[][]>("[...document.querySelectorAll('#arrays tbody tr')].map((r) => [...r.cells].map((c) => c.textContent))");
    for (const [name, spec] of Object.entries(s.arrays)) {
      const row = rows.find((r) => r[0] === name);
      assert.ok(row, `${name} is listed: ${JSON.stringify(rows)}`);
      assert.equal(row[1], JSON.stringify(spec.shape), `${name} shape`);
    }

    /** Picks `array` and the indices of its leading axes through the page's controls; returns the canvas's gray levels and view. */
    const show = async (array: string, index: number[]) => {
      await page.evaluate(`(() => {
        const select = document.getElementById("array");
        select.value = ${JSON.stringify(array)};
        select.dispatchEvent(new Event("change"));
      })()`);
      await page.waitFor(`document.body.dataset.state === "rendered" && JSON.parse(document.body.dataset.view).array === ${JSON.stringify(array)}`, `${array} drawn`);
      await page.evaluate(`(() => {
        const inputs = [...document.querySelectorAll("#axes input")];
        ${JSON.stringify(index)}.forEach((value, axis) => {
          inputs[axis].value = String(value);
          inputs[axis].dispatchEvent(new Event("input"));
        });
      })()`);
      return readCanvas(JSON.stringify(index));
    };
    const readCanvas = async (index: string) => {
      await page.waitFor(`document.body.dataset.state === "rendered" && JSON.stringify(JSON.parse(document.body.dataset.view).index) === ${JSON.stringify(index)}`, `slice ${index} drawn`);
      return page.evaluate<{ width: number; height: number; rgba: number[]; view: { lo: number; hi: number; index: number[] } }>(`(() => {
        const canvas = document.getElementById("canvas");
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        return { width: canvas.width, height: canvas.height, rgba: Array.from(data), view: JSON.parse(document.body.dataset.view) };
      })()`);
    };
    // The viewer's mapping (viewer.js gray()), computed here from the values written.
    const gray = (v: number, lo: number, hi: number) => (!(v > lo) ? 0 : v >= hi ? 255 : Math.round(((v - lo) / (hi - lo)) * 255));
    const check = async (label: string, name: string, index: number[], shot: Awaited<ReturnType<typeof readCanvas>>) => {
      const spec = s.arrays[name]!;
      const [h, w] = spec.shape.slice(-2) as [number, number];
      assert.deepEqual([shot.height, shot.width], [h, w], `${label}: canvas size`);
      const all = await s.bytes(name);
      const typed = spec.dtype === "<f4" ? new Float32Array(all.buffer, all.byteOffset, all.length / 4) : new Uint16Array(all.buffer, all.byteOffset, all.length / 2);
      let first = 0;
      for (let d = 0; d < index.length; d++) first = first * spec.shape[d]! + index[d]!;
      const slice = Array.from(typed.subarray(first * h * w, (first + 1) * h * w));
      const distinct = new Set<number>();
      for (let i = 0; i < h * w; i++) {
        const want = gray(slice[i]!, shot.view.lo, shot.view.hi);
        distinct.add(want);
        const px = shot.rgba.slice(4 * i, 4 * i + 4);
        if (px[0] !== want || px[1] !== want || px[2] !== want || px[3] !== 255) {
          assert.fail(`${label}: pixel (${i % w}, ${Math.floor(i / w)}) is ${px} for value ${slice[i]} in [${shot.view.lo}, ${shot.view.hi}], expected gray ${want}`);
        }
      }
      assert.ok(distinct.size > 20, `${label}: the image is not flat (${distinct.size} gray levels)`);
      return slice;
    };

    // 5-D uint16 (zlib): index [0, 1, 2] holds the raw file that shadows its shard dataset (12345).
    const img = await show("img", [0, 1, 2]);
    const values = await check("img [0,1,2]", "img", [0, 1, 2], img);
    assert.equal(img.view.lo, Math.min(...values), "auto contrast: low = the slice's minimum");
    assert.equal(img.view.hi, Math.max(...values), "auto contrast: high = the slice's maximum");
    // The contrast control: a narrower window, drawn again from the same values.
    await page.evaluate(`(() => {
      const low = document.getElementById("low"), high = document.getElementById("high");
      low.value = "5000"; low.dispatchEvent(new Event("input"));
      high.value = "30000"; high.dispatchEvent(new Event("input"));
    })()`);
    const narrowed = await readCanvas("[0,1,2]");
    assert.deepEqual([narrowed.view.lo, narrowed.view.hi], [5000, 30000]);
    await check("img [0,1,2] contrast 5000..30000", "img", [0, 1, 2], narrowed);
    // 5-D, index [0, 0, 1]: holds the gzip-chunked dataset only h5wasm reads (img/0/0/1.h5 "1.2").
    await check("img [0,0,1]", "img", [0, 0, 1], await show("img", [0, 0, 1]));
    // 3-D float32 with blosc (WebAssembly in the browser), last plane.
    await check("g/vol [3]", "g/vol", [3], await show("g/vol", [3]));
    // zarr v3 with the sharding codec: Range requests from the browser. The
    // contrast window stays when a slider moves (set on plane 0, all of plane
    // 2 lies above it); the auto button fits it to plane 2.
    const kept = await show("v3/sharded", [2]);
    assert.ok(kept.rgba.every((v) => v === 255), "plane 2 lies above plane 0's window: white");
    await page.evaluate(`document.getElementById("auto").click()`);
    await check("v3/sharded [2] auto contrast", "v3/sharded", [2], await readCanvas("[2]"));

    const foreign = page.requests.filter((url) => !url.startsWith(serve.url) && !url.startsWith("data:") && !url.startsWith("blob:") && url !== "about:blank");
    assert.deepEqual(foreign, [], "the page loads nothing but from h5nest serve");
    assert.ok(page.requests.some((url) => url.includes("/__h5nest/lib/zarrita/")), "zarrita came from the server");
    assert.deepEqual(page.errors, [], "no uncaught error in the page");
  });
});
