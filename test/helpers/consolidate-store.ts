/**
 * Shared by the consolidation tests: building a NestedDirectoryStore full of
 * raw chunk files (with Python zarr when it is there, else with h5nest in
 * `writeDirect: false` mode), recording every key's sha256, checking a store
 * against that manifest in this project and in Python, and running the CLI.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { createV2Array, H5NestedStore } from "h5nest";
import * as zarr from "zarrita";
import { sha256 } from "./arrays.ts";
import { missingTools, python } from "./python.ts";

export const CLI = path.resolve(import.meta.dirname, "../../packages/core/dist/cli.js");

/** One zarr v2 array of uint8 without compressor: every chunk file holds exactly prod(chunks) bytes. */
export interface RawArraySpec {
  path: string;
  shape: number[];
  chunks: number[];
}

/**
 * A shard that exists before consolidation, written by h5py. Its datasets
 * are the chunks of the shard's raw folder whose last index is divisible by
 * `every`: for half of them the raw file stays (newer bytes: the shard's
 * dataset holds different, stale bytes, which consolidation must replace),
 * for the other half the raw file is removed (the shard holds the only copy,
 * which consolidation must keep). `opaque`: scalar OPAQUE datasets like the
 * Python H5_Nested_Store writes; else 1-D uint8 like h5nest writes.
 */
export interface PreShardSpec {
  /** Raw folder of the shard, relative to the store, e.g. "img5/0/0/0" (shard "img5/0/0/0.h5"). */
  folder: string;
  every: number;
  opaque: boolean;
}

export interface RawStoreSpec {
  seed: number;
  /** Arrays whose chunks consolidation moves into shards (at least D dimensions). */
  shardable: RawArraySpec[];
  /** Arrays whose chunks stay raw files (too few dimensions): consolidation must leave them alone. */
  rawOnly: RawArraySpec[];
  preShards: PreShardSpec[];
  /** A small zarr v3 array (3-D) written through zarrita, also shardable ("v3/vol/c/<z>.h5"). */
  v3?: { shape: number[]; chunks: number[] };
}

export const DEPTH = 3;
export const EXT = ".h5";

/** Python zarr 2.x NestedDirectoryStore writes the arrays with random bytes, then h5py writes the pre-existing shards. */
const PY_BUILD = `
import sys, os, json, glob
import numpy as np, zarr, h5py
root, spec = sys.argv[1], json.loads(sys.argv[2])
rng = np.random.default_rng(spec['seed'])
store = zarr.storage.NestedDirectoryStore(root)
for a in spec['shardable'] + spec['rawOnly']:
    z = zarr.open_array(store, mode='w', path=a['path'], shape=a['shape'], chunks=a['chunks'],
                        dtype='|u1', compressor=None, fill_value=0)
    z[...] = rng.integers(0, 256, size=a['shape'], dtype='u1')
for p in spec['preShards']:
    folder = os.path.join(root, *p['folder'].split('/'))
    with h5py.File(folder + '.h5', 'w') as f:
        n = 0
        for raw in sorted(glob.glob(folder + '/*/*')):
            y, x = raw.split('/')[-2:]
            if int(x) % p['every'] != 0:
                continue
            n += 1
            if n % 2 == 0:
                data = open(raw, 'rb').read()
                os.remove(raw)
            else:
                data = rng.integers(0, 256, size=os.path.getsize(raw), dtype='u1').tobytes()
            if p['opaque']:
                f.create_dataset(y + '.' + x, data=np.void(data))
            else:
                f.create_dataset(y + '.' + x, data=np.frombuffer(data, dtype='u1'))
`;

