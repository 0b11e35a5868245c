/** Helpers shared by the interoperability tests: hashing, C-order bytes of zarrita chunks, sorted keys. */
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";

export function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A zarrita result ({ data, shape, stride }) as the bytes of its values in C order. */
export function cOrderBytes(chunk: { data: ArrayLike<unknown> & ArrayBufferView; shape: number[]; stride: number[] }): Uint8Array {
  const { data, shape, stride } = chunk;
  const itemSize = (data as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
  const source = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const count = shape.reduce((a, b) => a * b, 1);
  const out = new Uint8Array(count * itemSize);
  const index = new Array<number>(shape.length).fill(0);
  for (let n = 0; n < count; n++) {
    let offset = 0;
    for (let d = 0; d < shape.length; d++) offset += index[d]! * stride[d]!;
    out.set(source.subarray(offset * itemSize, (offset + 1) * itemSize), n * itemSize);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++index[d]! < shape[d]!) break;
      index[d] = 0;
    }
  }
  return out;
}

/** Sum of a typed array's values as a float64 (BigInt arrays converted). */
export function sumOf(data: ArrayLike<number | bigint>): number {
  let sum = 0;
  for (let i = 0; i < data.length; i++) sum += Number(data[i]!);
  return sum;
}

/** Every file below `root`, as sorted `/`-separated relative paths. */
export async function listFiles(root: string): Promise<string[]> {
  const entries = await fs.readdir(root, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(root, path.join(e.parentPath, e.name)).split(path.sep).join("/"))
    .sort();
}

/** Collects an async iterable of keys. */
export async function collect(keys: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const key of keys) out.push(key);
  return out;
}
