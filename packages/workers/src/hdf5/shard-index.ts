/**
 * The shard index: where each dataset of a shard's root group keeps its bytes,
 * found by decoding only the HDF5 metadata (docs/format.md, "Reading shards").
 *
 * It covers what h5py, h5wasm and h5nest write: superblocks 0 to 3, old-style
 * groups (v1 B-tree, symbol nodes, local heap), new-style groups (links in the
 * header, or dense: fractal heap and v2 B-tree), object headers 1 and 2 with
 * continuations, contiguous and compact layouts. A dataset stored any other
 * way (chunked, filtered, external, virtual, unallocated) is "unplaced" and
 * read through h5wasm; so is a whole shard that uses a structure we do not
 * decode (Unsupported). Every checksum is verified and every address checked
 * against the file before use; loops are bounded.
 */
import fs from "node:fs";
import { CorruptShardError } from "../errors.js";
import { Cursor, Damage, FileWindow, MAX_STRUCTURE, UNDEFINED, Unsupported } from "./bytes.js";
import { lookup3 } from "./lookup3.js";

/** Where a dataset's bytes are: a byte range of the file, or a reason to ask h5wasm. */
export type DatasetPlace = { offset: number; length: number } | { unplaced: string };

export interface ShardIndex {
  /** Every dataset (and link HDF5 would follow) at the root group, by name. */
  datasets: Map<string, DatasetPlace>;
}

/** The index, or why this shard as a whole must be read through h5wasm. */
export type IndexOutcome = { ok: true; index: ShardIndex } | { ok: false; reason: string };

const SIGNATURE = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a];
const MAX_LINKS = 10_000_000;
const MAX_DEPTH = 64;
const MAX_HEADER_CHUNKS = 4096;
const MAX_NODES = 1_000_000;

// Object header message types.
const MSG_DATASPACE = 0x01;
const MSG_LINK_INFO = 0x02;
const MSG_DATATYPE = 0x03;
const MSG_LINK = 0x06;
const MSG_EXTERNAL = 0x07;
const MSG_LAYOUT = 0x08;
const MSG_FILTERS = 0x0b;
const MSG_CONTINUATION = 0x10;
const MSG_SYMBOL_TABLE = 0x11;

/** Indexes the shard open at `fd` (of `size` bytes). Throws CorruptShardError naming `file`. */
export function indexShard(fd: number, size: number, file: string): IndexOutcome {
  try {
    return { ok: true, index: new Indexer(new FileWindow(fd, size)).run() };
  } catch (error) {
    if (error instanceof Unsupported) return { ok: false, reason: error.message };
    if (error instanceof Damage) throw new CorruptShardError(file, error.message);
    if (error instanceof RangeError) throw new CorruptShardError(file, `metadata out of range (${error.message})`);
    throw error;
  }
}

/** Opens, indexes and closes `file`. */
export function indexShardFile(file: string): IndexOutcome {
  const fd = fs.openSync(file, "r");
  try {
    return indexShard(fd, fs.fstatSync(fd).size, file);
  } finally {
    fs.closeSync(fd);
  }
}

interface Message {
  type: number;
  flags: number;
  body: Cursor;
}

interface Link {
  name: string;
  /** Object header address of a hard link; null for soft and external links. */
  target: number | null;
}

class Indexer {
  private sizes = { offsets: 8, lengths: 8 };
  private base = 0;
  /** Absolute end of the space the file says it uses; data beyond it is damage. */
  private end = 0;
  private nodes = 0;

  constructor(private readonly file: FileWindow) {}

  run(): ShardIndex {
    const root = this.superblock();
    const datasets = new Map<string, DatasetPlace>();
    const links = this.groupLinks(this.objectHeader(root, "root group"));
    for (const link of links) {
      if (datasets.has(link.name)) throw new Damage(`root group lists "${link.name}" twice`);
      if (link.target === null) {
        datasets.set(link.name, { unplaced: "soft or external link" });
        continue;
      }
      const place = this.dataset(link.name, this.objectHeader(link.target, `object header of "${link.name}"`));
      if (place) datasets.set(link.name, place);
    }
    return { datasets };
  }

  private cursor(absolute: number, length: number, what: string): Cursor {
    return new Cursor(this.file.read(absolute, length, what), absolute, this.sizes, what);
  }