/** Builds the store with Python zarr (or, without Python, h5nest), then the v3 array with zarrita. Returns how it was built. */
export async function buildRawStore(root: string, spec: RawStoreSpec): Promise<"python" | "h5nest"> {
  const usePython = (await missingTools()) === null;
  if (usePython) await python(PY_BUILD, [root, JSON.stringify(spec)]);
  else await buildWithH5nest(root, spec);
  if (spec.v3) {
    const store = await H5NestedStore.open(root, { writeDirect: false, workers: 1 });
    try {
      const arr = await zarr.create(zarr.root(store).resolve("v3/vol"), { shape: spec.v3.shape, chunkShape: spec.v3.chunks, dtype: "uint8" });
      const count = spec.v3.shape.reduce((a, b) => a * b, 1);
      const data = new Uint8Array(randomBytes(count));
      const stride = spec.v3.shape.map((_, d) => spec.v3!.shape.slice(d + 1).reduce((a, b) => a * b, 1));
      await zarr.set(arr, null, { data, shape: spec.v3.shape, stride });
    } finally {
      await store.close();
    }
  }
  return usePython ? "python" : "h5nest";
}

/** The same tree without Python: raw files through `writeDirect: false`, the pre-existing shards through `writeDirect: true`. */
export async function buildWithH5nest(root: string, spec: RawStoreSpec): Promise<void> {
  const raw = await H5NestedStore.open(root, { writeDirect: false, workers: 1 });
  const direct = await H5NestedStore.open(root, { writeDirect: true, workers: 1 });
  try {
    for (const a of [...spec.shardable, ...spec.rawOnly]) {
      const arr = await createV2Array(raw, a.path, { shape: a.shape, chunks: a.chunks, dtype: "|u1", compressor: null });
      const count = a.shape.reduce((x, y) => x * y, 1);
      const stride = a.shape.map((_, d) => a.shape.slice(d + 1).reduce((x, y) => x * y, 1));
      await zarr.set(arr, null, { data: new Uint8Array(randomBytes(count)), shape: a.shape, stride });
    }
    await raw.flush();
    for (const p of spec.preShards) {
      const folder = path.join(root, ...p.folder.split("/"));
      const picked: { file: string; key: string; keep: boolean }[] = [];
      for (const y of (await fs.readdir(folder)).sort()) {
        for (const x of (await fs.readdir(path.join(folder, y))).sort()) {
          if (Number(x) % p.every !== 0) continue;
          picked.push({ file: path.join(folder, y, x), key: `${p.folder}/${y}/${x}`, keep: picked.length % 2 === 0 });
        }
      }
      // Hide the raw folder while the direct store writes the shard (a shard commit folds the raw files it finds).
      await fs.rename(folder, `${folder}.aside`);
      const values: Uint8Array[] = [];
      for (const { file, keep } of picked) {
        const bytes = await fs.readFile(file.replace(folder, `${folder}.aside`));
        values.push(keep ? new Uint8Array(randomBytes(bytes.byteLength)) : bytes);
      }
      // All sets in one tick make one batch: a new shard written whole.
      await Promise.all(picked.map(({ key }, i) => direct.set(key, values[i]!)));
      await direct.flush();
      await fs.rename(`${folder}.aside`, folder);
      for (const { file, keep } of picked) if (!keep) await fs.rm(file);
    }
  } finally {
    await direct.close();
    await raw.close();
  }
}

/** key → sha256 of its bytes, for every key the store lists. */
export async function recordManifest(root: string): Promise<Map<string, string>> {
  const store = await H5NestedStore.open(root, { workers: 2 });
  try {
    const keys: string[] = [];
    for await (const key of store.keys()) keys.push(key);
    keys.sort();
    const manifest = new Map<string, string>();
    for (const [key, bytes] of await getAll(store, keys)) {
      assert.ok(bytes, `key ${key} is listed but does not read`);
      manifest.set(key, sha256(bytes));
    }
    return manifest;
  } finally {
    await store.close();
  }
}

async function getAll(store: H5NestedStore, keys: string[]): Promise<[string, Uint8Array | undefined][]> {
  const out: [string, Uint8Array | undefined][] = [];
  for (let i = 0; i < keys.length; i += 512) {
    const slice = keys.slice(i, i + 512);
    const values = await Promise.all(slice.map((key) => store.get(key)));
    slice.forEach((key, j) => out.push([key, values[j]]));
  }
  return out;
}

