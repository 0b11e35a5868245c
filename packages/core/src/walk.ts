/**
 * Streaming walks over a store: depth first, one open folder per level,
 * never the whole file or key list in memory.
 *
 * Symbolic links: `get` opens paths, which follows links, so `walkKeys`
 * follows them too (a link to a file is that file, a link to a folder is that
 * folder). A link back to a folder on the current descent path (by device and
 * inode) is a cycle and is not entered; two links to one folder that is not
 * an ancestor are both walked, since `get` reads keys under both names. Only
 * the current path is remembered, so memory stays bounded by the depth.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { IDENTITY_FOLDER } from "./identity.js";
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

/** Errors that make a symbolic link unusable (dangling, a loop of links, no permission): such links are skipped. */
const BROKEN_LINK = new Set(["ENOENT", "ENOTDIR", "ELOOP", "EACCES", "EPERM", "ENAMETOOLONG"]);

/** What an entry is, following it when it is a symbolic link and `follow` is set; null for anything else. */
async function entryType(entry: import("node:fs").Dirent, full: string, follow: boolean): Promise<"file" | "folder" | null> {
  if (entry.isDirectory()) return "folder";
  if (entry.isFile()) return "file";
  if (!follow || !entry.isSymbolicLink()) return null;
  let stat: import("node:fs").Stats;
  try {
    stat = await fs.stat(full);
  } catch (error) {
    if (BROKEN_LINK.has((error as NodeJS.ErrnoException).code ?? "")) return null;
    throw error;
  }
  return stat.isDirectory() ? "folder" : stat.isFile() ? "file" : null;
}

/**
 * The folders on the current descent path, as "dev:ino" (bigint: inode
 * numbers can exceed 2^53). Entering a folder already on it would loop.
 */
type DescentPath = Set<string>;

/** A folder's "dev:ino"; null when it is gone (a commit removed it meanwhile) or is no folder now. */
async function folderId(folder: string): Promise<string | null> {
  const stat = await fs.stat(folder, { bigint: true }).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT" || error.code === "ENOTDIR") return null;
    throw error;
  });
  return stat?.isDirectory() ? `${stat.dev}:${stat.ino}` : null;
}

/**
 * Runs `walk` with `folder` pushed on the descent path; nothing when it is
 * already on it (a link back to an ancestor) or gone.
 */
async function* onPath<T>(descent: DescentPath, folder: string, walk: () => AsyncGenerator<T>): AsyncGenerator<T> {
  const id = await folderId(folder);
  if (id === null || descent.has(id)) return;
  descent.add(id);
  try {
    yield* walk();
  } finally {
    descent.delete(id);
  }
}

/**
 * Every regular file under `folder` (default: the store root), and every
 * folder `enter` declines. With `followLinks`, symbolic links to files and
 * folders are followed like `walkKeys` does (cycles are not entered);
 * without, they are skipped, so the walk sees only the store's own tree.
 */
export async function* walkFiles(layout: Layout, options: { folder?: string; enter?: FolderFilter; followLinks?: boolean } = {}): AsyncGenerator<StoreFile> {
  // Without links the tree has no cycles: no descent path is needed.
  yield* descend(layout, options.folder ?? layout.root, options.enter, options.followLinks ? new Set() : null);
}

function descend(layout: Layout, folder: string, enter: FolderFilter | undefined, descent: DescentPath | null): AsyncGenerator<StoreFile> {
  return descent ? onPath(descent, folder, () => walkFolder(layout, folder, enter, descent)) : walkFolder(layout, folder, enter, null);
}

async function* walkFolder(layout: Layout, folder: string, enter: FolderFilter | undefined, descent: DescentPath | null): AsyncGenerator<StoreFile> {
  let dir: import("node:fs").Dir;
  try {
    dir = await fs.opendir(folder);
  } catch (error) {
    // Folders can vanish while we walk (a commit removed an emptied raw folder).
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw error;
  }
  for await (const entry of dir) {
    // The store's identity and lease state: not part of the data.
    if (entry.name === IDENTITY_FOLDER && folder === layout.root) continue;
    const full = path.join(folder, entry.name);
    const type = await entryType(entry, full, descent !== null);
    if (type === "folder") {
      if (!enter || (await enter(full))) yield* descend(layout, full, enter, descent);
      else yield { path: full, name: entry.name, kind: "folder" };
    } else if (type === "file") {
      yield { path: full, name: entry.name, kind: classify(layout, entry.name) };
    }
  }
}

export type ShardLister = (shardPath: string) => Promise<string[]>;

/**
 * Every key once, none missed, even while a consolidation moves raw files
 * into shards: a shard is listed only after the raw folder beside it has been
 * walked, and without the datasets seen there as raw files. A fold renames
 * the shard before it unlinks the raw files it absorbed, so a key is either
 * seen as a raw file (and skipped in the shard) or found in the shard. The
 * sets remembered are bounded by the datasets of the shards being listed.
 * With `prefix`, only keys starting with it (the walk starts at the prefix's
 * parent folder; the shards beside the folders above it are listed last).
 */
