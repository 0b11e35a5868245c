/** Plain-file helpers for worker threads: atomic writes, identities, cleanup. */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { LeaseExpiredError, writeFailed } from "./errors.js";

/** `<final>.<32 hex>.partial`, the temporary name Python zarr uses too. */
export function partialName(finalPath: string): string {
  return `${finalPath}.${randomBytes(16).toString("hex")}.partial`;
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
 * deepest first. Folders that still hold anything stay.
 */
export function removeEmptyFolders(files: Iterable<string>, top: string): void {
  const folders = new Set<string>();
  for (const file of files) {
    for (let folder = path.dirname(file); folder.length >= top.length; folder = path.dirname(folder)) {
      folders.add(folder);
      if (folder === top) break;
    }
  }
  const deepestFirst = [...folders].sort((a, b) => b.length - a.length);
  for (const folder of deepestFirst) {
    try {
      fs.rmdirSync(folder);
    } catch {
      // Not empty, or already gone: both fine.
    }
  }
}

/** Removes every empty folder in the tree below `top`, and `top` if it ends up empty (leftovers of a crash). */
export function removeEmptyTree(top: string): void {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(top, { withFileTypes: true });
  } catch {
    return;
  }
  for (const entry of entries) if (entry.isDirectory()) removeEmptyTree(path.join(top, entry.name));
  try {
    fs.rmdirSync(top);
  } catch {
    // Not empty: fine.
  }
}
