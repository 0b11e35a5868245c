/** Plain-file helpers for worker threads: atomic writes, identities, cleanup. */
import { createHash, randomBytes } from "node:crypto";
import os from "node:os";
import fs from "node:fs";
import path from "node:path";
import { LeaseExpiredError, writeFailed } from "./errors.js";

/**
 * This machine's boot, as 8 hex digits: the first part of our temporary
 * names, so that a sweeper on the same machine can tell whether the process
 * that wrote one is gone.
 */
const HOST_TAG = createHash("sha256")
  .update(`${os.hostname()}\0${readOrEmpty("/proc/sys/kernel/random/boot_id")}`)
  .digest("hex")
  .slice(0, 8);

function readOrEmpty(file: string): string {
  try {
    return fs.readFileSync(file, "utf8").trim();
  } catch {
    return "";
  }
}

/**
 * `<final>.<32 hex>.partial`, the temporary name Python zarr uses too. Ours
 * are host tag (8) + writer pid (8) + random (16), still 32 hex digits.
 */
export function partialName(finalPath: string): string {
  return `${finalPath}.${HOST_TAG}${process.pid.toString(16).padStart(8, "0")}${randomBytes(8).toString("hex")}.partial`;
}

/** A temporary file untouched for this long is taken as abandoned, whoever wrote it. */
export const ABANDONED_AFTER_MS = 15 * 60 * 1000;

/**
 * Whether a temporary file is provably dead, so that sweeping it cannot break
 * a write in progress: written by a process of this machine that no longer
 * runs (or by this process: its owner, the caller, is not writing it), or not
 * modified for ABANDONED_AFTER_MS (a Python writer, another machine).
 */
export function isDeadPartial(file: string, now = Date.now()): boolean {
  const stat = statOrNull(file);
  if (!stat) return false;
  if (now - stat.mtimeMs >= ABANDONED_AFTER_MS) return true;
  const hex = /\.([0-9a-f]{32})\.partial$/.exec(file)?.[1];
  if (!hex || hex.slice(0, 8) !== HOST_TAG) return false;
  const pid = Number.parseInt(hex.slice(8, 16), 16);
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return false; // alive (or its pid was reused): leave it
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ESRCH";
  }
}

/** What identifies one version of a file: a rewrite gives a new inode or mtime. */
export interface FileIdentity {
  ino: number;
  size: number;
  mtimeMs: number;
}

export function identityOf(stat: fs.Stats): FileIdentity {
  return { ino: stat.ino, size: stat.size, mtimeMs: stat.mtimeMs };
}

export function sameIdentity(a: FileIdentity, b: FileIdentity): boolean {
  return a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;
}

export function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR";
}

export function statOrNull(file: string): fs.Stats | null {
  try {
    // throwIfNoEntry: a missing file is the common case, and exceptions are slow.
    return fs.statSync(file, { throwIfNoEntry: false }) ?? null;
  } catch (error) {
    if (isMissing(error)) return null;
    throw error;
  }
}

/** Reads a whole file, or undefined when there is no file at that path. */
export function readFileOrUndefined(file: string): Uint8Array | undefined {
  try {
    return fs.readFileSync(file);
  } catch (error) {
    if (isMissing(error)) return undefined;
    throw error;
  }
}

/** fsyncs a file, or a folder so that a rename inside it survives power loss. */
export function fsyncPath(target: string): void {
  const fd = fs.openSync(target, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Writes `bytes` to `target` the way Python zarr does: into a `.partial`
 * file beside it, then renamed over it. Readers see the old or the new file,
 * never a torn one. A directory in the way is refused, not removed.
 */
export function writeFileAtomic(target: string, bytes: Uint8Array, fsync: boolean, beforeRename: () => void = () => {}, makeFolder = true): void {
  const folder = path.dirname(target);
  const temp = partialName(target);
  try {
    if (makeFolder) fs.mkdirSync(folder, { recursive: true });
    const fd = fs.openSync(temp, "w");
    try {
      let offset = 0;
      while (offset < bytes.byteLength) offset += fs.writeSync(fd, bytes, offset);
      if (fsync) fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    beforeRename();
    fs.renameSync(temp, target);
    if (fsync) fsyncPath(folder);
  } catch (error) {
    fs.rmSync(temp, { force: true });
    if (error instanceof LeaseExpiredError) throw error;
    throw writeFailed(target, error);
  }
}

/** Deletes a file; a missing file is not an error. */
export function removeFile(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch (error) {
    if (!isMissing(error)) throw writeFailed(file, error);
  }
}

/**
 * Removes the now-empty folders between each of `files` and `top` (inclusive),
 * deepest first. Folders that still hold anything stay, and so does any
 * folder reached through a symbolic link: its real place may be outside the
 * store (`storeRoot`), and an empty folder there is not ours to remove.
 */
export function removeEmptyFolders(files: Iterable<string>, top: string, storeRoot: string): void {
  const realRoot = realpathOrNull(storeRoot);
  if (!realRoot) return;
  const folders = new Set<string>();
  for (const file of files) {
    for (let folder = path.dirname(file); folder.length >= top.length; folder = path.dirname(folder)) {
      folders.add(folder);
      if (folder === top) break;
    }
  }
  const deepestFirst = [...folders].sort((a, b) => b.length - a.length);
  for (const folder of deepestFirst) {
    if (realpathOrNull(folder) !== path.join(realRoot, path.relative(storeRoot, folder))) continue;
    try {
      fs.rmdirSync(folder);
    } catch {
      // Not empty, or already gone: both fine.
    }
  }
}

function realpathOrNull(file: string): string | null {
  try {
    return fs.realpathSync(file);
  } catch {
    return null;
  }
}

/**
 * Removes every empty folder in the tree below `top`, and `top` if it ends up
 * empty (leftovers of a crash); nothing when `top` is reached through a
 * symbolic link (it may lie outside the store).
 */
export function removeEmptyTree(top: string, storeRoot: string): void {
  const realRoot = realpathOrNull(storeRoot);
  if (!realRoot || realpathOrNull(top) !== path.join(realRoot, path.relative(storeRoot, top))) return;
  pruneEmpty(top);
}

function pruneEmpty(top: string): void {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(top, { withFileTypes: true });
  } catch {
    return;
  }
  for (const entry of entries) if (entry.isDirectory()) pruneEmpty(path.join(top, entry.name));
  try {
    fs.rmdirSync(top);
  } catch {
    // Not empty: fine.
  }
}
