/**
 * Python variants: Debian's /usr/bin/python3 with zarr 2.x writes and reads
 * the same array through NestedDirectoryStore and, when H5NEST_PY_STORE
 * names a checkout of CBI-PITT/zarr_stores, through its H5_Nested_Store.
 * Timing happens inside Python (bench/zarr_bench.py; store level:
 * bench/store_bench.py); imports are not timed.
 */
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import type { StoreVariant } from "./store-bench.js";
import type { Variant } from "./variants.js";

const run = promisify(execFile);
/** Debian's interpreter (zarr 2.13); H5NEST_BENCH_PYTHON overrides it. */
export const PYTHON = process.env.H5NEST_BENCH_PYTHON || "/usr/bin/python3";
const SCRIPT = path.join(import.meta.dirname, "zarr_bench.py");
const STORE_SCRIPT = path.join(import.meta.dirname, "store_bench.py");

interface PythonResult {
  open_s: number;
  write_s: number;
  read_s: number;
  ok: boolean;
  maxrss_kib: number;
  zarr: string;
}

/** Null when `python3 -c "import <modules>"` works, else the reason. */
async function probe(modules: string[], extraPath?: string): Promise<string | null> {
  const script = `${extraPath ? `import sys; sys.path.insert(0, ${JSON.stringify(extraPath)}); ` : ""}import ${modules.join(", ")}`;
  try {
    await run(PYTHON, ["-c", script]);
    return null;
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    return (e.stderr || e.message).trim().split("\n").pop() ?? "failed";
  }
}

function pythonVariant(id: string, label: string, config: Record<string, unknown>): Variant {
  return {
    id,
    label,
    writeTimed: "arr[:] = data (inside Python)",
    readTimed: "arr[:] on a freshly opened store (inside Python)",
    async run(ctx) {
      const dir = await ctx.temp.fresh(id);
      try {
        const args = [SCRIPT, JSON.stringify({ ...config, path: dir, planes: ctx.workload.planes })];
        let stdout: string;
        try {
          ({ stdout } = await run(PYTHON, args, { maxBuffer: 16 * 1024 * 1024 }));
        } catch (error) {
          const e = error as { stderr?: string; message: string };
          throw new Error(`${label}: python failed: ${(e.stderr || e.message).trim()}`);
        }
        const result = JSON.parse(stdout.trim().split("\n").pop()!) as PythonResult;
        if (!result.ok) throw new Error(`${label}: values read back differ from the data written`);
        return {
          writeMs: result.write_s * 1000,
          readMs: result.read_s * 1000,
          openMs: result.open_s * 1000,
          childMaxRssBytes: result.maxrss_kib * 1024,
        };
      } finally {
        await ctx.temp.remove(dir);
      }
    },
  };
}

export interface PythonSetup {
  variants: Variant[];
  /** Loud notices for what was left out. */
  notices: string[];
  /** True when the H5_Nested_Store row is measured in this run. */
  h5StoreMeasured: boolean;
  zarrVersion: string | null;
}

export async function pythonVariants(): Promise<PythonSetup> {
  const notices: string[] = [];
  const variants: Variant[] = [];
  if (!fs.existsSync(PYTHON)) {
    notices.push(`${PYTHON} not found: Python NestedDirectoryStore row left out (apt-get install python3-zarr)`);
    return { variants, notices, h5StoreMeasured: false, zarrVersion: null };
  }
  const missingZarr = await probe(["zarr", "numpy"]);
  if (missingZarr) {
    notices.push(`${PYTHON} cannot import zarr (${missingZarr}): Python NestedDirectoryStore row left out (apt-get install python3-zarr)`);
    return { variants, notices, h5StoreMeasured: false, zarrVersion: null };
  }
  const { stdout } = await run(PYTHON, ["-c", "import zarr; print(zarr.__version__)"]);
  variants.push(pythonVariant("py-nds", "Python zarr NestedDirectoryStore", { kind: "nds" }));

  let h5StoreMeasured = false;
  const root = process.env.H5NEST_PY_STORE;
  if (root) {
    const file = path.join(root, "zarr_stores", "h5_nested_store.py");
    const missingH5 = fs.existsSync(file) ? await probe(["h5py", "zarr_stores.h5_nested_store"], root) : `${file} does not exist`;
    if (missingH5) {
      notices.push(`H5NEST_PY_STORE=${root} unusable (${missingH5}): Python H5_Nested_Store row left out, reference figures used`);
    } else {
      variants.push(pythonVariant("py-h5", "Python H5_Nested_Store", { kind: "h5", root: path.resolve(root) }));
      h5StoreMeasured = true;
    }
  }
  return { variants, notices, h5StoreMeasured, zarrVersion: stdout.trim() };
}

