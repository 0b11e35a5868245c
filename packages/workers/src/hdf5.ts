/**
 * The only module that talks to h5wasm. It speaks our words: open a shard,
 * list and read its datasets. It is the reader of last resort (datasets the
 * shard index cannot place) and the independent check of `verify`.
 */
import type h5wasmDefault from "h5wasm/node";
import type { Metadata } from "h5wasm/node";
import { ChunkTooLargeError, CorruptShardError } from "./errors.js";
import { MAX_DATASET_BYTES } from "./limits.js";

const H5T_INTEGER = 0;
const H5T_OPAQUE = 5;

type H5Module = Awaited<(typeof h5wasmDefault)["ready"]>;

let module: H5Module | undefined;

export function hdf5Loaded(): boolean {
  return module !== undefined;
}

/** Loads the HDF5 WebAssembly module once per thread, with errors thrown instead of printed. */
export async function initHdf5(): Promise<void> {
  if (module) return;
  // Imported here, not at the top: importing h5wasm compiles its WebAssembly,
  // which most worker threads never need.
  const h5wasm = (await import("h5wasm/node")).default;
  const loaded = await h5wasm.ready;
  loaded.activate_throwing_error_handler();
  module = loaded;
}

function hdf5(): H5Module {
  if (!module) throw new Error("initHdf5() was not awaited in this thread");
  return module;
}

/** The innermost HDF5 message ("file signature not found", "truncated file: eof = ..."). */
function describe(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  const lines = text.split("\n").map((line) => line.trim()).filter(Boolean);
  const stack = lines.filter((line) => /^#\d+:/.test(line));
  const last = stack.at(-1);
  if (last) return last.replace(/^#\d+:.*?\(\):\s*/, "");
  return lines.at(-1) ?? "HDF5 error";
}

/** A reusable scratch buffer inside the WebAssembly heap. */
class HeapBuffer {
  private pointer = 0;
  private capacity = 0;

  reserve(bytes: number): number {
    if (bytes > this.capacity) {
      const m = hdf5();
      if (this.pointer) m._free(this.pointer);
      this.capacity = Math.max(bytes, 64 * 1024);
      this.pointer = m._malloc(this.capacity);
      if (!this.pointer) {
        this.capacity = 0;
        throw new Error(`cannot allocate ${bytes} bytes in the WebAssembly heap`);
      }
    }
    return this.pointer;
  }
}

const scratch = new HeapBuffer();

/** An open shard, read only. Cached by file identity (read.ts): commits replace shards by rename, and an in-place edit (h5py) changes size or mtime. */
export class ShardFile {
  private readonly fileId: bigint;
  private readonly names: Set<string>;
  /** Byte lengths already looked up (the file never changes under an open handle of ours). */
  private readonly lengths = new Map<string, number>();
  private closed = false;

  private constructor(
    readonly path: string,
    fileId: bigint,
    names: Set<string>,
  ) {
    this.fileId = fileId;
    this.names = names;
  }

  /** Opens `path`; throws CorruptShardError when HDF5 cannot. */
  static open(path: string): ShardFile {
    const m = hdf5();
    let fileId: bigint;
    try {
      fileId = m.open(path, m.H5F_ACC_RDONLY, false, -1, -1);
    } catch (error) {
      throw new CorruptShardError(path, describe(error));
    }
    try {
      return new ShardFile(path, fileId, new Set(m.get_names(fileId, "/", false)));
    } catch (error) {
      m.close_file(fileId);
      throw new CorruptShardError(path, describe(error));
    }
  }

  datasets(): string[] {
    return [...this.names];
  }

  has(dataset: string): boolean {
    return this.names.has(dataset);
  }

  /** Byte length of `dataset` from its metadata (no data read); undefined when absent. */
  byteLength(dataset: string): number | undefined {
    if (!this.names.has(dataset)) return undefined;
    const known = this.lengths.get(dataset);
    if (known !== undefined) return known;
    let metadata: Metadata;
    try {
      metadata = hdf5().get_dataset_metadata(this.fileId, `/${dataset}`);
    } catch (error) {
      throw new CorruptShardError(this.path, `dataset ${dataset}: ${describe(error)}`);
    }
    const bytes = byteLength(metadata);
    if (bytes === null) throw new CorruptShardError(this.path, `dataset ${dataset} is neither OPAQUE nor 1-D uint8`);
    this.lengths.set(dataset, bytes);
    return bytes;
  }

  /**
   * The stored bytes of `dataset` (an OPAQUE scalar or a 1-D uint8 dataset),
   * or undefined when the shard has no such dataset.
   */
  read(dataset: string): Uint8Array | undefined {
    const bytes = this.byteLength(dataset);
    if (bytes === undefined) return undefined;
    const m = hdf5();
    const name = `/${dataset}`;
    if (bytes > MAX_DATASET_BYTES) throw new ChunkTooLargeError(`${this.path}:${dataset}`, bytes, MAX_DATASET_BYTES);
    if (bytes === 0) return new Uint8Array(0);
    const pointer = scratch.reserve(bytes);
    try {
      m.get_dataset_data(this.fileId, name, null, null, null, BigInt(pointer));
    } catch (error) {
      throw new CorruptShardError(this.path, `dataset ${dataset}: ${describe(error)}`);
    }
    return m.HEAPU8.slice(pointer, pointer + bytes);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      hdf5().close_file(this.fileId);
    } catch {
      // Closing a read-only handle frees memory only; nothing on disk depends on it.
    }
  }
}

function byteLength(metadata: Metadata): number | null {
  const shape = metadata.shape ?? [];
  if (metadata.type === H5T_OPAQUE && shape.length === 0) return metadata.size;
  if (metadata.type === H5T_INTEGER && metadata.size === 1 && shape.length === 1) return shape[0]!;
  return null;
}