  /** Absolute file offset of a relative address, checked to lie inside the used space. */
  private at(address: number, length: number, what: string): number {
    if (address === UNDEFINED) throw new Damage(`${what} has an undefined address`);
    const absolute = this.base + address;
    if (absolute + length > this.end) throw new Damage(`${what} at ${address}+${length} lies beyond the end of the file's data (${this.end - this.base})`);
    return absolute;
  }

  private verify(bytes: Uint8Array, end: number, what: string): void {
    const stored = (bytes[end]! | (bytes[end + 1]! << 8) | (bytes[end + 2]! << 16) | (bytes[end + 3]! << 24)) >>> 0;
    if (end + 4 > bytes.length || lookup3(bytes.subarray(0, end)) !== stored) throw new Damage(`${what}: checksum mismatch`);
  }

  private countNode(what: string): void {
    if (++this.nodes > MAX_NODES) throw new Damage(`${what}: more than ${MAX_NODES} metadata nodes`);
  }

  // --- Superblock -----------------------------------------------------------

  /** Finds and decodes the superblock; returns the root group's object header address. */
  private superblock(): number {
    let start = -1;
    for (let offset = 0; offset + 8 <= this.file.size; offset = offset === 0 ? 512 : offset * 2) {
      const head = this.file.read(offset, 8, "superblock signature");
      if (SIGNATURE.every((byte, i) => head[i] === byte)) {
        start = offset;
        break;
      }
    }
    if (start < 0) throw new Damage("no HDF5 signature (not an HDF5 file)");
    const fixed = this.file.read(start, Math.min(this.file.size - start, 256), "superblock");
    const version = fixed[8];
    const c = new Cursor(fixed, start, this.sizes, "superblock");
    c.skip(9);
    let root: number;
    if (version === 0 || version === 1) {
      c.skip(4); // free-space, root symbol table and shared-header versions, reserved
      this.setSizes(c.u8(), c.u8());
      c.skip(1 + 2 + 2 + 4); // reserved, leaf K, internal K, consistency flags
      if (version === 1) c.skip(4);
      this.base = c.address();
      c.address(); // free-space info
      const eof = c.address();
      c.address(); // driver info
      this.setEnd(eof);
      c.address(); // root entry: link name offset
      root = c.address();
      if (c.remaining < 24) throw new Damage("superblock is cut short");
    } else if (version === 2 || version === 3) {
      this.setSizes(c.u8(), c.u8());
      c.skip(1); // consistency flags
      this.base = c.address();
      c.address(); // superblock extension (shared messages, ...): datasets using them are unplaced
      const eof = c.address();
      root = c.address();
      this.verify(fixed, c.pos, "superblock");
      this.setEnd(eof);
    } else {
      throw new Damage(`superblock version ${version} is unknown`);
    }
    if (this.base === UNDEFINED) throw new Damage("superblock base address is undefined");
    if (this.base !== start && this.base !== 0) throw new Damage(`superblock at ${start} names base address ${this.base}`);
    if (root === UNDEFINED) throw new Damage("root group address is undefined");
    return root;
  }

  private setSizes(offsets: number, lengths: number): void {
    if (![2, 4, 8].includes(offsets) || ![2, 4, 8].includes(lengths)) throw new Damage(`superblock sizes of offsets ${offsets} and lengths ${lengths} are invalid`);
    this.sizes.offsets = offsets;
    this.sizes.lengths = lengths;
  }

  private setEnd(eof: number): void {
    if (eof === UNDEFINED) throw new Damage("end-of-file address is undefined");
    // Stored as an offset from the file's start, userblock included (HDF5 compares it with the file size).
    const end = eof;
    if (end > this.file.size) throw new Damage(`truncated file: the superblock says ${end} bytes, the file has ${this.file.size}`);
    this.end = end;
  }

  // --- Object headers -------------------------------------------------------

  /** Every message of the object header at `address`, continuation blocks included. */
  private objectHeader(address: number, what: string): Message[] {
    this.countNode(what);
    const start = this.at(address, 16, what);
    const head = this.file.read(start, 16, what);
    if (head[0] === 1) return this.headerV1(start, what);
    if (head[0] === 0x4f && head[1] === 0x48 && head[2] === 0x44 && head[3] === 0x52) return this.headerV2(start, what);
    throw new Damage(`${what} at ${address}: not an object header`);
  }

