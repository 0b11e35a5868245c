/**
 * The CLI as a shell user runs it: piped into `head` (the reader leaves
 * early), and through the root script the README shows
 * (`npm run -s h5nest -- ...`), from any folder, with relative paths.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { createV2Array, H5NestedStore } from "h5nest";
import * as zarr from "zarrita";
import { CLI } from "./helpers/cli.js";
import { tempDir } from "./helpers/tmp.js";

const run = promisify(execFile);
const REPO = path.resolve(import.meta.dirname, "..");

async function smallStore(t: import("node:test").TestContext): Promise<string> {
  const dir = await tempDir(t);
  const root = path.join(dir, "s.zarr");
  const store = await H5NestedStore.open(root, { workers: 1 });
  const array = await createV2Array(store, "img", { shape: [1, 1, 4, 64, 64], chunks: [1, 1, 1, 8, 8], dtype: "|u1", compressor: null });
  await zarr.set(array, null, 1);
  await store.close();
  return root;
}

test("h5nest ls | head: the listing ends quietly when the reader leaves", async (t) => {
  const root = await smallStore(t);
  const { stdout, stderr } = await run("/bin/bash", ["-c", `set -o pipefail; ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} ls ${JSON.stringify(root)} | head -n 1`]);
  assert.equal(stdout.trim().split("\n").length, 1);
  assert.equal(stderr, "", "no EPIPE trace");
});

test("npm run -s h5nest -- <command> works from another folder, with a relative store path", async (t) => {
  const root = await smallStore(t);
  const { stdout } = await run("npm", ["--prefix", REPO, "run", "-s", "h5nest", "--", "info", "--json", path.basename(root)], { cwd: path.dirname(root) });
  const info = JSON.parse(stdout) as { shards: number; datasets: number };
  assert.equal(info.shards, 4);
  assert.equal(info.datasets, 4 * 64);
});