/** Runs `script` with `input` on stdin; resolves its last stdout line parsed as JSON. */
function runJson<T>(script: string, input: string, label: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [script], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => void (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => void (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`${label}: python exited with ${code}: ${stderr.trim().split("\n").slice(-3).join(" | ")}`));
      try {
        resolve(JSON.parse(stdout.trim().split("\n").pop()!) as T);
      } catch {
        reject(new Error(`${label}: python printed no result: ${stdout.slice(-200)} ${stderr.slice(-200)}`));
      }
    });
    child.stdin.end(input);
  });
}

interface PythonStoreResult {
  ok: boolean;
  error?: string;
  write_s: number;
  read_s: number;
  random_s: number;
  open_s: number;
}

function pythonStoreVariant(id: string, label: string, config: Record<string, unknown>): StoreVariant {
  return {
    id,
    label,
    ops: ["write", "read", "random", "open"],
    async run(p, ctx) {
      const dir = await ctx.temp.fresh(`${id}-${p.workload.id}`);
      try {
        const input = JSON.stringify({
          ...config,
          path: dir,
          grid: p.workload.grid,
          meta: Object.fromEntries(p.meta.map(([key, bytes]) => [key.replace(/^\//, ""), new TextDecoder().decode(bytes)])),
          keys: p.keys.map((key) => key.replace(/^\//, "")),
          random: p.random,
          digest: p.digest,
          open_reps: ctx.openReps,
        });
        const r = await runJson<PythonStoreResult>(STORE_SCRIPT, input, label);
        if (!r.ok) throw new Error(`${label}: ${r.error ?? "values read back differ from the data written"}`);
        return { write: r.write_s * 1000, read: r.read_s * 1000, random: r.random_s * 1000, open: r.open_s * 1000 };
      } finally {
        await ctx.temp.remove(dir);
      }
    },
  };
}

export interface PythonStoreSetup {
  variants: StoreVariant[];
  /** Rows that stay in the table as loud "NOT MEASURED" lines, with the reason. */
  missing: { label: string; reason: string }[];
  notices: string[];
  h5StoreMeasured: boolean;
  zarrVersion: string | null;
}

/** Store-level Python variants (bench/store_bench.py): NestedDirectoryStore and, with H5NEST_PY_STORE, H5_Nested_Store. */
export async function pythonStoreVariants(): Promise<PythonStoreSetup> {
  const setup: PythonStoreSetup = { variants: [], missing: [], notices: [], h5StoreMeasured: false, zarrVersion: null };
  const nds = "Python zarr NestedDirectoryStore";
  const h5 = "Python H5_Nested_Store";
  const skip = (label: string, reason: string): void => {
    setup.missing.push({ label, reason });
    setup.notices.push(`${label} NOT MEASURED: ${reason}`);
  };
  const missingZarr = fs.existsSync(PYTHON) ? await probe(["zarr", "numpy"]) : `${PYTHON} not found`;
  if (missingZarr) {
    skip(nds, `${PYTHON} cannot import zarr (${missingZarr}); apt-get install python3-zarr`);
    skip(h5, "needs Python zarr too");
    return setup;
  }
  setup.zarrVersion = (await run(PYTHON, ["-c", "import zarr; print(zarr.__version__)"])).stdout.trim();
  setup.variants.push(pythonStoreVariant("py-nds", nds, { kind: "nds" }));
  const root = process.env.H5NEST_PY_STORE;
  if (!root) {
    skip(h5, "set H5NEST_PY_STORE to a checkout of CBI-PITT/zarr_stores (see bench/README.md)");
    return setup;
  }
  const file = path.join(root, "zarr_stores", "h5_nested_store.py");
  const missingH5 = fs.existsSync(file) ? await probe(["h5py", "zarr_stores.h5_nested_store"], root) : `${file} does not exist`;
  if (missingH5) skip(h5, `H5NEST_PY_STORE=${root} unusable (${missingH5})`);
  else {
    setup.variants.push(pythonStoreVariant("py-h5", h5, { kind: "h5", root: path.resolve(root) }));
    setup.h5StoreMeasured = true;
  }
  return setup;
}
