/**
 * Root-only setups of the lease tests, real and undone afterwards: a bind
 * mount of a folder at a second path, processes of a second user (setpriv).
 * When one cannot be made, a test says so loudly and skips; under CI
 * (CI=true) it fails instead (CI runs as root).
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { TestContext } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);

function unavailable(t: TestContext, what: string): false {
  const message = `CANNOT ${what}`;
  if (process.env.CI === "true") throw new Error(`${message} (required under CI)`);
  console.warn(`\n*** ${message}: test skipped ***\n`);
  t.skip(message);
  return false;
}

/**
 * Mounts `source` a second time (mount --bind) on a fresh folder outside it,
 * runs `body` with that path, and unmounts it. Returns false when skipped.
 */
export async function withBindMount(t: TestContext, source: string, body: (mounted: string) => Promise<void>): Promise<boolean> {
  const base = await fsp.mkdtemp(path.join(os.tmpdir(), "h5nest-bind-"));
  const mounted = path.join(base, "other-path");
  await fsp.mkdir(mounted);
  try {
    await run("mount", ["--bind", source, mounted]);
  } catch (error) {
    await fsp.rm(base, { recursive: true, force: true });
    return unavailable(t, `BIND-MOUNT A FOLDER (mount --bind needs root): ${(error as { stderr?: string }).stderr || (error as Error).message}`.trim());
  }
  try {
    await body(mounted);
  } finally {
    await run("umount", [mounted]).catch(() => run("umount", ["-l", mounted]));
    await fsp.rmdir(mounted).catch(() => {});
    await fsp.rm(base, { recursive: true, force: true });
  }
  return true;
}

/** A second user: nobody (65534), run through setpriv. */
export const OTHER_UID = 65534;
export const OTHER_GID = 65534;

/** The folders from `/` down to `target` that other users cannot search. */
function unsearchable(target: string): string[] {
  const blocked: string[] = [];
  let current = path.dirname(path.resolve(target));
  for (;;) {
    if ((fs.statSync(current).mode & 0o001) === 0) blocked.push(current);
    const parent = path.dirname(current);
    if (parent === current) return blocked;
    current = parent;
  }
}

/**
 * The command prefix that runs a process as the other user, or false
 * (skipped) when this process cannot. The other user must be able to run
 * node and import h5nest from this checkout: when a folder above them is
 * private (a clone under /root, say), its search bit is added for the test
 * and taken back afterwards.
 */
export async function otherUser(t: TestContext): Promise<string[] | false> {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return unavailable(t, "RUN A PROCESS AS ANOTHER USER (needs root)");
  if (!fs.existsSync("/usr/bin/setpriv")) return unavailable(t, "RUN A PROCESS AS ANOTHER USER: /usr/bin/setpriv is missing (util-linux)");
  const prefix = ["/usr/bin/setpriv", `--reuid=${OTHER_UID}`, `--regid=${OTHER_GID}`, "--clear-groups", "--"];
  const entry = path.resolve(import.meta.dirname, "../../packages/core/dist/index.js");
  const probe = () =>
    run(prefix[0]!, [...prefix.slice(1), process.execPath, "--input-type=module", "-e", `await import(${JSON.stringify(`file://${entry}`)})`], { cwd: "/" }).then(
      () => null,
      (error: { stderr?: string; message: string }) => (error.stderr || error.message).trim().split("\n").slice(-3).join(" "),
    );
  let problem = await probe();
  if (problem) {
    const blocked = [...new Set([...unsearchable(fs.realpathSync(process.execPath)), ...unsearchable(entry)])];
    const modes = blocked.map((folder) => [folder, fs.statSync(folder).mode & 0o7777] as const);
    t.after(() => {
      for (const [folder, mode] of modes) fs.chmodSync(folder, mode);
    });
    for (const [folder, mode] of modes) fs.chmodSync(folder, mode | 0o001);
    problem = await probe();
  }
  if (problem) return unavailable(t, `RUN NODE WITH THIS CHECKOUT AS UID ${OTHER_UID}: ${problem}`);
  return prefix;
}

/** Makes `folder` and its parents up to `/` searchable by every user (temp folders are 0700). */
export async function openUpPath(folder: string): Promise<void> {
  let current = path.resolve(folder);
  for (;;) {
    const stat = await fsp.stat(current);
    if ((stat.mode & 0o011) !== 0o011) await fsp.chmod(current, stat.mode | 0o011);
    const parent = path.dirname(current);
    if (parent === current) return;
    current = parent;
  }
}
