/**
 * Sweeping temporary files only when provably dead: a live `.partial` of a
 * Python zarr writer (or of another machine) is left alone until abandoned
 * for ABANDONED_AFTER_MS; one of an h5nest process of this machine that no
 * longer runs is swept at once.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import * as zarr from "zarrita";
import { createV2Array, H5NestedStore } from "h5nest";
import { python, requirePython } from "./helpers/python.js";
import { tempDir } from "./helpers/tmp.js";
import { describeRun, h5nest } from "./helpers/cli.js";

async function rawStore(t: import("node:test").TestContext) {
  const root = path.join(await tempDir(t), "store");
  const store = await H5NestedStore.open(root, { workers: 1, writeDirect: false });
  const array = await createV2Array(store, "img", { shape: [1, 1, 2, 32, 32], chunks: [1, 1, 1, 16, 16], dtype: "<u2", compressor: null });
  await zarr.set(array, null, 3);
  await store.close();
  return root;
}

test("a live Python zarr write's temporary file survives a consolidation beside it, and its write completes", { timeout: 60_000 }, async (t) => {
  if (!(await requirePython(t))) return;
  const root = await rawStore(t);
  // Python's NestedDirectoryStore writes `<key>.<uuid hex>.partial`, then renames it. Hold one open
  // (the write in progress) while h5nest consolidates the same folder.
  const holder = spawn(
    "/usr/bin/python3",
    [
      "-c",
      `
import os, sys, uuid, time
final = os.path.join(sys.argv[1], "img/0/0/1/1/1")
temp = final + "." + uuid.uuid4().hex + ".partial"
with open(temp, "wb") as f:
    f.write(b"x" * 100)
    f.flush()
    print("writing", flush=True)
    sys.stdin.readline()
    f.write(b"y" * 412)
os.replace(temp, final)
print("done", flush=True)
`,
      root,
    ],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  let out = "";
  holder.stdout.setEncoding("utf8");
  await new Promise<void>((resolve) => holder.stdout.on("data", (d: string) => (out += d).includes("writing") && resolve()));
  const store = await H5NestedStore.open(root, { workers: 1 });
  t.after(() => store.close());
  const summary = await store.consolidate();
  assert.equal(summary.swept, 0, "the live temporary file was not swept");
  holder.stdin.end("\n");
  const code = await new Promise<number | null>((resolve) => holder.on("exit", resolve));
  assert.equal(code, 0, `the Python write completed (${out})`);
  assert.deepEqual(await store.get("img/0/0/1/1/1"), new Uint8Array([...new Array(100).fill(0x78), ...new Array(412).fill(0x79)]));
});

test("temporary files of a dead h5nest process of this machine are swept at once; old foreign ones too", async (t) => {
  const root = await rawStore(t);
  // An h5nest process that died mid-write: its temporary name carries this host's tag and its pid.
  const child = spawn(process.execPath, ["-e", "setTimeout(()=>{}, 10)"]);
  const deadPid: number = child.pid!;
  await new Promise((resolve) => child.on("exit", resolve));
  const store = await H5NestedStore.open(root, { workers: 1 });
  t.after(() => store.close());
  // Our own temporary names: learn this host's tag from one (a raw write of a metadata key makes one briefly).
  const ours = await hostTagOf(root, store);
  const dead = path.join(root, `img/0/0/0/0/0.${ours}${deadPid.toString(16).padStart(8, "0")}0123456789abcdef.partial`);
  const fresh = path.join(root, "img/0/0/0/0/1.0123456789abcdef0123456789abcdef.partial");
  const old = path.join(root, "img/0/0/1/0/0.fedcba9876543210fedcba9876543210.partial");
  for (const file of [dead, fresh, old]) await fs.writeFile(file, "partial");
  const anHourAgo = new Date(Date.now() - 3600_000);
  await fs.utimes(old, anHourAgo, anHourAgo);
  const summary = await store.consolidate();
  assert.equal(summary.swept, 2);
  await assert.rejects(fs.stat(dead), "the dead process's leftover is gone");
  await assert.rejects(fs.stat(old), "the abandoned one is gone");
  await fs.stat(fresh); // a fresh foreign one may be a live writer's: it stays
});

/** This machine's 8-hex host tag, read from a temporary name h5nest makes (caught by watching the folder). */
async function hostTagOf(root: string, store: H5NestedStore): Promise<string> {
  const seen: string[] = [];
  const watcher = (await import("node:fs")).watch(root, (_event, name) => name && seen.push(String(name)));
  try {
    for (let i = 0; i < 50 && !seen.some((n) => n.endsWith(".partial")); i++) await store.set(`.zattrs`, new TextEncoder().encode(`{"i":${i}}`));
  } finally {
    watcher.close();
  }
  const name = seen.find((n) => n.endsWith(".partial"));
  assert.ok(name, "saw a temporary file");
  return /\.([0-9a-f]{32})\.partial$/.exec(name)![1]!.slice(0, 8);
}

test("consolidate and compact without --lock are refused while writers with distributedLock are live, and touch nothing", { timeout: 90_000 }, async (t) => {
  const root = await rawStore(t);
  const rawFiles = async () => (await fs.readdir(path.join(root, "img/0/0/1"), { recursive: true })).sort();
  const before = await rawFiles();
  // A writer that holds the store open with distributedLock serves (or uses) its lease server.
  const writer = await H5NestedStore.open(root, { workers: 1, distributedLock: true });
  let writerOpen = true;
  t.after(() => (writerOpen ? writer.close() : undefined));
  await writer.set("img/0/0/0/0/0", new Uint8Array(512));
  for (const job of ["consolidate", "compact"]) {
    const args = [job, root, "--workers", "1"];
    const result = await h5nest(args, 60_000);
    assert.equal(result.code, 1, describeRun(args, result));
    assert.match(result.stderr, new RegExp(`refusing to ${job} .* without leases: .*--lock`), describeRun(args, result));
  }
  assert.deepEqual(await rawFiles(), before, "the refused jobs moved nothing");
  const unlocked = await H5NestedStore.open(root, { workers: 1 });
  await assert.rejects(unlocked.consolidate(), { name: "LockRequiredError", code: "H5NEST_LOCK_REQUIRED" });
  await unlocked.close();
  // With --lock it runs beside the writer; once the writers are gone, it runs without.
  const locked = await h5nest(["consolidate", root, "--workers", "1", "--lock"], 60_000);
  assert.equal(locked.code, 0, describeRun(["consolidate", "--lock"], locked));
  await writer.close();
  writerOpen = false;
  const after = await h5nest(["compact", root, "--workers", "1"], 60_000);
  assert.equal(after.code, 0, describeRun(["compact"], after));
});
