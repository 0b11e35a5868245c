/**
 * Runs Debian's /usr/bin/python3 (zarr 2.x, h5py) and h5dump for
 * interoperability tests. When they are missing a test says so loudly; under
 * CI (CI=true) a missing tool fails the test instead of skipping it.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import type { TestContext } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);
export const PYTHON = "/usr/bin/python3";
export const H5DUMP = "/usr/bin/h5dump";

let probed: string | null | undefined;

/** Null when python3 with zarr and h5py, and h5dump, are all usable; else what is missing. */
export async function missingTools(): Promise<string | null> {
  if (probed !== undefined) return probed;
  const missing: string[] = [];
  if (!fs.existsSync(H5DUMP)) missing.push("h5dump (apt-get install hdf5-tools)");
  try {
    await run(PYTHON, ["-c", "import zarr, h5py, numcodecs"]);
  } catch {
    missing.push("/usr/bin/python3 with zarr and h5py (apt-get install python3-zarr python3-h5py)");
  }
  probed = missing.length ? missing.join(", ") : null;
  return probed;
}

/** Skips (or under CI fails) the test when the Python tools are missing. Returns false when skipped. */
export async function requirePython(t: TestContext): Promise<boolean> {
  const missing = await missingTools();
  if (!missing) return true;
  const message = `MISSING TOOLS: ${missing}`;
  if (process.env.CI === "true") throw new Error(`${message} (required under CI)`);
  console.warn(`\n*** ${message}: interoperability test skipped ***\n`);
  t.skip(message);
  return false;
}

/** Runs a Python script with arguments; returns stdout. Fails with stderr on a non-zero exit. */
export async function python(script: string, args: string[] = []): Promise<string> {
  try {
    const { stdout } = await run(PYTHON, ["-c", script, ...args], { maxBuffer: 256 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    throw new Error(`python failed: ${e.stderr || e.message}`);
  }
}

/** Runs a Python script and parses its stdout as JSON. */
export async function pythonJson<T>(script: string, args: string[] = []): Promise<T> {
  return JSON.parse(await python(script, args)) as T;
}

/** Runs h5dump with arguments; returns stdout. */
export async function h5dump(args: string[]): Promise<string> {
  const { stdout } = await run(H5DUMP, args, { maxBuffer: 256 * 1024 * 1024 });
  return stdout;
}
