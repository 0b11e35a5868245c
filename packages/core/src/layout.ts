/**
 * Where a key lives on disk (docs/format.md sections 1, 3 and 7). Pure: no I/O.
 * Every path computation of the project goes through this module.
 */
import path from "node:path";
import { InvalidKeyError } from "./errors.js";
import { IDENTITY_FOLDER } from "./identity.js";

export interface LayoutOptions {
  /** Absolute path of the store folder. */
  root: string;
  /** Consolidate depth D (at least 2): the last D-1 key segments name the dataset. */
  depth: number;
  /** Container extension with its leading dot, e.g. ".h5". */
  ext: string;
}

/** Where a shard holding a chunk lies relative to the store. */
export type ShardPlacement =
  /** Inside the store folder: read and written. */
  | "inside"
  /** `<store><ext>` beside the store folder (the Python store's root arrays): read only. */
  | "legacy-root";

export interface ShardLocation {
  /** Absolute path of the shard file. */
  path: string;
  /** Dataset name at the root group of the shard. */
  dataset: string;
  placement: ShardPlacement;
}

export type Location =
  | { kind: "meta"; key: string; rawPath: string }
  | { kind: "chunk"; key: string; rawPath: string; shard: ShardLocation | null };

const TEMP_SUFFIX = /\.[0-9a-f]{32}\.partial$/;

/** True for `<name>.<32 hex>.partial`, the temporary files of an unfinished write. */
export function isTempName(name: string): boolean {
  return TEMP_SUFFIX.test(name);
}

/** The path a temporary file was meant to become (`x.<hex>.partial` -> `x`). */
export function finalPathOfTemp(file: string): string {
  return file.replace(TEMP_SUFFIX, "");
}

/** Normalises a container extension: ".h5" and "h5" both give ".h5". */
export function normalizeExt(ext: string): string {
  return ext.startsWith(".") ? ext : `.${ext}`;
}

/**
 * Splits a store key (zarrita's `/a/b` or plain `a/b`) into checked segments.
 * Refuses anything that could leave the store or alias another file.
 */
export function keySegments(key: string, ext: string): string[] {
  if (typeof key !== "string") throw new InvalidKeyError(String(key), "keys are strings");
  const bare = key.startsWith("/") ? key.slice(1) : key;
  if (bare.length === 0) throw new InvalidKeyError(key, "the key is empty");
  if (bare.includes("\0")) throw new InvalidKeyError(key, "the key holds a NUL byte");
  if (bare.includes("\\")) throw new InvalidKeyError(key, "the key holds a backslash");
  if (bare.startsWith("/")) throw new InvalidKeyError(key, "absolute paths are not keys");
  const segments = bare.split("/");
  if (segments[0] === IDENTITY_FOLDER) throw new InvalidKeyError(key, `${IDENTITY_FOLDER} at the root holds the store's identity and lease state`);
  for (const segment of segments) {
    if (segment === "") throw new InvalidKeyError(key, "the key has an empty segment");
    if (segment === "." || segment === "..") {
      throw new InvalidKeyError(key, `the key has a '${segment}' segment`);
    }
    // A file or folder with such a name would take the place of a shard or a temporary file.
    if (isTempName(segment)) throw new InvalidKeyError(key, "names ending in .<hex>.partial are temporary files");
    if (segment.endsWith(ext)) throw new InvalidKeyError(key, `names ending in ${ext} are shard files`);
    // Its temporary name (`<segment>.<32 hex>.partial`) must fit in a file name (255 bytes).
    if (Buffer.byteLength(segment) > MAX_SEGMENT_BYTES) throw new InvalidKeyError(key, `a segment is longer than ${MAX_SEGMENT_BYTES} bytes`);
  }
  return segments;
}

/** 255 bytes of a file name, less the 41 of the `.<32 hex>.partial` suffix of its temporary file. */
export const MAX_SEGMENT_BYTES = 255 - 41;

/** The layout of one store: maps keys to files and shard datasets, and back. */
export class Layout {
  readonly root: string;
  readonly depth: number;
  readonly ext: string;

  constructor(options: LayoutOptions) {
    this.root = path.resolve(options.root);
    this.depth = options.depth;
    this.ext = normalizeExt(options.ext);
  }

