/**
 * Streams the keys of a store: a depth-first walk holding one open folder
 * per level, never the whole key list. Each key comes once: a dataset that
 * a raw file shadows is listed as that raw file only.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { isTempName, type Layout } from "./layout.js";
import { statOrNull } from "./raw-files.js";

export type ShardLister = (shardPath: string) => Promise<string[]>;

export async function* walkKeys(layout: Layout, listShard: ShardLister): AsyncGenerator<string> {
  const legacy = layout.root + layout.ext;
  if ((await statOrNull(legacy))?.isFile()) yield* shardKeys(layout, listShard, legacy);
  yield* walkFolder(layout, listShard, layout.root);
}

async function* walkFolder(layout: Layout, listShard: ShardLister, folder: string): AsyncGenerator<string> {
  let dir: import("node:fs").Dir;
  try {
    dir = await fs.opendir(folder);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw error;
  }
  for await (const entry of dir) {
    const full = path.join(folder, entry.name);
    if (entry.isDirectory()) yield* walkFolder(layout, listShard, full);
    else if (!entry.isFile() || isTempName(entry.name)) continue;
    else if (layout.isShardName(entry.name)) yield* shardKeys(layout, listShard, full);
    else yield layout.keyOfFile(full);
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
