/**
 * The shard index: where each dataset of a shard's root group keeps its bytes,
 * found by decoding only the HDF5 metadata (docs/format.md, "Reading shards").
 *
 * It covers what h5py, h5wasm and h5nest write: superblocks 0 to 3, old-style
 * groups (v1 B-tree, symbol nodes, local heap), new-style groups (links in the
 * header, or dense: fractal heap and v2 B-tree), object headers 1 and 2 with
 * continuations, contiguous and compact layouts, named datatypes. A dataset
 * stored any other way (chunked, filtered, external, virtual, unallocated,
 * shared-message heap) is "unplaced" and read through h5wasm; so is a whole
 * shard that uses a structure we do not decode (Unsupported).
 *
 * A placed dataset must be one HDF5 (1.10, as h5py uses it) reads, with the
 * same bytes. So the index decodes what HDF5 decodes on the way, with HDF5's
 * own checks (H5Ocache.c, H5Odtype.c, H5Osdspace.c, H5Ofill.c, H5Olayout.c,
 * H5Olink.c, H5HLcache.c, H5Gnode.c, H5B2*.c, H5HF*.c): object headers and
 * every message flag, the messages a dataset open reads, local heaps with
 * their free lists. It also checks that HDF5 finds each listed name where the
 * index found it: h5py looks names up through B-tree keys and name hashes
 * that a plain walk of the tree does not read. Anything HDF5 would reject is
 * Damage (a CorruptShardError); the index is stricter than HDF5 where HDF5
 * would read past a structure's end. Every checksum is verified and every
 * address checked against the end of the file's data; loops are bounded.
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

/**
 * An index that reads a dataset's object header only when that dataset is
 * first asked for: opening a shard to read a few chunks costs its group's
 * metadata, not every header. `datasets` places them all (and is cached).
 */
export interface LazyShardIndex extends ShardIndex {
  /** Where `name`'s bytes lie; undefined when the root group holds no dataset of that name. Throws CorruptShardError. */
  place(name: string): DatasetPlace | undefined;
}

export type LazyIndexOutcome = { ok: true; index: LazyShardIndex } | { ok: false; reason: string };

/** Lists the shard open at `fd` (of `size` bytes); datasets are placed on demand. Throws CorruptShardError naming `file`. */
export function openShardIndex(fd: number, size: number, file: string): LazyIndexOutcome {
  const indexer = new Indexer(new FileWindow(fd, size));
  let links: Map<string, Link>;
  try {
    links = new Map(indexer.list().map((link) => [link.name, link]));
  } catch (error) {
    return failed(error, file);
  }
  const placed = new Map<string, DatasetPlace | null>();
  let all: Map<string, DatasetPlace> | undefined;
  const place = (name: string): DatasetPlace | undefined => {
    if (placed.has(name)) return placed.get(name) ?? undefined;
    const link = links.get(name);
    if (!link) return undefined;
    let result: DatasetPlace | null;
    try {
      result = indexer.placeLink(link);
    } catch (error) {
      if (error instanceof Unsupported) result = { unplaced: error.message };
      else throw asCorrupt(error, file);
    }
    placed.set(name, result);
    return result ?? undefined;
  };
  return {
    ok: true,
    index: {
      place,
      get datasets(): Map<string, DatasetPlace> {
        if (!all) {
          all = new Map();
          for (const name of links.keys()) {
            const where = place(name);
            if (where) all.set(name, where);
          }
        }
        return all;
      },
    },
  };
}

function failed(error: unknown, file: string): { ok: false; reason: string } {
  if (error instanceof Unsupported) return { ok: false, reason: error.message };
  throw asCorrupt(error, file);
}

function asCorrupt(error: unknown, file: string): unknown {
  if (error instanceof Damage) return new CorruptShardError(file, error.message);
  if (error instanceof RangeError) return new CorruptShardError(file, `metadata out of range (${error.message})`);
  return error;
}

const SIGNATURE = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a];
const MAX_LINKS = 10_000_000;
const MAX_DEPTH = 64;
const MAX_HEADER_CHUNKS = 4096;
const MAX_NODES = 1_000_000;

// Object header message types (H5O_msg_class_g).
const MSG_DATASPACE = 0x01;
const MSG_LINK_INFO = 0x02;
const MSG_DATATYPE = 0x03;
const MSG_FILL_OLD = 0x04;
const MSG_FILL = 0x05;
const MSG_LINK = 0x06;
const MSG_EXTERNAL = 0x07;
const MSG_LAYOUT = 0x08;
const MSG_BOGUS = 0x09;
const MSG_FILTERS = 0x0b;
const MSG_CONTINUATION = 0x10;
const MSG_SYMBOL_TABLE = 0x11;
const MSG_REFCOUNT = 0x16;
/** Types from here on (and MSG_BOGUS) are unknown to HDF5 1.10. */
const MSG_UNKNOWN = 0x19;
/** Message classes HDF5 allows to be flagged shareable (H5O_SHARE_IS_SHARABLE). */
const SHAREABLE = new Set([MSG_DATASPACE, MSG_DATATYPE, MSG_FILL_OLD, MSG_FILL, MSG_FILTERS, 0x0c]);

// Message flags (H5O_MSG_FLAG_*).
const MESSAGE_SHARED = 0x02;
const MESSAGE_DONT_SHARE = 0x04;
const MESSAGE_FAIL_IF_UNKNOWN_FOR_WRITE = 0x08;
const MESSAGE_MARK_IF_UNKNOWN = 0x10;
const MESSAGE_WAS_UNKNOWN = 0x20;
const MESSAGE_SHAREABLE = 0x40;
const MESSAGE_FAIL_IF_UNKNOWN = 0x80;

// Kinds of shared message (H5O_SHARE_TYPE_*).
const SHARE_IN_HEAP = 1;
const SHARE_COMMITTED = 2;

// Symbol table entry cache types (H5G_cache_type_t).
const NOTHING_CACHED = 0;
const CACHED_SYMBOL_TABLE = 1;
const CACHED_SOFT_LINK = 2;

// Datatype classes (H5T_class_t).
const INTEGER = 0;
const OPAQUE = 5;

/** HDF5's "free list is empty" offset in a local heap (H5HL_FREE_NULL). */
const HEAP_FREE_NULL = 1;
/** Defaults of the group B-tree 'K' values when a version 2/3 superblock does not store them. */
const DEFAULT_LEAF_K = 4;
const DEFAULT_INTERNAL_K = 16;
/** The v2 B-tree type of a dense group's name index, and its record: name hash and a 7-byte heap ID. */
const NAME_INDEX = 5;
const NAME_RECORD = 4 + 7;

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
  /** A fresh cursor over the message body each time (a header is decoded once but may be read through several links). */
  readonly body: Cursor;
}

/** A message as decoded; each `body` is a fresh cursor (its label is built only then). */
class MessageRecord implements Message {
  constructor(
    readonly type: number,
    readonly flags: number,
    private readonly bytes: Uint8Array,
    private readonly offset: number,
    private readonly sizes: { offsets: number; lengths: number },
    private readonly what: string,
  ) {}

  get body(): Cursor {
    return new Cursor(this.bytes, this.offset, this.sizes, `${this.what} message ${this.type}`);
  }
}

interface ObjectHeader {
  messages: Message[];
}

interface Link {
  name: string;
  /** Object header address of a hard link; null for soft, external and user-defined links. */
  target: number | null;
}