  /** The file path and, for chunks, the shard and dataset of `key`. Throws InvalidKeyError. */
  locate(key: string): Location {
    const segments = keySegments(key, this.ext);
    const normalized = segments.join("/");
    const rawPath = path.join(this.root, ...segments);
    const last = segments[segments.length - 1]!;
    if (last.includes(".")) return { kind: "meta", key: normalized, rawPath };
    return { kind: "chunk", key: normalized, rawPath, shard: this.shardOf(segments) };
  }

  private shardOf(segments: string[]): ShardLocation | null {
    const dropped = this.depth - 1;
    const kept = segments.length - dropped;
    if (kept < 0) return null; // would lie above the store's parent folder
    const dataset = segments.slice(kept).join(".");
    if (kept === 0) return { path: this.root + this.ext, dataset, placement: "legacy-root" };
    return { path: path.join(this.root, ...segments.slice(0, kept)) + this.ext, dataset, placement: "inside" };
  }

  /** The folder that holds the raw chunk files belonging to a shard. */
  rawFolderOf(shardPath: string): string {
    return shardPath.slice(0, shardPath.length - this.ext.length);
  }

  /** The key of dataset `dataset` in the shard at `shardPath` (the inverse of locate). */
  keyOf(shardPath: string, dataset: string): string {
    const tail = dataset.split(".").join("/");
    if (shardPath === this.root + this.ext) return tail;
    const prefix = path.relative(this.root, this.rawFolderOf(shardPath)).split(path.sep).join("/");
    return `${prefix}/${tail}`;
  }

  /** The store key of a file at `filePath` inside the store. */
  keyOfFile(filePath: string): string {
    return path.relative(this.root, filePath).split(path.sep).join("/");
  }

  /** True when `name` (a file name) is a shard container. */
  isShardName(name: string): boolean {
    return name.endsWith(this.ext) && name.length > this.ext.length;
  }

  /** Dataset name of a raw chunk file given its path segments below the shard's raw folder. */
  datasetOfRawSegments(segments: string[]): string | null {
    if (segments.length !== this.depth - 1) return null;
    if (segments.some((s) => s.includes("."))) return null;
    return segments.join(".");
  }
}

/** What is known of the array a chunk key belongs to. */
export interface ArrayInfo {
  /** The array's key prefix, e.g. "grp/img". */
  prefix: string;
  /** 2 for `.zarray`, 3 for `zarr.json`. */
  zarrFormat: 2 | 3;
  /** Number of dimensions. */
  ndim: number;
  /** Segments between the prefix and the chunk indices ("c" for v3 default keys). */
  chunkKeyPrefix: string[];
  /** True when chunk indices are separated by "/" (nested keys). */
  nested: boolean;
  /** Chunks along each axis (ceil(shape / chunks)), when the metadata says. */
  grid?: number[];
}

/** How many chunks one full shard of `array` holds (the last depth-1 grid sizes), if known. */
export function chunksPerShard(array: ArrayInfo, depth: number): number | null {
  if (!array.grid || array.grid.length < depth - 1) return null;
  return array.grid.slice(array.grid.length - (depth - 1)).reduce((a, b) => a * b, 1);
}

/**
 * docs/format.md section 7: a chunk is written into a shard only when its key is a
 * real chunk key of `array`, no segment holds a '.', and the shard file lies
 * inside the array's own folder. Everything else stays a raw file.
 */
export function canWriteToShard(location: Location, array: ArrayInfo | null, depth: number): boolean {
  if (location.kind !== "chunk" || !array || !location.shard) return false;
  if (location.shard.placement !== "inside" || !array.nested) return false;
  const segments = location.key.split("/");
  if (segments.some((s) => s.includes("."))) return false;
  const prefix = array.prefix === "" ? [] : array.prefix.split("/");
  if (!prefix.every((segment, i) => segments[i] === segment)) return false;
  const tail = segments.slice(prefix.length);
  const lead = array.chunkKeyPrefix.length;
  if (tail.length !== lead + array.ndim) return false;
  if (!array.chunkKeyPrefix.every((s, i) => tail[i] === s)) return false;
  if (!tail.slice(lead).every((s) => /^\d+$/.test(s))) return false;
  // The shard keeps the first (len - (depth-1)) tail segments; it lies inside
  // the array folder when at least one tail segment is kept.
  return tail.length - (depth - 1) >= 1;
}