  private headerV1(start: number, what: string): Message[] {
    const prefix = this.cursor(start, 16, what);
    prefix.skip(2);
    const count = prefix.u16();
    prefix.skip(4);
    const size = prefix.u32();
    const messages: Message[] = [];
    const blocks: { offset: number; length: number }[] = [{ offset: start + 16, length: size }];
    const seen = new Set<number>();
    for (let b = 0; b < blocks.length; b++) {
      if (b >= MAX_HEADER_CHUNKS) throw new Damage(`${what}: too many continuation blocks`);
      const block = blocks[b]!;
      if (seen.has(block.offset)) throw new Damage(`${what}: continuation blocks form a loop`);
      seen.add(block.offset);
      if (block.offset + block.length > this.end) throw new Damage(`${what}: header block lies beyond the end of the file's data`);
      const c = this.cursor(block.offset, block.length, what);
      while (c.remaining >= 8) {
        const type = c.u16();
        const length = c.u16();
        const flags = c.u8();
        c.skip(3);
        const body = new Cursor(c.take(length), c.fileOffset + c.pos - length, this.sizes, `${what} message ${type}`);
        if (type === MSG_CONTINUATION) blocks.push(this.continuation(body, what, false));
        else messages.push({ type, flags, body });
      }
    }
    if (messages.length > count + 1 && count > 0) throw new Damage(`${what}: holds more messages than its count (${count})`);
    return messages;
  }

  private headerV2(start: number, what: string): Message[] {
    const prefix = this.cursor(start, Math.min(6 + 16 + 4 + 8, this.end - start), what);
    prefix.skip(4);
    const version = prefix.u8();
    if (version !== 2) throw new Damage(`${what}: object header version ${version} is unknown`);
    const flags = prefix.u8();
    if (flags & 0x20) prefix.skip(16);
    if (flags & 0x10) prefix.skip(4);
    const chunkSize = prefix.uint(1 << (flags & 3));
    const messageStart = prefix.pos;
    const creationOrder = (flags & 0x04) !== 0;
    const messages: Message[] = [];
    const first = this.cursor(start, messageStart + chunkSize + 4, what);
    this.verify(first.bytes, messageStart + chunkSize, what);
    first.pos = messageStart;
    const chunks: Cursor[] = [new Cursor(first.take(chunkSize), start + messageStart, this.sizes, what)];
    const seen = new Set<number>([start]);
    for (let i = 0; i < chunks.length; i++) {
      if (i >= MAX_HEADER_CHUNKS) throw new Damage(`${what}: too many continuation blocks`);
      const c = chunks[i]!;
      const header = creationOrder ? 6 : 4;
      while (c.remaining >= header) {
        const type = c.u8();
        const length = c.u16();
        const messageFlags = c.u8();
        if (creationOrder) c.skip(2);
        const body = new Cursor(c.take(length), c.fileOffset + c.pos - length, this.sizes, `${what} message ${type}`);
        if (type !== MSG_CONTINUATION) {
          messages.push({ type, flags: messageFlags, body });
          continue;
        }
        const next = this.continuation(body, what, true);
        if (seen.has(next.offset)) throw new Damage(`${what}: continuation blocks form a loop`);
        seen.add(next.offset);
        if (next.length < 8) throw new Damage(`${what}: continuation block too small`);
        const block = this.cursor(next.offset, next.length, what);
        block.signature("OCHK");
        this.verify(block.bytes, next.length - 4, `${what} continuation block`);
        chunks.push(new Cursor(block.bytes.subarray(4, next.length - 4), next.offset + 4, this.sizes, what));
      }
    }
    return messages;
  }

  private continuation(body: Cursor, what: string, _v2: boolean): { offset: number; length: number } {
    const address = body.address();
    const length = body.length();
    if (length > MAX_STRUCTURE) throw new Damage(`${what}: continuation block of ${length} bytes`);
    return { offset: this.at(address, length, `${what} continuation`), length };
  }

  // --- Groups ---------------------------------------------------------------