/** A link of a dense group, as its v2 B-tree record and fractal heap object give it. */
interface DenseLink extends Link {
  hash: number;
  nameBytes: Uint8Array;
}

/** A decoded datatype message, as far as placing a dataset needs it. */
interface Datatype {
  cls: number;
  size: number;
  /** Class bit field (24 bits). */
  bits: number;
  offset: number;
  precision: number;
}

/** A decoded dataspace: dimensions ([] for a scalar), null for a null dataspace, or a class we do not place. */
type Dataspace = number[] | null | "unknown";

type Layout =
  | { kind: "contiguous"; address: number; size: number | null }
  | { kind: "compact"; offset: number; size: number; old: boolean }
  | { kind: "chunked" }
  | { kind: "virtual" };

/** One node of an old-style group's v1 B-tree: keys are local heap offsets of names. */
interface GroupNode {
  level: number;
  keys: number[];
  children: number[];
}

/** One symbol table entry (compared by identity in the lookup check). */
interface SymbolEntry {
  nameOffset: number;
  link: Link;
}

class Indexer {
  private sizes = { offsets: 8, lengths: 8 };
  /** Absolute file offset of address 0 (the superblock's position: a userblock comes before). */
  private base = 0;
  /** Absolute end of the space the file says it uses; data beyond it is damage. */
  private end = 0;
  private leafK = DEFAULT_LEAF_K;
  private internalK = DEFAULT_INTERNAL_K;
  private nodes = 0;
  private readonly headers = new Map<number, ObjectHeader>();
  /** What each metadata structure decoded so far is, by file offset (HDF5's metadata cache keys entries by address). */
  private readonly claimed = new Map<number, string>();

  constructor(private readonly file: FileWindow) {}

  run(): ShardIndex {
    const datasets = new Map<string, DatasetPlace>();
    for (const link of this.list()) {
      const place = this.placeLink(link);
      if (place) datasets.set(link.name, place);
    }
    return { datasets };
  }

  /** The root group's links, checked as HDF5 would find them (no dataset header read yet). */
  list(): Link[] {
    const rootAddress = this.superblock();
    const root = this.objectHeader(rootAddress, "root group");
    const links = this.groupLinks(root, "root group");
    if (links.length > MAX_LINKS) throw new Damage("too many links");
    const names = new Set<string>();
    for (const link of links) {
      if (names.has(link.name)) throw new Damage(`root group lists "${link.name}" twice`);
      names.add(link.name);
    }
    return links;
  }

  /** Where the bytes of the dataset a link names lie; null when it names something else (a group, a type). */
  placeLink(link: Link): DatasetPlace | null {
    if (link.target === null) return { unplaced: "soft or external link" };
    const header = this.objectHeader(link.target, `object header of "${link.name}"`);
    if (objectClass(header, link.name) !== "dataset") return null;
    return this.dataset(link.name, header);
  }

  private cursor(absolute: number, length: number, what: string): Cursor {
    return new Cursor(this.file.read(absolute, length, what), absolute, this.sizes, what);
  }

  /** Absolute file offset of a relative address, checked to lie inside the used space (HDF5's EOA check). */
  private at(address: number, length: number, what: string): number {
    if (address === UNDEFINED) throw new Damage(`${what} has an undefined address`);
    const absolute = this.base + address;
    if (absolute + length > this.end) throw new Damage(`${what} at ${address}+${length} lies beyond the end of the file's data (${this.end - this.base})`);
    return absolute;
  }

  private verify(bytes: Uint8Array, end: number, what: string): void {
    if (end < 0 || end + 4 > bytes.length) throw new Damage(`${what} is too short for its checksum`);
    const stored = (bytes[end]! | (bytes[end + 1]! << 8) | (bytes[end + 2]! << 16) | (bytes[end + 3]! << 24)) >>> 0;
    if (lookup3(bytes.subarray(0, end)) !== stored) throw new Damage(`${what}: checksum mismatch`);
  }

  /**
   * Records that the structure at absolute `offset` is a `kind`. HDF5 caches
   * metadata by address and fails when one address is asked for as two kinds
   * of structure, so the index does too.
   */
  claim(offset: number, kind: string): void {
    const other = this.claimed.get(offset);
    if (other !== undefined && other !== kind) throw new Damage(`the ${kind} at ${offset - this.base} is also a ${other}`);
    this.claimed.set(offset, kind);
  }

  private countNode(what: string): void {
    if (++this.nodes > MAX_NODES) throw new Damage(`${what}: more than ${MAX_NODES} metadata nodes`);
  }

