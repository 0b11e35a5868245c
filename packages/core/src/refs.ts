/**
 * `h5nest refs`: a kerchunk reference set (spec version 1) of a store, so
 * that fsspec (ReferenceFileSystem), zarrita (ReferenceStore) and the tools
 * built on them read an h5nest store without an HDF5 library: metadata
 * inlined, each chunk a byte range of its shard or raw file. docs/format.md
 * section 10 gives the choices.
 *
 * Streamed: keys come from a walk of the tree (walk.ts), each shard is
 * indexed once (a bounded cache), and every entry is written as it is found,
 * so memory does not grow with the store. The byte ranges are a snapshot:
 * a later commit writes a new shard file, and the refs must be made again.
 */
import { once } from "node:events";
import fs from "node:fs";
import path from "node:path";
import type { Writable } from "node:stream";
import { InvalidKeyError, InvalidOptionError } from "./errors.js";
import { Layout } from "./layout.js";
import type { H5NestedStore } from "./store.js";
import { readAt, ValueLocator } from "./values.js";
import { walkKeys } from "./walk.js";

export interface RefsOptions {
  /**
   * URL under which the store's folder is served (an http(s) server, an
   * object store, or a file:// URL); entries are this plus the file's path
   * relative to the store. Default: the store's own file:// path.
   */
  url?: string;
  /** Only this array or group (with the group metadata above it); default the whole store. */
  path?: string;
  /** A dataset the shard index cannot place is inlined up to this many bytes (default 65536), else listed as an error. */
  maxInline?: number;
  /** The time the snapshot is stamped with (tests). */
  now?: Date;
}

export interface RefsError {
  key: string;
  reason: string;
}

export interface RefsSummary {
  /** Entries written. */
  keys: number;
  /** Metadata files inlined. */
  metadata: number;
  /** Chunks as byte ranges of a shard. */
  shardRanges: number;
  /** Chunks as byte ranges of a raw file. */
  rawFiles: number;
  /** Chunks inlined (read through h5wasm, or empty). */
  inlined: number;
  /** Distinct files (shards and raw files) the ranges point into (counted up to 100000). */
  files: number;
  /** Keys that are not in the refs, with why; at most MAX_LISTED_ERRORS listed. */
  errors: RefsError[];
  errorCount: number;
}

/** Nothing to reference: no key under the path asked for (or an empty store). No refs file is written. */
export class NothingToReferenceError extends Error {
  override readonly name = "NothingToReferenceError";
  readonly code = "H5NEST_NOTHING_TO_REFERENCE";
  constructor(readonly path: string) {
    super(path ? `nothing in the store under ${JSON.stringify(path)}` : "the store holds no keys");
  }
}