/** Differences between the store (fresh H5NestedStore: keys() and get()) and the manifest; empty when they agree. */
export async function checkWithH5nest(root: string, manifest: Map<string, string>): Promise<string[]> {
  const problems: string[] = [];
  const store = await H5NestedStore.open(root, { workers: 2 });
  try {
    const listed: string[] = [];
    for await (const key of store.keys()) listed.push(key);
    const listedSet = new Set(listed);
    if (listedSet.size !== listed.length) problems.push(`keys() listed ${listed.length - listedSet.size} keys twice`);
    for (const key of listedSet) if (!manifest.has(key)) problems.push(`keys() lists an unknown key ${key}`);
    for (const key of manifest.keys()) if (!listedSet.has(key)) problems.push(`keys() misses ${key}`);
    for (const [key, bytes] of await getAll(store, [...manifest.keys()])) {
      if (!bytes) problems.push(`get(${key}) is undefined`);
      else if (sha256(bytes) !== manifest.get(key)) problems.push(`get(${key}) returns other bytes`);
    }
  } catch (error) {
    problems.push(`h5nest failed: ${(error as Error).message}`);
  } finally {
    await store.close().catch((error: Error) => problems.push(`close failed: ${error.message}`));
  }
  return problems;
}

/**
 * docs/format.md's read path in Python (what H5_Nested_Store does): the raw file
 * if there is one, else dataset '<last D-1 segments joined by .>' of the
 * shard '<other segments><ext>', read with h5py as f[name][()].tobytes().
 * HDF5 errors are reported, not turned into missing chunks.
 */
const PY_CHECK = `
import sys, os, json, hashlib, h5py
root, depth, ext, manifest_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
manifest = json.load(open(manifest_file))
files, problems = {}, []
for key, want in manifest.items():
    parts = key.split('/')
    raw = os.path.join(root, *parts)
    try:
        if os.path.isfile(raw):
            with open(raw, 'rb') as fh:
                data = fh.read()
        elif '.' in parts[-1]:
            problems.append(key + ': metadata file missing'); continue
        else:
            kept = len(parts) - (depth - 1)
            shard = os.path.join(root, *parts[:kept]) + ext
            name = '.'.join(parts[kept:])
            if shard not in files:
                files[shard] = h5py.File(shard, 'r')
            f = files[shard]
            if name not in f:
                problems.append(key + ': no raw file and no dataset ' + name + ' in ' + shard); continue
            data = f[name][()].tobytes()
    except Exception as e:
        problems.append(key + ': ' + type(e).__name__ + ': ' + str(e)); continue
    if hashlib.sha256(data).hexdigest() != want:
        problems.append(key + ': other bytes')
for f in files.values():
    f.close()
print(json.dumps({'checked': len(manifest), 'problems': problems}))
`;

/** The same check in Python, one interpreter for all keys. */
export async function checkWithPython(root: string, manifest: Map<string, string>, scratch: string): Promise<string[]> {
  const file = path.join(scratch, "manifest.json");
  await fs.writeFile(file, JSON.stringify(Object.fromEntries(manifest)));
  const result = JSON.parse(await python(PY_CHECK, [root, String(DEPTH), EXT, file])) as { checked: number; problems: string[] };
  assert.equal(result.checked, manifest.size);
  return result.problems.map((p) => `python: ${p}`);
}

export interface TreeCensus {
  /** Raw chunk files (no '.' in the name) below the given shardable array folders. */
  shardableRaw: string[];
  /** Raw chunk files below the raw-only array folders. */
  rawOnly: string[];
  partials: string[];
  shards: string[];
}

