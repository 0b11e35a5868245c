/**
 * Which array a chunk key belongs to, read from `.zarray` / `zarr.json` and
 * cached. Only a hint for choosing shard or raw file: a wrong or stale answer
 * can only make a chunk land as a raw file, which every reader still finds.
 */
import fs from "node:fs/promises";
import path from "node:path";
import type { ArrayInfo } from "./layout.js";

const MAX_ENTRIES = 10_000;

export class ArrayCatalog {
  private readonly cache = new Map<string, Promise<ArrayInfo | null>>();
  /** Answers already read, for the synchronous path of every set(). */
  private readonly settled = new Map<string, ArrayInfo | null>();

  constructor(private readonly root: string) {}

  /** The array whose folder holds `key`, or null. Looks from the store root down. */
  async arrayOf(key: string): Promise<ArrayInfo | null> {
    const segments = key.split("/");
    for (let depth = 0; depth < segments.length; depth++) {
      const info = await this.probe(segments.slice(0, depth).join("/"));
      if (info) return info;
    }
    return null;
  }

  /** arrayOf() without waiting: undefined when some folder on the way has not been read yet. */
  known(key: string): ArrayInfo | null | undefined {
    let prefix = "";
    let end = -1;
    for (;;) {
      if (!this.settled.has(prefix)) return undefined;
      const info = this.settled.get(prefix)!;
      if (info) return info;
      end = key.indexOf("/", end + 1);
      if (end < 0) return null;
      prefix = key.slice(0, end);
    }
  }

  /** Forget everything (called whenever this store writes or deletes metadata). */
  invalidate(): void {
    this.cache.clear();
    this.settled.clear();
  }

  private probe(prefix: string): Promise<ArrayInfo | null> {
    let entry = this.cache.get(prefix);
    if (!entry) {
      if (this.cache.size >= MAX_ENTRIES) this.invalidate();
      const pending = readArrayInfo(path.join(this.root, prefix), prefix);
      entry = pending;
      this.cache.set(prefix, entry);
      void pending.then((info) => {
        if (this.cache.get(prefix) === pending) this.settled.set(prefix, info);
      });
    }
    return entry;
  }
}

/** A JSON object read from `file`, or null (missing, unreadable, not an object). */
export async function readJson(file: string): Promise<Record<string, unknown> | null> {
  try {
    const parsed: unknown = JSON.parse(await fs.readFile(file, "utf8"));
    return typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

function gridOf(shape: unknown, chunks: unknown): { grid?: number[] } {
  if (!Array.isArray(shape) || !Array.isArray(chunks) || shape.length !== chunks.length) return {};
  const grid = shape.map((s, i) => Math.ceil(Number(s) / Number(chunks[i])));
  return grid.every((n) => Number.isInteger(n) && n > 0) ? { grid } : {};
}

async function readArrayInfo(folder: string, prefix: string): Promise<ArrayInfo | null> {
  const v2 = await readJson(path.join(folder, ".zarray"));
  if (v2 && Array.isArray(v2.shape)) {
    return { prefix, zarrFormat: 2, ndim: v2.shape.length, chunkKeyPrefix: [], nested: v2.dimension_separator === "/", ...gridOf(v2.shape, v2.chunks) };
  }
  const v3 = await readJson(path.join(folder, "zarr.json"));
  if (v3 && v3.node_type === "array" && Array.isArray(v3.shape)) {
    const grid = gridOf(v3.shape, (v3.chunk_grid as { configuration?: { chunk_shape?: unknown } } | undefined)?.configuration?.chunk_shape);
    const encoding = (v3.chunk_key_encoding ?? { name: "default" }) as {
      name?: string;
      configuration?: { separator?: string };
    };
    if (encoding.name === "v2") {
      const separator = encoding.configuration?.separator ?? ".";
      return { prefix, zarrFormat: 3, ndim: v3.shape.length, chunkKeyPrefix: [], nested: separator === "/", ...grid };
    }
    const separator = encoding.configuration?.separator ?? "/";
    return { prefix, zarrFormat: 3, ndim: v3.shape.length, chunkKeyPrefix: ["c"], nested: separator === "/", ...grid };
  }
  return null;
}
