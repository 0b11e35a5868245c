/**
 * Bounded, positioned access to a file's metadata for the shard index. Every
 * read is checked against the file's size before any allocation, so a damaged
 * length can never ask for more memory than the file holds.
 */
import fs from "node:fs";

/** A structural fault in the file: becomes a CorruptShardError naming the file. */
export class Damage extends Error {}

/** A valid HDF5 feature the index does not decode: the whole shard goes to h5wasm. */
export class Unsupported extends Error {}

/** The "undefined address" of HDF5 (all bits set). */
export const UNDEFINED = -1;

const PAGE = 16 * 1024;
const MAX_PAGES = 256;
/** No single metadata structure we decode is larger than this. */
export const MAX_STRUCTURE = 64 * 1024 * 1024;

/** Positioned reads of one open file, through a small page cache (metadata clusters). */
export class FileWindow {
  private readonly pages = new Map<number, Uint8Array>();

  constructor(
    private readonly fd: number,
    readonly size: number,
  ) {}

  /** `length` bytes at absolute `offset`; throws Damage when they are not all inside the file. */
  read(offset: number, length: number, what: string): Uint8Array {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new Damage(`${what}: bad address ${offset} or length ${length}`);
    }
    if (offset + length > this.size) throw new Damage(`${what} at ${offset}+${length} lies beyond the end of the file (${this.size} bytes)`);
    if (length > MAX_STRUCTURE) throw new Damage(`${what} claims ${length} bytes`);
    const first = Math.floor(offset / PAGE);
    const last = Math.floor((offset + length - 1) / PAGE);
    if (length === 0) return new Uint8Array(0);
    if (first === last) {
      const page = this.page(first);
      return page.subarray(offset - first * PAGE, offset - first * PAGE + length);
    }
    if (length > 4 * PAGE) return this.direct(offset, length);
    const out = new Uint8Array(length);
    for (let p = first; p <= last; p++) {
      const page = this.page(p);
      const start = Math.max(offset, p * PAGE);
      const end = Math.min(offset + length, p * PAGE + page.length);
      out.set(page.subarray(start - p * PAGE, end - p * PAGE), start - offset);
    }
    return out;
  }

  private page(index: number): Uint8Array {
    const cached = this.pages.get(index);
    if (cached) return cached;
    const start = index * PAGE;
    const page = this.direct(start, Math.min(PAGE, this.size - start));
    if (this.pages.size >= MAX_PAGES) this.pages.delete(this.pages.keys().next().value as number);
    this.pages.set(index, page);
    return page;
  }

  private direct(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = fs.readSync(this.fd, out, done, length - done, offset + done);
      if (n === 0) throw new Damage(`the file ended at ${offset + done} while reading ${length} bytes at ${offset}`);
      done += n;
    }
    return out;
  }
}

/** A little-endian decoder over one structure's bytes; reading past its end is Damage. */
export class Cursor {
  pos = 0;

  constructor(
    readonly bytes: Uint8Array,
    /** Absolute file offset of bytes[0], for messages that point into the structure. */
    readonly fileOffset: number,
    private readonly sizes: { offsets: number; lengths: number },
    private readonly what: string,
  ) {}

  get remaining(): number {
    return this.bytes.length - this.pos;
  }

  private need(n: number): void {
    if (n < 0 || this.pos + n > this.bytes.length) throw new Damage(`${this.what} is cut short`);
  }

  skip(n: number): void {
    this.need(n);
    this.pos += n;
  }

  u8(): number {
    this.need(1);
    return this.bytes[this.pos++]!;
  }

  u16(): number {
    return this.uint(2);
  }

  u32(): number {
    return this.uint(4);
  }

  /** An unsigned little-endian integer of `n` bytes (n ≤ 8); above 2^53 is Damage. */
  uint(n: number): number {
    this.need(n);
    let value = 0;
    let scale = 1;
    for (let i = 0; i < n; i++) {
      value += this.bytes[this.pos + i]! * scale;
      scale *= 256;
    }
    this.pos += n;
    if (!Number.isSafeInteger(value)) throw new Damage(`${this.what} holds a number too large to be real`);
    return value;
  }

  /** A file address; UNDEFINED when all bits are set. */
  address(): number {
    const n = this.sizes.offsets;
    this.need(n);
    let all = true;
    for (let i = 0; i < n; i++) if (this.bytes[this.pos + i] !== 0xff) all = false;
    if (all) {
      this.pos += n;
      return UNDEFINED;
    }
    return this.uint(n);
  }

  length(): number {
    return this.uint(this.sizes.lengths);
  }

  take(n: number): Uint8Array {
    this.need(n);
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  signature(expected: string): void {
    this.need(4);
    for (let i = 0; i < 4; i++) {
      if (this.bytes[this.pos + i] !== expected.charCodeAt(i)) throw new Damage(`${this.what}: signature ${expected} not found`);
    }
    this.pos += 4;
  }
}