  /** The links of a group, from whichever of the three group forms it uses. */
  private groupLinks(messages: Message[]): Link[] {
    const table = messages.find((m) => m.type === MSG_SYMBOL_TABLE);
    if (table) return this.symbolTableLinks(table.body);
    const info = messages.find((m) => m.type === MSG_LINK_INFO);
    const links: Link[] = [];
    for (const m of messages) if (m.type === MSG_LINK) links.push(this.linkMessage(m.body));
    if (info) {
      const c = info.body;
      if (c.u8() !== 0) throw new Damage("link info message version is unknown");
      const flags = c.u8();
      if (flags & 1) c.skip(8);
      const heap = c.address();
      const names = c.address();
      if (heap !== UNDEFINED) {
        if (names === UNDEFINED) throw new Damage("dense group without a name index");
        links.push(...this.denseLinks(heap, names));
      }
    } else if (links.length === 0 && !messages.some((m) => m.type === MSG_LINK)) {
      throw new Damage("the root object is not a group");
    }
    if (links.length > MAX_LINKS) throw new Damage("too many links");
    return links;
  }

  /** Old-style group: a v1 B-tree of symbol table nodes, names in a local heap. */
  private symbolTableLinks(body: Cursor): Link[] {
    const btree = body.address();
    const heapAddress = body.address();
    const heapHead = this.cursor(this.at(heapAddress, 8 + 2 * 8 + 8, "local heap"), 8 + 2 * this.sizes.lengths + this.sizes.offsets, "local heap");
    heapHead.signature("HEAP");
    if (heapHead.u8() !== 0) throw new Damage("local heap version is unknown");
    heapHead.skip(3);
    const dataSize = heapHead.length();
    heapHead.length(); // free list head
    const dataAddress = heapHead.address();
    const names = this.file.read(this.at(dataAddress, dataSize, "local heap data"), dataSize, "local heap data");
    const links: Link[] = [];
    this.groupNode(btree, -1, names, links, 0, new Set());
    return links;
  }

  private groupNode(address: number, level: number, names: Uint8Array, links: Link[], depth: number, seen: Set<number>): void {
    if (depth > MAX_DEPTH) throw new Damage("group B-tree is too deep");
    if (seen.has(address)) throw new Damage("group B-tree has a loop");
    seen.add(address);
    this.countNode("group B-tree");
    const O = this.sizes.offsets;
    const L = this.sizes.lengths;
    const head = this.cursor(this.at(address, 8 + 2 * O, "group B-tree node"), 8 + 2 * O, "group B-tree node");
    head.signature("TREE");
    if (head.u8() !== 0) throw new Damage("group B-tree node is not of the group type");
    const nodeLevel = head.u8();
    if (level >= 0 && nodeLevel !== level) throw new Damage(`group B-tree node at level ${nodeLevel}, expected ${level}`);
    const entries = head.u16();
    const bodyLength = entries * (L + O) + L;
    const c = this.cursor(this.at(address + 8 + 2 * O, bodyLength, "group B-tree node"), bodyLength, "group B-tree node");
    for (let i = 0; i < entries; i++) {
      c.skip(L); // key: heap offset of the largest name below
      const child = c.address();
      if (nodeLevel > 0) this.groupNode(child, nodeLevel - 1, names, links, depth + 1, seen);
      else this.symbolNode(child, names, links);
    }
  }

  private symbolNode(address: number, names: Uint8Array, links: Link[]): void {
    this.countNode("symbol table node");
    const O = this.sizes.offsets;
    const head = this.cursor(this.at(address, 8, "symbol table node"), 8, "symbol table node");
    head.signature("SNOD");
    if (head.u8() !== 1) throw new Damage("symbol table node version is unknown");
    head.skip(1);
    const count = head.u16();
    const entrySize = 2 * O + 24;
    const c = this.cursor(this.at(address + 8, count * entrySize, "symbol table node"), count * entrySize, "symbol table node");
    for (let i = 0; i < count; i++) {
      const nameOffset = c.uint(O);
      const target = c.address();
      c.skip(24); // cache type, reserved, scratch pad
      if (nameOffset >= names.length) throw new Damage("symbol name lies outside the local heap");
      const endOfName = names.indexOf(0, nameOffset);
      if (endOfName < 0) throw new Damage("symbol name is not terminated");
      if (target === UNDEFINED) throw new Damage("symbol has an undefined address");
      links.push({ name: decodeName(names.subarray(nameOffset, endOfName)), target });
    }
  }

