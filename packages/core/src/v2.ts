/**
 * Creates zarr v2 arrays the way Python zarr 2.x does (zarrita creates only
 * v3, and Python zarr 2.x reads only v2): `.zgroup` in every parent folder
 * that lacks one, and a `.zarray` with nested chunk keys, byte for byte what
 * `zarr.create(..., store=NestedDirectoryStore(...))` writes.
 */
import * as zarr from "zarrita";

export interface V2ArrayOptions {
  shape: number[];
  chunks: number[];
  /** NumPy dtype string, e.g. "<u2", "|u1", "<f4". */
  dtype: string;
  /** numcodecs compressor config, e.g. { id: "blosc", cname: "lz4", clevel: 5, shuffle: 1, blocksize: 0 }; null for none. */
  compressor?: Record<string, string | number> | null;
  fillValue?: number | null;
  order?: "C" | "F";
}

type V2Store = zarr.Readable & zarr.AsyncWritable;

/** Writes the metadata of a v2 array at `path` and opens it with zarrita. */
export async function createV2Array(store: V2Store, path: string, options: V2ArrayOptions): Promise<zarr.Array<zarr.DataType, V2Store>> {
  const parts = path.split("/").filter((part) => part.length > 0);
  for (let depth = 0; depth < parts.length; depth++) {
    const key = `/${[...parts.slice(0, depth), ".zgroup"].join("/")}` as zarr.AbsolutePath;
    if ((await store.get(key)) === undefined) await store.set(key, encode(pythonJson({ zarr_format: 2 })));
  }
  const isFloat = /^[<>|]?[fc]/.test(options.dtype);
  const fill = options.fillValue === undefined ? 0 : options.fillValue;
  const zarray = {
    chunks: options.chunks,
    compressor: options.compressor ?? null,
    dimension_separator: "/",
    dtype: options.dtype,
    fill_value: fill === null ? null : isFloat ? new PythonFloat(fill) : fill,
    filters: null,
    order: options.order ?? "C",
    shape: options.shape,
    zarr_format: 2,
  };
  const prefix = parts.length ? `/${parts.join("/")}` : "";
  await store.set(`${prefix}/.zarray` as zarr.AbsolutePath, encode(pythonJson(zarray)));
  const location = zarr.root(store).resolve(parts.join("/"));
  return zarr.open.v2(location, { kind: "array" });
}

/** A float that prints like Python's repr (0.0, NaN, Infinity). */
class PythonFloat {
  constructor(readonly value: number) {}
  toString(): string {
    if (Number.isNaN(this.value)) return '"NaN"';
    if (!Number.isFinite(this.value)) return this.value > 0 ? '"Infinity"' : '"-Infinity"';
    return Number.isInteger(this.value) && Math.abs(this.value) < 1e16 ? this.value.toFixed(1) : String(this.value);
  }
}

type Json = string | number | boolean | null | PythonFloat | Json[] | { [key: string]: Json };

/** json.dumps(value, indent=4, sort_keys=True, ensure_ascii=True, separators=(",", ": ")). */
export function pythonJson(value: Json, level = 0): string {
  const pad = "    ".repeat(level + 1);
  const end = "    ".repeat(level);
  if (value instanceof PythonFloat) return value.toString();
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return `[\n${value.map((v) => pad + pythonJson(v, level + 1)).join(",\n")}\n${end}]`;
  }
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort();
    if (keys.length === 0) return "{}";
    return `{\n${keys.map((k) => `${pad}${asciiString(k)}: ${pythonJson(value[k]!, level + 1)}`).join(",\n")}\n${end}}`;
  }
  if (typeof value === "string") return asciiString(value);
  return JSON.stringify(value);
}

function asciiString(text: string): string {
  return JSON.stringify(text).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function encode(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}
