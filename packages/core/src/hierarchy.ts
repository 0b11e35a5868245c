/**
 * The arrays of a store, found from their metadata files alone: a folder with
 * `.zarray`, or a `zarr.json` whose node_type is "array", is an array and is
 * not walked into (its chunk folders can hold millions of files). Used by the
 * viewer of `h5nest serve`, which cannot list folders over HTTP.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { readJson } from "./arrays.js";

export interface ArrayEntry {
  /** Store path of the array ("" for an array at the root). */
  path: string;
  zarrFormat: 2 | 3;
}

export interface ArrayListing {
  arrays: ArrayEntry[];
  /** True when a limit stopped the walk: more arrays may exist. */
  truncated: boolean;
}

export interface ListArraysOptions {
  /** At most this many arrays (default 10000). */
  maxArrays?: number;
  /** At most this many folder entries read in all (default 200000): a stray folder of raw files ends the walk. */
  maxEntries?: number;
  /** Names that are not groups or arrays (shards, temporary files). */
  skip?: (name: string) => boolean;
}

const MAX_DEPTH = 32;

export async function listArrays(root: string, options: ListArraysOptions = {}): Promise<ArrayListing> {
  const maxArrays = options.maxArrays ?? 10_000;
  let budget = options.maxEntries ?? 200_000;
  const arrays: ArrayEntry[] = [];
  let truncated = false;

  const visit = async (folder: string, segments: string[]): Promise<void> => {
    if (truncated) return;
    let entries: import("node:fs").Dirent[];
    try {
      entries = await fs.readdir(folder, { withFileTypes: true });
    } catch {
      return; // vanished or unreadable: not an array we can show
    }
    budget -= entries.length;
    if (budget < 0) {
      truncated = true;
      return;
    }
    const names = new Set(entries.filter((e) => e.isFile()).map((e) => e.name));
    const here = segments.join("/");
    if (names.has(".zarray")) {
      arrays.push({ path: here, zarrFormat: 2 });
      return;
    }
    if (names.has("zarr.json")) {
      const meta = await readJson(path.join(folder, "zarr.json"));
      if (meta?.node_type === "array") {
        arrays.push({ path: here, zarrFormat: 3 });
        return;
      }
    }
    if (segments.length >= MAX_DEPTH) return;
    const folders = entries.filter((e) => e.isDirectory() && !options.skip?.(e.name)).map((e) => e.name);
    folders.sort();
    for (const name of folders) {
      if (arrays.length >= maxArrays) {
        truncated = true;
        return;
      }
      await visit(path.join(folder, name), [...segments, name]);
    }
  };

  await visit(root, []);
  return { arrays, truncated };
}