  private linkMessage(c: Cursor): Link {
    if (c.u8() !== 1) throw new Damage("link message version is unknown");
    const flags = c.u8();
    const type = flags & 0x08 ? c.u8() : 0;
    if (flags & 0x04) c.skip(8);
    if (flags & 0x10) c.skip(1);
    const nameLength = c.uint(1 << (flags & 3));
    if (nameLength === 0) throw new Damage("link with an empty name");
    const name = decodeName(c.take(nameLength));
    if (type === 0) {
      const target = c.address();
      if (target === UNDEFINED) throw new Damage(`link "${name}" has an undefined address`);
      return { name, target };
    }
    if (type !== 1 && type !== 64) throw new Damage(`link "${name}" has unknown type ${type}`);
    return { name, target: null };
  }

  /** New-style dense group: link messages in a fractal heap, found through the v2 B-tree of names. */
  private denseLinks(heapAddress: number, btreeAddress: number): Link[] {
    const heap = new FractalHeap(this, heapAddress);
    const links: Link[] = [];
    this.btreeV2(btreeAddress, 5, (record) => {
      record.skip(4); // name hash
      const object = heap.object(record);
      links.push(this.linkMessage(new Cursor(object, 0, this.sizes, "link in fractal heap")));
    });
    return links;
  }

  /** Visits every record of a v2 B-tree of `type`, in order. */
  btreeV2(address: number, type: number, visit: (record: Cursor) => void): void {
    const O = this.sizes.offsets;
    const headerLength = 4 + 1 + 1 + 4 + 2 + 2 + 1 + 1 + O + 2 + this.sizes.lengths + 4;
    const h = this.cursor(this.at(address, headerLength, "v2 B-tree header"), headerLength, "v2 B-tree header");
    h.signature("BTHD");
    if (h.u8() !== 0) throw new Damage("v2 B-tree header version is unknown");
    if (h.u8() !== type) throw new Damage(`v2 B-tree is not of type ${type}`);
    const nodeSize = h.u32();
    const recordSize = h.u16();
    const depth = h.u16();
    h.skip(2);
    const root = h.address();
    const rootRecords = h.u16();
    const total = h.length();
    this.verify(h.bytes, h.pos, "v2 B-tree header");
    if (nodeSize < 16 || nodeSize > MAX_STRUCTURE || recordSize === 0 || recordSize > nodeSize || depth > MAX_DEPTH) {
      throw new Damage("v2 B-tree header has impossible sizes");
    }
    if (root === UNDEFINED || total === 0) return;
    // Field widths of internal nodes, as HDF5 computes them (H5B2hdr.c).
    const leafMax = Math.floor((nodeSize - 10) / recordSize);
    if (leafMax === 0) throw new Damage("v2 B-tree nodes hold no record");
    const countBytes = encodedSize(leafMax);
    const cumulative: number[] = [leafMax];
    const cumulativeBytes: number[] = [0];
    const maxRecords: number[] = [leafMax];
    for (let d = 1; d <= depth; d++) {
      const pointer = O + countBytes + cumulativeBytes[d - 1]!;
      const max = Math.floor((nodeSize - 10 - pointer) / (recordSize + pointer));
      if (max <= 0) throw new Damage("v2 B-tree internal nodes hold no record");
      maxRecords.push(max);
      const cum = Math.min((max + 1) * cumulative[d - 1]! + max, Number.MAX_SAFE_INTEGER);
      cumulative.push(cum);
      cumulativeBytes.push(encodedSize(cum));
    }
    let seen = 0;
    const node = (at: number, records: number, level: number): void => {
      this.countNode("v2 B-tree");
      if (records > maxRecords[level]!) throw new Damage("v2 B-tree node holds more records than it can");
      const pointerSize = level > 0 ? O + countBytes + (level > 1 ? cumulativeBytes[level - 1]! : 0) : 0;
      const used = 6 + records * recordSize + (level > 0 ? (records + 1) * pointerSize : 0);
      const c = this.cursor(this.at(at, used + 4, "v2 B-tree node"), used + 4, "v2 B-tree node");
      c.signature(level > 0 ? "BTIN" : "BTLF");
      if (c.u8() !== 0 || c.u8() !== type) throw new Damage("v2 B-tree node has the wrong version or type");
      this.verify(c.bytes, used, "v2 B-tree node");
      const recordStart = c.pos;
      const children: { address: number; records: number }[] = [];
      if (level > 0) {
        c.pos = recordStart + records * recordSize;
        for (let i = 0; i <= records; i++) {
          const child = c.address();
          const childRecords = c.uint(countBytes);
          if (level > 1) c.skip(cumulativeBytes[level - 1]!);
          children.push({ address: child, records: childRecords });
        }
      }
      for (let i = 0; i <= records; i++) {
        if (level > 0) node(children[i]!.address, children[i]!.records, level - 1);
        if (i === records) break;
        if (++seen > total) throw new Damage("v2 B-tree holds more records than its header says");
        visit(new Cursor(c.bytes.subarray(recordStart + i * recordSize, recordStart + (i + 1) * recordSize), 0, this.sizes, "v2 B-tree record"));
      }
    };
    node(root, rootRecords, depth);
    if (seen !== total) throw new Damage(`v2 B-tree holds ${seen} records, its header says ${total}`);
  }