  // --- Superblock (H5Fsuper_cache.c, H5Fsuper.c) ------------------------------

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
    const c = new Cursor(fixed, start, this.sizes, "superblock");
    c.skip(8);
    const version = c.u8();
    let storedBase: number;
    let eof: number;
    let root: number;
    let extension: number;
    let flags: number;
    if (version === 0 || version === 1) {
      if (c.u8() !== 0) throw new Damage("superblock: bad free-space version");
      if (c.u8() !== 0) throw new Damage("superblock: bad root group symbol table entry version");
      c.skip(1);
      if (c.u8() !== 0) throw new Damage("superblock: bad shared header version");
      this.setSizes(c.u8(), c.u8());
      c.skip(1);
      this.leafK = c.u16();
      this.internalK = c.u16();
      if (this.leafK === 0 || this.internalK === 0) throw new Damage("superblock: a group B-tree 'K' value is zero");
      flags = c.u32();
      if (flags & ~0x07) throw new Damage("superblock: unknown status flags");
      if (version === 1) c.skip(4); // chunk B-tree 'K', reserved
      storedBase = c.address();
      extension = c.address(); // the "free-space info" address of old, the superblock extension since HDF5 1.8
      eof = c.address();
      if (c.address() !== UNDEFINED) throw new Unsupported("the superblock names a driver information block");
      // The root group's symbol table entry (H5G_ent_decode): name offset, header address, cache type.
      c.length();
      root = c.address();
      const cache = c.u32();
      if (cache !== NOTHING_CACHED && cache !== CACHED_SYMBOL_TABLE && cache !== CACHED_SOFT_LINK) throw new Damage("superblock: bad root entry cache type");
      c.skip(4 + 16);
    } else if (version === 2 || version === 3) {
      this.setSizes(c.u8(), c.u8());
      flags = c.u8();
      if (flags & ~0x07) throw new Damage("superblock: unknown status flags");
      storedBase = c.address();
      extension = c.address();
      eof = c.address();
      root = c.address();
      this.verify(fixed, c.pos, "superblock");
      // A version 3 superblock marked as open for writing is refused by a read-only open (H5F_open).
      if (version === 3 && flags & 0x05) throw new Damage("the superblock says the file is open for writing");
    } else {
      throw new Damage(`superblock version ${version} is unknown`);
    }
    // An extension holds file-wide settings (B-tree 'K' values, shared messages, file space) that HDF5 decodes on open.
    if (extension !== UNDEFINED) throw new Unsupported("the superblock has an extension");
    if (storedBase === UNDEFINED || eof === UNDEFINED) throw new Damage("superblock: undefined base or end-of-file address");
    // HDF5 takes the superblock's position as the base address and moves the end of file with it (H5F__super_read).
    const end = eof - storedBase + start;
    if (end < 0 || end > this.file.size) throw new Damage(`truncated file: the superblock says ${end} bytes, the file has ${this.file.size}`);
    this.base = start;
    this.end = end;
    this.claim(start, "superblock");
    if (root === UNDEFINED) throw new Damage("root group address is undefined");
    return root;
  }

  private setSizes(offsets: number, lengths: number): void {
    const valid = [2, 4, 8, 16, 32];
    if (!valid.includes(offsets) || !valid.includes(lengths)) throw new Damage(`superblock sizes of offsets ${offsets} and lengths ${lengths} are invalid`);
    if (offsets > 8 || lengths > 8) throw new Unsupported(`${offsets}-byte offsets or ${lengths}-byte lengths`);
    this.sizes.offsets = offsets;
    this.sizes.lengths = lengths;
  }

  // --- Object headers (H5Ocache.c) -------------------------------------------

  /** Every message of the object header at `address`, continuation blocks included. */
  private objectHeader(address: number, what: string): ObjectHeader {
    const cached = this.headers.get(address);
    if (cached) return cached;
    this.countNode(what);
    const start = this.at(address, 1, what);
    this.claim(start, "object header");
    const first = this.file.read(start, Math.min(4, this.end - start), what);
    let header: ObjectHeader;
    if (first.length === 4 && first[0] === 0x4f && first[1] === 0x48 && first[2] === 0x44 && first[3] === 0x52) header = this.headerV2(start, what);
    else if (first[0] === 1) header = this.headerV1(start, what);
    else throw new Damage(`${what} at ${address}: not an object header`);
    this.headers.set(address, header);
    return header;
  }

  private headerV1(start: number, what: string): ObjectHeader {
    const prefix = this.cursor(this.at(start - this.base, 16, what), 16, what);
    prefix.skip(2); // version, reserved
    const count = prefix.u16();
    prefix.skip(4); // reference count
    const size = prefix.u32();
    if ((count > 0 && size < 8) || (count === 0 && size > 0)) throw new Damage(`${what}: bad object header chunk size`);
    const messages: Message[] = [];
    const chunks: { offset: number; length: number }[] = [{ offset: start + 16, length: size }];
    const seen = new Set<number>([start]);
    for (let i = 0; i < chunks.length; i++) {
      if (i >= MAX_HEADER_CHUNKS) throw new Damage(`${what}: too many continuation blocks`);
      const chunk = chunks[i]!;
      const c = this.cursor(this.at(chunk.offset - this.base, chunk.length, what), chunk.length, what);
      this.messagesOf(c, 1, false, what, messages, chunks, seen);
    }
    return { messages };
  }

  private headerV2(start: number, what: string): ObjectHeader {
    const prefix = this.cursor(start, Math.min(6 + 16 + 4 + 8, this.end - start), what);
    prefix.skip(4);
    const version = prefix.u8();
    if (version !== 2) throw new Damage(`${what}: object header version ${version} is unknown`);
    const flags = prefix.u8();
    if (flags & ~0x3f) throw new Damage(`${what}: unknown object header flags`);
    if (flags & 0x20) prefix.skip(16); // access, modification, change and birth times
    if (flags & 0x10) {
      const maxCompact = prefix.u16();
      const minDense = prefix.u16();
      if (maxCompact < minDense) throw new Damage(`${what}: bad attribute phase change values`);
    }
    const chunkSize = prefix.uint(1 << (flags & 3));
    const creationOrder = (flags & 0x04) !== 0;
    if (chunkSize > 0 && chunkSize < (creationOrder ? 6 : 4)) throw new Damage(`${what}: bad object header chunk size`);
    const messageStart = prefix.pos;
    if (chunkSize > MAX_STRUCTURE) throw new Damage(`${what}: object header chunk of ${chunkSize} bytes`);
    const block = this.cursor(this.at(start - this.base, messageStart + chunkSize + 4, what), messageStart + chunkSize + 4, what);
    this.verify(block.bytes, messageStart + chunkSize, what);
    const messages: Message[] = [];
    const chunks: { offset: number; length: number }[] = [];
    const seen = new Set<number>([start]);
    this.messagesOf(new Cursor(block.bytes.subarray(messageStart, messageStart + chunkSize), start + messageStart, this.sizes, what), 2, creationOrder, what, messages, chunks, seen);
    for (let i = 0; i < chunks.length; i++) {
      if (i >= MAX_HEADER_CHUNKS) throw new Damage(`${what}: too many continuation blocks`);
      const next = chunks[i]!;
      if (next.length < 8) throw new Damage(`${what}: continuation block too small`);
      const c = this.cursor(this.at(next.offset - this.base, next.length, what), next.length, what);
      c.signature("OCHK");
      this.verify(c.bytes, next.length - 4, `${what} continuation block`);
      const body = new Cursor(c.bytes.subarray(4, next.length - 4), next.offset + 4, this.sizes, what);
      this.messagesOf(body, 2, creationOrder, what, messages, chunks, seen);
    }
    return { messages };
  }

  /** The messages of one header chunk (H5O__chunk_deserialize), with HDF5's checks on each message's header. */
  private messagesOf(
    c: Cursor,
    version: 1 | 2,
    creationOrder: boolean,
    what: string,
    messages: Message[],
    chunks: { offset: number; length: number }[],
    seen: Set<number>,
  ): void {
    const headerSize = version === 1 ? 8 : creationOrder ? 6 : 4;
    const sizes = this.sizes;
    let afterMessage = false;
    while (c.remaining > 0) {
      if (c.remaining < headerSize) {
        // A gap too small for a message ends a chunk; it cannot begin one.
        if (afterMessage) break;
        throw new Damage(`${what}: object header chunk too small for a message`);
      }
      const type = version === 1 ? c.u16() : c.u8();
      const size = c.u16();
      const flags = c.u8();
      if (version === 1) c.skip(3);
      else if (creationOrder) c.skip(2);
      if (version === 1 && size % 8 !== 0) throw new Damage(`${what}: message not aligned`);
      if ((flags & MESSAGE_SHARED && flags & MESSAGE_DONT_SHARE) || (flags & MESSAGE_WAS_UNKNOWN && flags & MESSAGE_FAIL_IF_UNKNOWN_FOR_WRITE) || (flags & MESSAGE_WAS_UNKNOWN && !(flags & MESSAGE_MARK_IF_UNKNOWN))) {
        throw new Damage(`${what}: bad flag combination for message ${type}`);
      }
      if (size > c.remaining) throw new Damage(`${what}: message ${type} runs past its header chunk`);
      const bodyOffset = c.fileOffset + c.pos;
      const bytes = c.take(size);
      afterMessage = true;
      if (type >= MSG_UNKNOWN || type === MSG_BOGUS) {
        if (flags & MESSAGE_FAIL_IF_UNKNOWN) throw new Damage(`${what}: unknown message ${type} flagged "fail if unknown"`);
        continue;
      }
      if (flags & MESSAGE_SHAREABLE && !SHAREABLE.has(type)) throw new Damage(`${what}: message of unshareable class ${type} flagged as shareable`);
      if (type === MSG_CONTINUATION) {
        const body = new Cursor(bytes, bodyOffset, sizes, `${what} message ${type}`);
        const address = body.address();
        const length = body.length();
        if (length === 0 || length > MAX_STRUCTURE) throw new Damage(`${what}: continuation block of ${length} bytes`);
        const offset = this.at(address, length, `${what} continuation`);
        if (seen.has(offset)) throw new Damage(`${what}: continuation blocks form a loop`);
        this.claim(offset, "object header continuation");
        seen.add(offset);
        chunks.push({ offset, length });
        continue;
      }
      if (type === MSG_REFCOUNT) {
        const body = new Cursor(bytes, bodyOffset, sizes, `${what} message ${type}`);
        if (version === 1) throw new Damage(`${what}: reference count message in a version 1 header`);
        if (body.u8() !== 0) throw new Damage(`${what}: reference count message version is unknown`);
        body.u32();
      }
      // A record, not a closure per message: headers of a big shard hold thousands.
      messages.push(new MessageRecord(type, flags, bytes, bodyOffset, sizes, what));
    }
  }

  // --- Groups (H5Gobj.c, H5Gstab.c, H5Gnode.c, H5Gcompact.c, H5Gdense.c) --------

  /** The links of a group, from whichever of the three group forms it uses, each one checked to be found by name as HDF5 finds it. */
  private groupLinks(header: ObjectHeader, what: string): Link[] {
    // HDF5 asks for link info first: a group with it is new-style whatever else it holds.
    const info = header.messages.find((m) => m.type === MSG_LINK_INFO);
    if (info) {
      const c = info.body;
      if (c.u8() !== 0) throw new Damage(`${what}: link info message version is unknown`);
      const flags = c.u8();
      if (flags & ~0x03) throw new Damage(`${what}: link info message has unknown flags`);
      if (flags & 0x01) c.skip(8); // maximum creation order
      const heap = c.address();
      const names = c.address();
      if (flags & 0x02) c.address(); // creation order index
      if (heap !== UNDEFINED) return this.denseLinks(heap, names, what);
      // Compact: HDF5 finds a name by the first link message that holds it.
      return header.messages.filter((m) => m.type === MSG_LINK).map((m) => this.linkMessage(m.body, what));
    }
    const table = header.messages.find((m) => m.type === MSG_SYMBOL_TABLE);
    if (table) return this.symbolTableLinks(table.body, what);
    throw new Damage(`${what} is not a group`);
  }

  /** A link message (H5O__link_decode). */
  private linkMessage(c: Cursor, what: string): Link {
    if (c.u8() !== 1) throw new Damage(`${what}: link message version is unknown`);
    const flags = c.u8();
    if (flags & ~0x1f) throw new Damage(`${what}: link message has unknown flags`);
    const type = flags & 0x08 ? c.u8() : 0;
    if (flags & 0x04) c.skip(8); // creation order
    if (flags & 0x10 && c.u8() > 1) throw new Damage(`${what}: link name has an unknown character set`);
    const nameLength = c.uint(1 << (flags & 3));
    if (nameLength === 0) throw new Damage(`${what}: link with an empty name`);
    const name = linkName(c.take(nameLength), what);
    if (type === 0) {
      const target = c.address();
      if (target === UNDEFINED) throw new Damage(`${what}: link "${name}" has an undefined address`);
      return { name, target };
    }
    if (type === 1) {
      const length = c.u16();
      if (length === 0) throw new Damage(`${what}: soft link "${name}" names no path`);
      c.take(length);
      return { name, target: null };
    }
    if (type < 64) throw new Damage(`${what}: link "${name}" has unknown type ${type}`);
    c.take(c.u16()); // external or user-defined: link data
    return { name, target: null };
  }

  /** Old-style group: a v1 B-tree of symbol table nodes, names in a local heap. */
  private symbolTableLinks(body: Cursor, what: string): Link[] {
    const btree = body.address();
    const names = this.localHeap(body.address(), what);
    const nodes = new Map<number, GroupNode>();
    const symbolNodes = new Map<number, SymbolEntry[]>();
    const entries: SymbolEntry[] = [];
    this.groupNode(btree, -1, names, nodes, symbolNodes, entries, 0, new Set());
    // h5py opens each dataset by name: HDF5's binary searches over the B-tree keys and the node entries must land on this very entry.
    for (const entry of entries) {
      const found = findSymbol(btree, heapBytes(names, entry.nameOffset, "symbol name"), nodes, symbolNodes, names);
      if (found !== entry) throw new Damage(`${what}: "${entry.link.name}" cannot be found by name through the group B-tree`);
    }
    return entries.map((e) => e.link);
  }

  /** The data of a local heap (H5HLcache.c), after checking its prefix and free list as HDF5 does on load. */
  private localHeap(address: number, what: string): Uint8Array {
    const L = this.sizes.lengths;
    const O = this.sizes.offsets;
    // HDF5 reads the prefix padded to 8 bytes (H5HL_SIZEOF_HDR).
    const prefixSize = Math.ceil((8 + 2 * L + O) / 8) * 8;
    const prefixAt = this.at(address, prefixSize, "local heap");
    this.claim(prefixAt, "local heap");
    const head = this.cursor(prefixAt, 8 + 2 * L + O, "local heap");
    head.signature("HEAP");
    if (head.u8() !== 0) throw new Damage(`${what}: local heap version is unknown`);
    head.skip(3);
    const size = head.length();
    let free = head.length();
    if (free !== HEAP_FREE_NULL && free >= size) throw new Damage(`${what}: bad local heap free list`);
    const dataAddress = head.address();
    if (size > MAX_STRUCTURE) throw new Damage(`${what}: local heap of ${size} bytes`);
    const dataAt = this.at(dataAddress, size, "local heap data");
    // Data right after the prefix is one cached structure with it; elsewhere it is a structure of its own.
    if (dataAt !== prefixAt + prefixSize) this.claim(dataAt, "local heap data block");
    const data = this.file.read(dataAt, size, "local heap data");
    // The free list is walked whenever HDF5 loads the heap (a loop would hang it).
    const visited = new Set<number>();
    while (free !== HEAP_FREE_NULL) {
      if (free >= size || free + 2 * L > size) throw new Damage(`${what}: bad local heap free list`);
      if (visited.has(free)) throw new Damage(`${what}: local heap free list loops`);
      visited.add(free);
      const block = new Cursor(data.subarray(free, free + 2 * L), 0, this.sizes, "local heap free block");
      const next = block.length();
      const blockSize = block.length();
      if (next === 0) throw new Damage(`${what}: local heap free block size is zero`);
      if (free + blockSize > size) throw new Damage(`${what}: bad local heap free list`);
      free = next;
    }
    return data;
  }

  private groupNode(
    address: number,
    level: number,
    names: Uint8Array,
    nodes: Map<number, GroupNode>,
    symbolNodes: Map<number, SymbolEntry[]>,
    entries: SymbolEntry[],
    depth: number,
    seen: Set<number>,
  ): void {
    if (depth > MAX_DEPTH) throw new Damage("group B-tree is too deep");
    if (seen.has(address)) throw new Damage("group B-tree has a loop");
    seen.add(address);
    this.countNode("group B-tree");
    const O = this.sizes.offsets;
    const L = this.sizes.lengths;
    const twoK = 2 * this.internalK;
    // HDF5 reads a whole node of its fixed size (H5B_shared_new's sizeof_rnode).
    const nodeSize = 8 + 2 * O + twoK * O + (twoK + 1) * L;
    const nodeAt = this.at(address, nodeSize, "group B-tree node");
    this.claim(nodeAt, "group B-tree node");
    const c = this.cursor(nodeAt, nodeSize, "group B-tree node");
    c.signature("TREE");
    if (c.u8() !== 0) throw new Damage("group B-tree node is not of the group type");
    const nodeLevel = c.u8();
    if (level >= 0 && nodeLevel !== level) throw new Damage(`group B-tree node at level ${nodeLevel}, expected ${level}`);
    const count = c.u16();
    if (count > twoK) throw new Damage(`group B-tree node has ${count} children, at most ${twoK}`);
    c.skip(2 * O); // siblings
    const node: GroupNode = { level: nodeLevel, keys: [], children: [] };
    for (let i = 0; i < count; i++) {
      node.keys.push(c.length());
      node.children.push(c.address());
    }
    if (count > 0) node.keys.push(c.length());
    nodes.set(address, node);
    for (const child of node.children) {
      if (nodeLevel > 0) this.groupNode(child, nodeLevel - 1, names, nodes, symbolNodes, entries, depth + 1, seen);
      else if (!symbolNodes.has(child)) symbolNodes.set(child, this.symbolNode(child, names, entries));
      else throw new Damage("group B-tree names one symbol node twice");
    }
  }

  private symbolNode(address: number, names: Uint8Array, entries: SymbolEntry[]): SymbolEntry[] {
    this.countNode("symbol table node");
    const O = this.sizes.offsets;
    const L = this.sizes.lengths;
    // A symbol table entry (H5G_ent_decode): name offset (a length), header address, cache type, reserved, 16-byte scratch pad.
    const entrySize = L + O + 24;
    const nodeSize = 8 + 2 * this.leafK * entrySize;
    const nodeAt = this.at(address, nodeSize, "symbol table node");
    this.claim(nodeAt, "symbol table node");
    const c = this.cursor(nodeAt, nodeSize, "symbol table node");
    c.signature("SNOD");
    if (c.u8() !== 1) throw new Damage("symbol table node version is unknown");
    c.skip(1);
    const count = c.u16();
    if (count > 2 * this.leafK) throw new Damage(`symbol table node holds ${count} entries, at most ${2 * this.leafK}`);
    const own: SymbolEntry[] = [];
    for (let i = 0; i < count; i++) {
      const entry = c.pos;
      const nameOffset = c.length();
      const target = c.address();
      const cache = c.u32();
      c.skip(4);
      const name = linkName(heapBytes(names, nameOffset, "symbol name"), "symbol table entry");
      if (cache === CACHED_SOFT_LINK) {
        // A soft link: no object header; the scratch pad holds the heap offset of the path it names.
        heapBytes(names, c.u32(), `soft link "${name}"`);
        own.push({ nameOffset, link: { name, target: null } });
      } else if (cache === NOTHING_CACHED || cache === CACHED_SYMBOL_TABLE) {
        if (target === UNDEFINED) throw new Damage(`symbol "${name}" has an undefined address`);
        own.push({ nameOffset, link: { name, target } });
      } else {
        throw new Damage(`symbol "${name}" has unknown cache type ${cache}`);
      }
      c.pos = entry + entrySize;
    }
    entries.push(...own);
    return own;
  }

  /** New-style dense group: link messages in a fractal heap, found through the v2 B-tree of name hashes. */
  private denseLinks(heapAddress: number, btreeAddress: number, what: string): Link[] {
    if (btreeAddress === UNDEFINED) throw new Damage(`${what}: dense group without a name index`);
    const heap = new FractalHeap(this, heapAddress);
    const links: DenseLink[] = [];
    this.btreeV2(btreeAddress, NAME_INDEX, NAME_RECORD, (record) => {
      const hash = record.u32();
      const object = heap.object(record);
      const message = new Cursor(object, 0, this.sizes, "link in fractal heap");
      const link = this.linkMessage(message, what);
      links.push({ ...link, hash, nameBytes: encoder.encode(link.name) });
    });
    // HDF5 finds a name by its hash, then by comparing names: the records must be in that order, each under its own name's hash.
    for (let i = 0; i < links.length; i++) {
      const link = links[i]!;
      if (lookup3(link.nameBytes) !== link.hash) throw new Damage(`${what}: "${link.name}" is filed under the wrong name hash`);
      const previous = links[i - 1];
      if (previous && (previous.hash > link.hash || (previous.hash === link.hash && compareNames(previous.nameBytes, link.nameBytes) >= 0))) {
        throw new Damage(`${what}: the name index is out of order at "${link.name}"`);
      }
    }
    return links;
  }

  /** Visits every record of a v2 B-tree of `type`, in order (H5B2cache.c, H5B2int.c). */
  btreeV2(address: number, type: number, recordSize: number, visit: (record: Cursor) => void): void {
    const O = this.sizes.offsets;
    const headerLength = 4 + 1 + 1 + 4 + 2 + 2 + 1 + 1 + O + 2 + this.sizes.lengths + 4;
    const headerAt = this.at(address, headerLength, "v2 B-tree header");
    this.claim(headerAt, "v2 B-tree header");
    const h = this.cursor(headerAt, headerLength, "v2 B-tree header");
    h.signature("BTHD");
    if (h.u8() !== 0) throw new Damage("v2 B-tree header version is unknown");
    if (h.u8() !== type) throw new Damage(`v2 B-tree is not of type ${type}`);
    const nodeSize = h.u32();
    const storedRecordSize = h.u16();
    const depth = h.u16();
    h.skip(2); // split and merge percentages
    const root = h.address();
    const rootRecords = h.u16();
    const total = h.length();
    this.verify(h.bytes, h.pos, "v2 B-tree header");
    if (storedRecordSize !== recordSize) throw new Damage(`v2 B-tree records of ${storedRecordSize} bytes, not ${recordSize}`);
    if (nodeSize < 16 || nodeSize > MAX_STRUCTURE || depth > MAX_DEPTH) throw new Damage("v2 B-tree header has impossible sizes");
    if (root === UNDEFINED || rootRecords === 0) {
      if (total !== 0) throw new Damage("v2 B-tree header counts records but has no root");
      return;
    }
    // Field widths of internal nodes, as HDF5 computes them (H5B2__hdr_init).
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
      if (used + 4 > nodeSize) throw new Damage("v2 B-tree node overflows its size");
      // HDF5 reads a node whole, whatever it holds.
      const nodeAt = this.at(at, nodeSize, "v2 B-tree node");
      this.claim(nodeAt, level > 0 ? "v2 B-tree internal node" : "v2 B-tree leaf");
      const c = this.cursor(nodeAt, used + 4, "v2 B-tree node");
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

  // --- Datasets (H5Dint.c H5D__open_oid, H5Dlayout.c) -------------------------

  /** Where a dataset's bytes lie, decoding the messages HDF5 decodes when it opens the dataset. */
  private dataset(name: string, header: ObjectHeader): DatasetPlace {
    const first = (type: number) => header.messages.find((m) => m.type === type);
    const typeMessage = first(MSG_DATATYPE)!;
    const spaceMessage = first(MSG_DATASPACE)!;
    const layoutMessage = first(MSG_LAYOUT);
    const what = `dataset "${name}"`;
    const typeBody = typeMessage.flags & MESSAGE_SHARED ? this.sharedDatatype(typeMessage.body, what) : typeMessage.body;
    if (typeof typeBody === "string") return { unplaced: typeBody };
    const type = datatype(typeBody, what);
    if (spaceMessage.flags & MESSAGE_SHARED) return { unplaced: "shared message" };
    const space = dataspace(spaceMessage.body, this.sizes.lengths, what);
    if (first(MSG_FILTERS)) return { unplaced: "filtered" };
    if (!layoutMessage) throw new Damage(`${what} has no layout message`);
    const layout = this.layout(layoutMessage.body, what);
    if (first(MSG_EXTERNAL)) return { unplaced: "external storage" };
    const fill = first(MSG_FILL) ?? first(MSG_FILL_OLD);
    if (fill) {
      if (fill.flags & MESSAGE_SHARED) return { unplaced: "shared message" };
      if (fill.type === MSG_FILL) fillValue(fill.body, what);
      else oldFillValue(fill.body, type.size, what);
    }
    const length = byteLength(type, space);
    if (typeof length === "string") return { unplaced: length };
    switch (layout.kind) {
      case "chunked":
        return { unplaced: "chunked" };
      case "virtual":
        return { unplaced: "virtual" };
      case "compact":
        if (layout.old) return { unplaced: "compact (old layout message)" };
        if (layout.size !== length) throw new Damage(`${what}: compact data of ${layout.size} bytes for ${length}`);
        return { offset: layout.offset, length };
      case "contiguous": {
        if (length === 0) return { offset: 0, length: 0 };
        if (layout.address === UNDEFINED) return { unplaced: "storage not allocated (reads as fill value)" };
        if (layout.size !== null && layout.size < length) throw new Damage(`${what}: ${layout.size} bytes stored for ${length}`);
        return { offset: this.at(layout.address, length, `data of "${name}"`), length };
      }
    }
  }

  /**
   * The datatype message a shared datatype message points to (H5O__shared_decode):
   * a named datatype's object header, or (not decoded) the shared-message heap.
   */
  private sharedDatatype(c: Cursor, what: string): Cursor | string {
    const version = c.u8();
    const kind = c.u8();
    let address: number;
    if (version === 1) {
      c.skip(6 + this.sizes.lengths); // reserved, then a symbol table entry's name offset
      address = c.address();
    } else if (version === 2 || (version === 3 && kind === SHARE_COMMITTED)) {
      address = c.address();
    } else if (version === 3 && kind === SHARE_IN_HEAP) {
      return "shared message";
    } else {
      throw new Damage(`${what}: shared datatype message of version ${version}, kind ${kind}`);
    }
    const header = this.objectHeader(address, `named datatype of ${what}`);
    const type = header.messages.find((m) => m.type === MSG_DATATYPE);
    if (!type || type.flags & MESSAGE_SHARED) throw new Damage(`${what}: its named datatype holds no datatype`);
    return type.body;
  }

  /** A layout message (H5O__layout_decode). */
  private layout(c: Cursor, what: string): Layout {
    const version = c.u8();
    if (version < 1 || version > 4) throw new Damage(`${what}: layout message version ${version} is unknown`);
    if (version < 3) {
      const rank = c.u8();
      if (rank === 0 || rank > 33) throw new Damage(`${what}: layout dimensionality ${rank} is out of range`);
      const kind = c.u8();
      c.skip(5);
      if (kind === 1) {
        const address = c.address();
        c.skip(rank * 4);
        return { kind: "contiguous", address, size: null };
      }
      if (kind === 2) return { kind: "chunked" };
      if (kind !== 0) throw new Damage(`${what}: layout class ${kind} is unknown`);
      c.skip(rank * 4);
      const size = c.u32();
      const offset = c.fileOffset + c.pos;
      c.skip(size);
      return { kind: "compact", offset, size, old: true };
    }
    const kind = c.u8();
    if (kind === 0) {
      const size = c.u16();
      const offset = c.fileOffset + c.pos;
      c.skip(size);
      return { kind: "compact", offset, size, old: false };
    }
    if (kind === 1) {
      const address = c.address();
      return { kind: "contiguous", address, size: c.length() };
    }
    if (kind === 2) return { kind: "chunked" };
    if (kind === 3) return { kind: "virtual" };
    throw new Damage(`${what}: layout class ${kind} is unknown`);
  }

  /** For FractalHeap: bounded reads and checks in this file's terms; the structure read is claimed as `what`. */
  read(address: number, length: number, what: string): Cursor {
    const offset = this.at(address, length, what);
    this.claim(offset, what);
    return this.cursor(offset, length, what);
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

/** What HDF5 opens an object as (H5O__obj_class_real tries group, then dataset, then datatype). */
function objectClass(header: ObjectHeader, name: string): "group" | "dataset" | "datatype" {
  const has = (type: number) => header.messages.some((m) => m.type === type);
  if (has(MSG_SYMBOL_TABLE) || has(MSG_LINK_INFO)) return "group";
  if (has(MSG_DATATYPE) && has(MSG_DATASPACE)) return "dataset";
  if (has(MSG_DATATYPE)) return "datatype";
  throw new Damage(`"${name}": object of unknown type`);
}

/** A datatype message (H5O_dtype_decode_helper), decoded as far as the classes a shard uses. */
function datatype(c: Cursor, what: string): Datatype {
  const classVersion = c.u8();
  const version = classVersion >> 4;
  if (version < 1 || version > 3) throw new Damage(`${what}: datatype message version ${version} is unknown`);
  const cls = classVersion & 0x0f;
  const bits = c.u8() | (c.u8() << 8) | (c.u8() << 16);
  const size = c.u32();
  const type: Datatype = { cls, size, bits, offset: 0, precision: 0 };
  if (cls === INTEGER) {
    type.offset = c.u16();
    type.precision = c.u16();
  } else if (cls === OPAQUE) {
    c.skip(bits & 0xff); // the tag
  }
  return type;
}

/** A dataspace message (H5O__sdspace_decode). */
function dataspace(c: Cursor, lengthSize: number, what: string): Dataspace {
  const version = c.u8();
  if (version < 1 || version > 2) throw new Damage(`${what}: dataspace message version ${version} is unknown`);
  const rank = c.u8();
  if (rank > 32) throw new Damage(`${what}: dataspace of rank ${rank}`);
  const flags = c.u8();
  let kind = rank > 0 ? 1 : 0;
  if (version === 2) {
    kind = c.u8();
    if (kind !== 1 && rank > 0) throw new Damage(`${what}: a scalar or null dataspace with dimensions`);
  } else {
    c.skip(5);
  }
  if (c.remaining < rank * lengthSize * (flags & 1 ? 2 : 1)) throw new Damage(`${what}: dataspace rank runs past its message`);
  const dims: number[] = [];
  for (let i = 0; i < rank; i++) dims.push(c.length());
  if (kind === 2) return null;
  if (kind !== 0 && kind !== 1) return "unknown";
  return dims;
}

/** A fill value message (H5O_fill_new_decode). */
function fillValue(c: Cursor, what: string): void {
  const version = c.u8();
  if (version < 1 || version > 3) throw new Damage(`${what}: fill value message version ${version} is unknown`);
  if (version < 3) {
    c.skip(2); // allocation and fill times
    if (c.u8()) {
      const size = c.u32() | 0;
      if (size > 0 && size > c.remaining) throw new Damage(`${what}: fill value exceeds its message`);
    }
    return;
  }
  const flags = c.u8();
  if (flags & ~0x3f) throw new Damage(`${what}: unknown flag for fill value message`);
  if (!(flags & 0x10) && flags & 0x20) {
    const size = c.u32();
    if (size > c.remaining) throw new Damage(`${what}: fill value exceeds its message`);
  }
}

/** An old fill value message (H5O_fill_old_decode): its size must be the datatype's. */
function oldFillValue(c: Cursor, typeSize: number, what: string): void {
  const size = c.u32();
  if (size === 0) return;
  if (size > c.remaining) throw new Damage(`${what}: fill value exceeds its message`);
  if (size !== typeSize) throw new Damage(`${what}: inconsistent fill value size`);
}

/**
 * The stored byte length of an OPAQUE scalar or a 1-D 8-bit integer dataset
 * (the only kinds a shard holds), or why it is neither.
 */
function byteLength(type: Datatype, space: Dataspace): number | string {
  if (space === null) return "null dataspace";
  if (space === "unknown") return "unknown dataspace class";
  if (type.cls === OPAQUE && space.length === 0) return type.size > 0 ? type.size : "empty opaque type";
  if (type.cls === INTEGER && type.size === 1 && space.length === 1) {
    if (type.offset !== 0 || type.precision !== 8 || (type.bits & 0x06) !== 0) return "8-bit integer with padding";
    return space[0]!;
  }
  return "neither OPAQUE nor 1-D uint8";
}

/** Bytes HDF5 uses to encode numbers up to `limit` (H5VM_limit_enc_size). */
function encodedSize(limit: number): number {
  return Math.floor(Math.floor(Math.log2(Math.max(limit, 1))) / 8) + 1;
}

/** C strcmp of two NUL-free byte strings. */
function compareNames(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/**
 * compareNames(name, heapBytes(heap, offset, what)), with the same checks,
 * without a view per comparison: a lookup replay makes thousands of them.
 */
function compareWithHeap(name: Uint8Array, heap: Uint8Array, offset: number, what: string): number {
  if (offset >= heap.length) throw new Damage(`${what} lies outside the local heap`);
  const end = heap.indexOf(0, offset);
  if (end < 0) throw new Damage(`${what} is not terminated`);
  const length = end - offset;
  const n = Math.min(name.length, length);
  for (let i = 0; i < n; i++) {
    const difference = name[i]! - heap[offset + i]!;
    if (difference !== 0) return difference;
  }
  return name.length - length;
}

/** The NUL-terminated bytes at `offset` of a local heap's data (H5HL_offset_into fails beyond it). */
function heapBytes(heap: Uint8Array, offset: number, what: string): Uint8Array {
  if (offset >= heap.length) throw new Damage(`${what} lies outside the local heap`);
  const end = heap.indexOf(0, offset);
  if (end < 0) throw new Damage(`${what} is not terminated`);
  return heap.subarray(offset, end);
}

const decoder = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

/**
 * A link name as h5py looks it up: not empty, no NUL (HDF5 would cut the
 * name there), no "/" (a path separator) and not "." (the group itself).
 * A name that is not UTF-8 is valid HDF5 that the index cannot key by text.
 */
function linkName(bytes: Uint8Array, what: string): string {
  if (bytes.length === 0) throw new Damage(`${what}: a link with an empty name`);
  if (bytes.includes(0)) throw new Damage(`${what}: a link name holds a NUL byte`);
  if (bytes.includes(0x2f)) throw new Damage(`${what}: a link name holds "/"`);
  if (bytes.length === 1 && bytes[0] === 0x2e) throw new Damage(`${what}: a link named "."`);
  try {
    return decoder.decode(bytes);
  } catch {
    throw new Unsupported(`${what}: a link name that is not UTF-8`);
  }
}

/**
 * HDF5's lookup of `name` in an old-style group (H5B_find with H5G_node_cmp3,
 * then H5G_node_found): binary searches over the B-tree keys and the symbol
 * node's entries. Returns the entry found, or null.
 */
function findSymbol(root: number, name: Uint8Array, nodes: Map<number, GroupNode>, symbolNodes: Map<number, SymbolEntry[]>, heap: Uint8Array): SymbolEntry | null {
  let address = root;
  for (let depth = 0; depth <= MAX_DEPTH; depth++) {
    const node = nodes.get(address)!;
    let lt = 0;
    let rt = node.children.length;
    let cmp = 1;
    let idx = 0;
    while (lt < rt && cmp) {
      idx = (lt + rt) >> 1;
      if (compareWithHeap(name, heap, node.keys[idx]!, "group B-tree key") <= 0) cmp = -1;
      else cmp = compareWithHeap(name, heap, node.keys[idx + 1]!, "group B-tree key") > 0 ? 1 : 0;
      if (cmp < 0) rt = idx;
      else lt = idx + 1;
    }
    if (cmp) return null;
    const child = node.children[idx]!;
    if (node.level > 0) {
      address = child;
      continue;
    }
    const entries = symbolNodes.get(child)!;
    let lo = 0;
    let hi = entries.length;
    cmp = 1;
    idx = 0;
    while (lo < hi && cmp) {
      idx = (lo + hi) >> 1;
      cmp = compareWithHeap(name, heap, entries[idx]!.nameOffset, "symbol name");
      if (cmp < 0) hi = idx;
      else lo = idx + 1;
    }
    return cmp ? null : entries[idx]!;
  }
  return null;
}

/**
 * A fractal heap, as far as link storage needs it: managed and tiny objects,
 * unfiltered. Objects are found as HDF5 finds them (H5HF__man_op_real,
 * H5HF__man_dblock_locate): from the heap offset in the ID, through the
 * doubling table of indirect blocks, to a direct block.
 */
class FractalHeap {
  private readonly address: number;
  private readonly idLength: number;
  private readonly maxManaged: number;
  private readonly managedSize: number;
  private readonly width: number;
  private readonly startSize: number;
  private readonly maxDirect: number;
  private readonly rootAddress: number;
  private readonly rootRows: number;
  private readonly checksummed: boolean;
  private readonly offsetBytes: number;
  private readonly lengthBytes: number;
  private readonly firstRowBits: number;
  private readonly maxDirectRows: number;
  private readonly maxRootRows: number;
  private readonly tinyExtended: boolean;
  private readonly indirect = new Map<number, { blockOffset: number; rows: number; children: number[] }>();
  private readonly direct = new Map<number, { blockOffset: number; bytes: Uint8Array }>();

  constructor(
    private readonly owner: Indexer,
    address: number,
  ) {
    const O = owner.offsetSize;
    const L = owner.lengthSize;
    this.address = address;
    const length = 4 + 1 + 2 + 2 + 1 + 4 + L + O + L + O + 8 * L + 2 + L + L + 2 + 2 + O + 2 + 4;
    const h = owner.read(address, length, "fractal heap header");
    h.signature("FRHP");
    if (h.u8() !== 0) throw new Damage("fractal heap version is unknown");
    this.idLength = h.u16();
    const filters = h.u16();
    const flags = h.u8();
    this.maxManaged = h.u32();
    h.skip(L); // next huge ID
    const hugeTree = h.address();
    h.skip(L + O); // free space, free-space manager
    this.managedSize = h.length();
    h.skip(4 * L); // managed allocated, iterator offset, managed count, huge size
    const hugeCount = h.length();
    h.skip(2 * L); // tiny size and count
    this.width = h.u16();
    this.startSize = h.length();
    this.maxDirect = h.length();
    const maxIndex = h.u16();
    h.u16(); // starting rows in root
    this.rootAddress = h.address();
    this.rootRows = h.u16();
    if (filters !== 0) throw new Unsupported("filtered fractal heap");
    owner.checksum(h.bytes, h.pos, "fractal heap header");
    // Closing a heap whose huge-object tree is empty deletes that tree, which HDF5 cannot do read-only (H5HF__huge_term): every lookup fails.
    if (hugeTree !== UNDEFINED && hugeCount === 0) throw new Damage("fractal heap names an empty huge-object tree");
    const isPow2 = (n: number) => n > 0 && Number.isSafeInteger(n) && (n & (n - 1)) === 0 && n <= 2 ** 30;
    if (!isPow2(this.width) || !isPow2(this.startSize) || !isPow2(this.maxDirect) || this.maxDirect < this.startSize || maxIndex === 0 || maxIndex > 64) {
      throw new Damage("fractal heap header has impossible sizes");
    }
    this.checksummed = (flags & 0x02) !== 0;
    this.offsetBytes = Math.ceil(maxIndex / 8);
    this.lengthBytes = Math.min(Math.ceil(Math.log2(this.maxDirect) / 8), encodedSize(this.maxManaged));
    this.firstRowBits = Math.log2(this.startSize) + Math.log2(this.width);
    this.maxDirectRows = Math.log2(this.maxDirect) - Math.log2(this.startSize) + 2;
    this.maxRootRows = maxIndex - this.firstRowBits + 1;
    if (this.maxRootRows <= 0 || this.rootRows > this.maxRootRows) throw new Damage("fractal heap header has impossible sizes");
    this.tinyExtended = this.idLength - 1 > 17;
  }

  private rowSize(row: number): number {
    return row === 0 ? this.startSize : this.startSize * 2 ** (row - 1);
  }

  /** Row and column of heap offset `offset` in a doubling table (H5HF_dtable_lookup). */
  private locate(offset: number): { row: number; col: number } {
    if (offset < this.startSize * this.width) return { row: 0, col: Math.floor(offset / this.startSize) };
    const high = Math.floor(Math.log2(offset));
    const row = high - this.firstRowBits + 1;
    if (row >= this.maxRootRows) throw new Damage("fractal heap offset beyond the doubling table");
    return { row, col: Math.floor((offset - 2 ** high) / this.rowSize(row)) };
  }

  /** The bytes of the object whose heap ID starts at the cursor (H5HF_op). */
  object(id: Cursor): Uint8Array {
    const flags = id.u8();
    if ((flags & 0xc0) !== 0) throw new Damage("heap ID version is unknown");
    const kind = flags & 0x30;
    if (kind === 0x20) {
      const length = this.tinyExtended ? (((flags & 0x0f) << 8) | id.u8()) + 1 : (flags & 0x0f) + 1;
      return id.take(length);
    }
    if (kind === 0x10) throw new Unsupported("huge objects in a fractal heap");
    if (kind !== 0) throw new Damage("heap ID of an unknown type");
    const offset = id.uint(this.offsetBytes);
    const length = id.uint(this.lengthBytes);
    if (offset === 0 || offset > this.managedSize) throw new Damage("fractal heap object offset out of range");
    if (length === 0 || length > this.maxDirect || length > this.maxManaged) throw new Damage("fractal heap object size out of range");
    let blockAddress: number;
    let blockSize: number;
    let blockOffset: number;
    if (this.rootRows === 0) {
      blockAddress = this.rootAddress;
      blockSize = this.startSize;
      blockOffset = 0;
    } else {
      let iblock = this.indirectBlock(this.rootAddress, this.rootRows, 0, 0);
      let { row, col } = this.locate(offset);
      for (let depth = 0; row >= this.maxDirectRows; depth++) {
        if (depth > MAX_DEPTH) throw new Damage("fractal heap indirect blocks are too deep");
        if (row >= iblock.rows) throw new Damage("fractal heap offset beyond its indirect block");
        const rows = Math.log2(this.rowSize(row)) - this.firstRowBits + 1;
        const child = iblock.children[row * this.width + col]!;
        if (child === UNDEFINED) throw new Damage("fractal heap ID in an unallocated block");
        const childOffset = iblock.blockOffset + this.rowOffset(row) + col * this.rowSize(row);
        iblock = this.indirectBlock(child, rows, childOffset, depth + 1);
        ({ row, col } = this.locate(offset - iblock.blockOffset));
      }
      if (row >= iblock.rows) throw new Damage("fractal heap offset beyond its indirect block");
      blockAddress = iblock.children[row * this.width + col]!;
      if (blockAddress === UNDEFINED) throw new Damage("fractal heap ID not in an allocated direct block");
      blockSize = this.rowSize(row);
      blockOffset = iblock.blockOffset + this.rowOffset(row) + col * blockSize;
    }
    const block = this.directBlock(blockAddress, blockSize, blockOffset);
    const inBlock = offset - block.blockOffset;
    const overhead = 5 + (this.checksummed ? 4 : 0) + this.owner.offsetSize + this.offsetBytes;
    if (inBlock < overhead) throw new Damage("fractal heap object located in the prefix of its direct block");
    if (inBlock + length > blockSize) throw new Damage("fractal heap object overruns its direct block");
    return block.bytes.subarray(inBlock, inBlock + length);
  }

  /** Heap offset where row `row` of a doubling table starts. */
  private rowOffset(row: number): number {
    return row === 0 ? 0 : this.startSize * this.width * 2 ** (row - 1);
  }

  private indirectBlock(address: number, rows: number, blockOffset: number, depth: number): { blockOffset: number; rows: number; children: number[] } {
    const cached = this.indirect.get(address);
    if (cached) {
      if (cached.rows !== rows || cached.blockOffset !== blockOffset) throw new Damage("fractal heap indirect block used twice");
      return cached;
    }
    if (depth > MAX_DEPTH || rows > 64) throw new Damage("fractal heap indirect blocks are too deep");
    this.owner.count("fractal heap indirect block");
    const O = this.owner.offsetSize;
    const entries = rows * this.width;
    const length = 4 + 1 + O + this.offsetBytes + entries * O + 4;
    const c = this.owner.read(address, length, "fractal heap indirect block");
    c.signature("FHIB");
    if (c.u8() !== 0) throw new Damage("fractal heap indirect block version is unknown");
    if (c.address() !== this.address) throw new Damage("fractal heap indirect block belongs to another heap");
    if (c.uint(this.offsetBytes) !== blockOffset) throw new Damage("fractal heap indirect block has the wrong offset");
    this.owner.checksum(c.bytes, length - 4, "fractal heap indirect block");
    const children: number[] = [];
    for (let i = 0; i < entries; i++) children.push(c.address());
    const block = { blockOffset, rows, children };
    this.indirect.set(address, block);
    return block;
  }

  private directBlock(address: number, size: number, blockOffset: number): { blockOffset: number; bytes: Uint8Array } {
    const cached = this.direct.get(address);
    if (cached) {
      if (cached.bytes.length !== size || cached.blockOffset !== blockOffset) throw new Damage("fractal heap direct block used twice");
      return cached;
    }
    this.owner.count("fractal heap direct block");
    const c = this.owner.read(address, size, "fractal heap direct block");
    c.signature("FHDB");
    if (c.u8() !== 0) throw new Damage("fractal heap direct block version is unknown");
    if (c.address() !== this.address) throw new Damage("fractal heap direct block belongs to another heap");
    if (c.uint(this.offsetBytes) !== blockOffset) throw new Damage("fractal heap direct block has the wrong offset");
    if (this.checksummed) {
      // The checksum covers the whole block with its own field taken as zero.
      const at = c.pos;
      const copy = c.bytes.slice();
      const stored = (copy[at]! | (copy[at + 1]! << 8) | (copy[at + 2]! << 16) | (copy[at + 3]! << 24)) >>> 0;
      copy.fill(0, at, at + 4);
      if (lookup3(copy) !== stored) throw new Damage("fractal heap direct block: checksum mismatch");
    }
    const block = { blockOffset, bytes: c.bytes };
    this.direct.set(address, block);
    return block;
  }
}
