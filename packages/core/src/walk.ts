/**
 * Streaming walks over a store: depth first, one open folder per level,
 * never the whole file or key list in memory.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { isTempName, type Layout } from "./layout.js";
import { statOrNull } from "./raw-files.js";

export interface StoreFile {
  path: string;
  name: string;
  /**
   * shard: a container; temp: a `.partial` leftover; meta: any name with a
   * dot; chunk: a raw chunk file; folder: a folder the `enter` filter declined.
   */
  kind: "shard" | "temp" | "meta" | "chunk" | "folder";
}

/** Decides, on entering a folder, whether to walk into it. */
export type FolderFilter = (folder: string) => boolean | Promise<boolean>;

export function classify(layout: Layout, name: string): Exclude<StoreFile["kind"], "folder"> {
  if (isTempName(name)) return "temp";
  if (layout.isShardName(name)) return "shard";
  if (name.includes(".")) return "meta";
  return "chunk";
}

/** Every regular file under `folder` (default: the store root), and every folder `enter` declines. */
export async function* walkFiles(layout: Layout, options: { folder?: string; enter?: FolderFilter } = {}): AsyncGenerator<StoreFile> {
  yield* walkFolder(layout, options.folder ?? layout.root, options.enter);
}

async function* walkFolder(layout: Layout, folder: string, enter: FolderFilter | undefined): AsyncGenerator<StoreFile> {
  let dir: import("node:fs").Dir;
  try {
    dir = await fs.opendir(folder);
  } catch (error) {
    // Folders can vanish while we walk (a commit removed an emptied raw folder).
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw error;
  }
  for await (const entry of dir) {
    const full = path.join(folder, entry.name);
    if (entry.isDirectory()) {
      if (!enter || (await enter(full))) yield* walkFolder(layout, full, enter);
      else yield { path: full, name: entry.name, kind: "folder" };
    } else if (entry.isFile()) {
      yield { path: full, name: entry.name, kind: classify(layout, entry.name) };
    }
  }
}

export type ShardLister = (shardPath: string) => Promise<string[]>;

/**
 * Every key once: raw files and the datasets inside shards, a dataset that a
 * raw file shadows listed as that raw file only. With `prefix`, only keys
 * starting with it (the walk starts at the prefix's parent folder).
 */
export async function* walkKeys(layout: Layout, listShard: ShardLister, prefix = ""): AsyncGenerator<string> {
  const wanted = (key: string) => key.startsWith(prefix);
  const legacy = layout.root + layout.ext;
  if ((await statOrNull(legacy))?.isFile()) {
    for await (const key of shardKeys(layout, listShard, legacy)) if (wanted(key)) yield key;
  }
  const parent = prefix.includes("/") ? prefix.slice(0, prefix.lastIndexOf("/")) : "";
  const segments = parent.split("/").filter(Boolean);
  // Shards beside the folders above the walked one (a 1-D array's chunks live
  // in its group's shard) hold keys under the prefix too.
  for (let depth = 1; depth <= segments.length; depth++) {
    const shard = path.join(layout.root, ...segments.slice(0, depth)) + layout.ext;
    if (!(await statOrNull(shard))?.isFile()) continue;
    for await (const key of shardKeys(layout, listShard, shard)) if (wanted(key)) yield key;
  }
  const folder = path.join(layout.root, ...segments);
  for await (const file of walkFiles(layout, { folder })) {
    if (file.kind === "temp") continue;
    if (file.kind === "shard") {
      for await (const key of shardKeys(layout, listShard, file.path)) if (wanted(key)) yield key;
    } else {
      const key = layout.keyOfFile(file.path);
      if (wanted(key)) yield key;
    }
  }
}

async function* shardKeys(layout: Layout, listShard: ShardLister, shardPath: string): AsyncGenerator<string> {
  const datasets = await listShard(shardPath);
  const rawFolder = layout.rawFolderOf(shardPath);
  const mayBeShadowed = (await statOrNull(rawFolder))?.isDirectory() ?? false;
  for (const dataset of datasets) {
    const key = layout.keyOf(shardPath, dataset);
    if (mayBeShadowed && (await statOrNull(path.join(layout.root, ...key.split("/"))))?.isFile()) continue;
    yield key;
  }
}