  // --- Datasets -------------------------------------------------------------

  /** Where a dataset's bytes lie; null when the object is not a dataset (a subgroup, a named type). */
  private dataset(name: string, messages: Message[]): DatasetPlace | null {
    const layout = messages.find((m) => m.type === MSG_LAYOUT);
    if (!layout) return null;
    const space = messages.find((m) => m.type === MSG_DATASPACE);
    const type = messages.find((m) => m.type === MSG_DATATYPE);
    if (!space || !type) throw new Damage(`dataset "${name}" lacks its dataspace or datatype`);
    if ([layout, space, type].some((m) => m.flags & 0x02)) return { unplaced: "shared message" };
    if (messages.some((m) => m.type === MSG_FILTERS)) return { unplaced: "filtered" };
    if (messages.some((m) => m.type === MSG_EXTERNAL)) return { unplaced: "external storage" };
    const length = byteLength(space.body, type.body);
    if (typeof length === "string") return { unplaced: length };
    return this.layout(name, layout.body, length);
  }

  private layout(name: string, c: Cursor, length: number): DatasetPlace {
    const version = c.u8();
    if (version === 1 || version === 2) {
      const rank = c.u8();
      const kind = c.u8();
      c.skip(5);
      if (kind !== 1) return { unplaced: kind === 0 ? "compact (old layout message)" : "chunked" };
      return this.contiguous(name, c.address(), length, length);
    }
    if (version !== 3 && version !== 4) throw new Damage(`dataset "${name}": layout message version ${version} is unknown`);
    const kind = c.u8();
    if (kind === 0) {
      const size = c.u16();
      if (size !== length) throw new Damage(`dataset "${name}": compact data of ${size} bytes for ${length}`);
      const offset = c.fileOffset + c.pos;
      c.skip(size);
      return { offset, length };
    }
    if (kind === 1) {
      const address = c.address();
      return this.contiguous(name, address, c.length(), length);
    }
    if (kind === 2) return { unplaced: "chunked" };
    if (kind === 3) return { unplaced: "virtual" };
    throw new Damage(`dataset "${name}": layout class ${kind} is unknown`);
  }

  private contiguous(name: string, address: number, stored: number, length: number): DatasetPlace {
    if (length === 0) return { offset: 0, length: 0 };
    if (address === UNDEFINED) return { unplaced: "storage not allocated (reads as fill value)" };
    if (stored < length) throw new Damage(`dataset "${name}": ${stored} bytes stored for ${length}`);
    return { offset: this.at(address, length, `data of "${name}"`), length };
  }

  /** For FractalHeap: bounded reads and checks in this file's terms. */
  read(address: number, length: number, what: string): Cursor {
    return this.cursor(this.at(address, length, what), length, what);
  }

  get offsetSize(): number {
    return this.sizes.offsets;
  }

  get lengthSize(): number {
    return this.sizes.lengths;
  }

  checksum(bytes: Uint8Array, end: number, what: string): void {
    this.verify(bytes, end, what);
  }

  count(what: string): void {
    this.countNode(what);
  }
}

/**
 * The stored byte length of an OPAQUE scalar or a 1-D 8-bit integer dataset
 * (the only kinds a shard holds), or why it is neither.
 */
