/**
 * Deterministic array contents that the TypeScript tests and the Python
 * scripts they run compute identically (see PY_VALUES below).
 */
import * as zarr from "zarrita";

type Typed = Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array | Float64Array;

const CONSTRUCTORS: Record<string, new (n: number) => Typed> = {
  "|u1": Uint8Array,
  "|i1": Int8Array,
  "<u2": Uint16Array,
  "<i2": Int16Array,
  "<u4": Uint32Array,
  "<i4": Int32Array,
  "<f4": Float32Array,
  "<f8": Float64Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  int32: Int32Array,
  float32: Float32Array,
};

/** Value number i (C order): unsigned ((37 i) mod 251) + 1, signed ((37 i) mod 251) - 100, float (i mod 97) / 4 - 3. */
export function valueAt(dtype: string, i: number): number {
  if (/f/.test(dtype)) return (i % 97) * 0.25 - 3;
  if (/^[<>|]?i|^int/.test(dtype)) return ((i * 37) % 251) - 100;
  return ((i * 37) % 251) + 1;
}

/** The same formula in numpy: `values(dtype, shape)` gives the array. */
export const PY_VALUES = `
import numpy as np
def values(dtype, shape):
    i = np.arange(int(np.prod(shape)), dtype='i8')
    kind = np.dtype(dtype).kind
    if kind == 'f':
        v = (i % 97) * 0.25 - 3
    elif kind == 'i':
        v = ((i * 37) % 251) - 100
    else:
        v = ((i * 37) % 251) + 1
    return v.astype(dtype).reshape(shape)
`;

/** A zarrita chunk (C-order strides) holding the deterministic values. */
export function makeChunk(dtype: string, shape: number[]): { data: Typed; shape: number[]; stride: number[] } {
  const Ctor = CONSTRUCTORS[dtype];
  if (!Ctor) throw new Error(`no typed array for ${dtype}`);
  const count = shape.reduce((a, b) => a * b, 1);
  const data = new Ctor(count);
  for (let i = 0; i < count; i++) data[i] = valueAt(dtype, i);
  const stride = new Array<number>(shape.length).fill(1);
  for (let d = shape.length - 2; d >= 0; d--) stride[d] = stride[d + 1]! * shape[d + 1]!;
  return { data, shape, stride };
}

/** Writes the deterministic values into the whole array. */
export async function fillArray(arr: zarr.Array<zarr.DataType, zarr.Mutable>, dtype: string): Promise<Typed> {
  const chunk = makeChunk(dtype, arr.shape);
  await zarr.set(arr, null, chunk as never);
  return chunk.data;
}