/** Every file of the store, sorted into what the tests look at. */
export async function census(root: string, spec: RawStoreSpec): Promise<TreeCensus> {
  const shardableDirs = [...spec.shardable.map((a) => a.path), ...(spec.v3 ? ["v3/vol"] : [])];
  const rawOnlyDirs = spec.rawOnly.map((a) => a.path);
  const result: TreeCensus = { shardableRaw: [], rawOnly: [], partials: [], shards: [] };
  const entries = await fs.readdir(root, { recursive: true, withFileTypes: true });
  // The legacy `<store>.h5` beside the store, and partials of it, would be outside: look there too.
  for (const name of await fs.readdir(path.dirname(root))) {
    if (name.startsWith(`${path.basename(root)}.`) && name.endsWith(".partial")) result.partials.push(path.join("..", name));
  }
  for (const entry of entries) {
    if (!entry.isFile()) continue;
    const rel = path.relative(root, path.join(entry.parentPath, entry.name)).split(path.sep).join("/");
    if (/\.[0-9a-f]{32}\.partial$/.test(entry.name) || entry.name.endsWith(".partial")) result.partials.push(rel);
    else if (entry.name.endsWith(EXT)) result.shards.push(rel);
    else if (!entry.name.includes(".")) {
      if (shardableDirs.some((d) => rel.startsWith(`${d}/`))) result.shardableRaw.push(rel);
      else if (rawOnlyDirs.some((d) => rel.startsWith(`${d}/`))) result.rawOnly.push(rel);
      else throw new Error(`unexpected file ${rel}`);
    }
  }
  for (const list of Object.values(result)) (list as string[]).sort();
  return result;
}

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Starts `h5nest <args>` as a child process; `done` resolves when it exits. `lines` are stdout lines with their arrival time (ms after the start). */
export function startCli(args: string[]): {
  child: ChildProcess;
  done: Promise<CliRun>;
  lines: { ms: number; text: string }[];
  onLine: (listener: (text: string) => void) => void;
  stderrSoFar: () => string;
} {
  const started = performance.now();
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let pending = "";
  const lines: { ms: number; text: string }[] = [];
  const listeners: ((text: string) => void)[] = [];
  child.stdout!.setEncoding("utf8").on("data", (text: string) => {
    stdout += text;
    pending += text;
    const parts = pending.split("\n");
    pending = parts.pop()!;
    // The whole chunk first: a listener that looks at `lines` sees everything read so far.
    for (const line of parts) lines.push({ ms: performance.now() - started, text: line });
    for (const line of parts) for (const listener of listeners) listener(line);
  });
  child.stderr!.setEncoding("utf8").on("data", (text: string) => void (stderr += text));
  const done = new Promise<CliRun>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr, ms: performance.now() - started }));
  });
  return { child, done, lines, onLine: (listener) => void listeners.push(listener), stderrSoFar: () => stderr };
}

/** Runs `h5nest <args>` to the end. */
export function runCli(args: string[]): Promise<CliRun> {
  return startCli(args).done;
}

/** Every stdout line parsed as JSON (throws, naming the line, when one is not JSON). */
export function jsonLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split("\n")
    .filter((line) => line.length > 0)
    .map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        throw new Error(`stdout line is not JSON: ${JSON.stringify(line)}`);
      }
    });
}

/** Total bytes charged to files on a file system (statfs), e.g. a tmpfs. */
export async function usedBytes(mount: string): Promise<number> {
  const s = await fs.statfs(mount);
  return (s.blocks - s.bfree) * s.bsize;
}

/** Folders below `root` that hold no file at any depth (store-relative, sorted). */
export async function emptyFolders(root: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (dir: string): Promise<boolean> => {
    let hasFile = false;
    for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) hasFile = (await visit(path.join(dir, entry.name))) || hasFile;
      else hasFile = true;
    }
    if (!hasFile && dir !== root) out.push(path.relative(root, dir).split(path.sep).join("/"));
    return hasFile;
  };
  await visit(root);
  return out.sort();
}
