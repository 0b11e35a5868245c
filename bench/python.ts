/**
 * Python variants: Debian's /usr/bin/python3 with zarr 2.x writes and reads
 * the same array through NestedDirectoryStore and, when H5NEST_PY_STORE
 * names a checkout of CBI-PITT/zarr_stores, through its H5_Nested_Store.
 * Timing happens inside Python (bench/zarr_bench.py); imports are not timed.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import type { Variant } from "./variants.js";

const run = promisify(execFile);
/** Debian's interpreter (zarr 2.13); H5NEST_BENCH_PYTHON overrides it. */
export const PYTHON = process.env.H5NEST_BENCH_PYTHON || "/usr/bin/python3";
const SCRIPT = path.join(import.meta.dirname, "zarr_bench.py");

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
