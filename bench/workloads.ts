/**
 * The workload: a 5-D uint16 array [1,1,Z,1024,1024] in chunks [1,1,1,64,64]
 * (8 KiB each, 256 per z-plane), no compressor, deterministic values that
 * bench/zarr_bench.py computes the same way.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";

export const PLANE = 1024;
export const CHUNK_EDGE = 64;
export const CHUNKS_PER_PLANE = (PLANE / CHUNK_EDGE) ** 2;
export const CHUNK_BYTES = CHUNK_EDGE * CHUNK_EDGE * 2;
/** Where the array lives inside every store. */
export const ARRAY_PATH = "arr";

export interface Workload {
  planes: number;
  shape: number[];
  chunks: number[];
  chunkCount: number;
  chunkBytes: number;
  totalBytes: number;
  /** C-order strides of `shape`. */
  stride: number[];
  data: Uint16Array;
}

/** Value of the element at flat index i: same formula as zarr_bench.py (uint32 wrap-around). */
export function fillValues(target: Uint16Array, firstIndex: number): void {
  for (let k = 0; k < target.length; k++) {
    const i = firstIndex + k;
    target[k] = (Math.imul(i, 40503) + (i >>> 13)) & 0xffff;
  }
}

export function stridesOf(shape: number[]): number[] {
  const stride = new Array<number>(shape.length).fill(1);
  for (let d = shape.length - 2; d >= 0; d--) stride[d] = stride[d + 1]! * shape[d + 1]!;
  return stride;
}

export function makeWorkload(chunkCount: number): Workload {
  const planes = chunkCount / CHUNKS_PER_PLANE;
  const shape = [1, 1, planes, PLANE, PLANE];
  const data = new Uint16Array(planes * PLANE * PLANE);
  fillValues(data, 0);
  return {
    planes,
    shape,
    chunks: [1, 1, 1, CHUNK_EDGE, CHUNK_EDGE],
    chunkCount,
    chunkBytes: CHUNK_BYTES,
    totalBytes: chunkCount * CHUNK_BYTES,
    stride: stridesOf(shape),
    data,
  };
}

/**
 * A 5-D uint16 array [1,1,planes,height,width] in chunks
 * [1,1,1,chunkHeight,chunkWidth], values of fillValues(): with
 * consolidateDepth 3, one z-plane is one shard.
 */
export interface Grid {
  planes: number;
  height: number;
  width: number;
  chunkHeight: number;
  chunkWidth: number;
}

/** The main workload's grid: 1024 x 1024 planes in 64 x 64 chunks (8 KiB, 256 a plane). */
export function mainGrid(planes: number): Grid {
  return { planes, height: PLANE, width: PLANE, chunkHeight: CHUNK_EDGE, chunkWidth: CHUNK_EDGE };
}

/** The encoded bytes of chunk (z, cy, cx) without compressor: its rows of little-endian uint16, as zarrita writes them. */
export function chunkBytesOf(g: Grid, z: number, cy: number, cx: number): Uint8Array {
  const values = new Uint16Array(g.chunkHeight * g.chunkWidth);
  for (let r = 0; r < g.chunkHeight; r++) {
    const first = (z * g.height + cy * g.chunkHeight + r) * g.width + cx * g.chunkWidth;
    fillValues(values.subarray(r * g.chunkWidth, (r + 1) * g.chunkWidth), first);
  }
  return new Uint8Array(values.buffer);
}

/** A Map behind zarrita's store interface: no I/O, the floor of any store. */
export class MemoryStore {
  readonly map = new Map<string, Uint8Array>();
  get(key: string): Uint8Array | undefined {
    return this.map.get(key);
  }
  async set(key: string, value: Uint8Array): Promise<void> {
    this.map.set(key, value);
  }
}

/** 0..count-1 shuffled by a seeded PRNG (mulberry32): the same order in every run. */
export function seededOrder(count: number, seed: number): number[] {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const order = Array.from({ length: count }, (_, i) => i);
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** Throws unless `got` holds exactly the same values as `want`. */
export function assertSameValues(label: string, got: ArrayBufferView, want: ArrayBufferView): void {
  const a = Buffer.from(got.buffer, got.byteOffset, got.byteLength);
  const b = Buffer.from(want.buffer, want.byteOffset, want.byteLength);
  if (a.byteLength !== b.byteLength) throw new Error(`${label}: read ${a.byteLength} bytes, wrote ${b.byteLength}`);
  if (!a.equals(b)) {
    let i = 0;
    while (i < a.length && a[i] === b[i]) i++;
    throw new Error(`${label}: values differ from the data written (first difference at byte ${i})`);
  }
}

/** Temporary folders under os.tmpdir(), never inside the repository. */
export class TempRoot {
  private constructor(readonly dir: string) {}

  static async create(): Promise<TempRoot> {
    return new TempRoot(await fs.mkdtemp(path.join(os.tmpdir(), "h5nest-bench-")));
  }

  /** A fresh, empty folder for one variant of one round. */
  async fresh(name: string): Promise<string> {
    return fs.mkdtemp(path.join(this.dir, `${name}-`));
  }

  async remove(dir: string = this.dir): Promise<void> {
    await fs.rm(dir, { recursive: true, force: true });
  }
}
