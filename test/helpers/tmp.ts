/** Temporary folders for tests: under the OS temp folder, removed after the test. */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { TestContext } from "node:test";

export async function tempDir(t: TestContext, prefix = "h5nest-test-"): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The Python-written fixture store, read only: tests copy it before use. */
export const FIXTURE = path.resolve(import.meta.dirname, "../fixtures/python-h5-nested-store");

/** Copies the fixture's store folder into a fresh temp folder (writable) and returns its path. */
export async function copyFixture(t: TestContext): Promise<string> {
  const dir = await tempDir(t);
  const target = path.join(dir, "store");
  await fs.cp(path.join(FIXTURE, "store"), target, { recursive: true });
  await makeWritable(target);
  return target;
}

async function makeWritable(dir: string): Promise<void> {
  await fs.chmod(dir, 0o755);
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) await makeWritable(full);
    else await fs.chmod(full, 0o644);
  }
}