const MAX_LISTED_ERRORS = 1000;
/** Files counted for the summary (a set of names, so bounded to keep memory flat on a large store). */
const MAX_COUNTED_FILES = 100_000;
const FLUSH_AT = 64 * 1024;
/** Metadata files are inlined; a larger file with a dot in its name (not zarr metadata) becomes a byte range. */
const META_INLINE_MAX = 16 * 1024 * 1024;
const GROUP_METADATA = [".zgroup", ".zattrs", "zarr.json"];
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A JSON string value for inline bytes: metadata that is UTF-8 as text, anything else base64 (kerchunk's "base64:" prefix). */
function inline(bytes: Uint8Array, text = false): string {
  if (text && bytes.length > 0) {
    try {
      const text = utf8.decode(bytes);
      if (!text.startsWith("base64:")) return text;
    } catch {
      // not UTF-8: base64 below
    }
  }
  // An empty value is "base64:" too: zarrita's ReferenceStore takes an empty string for a missing key.
  return `base64:${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64")}`;
}

/**
 * Turns file paths into the URLs of the refs. file:// URLs keep the path as
 * it is (fsspec's local file system does not decode percent escapes); other
 * schemes get each path segment percent-encoded.
 */
export function urlMaker(root: string, prefix: string | undefined): (file: string) => string {
  if (prefix === undefined) return (file) => `file://${file.split(path.sep).join("/")}`;
  let base: URL;
  try {
    base = new URL(prefix.endsWith("/") ? prefix : `${prefix}/`);
  } catch {
    throw new InvalidOptionError("url", `${JSON.stringify(prefix)} is not an absolute URL (e.g. http://host:8080/store/ or file:///data/store/)`);
  }
  const href = base.href;
  const relative = (file: string) => path.relative(root, file).split(path.sep);
  if (base.protocol === "file:") return (file) => `${href}${relative(file).join("/")}`;
  return (file) => new URL(relative(file).map((s) => (s === ".." ? s : encodeURIComponent(s))).join("/"), href).href;
}

/** Writes the refs of `store` to `out` (JSON, one entry a line). Does not end `out`. */
export async function writeRefs(store: H5NestedStore, out: Writable, options: RefsOptions = {}): Promise<RefsSummary> {
  const layout = new Layout({ root: store.root, depth: store.options.consolidateDepth, ext: store.options.containerExt });
  const urlOf = urlMaker(layout.root, options.url);
  const maxInline = options.maxInline ?? 65536;
  const subset = (options.path ?? "").replace(/^\/+|\/+$/g, "");
  if (subset) layout.locate(subset); // InvalidKeyError for a path that is no key
  // The walk visits a shard's keys together, once: a few indexed shards suffice, and memory stays flat.
  const locator = new ValueLocator(layout, 4);
  const summary: RefsSummary = { keys: 0, metadata: 0, shardRanges: 0, rawFiles: 0, inlined: 0, files: 0, errors: [], errorCount: 0 };
  const files = new Set<string>(); // for the count in the summary; stops growing at MAX_COUNTED_FILES
  const fail = (key: string, reason: string) => {
    summary.errorCount++;
    if (summary.errors.length < MAX_LISTED_ERRORS) summary.errors.push({ key, reason });
  };

  let buffered = "";
  const write = async (text: string, force = false) => {
    buffered += text;
    if (buffered.length < FLUSH_AT && !force) return;
    const chunk = buffered;
    buffered = "";
    if (!out.write(chunk)) await once(out, "drain");
  };

  let first = true;
  const entry = async (key: string, value: string | [string, number, number]) => {
    await write(`${first ? "" : ",\n"}${JSON.stringify(key)}: ${JSON.stringify(value)}`);
    first = false;
    summary.keys++;
  };

  const header = {
    snapshot:
      "byte ranges of the shards and raw files as they were when this file was made; a later write, consolidate or compact replaces shard files and moves bytes: make the refs again after writing",
    created: (options.now ?? new Date()).toISOString(),
    store: layout.root,
    path: subset,
    url: options.url ?? null,
    generator: "h5nest refs",
  };
  await write(`{\n"version": 1,\n"h5nest": ${JSON.stringify(header)},\n"refs": {\n`);

  const emit = async (key: string): Promise<void> => {
    let location;
    try {
      location = layout.locate(key);
    } catch (error) {
      if (error instanceof InvalidKeyError) return; // a file of the store that no key names (its own state, say)
      throw error;
    }
    let value;
    try {
      value = locator.open(location);
    } catch (error) {
      return fail(key, error instanceof Error ? error.message : String(error));
    }
    if (!value) return; // removed since it was listed
    if (value.kind === "file") {
      let bytes: Buffer | null = null;
      try {
        if (location.kind === "meta" && value.size <= META_INLINE_MAX) bytes = readAt(value.fd, 0, value.size);
      } finally {
        fs.closeSync(value.fd);
      }
      if (bytes) {
        summary.metadata++;
        return entry(key, inline(bytes, true));
      }
      if (value.size === 0) {
        summary.inlined++;
        return entry(key, inline(new Uint8Array(0)));
      }
      summary.rawFiles++;
      countFile(value.path);
      return entry(key, [urlOf(value.path), 0, value.size]);
    }
    if (value.kind === "range") {
      if (value.size === 0) {
        summary.inlined++;
        return entry(key, inline(new Uint8Array(0)));
      }
      summary.shardRanges++;
      countFile(value.shard.path);
      return entry(key, [urlOf(value.shard.path), value.offset, value.size]);
    }
    // Chunked, filtered or otherwise unplaced inside its HDF5 file: no byte range to give.
    let bytes: Uint8Array | undefined;
    try {
      bytes = await store.get(key);
    } catch (error) {
      return fail(key, `${value.reason} dataset ${value.dataset} of ${value.shardPath}, unreadable: ${error instanceof Error ? error.message : String(error)}`);
    }
    if (!bytes) return;
    if (bytes.length > maxInline) {
      return fail(
        key,
        `dataset ${value.dataset} of ${value.shardPath} is ${value.reason} in the HDF5 file (${bytes.length} bytes, over the ${maxInline}-byte inline limit); ` +
          "h5nest compact --min-waste 0% rewrites shards with contiguous datasets",
      );
    }
    summary.inlined++;
    return entry(key, inline(bytes));
  };
  const countFile = (file: string) => {
    if (files.size < MAX_COUNTED_FILES) files.add(file);
  };

  try {
    if (subset) {
      // The groups above the subset, so that a zarr client can open it by path.
      const parts = subset.split("/");
      for (let depth = 0; depth < parts.length; depth++) {
        for (const name of GROUP_METADATA) await emit([...parts.slice(0, depth), name].join("/"));
      }
    }
    const listShard = async (shardPath: string): Promise<string[]> => {
      try {
        const names = locator.datasetsOf(shardPath);
        if (names) return names;
        return await datasetsThroughStore(store, layout, shardPath);
      } catch (error) {
        fail(layout.keyOfFile(shardPath), `shard not readable, its chunks are missing from the refs: ${error instanceof Error ? error.message : String(error)}`);
        return [];
      }
    };
    let found = 0;
    for await (const key of walkKeys(layout, listShard, subset ? `${subset}/` : "")) {
      found++;
      await emit(key);
    }
    if (found === 0) throw new NothingToReferenceError(subset);
  } finally {
    locator.close();
  }
  summary.files = files.size;
  await write(`\n},\n"h5nest_summary": ${JSON.stringify(summary)}\n}\n`, true);
  return summary;
}

/** Dataset names of a shard the index cannot decode, listed by the store (h5wasm). */
async function datasetsThroughStore(store: H5NestedStore, layout: Layout, shardPath: string): Promise<string[]> {
  const prefix = layout.keyOf(shardPath, "");
  const names: string[] = [];
  for await (const key of store.keys(prefix)) {
    const location = layout.locate(key);
    if (location.kind === "chunk" && location.shard?.path === shardPath) names.push(location.shard.dataset);
  }
  return names;
}
