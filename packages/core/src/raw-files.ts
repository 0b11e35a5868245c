/** Raw chunk files in the main thread: reading metadata and listing a shard's raw folder. */
import fs from "node:fs/promises";
import path from "node:path";
import { isTempName, type Layout } from "./layout.js";

export function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR";
}

export async function readFileOrUndefined(file: string): Promise<Uint8Array | undefined> {
  try {
    return new Uint8Array(await fs.readFile(file));
  } catch (error) {
    if (isMissing(error)) return undefined;
    throw error;
  }
}

export async function statOrNull(file: string): Promise<import("node:fs").Stats | null> {
  try {
    return await fs.stat(file);
  } catch (error) {
    if (isMissing(error)) return null;
    throw error;
  }
}

export interface RawChunk {
  dataset: string;
  rawPath: string;
}

/**
 * The raw chunk files that belong to the shard whose raw folder is `folder`:
 * files exactly depth-1 levels down, with no '.' in any name; and the
 * leftover temporary files among them. At most one shard's worth of names.
 */
export async function listRawChunks(layout: Layout, folder: string): Promise<{ chunks: RawChunk[]; partials: string[] }> {
  const found: RawChunk[] = [];
  const partials: string[] = [];
  const visit = async (dir: string, segments: string[]): Promise<void> => {
    let entries: import("node:fs").Dirent[];
    try {
      entries = await fs.readdir(dir, { withFileTypes: true });
    } catch (error) {
      if (isMissing(error)) return;
      throw error;
    }
    for (const entry of entries) {
      if (isTempName(entry.name) && entry.isFile()) partials.push(path.join(dir, entry.name));
      if (entry.name.includes(".")) continue;
      const next = [...segments, entry.name];
      if (entry.isDirectory() && next.length < layout.depth - 1) await visit(path.join(dir, entry.name), next);
      else if (entry.isFile()) {
        const dataset = layout.datasetOfRawSegments(next);
        if (dataset) found.push({ dataset, rawPath: path.join(dir, entry.name) });
      }
    }
  };
  await visit(folder, []);
  return { chunks: found, partials };
}
