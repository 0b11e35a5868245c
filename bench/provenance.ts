/**
 * What code was measured: the commit, whether packages/ had uncommitted
 * changes, and a fingerprint of the built packages/*\/dist, taken again at
 * the end to flag a rebuild during the run (worker threads started after a
 * rebuild load the new code while the main thread keeps the old).
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const REPO = path.resolve(import.meta.dirname, "..");

export interface Provenance {
  commit: string | null;
  /** Files under packages/ with uncommitted changes. */
  dirtyFiles: number | null;
  /** Newest mtime and file count of packages/*\/dist. */
  distFingerprint: string;
}

function git(args: string[]): string | null {
  try {
    return execFileSync("git", args, { cwd: REPO, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return null;
  }
}

function distFingerprint(): string {
  let newest = 0;
  let count = 0;
  const packages = path.join(REPO, "packages");
  for (const name of fs.readdirSync(packages)) {
    const dist = path.join(packages, name, "dist");
    if (!fs.existsSync(dist)) continue;
    for (const file of fs.readdirSync(dist)) {
      if (!file.endsWith(".js")) continue;
      count += 1;
      newest = Math.max(newest, fs.statSync(path.join(dist, file)).mtimeMs);
    }
  }
  return `${count} files, newest ${new Date(newest).toISOString()}`;
}

export function provenance(): Provenance {
  // --no-optional-locks: never take .git/index.lock (someone may be committing).
  const status = git(["--no-optional-locks", "status", "--porcelain", "--", "packages"]);
  return {
    commit: git(["rev-parse", "--short", "HEAD"]),
    dirtyFiles: status === null ? null : status.split("\n").filter(Boolean).length,
    distFingerprint: distFingerprint(),
  };
}

export function describe(p: Provenance): string {
  const dirty = p.dirtyFiles ? ` + uncommitted changes in ${p.dirtyFiles} files of packages/` : "";
  return `h5nest at ${p.commit ?? "unknown commit"}${dirty}`;
}

/** A notice when packages/*\/dist changed since `before`, else null. */
export function rebuiltSince(before: Provenance): string | null {
  const now = distFingerprint();
  return now === before.distFingerprint ? null : `packages/*/dist changed during the run (${before.distFingerprint} -> ${now}): results may mix code versions, run again`;
}