function byteLength(space: Cursor, type: Cursor): number | string {
  const classVersion = type.u8();
  const cls = classVersion & 0x0f;
  const bits0 = type.u8();
  type.skip(2);
  const size = type.u32();
  const dims = dataspace(space);
  if (dims === null) return "null dataspace";
  if (cls === 5 && dims.length === 0) return size;
  if (cls === 0 && size === 1 && dims.length === 1) {
    const bitOffset = type.u16();
    const precision = type.u16();
    if (bitOffset !== 0 || precision !== 8 || (bits0 & 0x06) !== 0) return "8-bit integer with padding";
    return dims[0]!;
  }
  return "neither OPAQUE nor 1-D uint8";
}

/** Dimensions of a dataspace message ([] for a scalar), or null for a null dataspace. */
function dataspace(c: Cursor): number[] | null {
  const version = c.u8();
  const rank = c.u8();
  c.u8(); // flags
  let kind = rank === 0 ? 0 : 1;
  if (version === 1) c.skip(5);
  else if (version === 2) kind = c.u8();
  else throw new Damage(`dataspace message version ${version} is unknown`);
  if (rank > 32) throw new Damage(`dataspace of rank ${rank}`);
  if (kind === 2) return null;
  if (kind === 0) return [];
  const dims: number[] = [];
  for (let i = 0; i < rank; i++) dims.push(c.length());
  return dims;
}

/** Bytes HDF5 uses to encode numbers up to `limit` (H5VM_limit_enc_size). */
function encodedSize(limit: number): number {
  return Math.floor(Math.floor(Math.log2(Math.max(limit, 1))) / 8) + 1;
}