export async function* walkKeys(layout: Layout, listShard: ShardLister, prefix = ""): AsyncGenerator<string> {
  const walk: KeyWalk = { layout, listShard, wanted: (key: string) => key.startsWith(prefix), seenRaw: new Map(), descent: new Set() };
  const parent = prefix.includes("/") ? prefix.slice(0, prefix.lastIndexOf("/")) : "";
  const segments = parent.split("/").filter(Boolean);
  // The folders above the start are on the descent path too, so a prefix
  // lists what the whole walk lists under it (no more through a cycle).
  for (let depth = 0; depth < segments.length; depth++) {
    const id = await folderId(path.join(layout.root, ...segments.slice(0, depth)));
    if (id !== null) walk.descent.add(id);
  }
  // Shards whose raw folder holds the walked folder: a 1-D array's chunks live
  // in its group's shard; a root array's in the legacy `<store>.h5`.
  const enclosing: string[] = [];
  for (let depth = segments.length; depth >= 1; depth--) enclosing.push(path.join(layout.root, ...segments.slice(0, depth)) + layout.ext);
  enclosing.push(layout.root + layout.ext);
  const present: string[] = [];
  for (const shard of enclosing) {
    if (!(await statOrNull(shard))?.isFile()) continue;
    present.push(shard);
    walk.seenRaw.set(shard, new Set());
  }
  yield* keysIn(walk, path.join(layout.root, ...segments));
  for (const shard of present) yield* shardKeys(walk, shard);
}

interface KeyWalk {
  layout: Layout;
  listShard: ShardLister;
  wanted(key: string): boolean;
  /** For each shard to be listed after its raw folder: the datasets seen there as raw files. */
  seenRaw: Map<string, Set<string>>;
  descent: DescentPath;
}

function keysIn(walk: KeyWalk, folder: string): AsyncGenerator<string> {
  return onPath(walk.descent, folder, () => keysInFolder(walk, folder));
}

async function* keysInFolder(walk: KeyWalk, folder: string): AsyncGenerator<string> {
  const { layout } = walk;
  let dir: import("node:fs").Dir;
  try {
    dir = await fs.opendir(folder);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return; // removed by a commit meanwhile
    throw error;
  }
  /** Entries already walked with their pair (a raw folder with its shard, or the other way round). */
  const paired = new Set<string>();
  for await (const entry of dir) {
    if (entry.name === IDENTITY_FOLDER && folder === layout.root) continue;
    if (paired.has(entry.name)) continue;
    const full = path.join(folder, entry.name);
    // A link is what it leads to: `get` reads through it.
    const type = await entryType(entry, full, true);
    if (type === "folder") {
      // Paired whether or not its shard exists yet: a fold may create it
      // while the folder is walked (and this listing may not show it).
      paired.add(entry.name + layout.ext);
      yield* pairKeys(walk, full, full + layout.ext);
    } else if (type === "file") {
      const kind = classify(layout, entry.name);
      if (kind === "temp") continue;
      if (kind === "shard") {
        // Its raw folder is walked now or never: this listing may still show
        // a folder a commit has emptied and removed since.
        const rawFolder = layout.rawFolderOf(full);
        paired.add(path.basename(rawFolder));
        if ((await statOrNull(rawFolder))?.isDirectory()) yield* pairKeys(walk, rawFolder, full);
        else yield* shardKeys(walk, full);
      } else {
        const key = layout.keyOfFile(full);
        noteRaw(walk, key);
        if (walk.wanted(key)) yield key;
      }
    }
  }
}

/** The raw folder first, then its shard (if there is one by then) without the datasets seen as raw files. */
async function* pairKeys(walk: KeyWalk, rawFolder: string, shard: string): AsyncGenerator<string> {
  walk.seenRaw.set(shard, new Set());
  try {
    yield* keysIn(walk, rawFolder);
    if ((await statOrNull(shard))?.isFile()) yield* shardKeys(walk, shard);
  } finally {
    walk.seenRaw.delete(shard);
  }
}

/** Records a raw chunk file's key against the shard it would live in, if that shard is listed later. */
function noteRaw(walk: KeyWalk, key: string): void {
  try {
    const location = walk.layout.locate(key);
    if (location.kind === "chunk" && location.shard) walk.seenRaw.get(location.shard.path)?.add(location.shard.dataset);
  } catch {
    // Not a valid key (a stray file): it belongs to no shard.
  }
}

async function* shardKeys(walk: KeyWalk, shardPath: string): AsyncGenerator<string> {
  const seen = walk.seenRaw.get(shardPath);
  for (const dataset of await walk.listShard(shardPath)) {
    if (seen?.has(dataset)) continue;
    const key = walk.layout.keyOf(shardPath, dataset);
    if (walk.wanted(key)) yield key;
  }
}
