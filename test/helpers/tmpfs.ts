/**
 * A small tmpfs for disk-full tests (`mount -t tmpfs`, which needs root).
 * When it cannot be mounted a test says so loudly and skips; under CI
 * (CI=true) it fails instead, like the Python tools (helpers/python.ts).
 */
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import type { TestContext } from "node:test";
import { promisify } from "node:util";
import { tempDir } from "./tmp.ts";

const run = promisify(execFile);

/**
 * Mounts a tmpfs of `bytes` (rounded up to pages) on a fresh folder, runs
 * `body` with its path, and unmounts it before the test's temp folder is
 * removed. Returns false when the test was skipped because mounting failed.
 */
export async function withTmpfs(t: TestContext, bytes: number, body: (mount: string) => Promise<void>): Promise<boolean> {
  const mount = path.join(await tempDir(t), "tmpfs");
  await fs.mkdir(mount);
  try {
    await run("mount", ["-t", "tmpfs", "-o", `size=${bytes},mode=0755`, "tmpfs", mount]);
  } catch (error) {
    const message = `CANNOT MOUNT A TMPFS (mount -t tmpfs needs root): ${(error as { stderr?: string }).stderr || (error as Error).message}`.trim();
    if (process.env.CI === "true") throw new Error(`${message} (required under CI)`);
    console.warn(`\n*** ${message}: disk-full test skipped ***\n`);
    t.skip(message);
    return false;
  }
  try {
    await body(mount);
  } finally {
    // Unmounted here, not in t.after: the temp folder's own t.after hook runs first and would meet a busy mount.
    await run("umount", [mount]).catch(() => run("umount", ["-l", mount]));
  }
  return true;
}

/** Bytes a file system has left for files (statfs bavail). */
export async function freeBytes(mount: string): Promise<number> {
  const s = await fs.statfs(mount);
  return s.bavail * s.bsize;
}

export const PAGE = 4096;

export function pages(bytes: number): number {
  return Math.ceil(bytes / PAGE) * PAGE;
}

/**
 * Writes a filler file so that exactly `room` bytes stay free (tmpfs counts
 * whole pages: `room` should be a multiple of 4096). Returns its path.
 */
export async function leaveRoom(mount: string, room: number, name = "filler"): Promise<string> {
  const file = path.join(mount, name);
  await fs.rm(file, { force: true });
  const free = await freeBytes(mount);
  if (free < room) throw new Error(`only ${free} bytes free on ${mount}, wanted ${room}`);
  await fs.writeFile(file, Buffer.alloc(free - room));
  const left = await freeBytes(mount);
  if (left !== room) throw new Error(`left ${left} bytes free on ${mount} instead of ${room}`);
  return file;
}