const decoder = new TextDecoder();
function decodeName(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

/** A fractal heap, as far as link storage needs it: managed and tiny objects, unfiltered. */
class FractalHeap {
  private readonly offsetBytes: number;
  private readonly lengthBytes: number;
  private readonly idLength: number;
  private readonly width: number;
  private readonly startSize: number;
  private readonly maxDirectRows: number;
  private readonly checksummed: boolean;
  private readonly heapAddress: number;
  /** Direct blocks by heap offset, found by walking the doubling table once. */
  private readonly blocks: { start: number; size: number; address: number }[] = [];
  private readonly loaded = new Map<number, Uint8Array>();

  constructor(
    private readonly owner: Indexer,
    address: number,
  ) {
    const O = owner.offsetSize;
    const L = owner.lengthSize;
    this.heapAddress = address;
    const length = 4 + 1 + 2 + 2 + 1 + 4 + L + O + L + O + 8 * L + 2 + L + L + 2 + 2 + O + 2 + 4;
    const h = owner.read(address, length, "fractal heap header");
    h.signature("FRHP");
    if (h.u8() !== 0) throw new Damage("fractal heap version is unknown");
    this.idLength = h.u16();
    const filters = h.u16();
    const flags = h.u8();
    const maxManaged = h.u32();
    h.skip(L + O + L + O + 8 * L); // huge ids, huge tree, free space, counts and sizes
    this.width = h.u16();
    this.startSize = h.length();
    const maxDirect = h.length();
    const maxHeapBits = h.u16();
    h.u16(); // starting rows in root
    const root = h.address();
    const rootRows = h.u16();
    if (filters !== 0) throw new Unsupported("filtered fractal heap");
    owner.checksum(h.bytes, h.pos, "fractal heap header");
    const isPow2 = (n: number) => n > 0 && Number.isSafeInteger(n) && (n & (n - 1)) === 0 && n <= 2 ** 30;
    if (!isPow2(this.width) || !isPow2(this.startSize) || !isPow2(maxDirect) || maxDirect < this.startSize || maxHeapBits === 0 || maxHeapBits > 64) {
      throw new Damage("fractal heap header has impossible sizes");
    }
    this.checksummed = (flags & 0x02) !== 0;
    this.offsetBytes = Math.ceil(maxHeapBits / 8);
    this.lengthBytes = Math.min(Math.ceil(Math.log2(maxDirect) / 8), encodedSize(maxManaged));
    this.maxDirectRows = Math.log2(maxDirect) - Math.log2(this.startSize) + 2;
    if (root === UNDEFINED) return;
    if (rootRows === 0) this.blocks.push({ start: 0, size: this.startSize, address: root });
    else this.indirect(root, 0, rootRows, 0);
    this.blocks.sort((a, b) => a.start - b.start);
  }

  private rowSize(row: number): number {
    return row === 0 ? this.startSize : this.startSize * 2 ** (row - 1);
  }

  private indirect(address: number, start: number, rows: number, depth: number): void {
    if (depth > MAX_DEPTH || rows > 64) throw new Damage("fractal heap indirect blocks are too deep");
    this.owner.count("fractal heap indirect block");
    const O = this.owner.offsetSize;
    const directRows = Math.min(rows, this.maxDirectRows);
    const entries = rows * this.width;
    const length = 4 + 1 + O + this.offsetBytes + entries * O + 4;
    const c = this.owner.read(address, length, "fractal heap indirect block");
    c.signature("FHIB");
    if (c.u8() !== 0) throw new Damage("fractal heap indirect block version is unknown");
    if (c.address() !== this.heapAddress) throw new Damage("fractal heap indirect block belongs to another heap");
    if (c.uint(this.offsetBytes) !== start) throw new Damage("fractal heap indirect block has the wrong offset");
    this.owner.checksum(c.bytes, length - 4, "fractal heap indirect block");
    let offset = start;
    for (let row = 0; row < rows; row++) {
      const size = this.rowSize(row);
      for (let col = 0; col < this.width; col++) {
        const child = c.address();
        if (child !== UNDEFINED) {
          if (row < directRows) this.blocks.push({ start: offset, size, address: child });
          else {
            const childRows = Math.log2(size) - Math.log2(this.startSize * this.width) + 1;
            this.indirect(child, offset, childRows, depth + 1);
          }
        }
        offset += size;
      }
    }
  }

  /** The bytes of the object whose heap ID starts at the cursor. */
  object(id: Cursor): Uint8Array {
    const start = id.pos;
    const flags = id.u8();
    if (flags >> 6 !== 0) throw new Damage("heap ID version is unknown");
    const kind = (flags >> 4) & 3;
    if (kind === 2) {
      const length = (flags & 0x0f) + 1;
      return id.take(length);
    }
    if (kind !== 0) throw new Unsupported("huge objects in a fractal heap");
    const offset = id.uint(this.offsetBytes);
    const length = id.uint(this.lengthBytes);
    if (id.pos - start > this.idLength) throw new Damage("heap ID longer than the heap says");
    const block = this.blockAt(offset);
    const bytes = this.load(block);
    const inBlock = offset - block.start;
    if (length === 0 || inBlock + length > block.size) throw new Damage("heap object lies outside its block");
    return bytes.subarray(inBlock, inBlock + length);
  }

  private blockAt(offset: number): { start: number; size: number; address: number } {
    let lo = 0;
    let hi = this.blocks.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const block = this.blocks[mid]!;
      if (offset < block.start) hi = mid - 1;
      else if (offset >= block.start + block.size) lo = mid + 1;
      else return block;
    }
    throw new Damage(`heap offset ${offset} lies in no block`);
  }

  private load(block: { start: number; size: number; address: number }): Uint8Array {
    const cached = this.loaded.get(block.start);
    if (cached) return cached;
    this.owner.count("fractal heap direct block");
    const c = this.owner.read(block.address, block.size, "fractal heap direct block");
    c.signature("FHDB");
    if (c.u8() !== 0) throw new Damage("fractal heap direct block version is unknown");
    if (c.address() !== this.heapAddress) throw new Damage("fractal heap direct block belongs to another heap");
    if (c.uint(this.offsetBytes) !== block.start) throw new Damage("fractal heap direct block has the wrong offset");
    if (this.checksummed) {
      // The checksum covers the whole block with its own field taken as zero.
      const at = c.pos;
      const copy = c.bytes.slice();
      const stored = (copy[at]! | (copy[at + 1]! << 8) | (copy[at + 2]! << 16) | (copy[at + 3]! << 24)) >>> 0;
      copy.fill(0, at, at + 4);
      if (lookup3(copy) !== stored) throw new Damage("fractal heap direct block: checksum mismatch");
    }
    this.loaded.set(block.start, c.bytes);
    return c.bytes;
  }
}
