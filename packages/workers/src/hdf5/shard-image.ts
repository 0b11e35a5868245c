/**
 * The metadata of a new shard, laid out in TypeScript (docs/format.md section
 * 9): a flat root group of contiguous 1-D uint8 datasets. The file is
 *
 *   superblock v0 | root object header | local heap | group B-tree nodes |
 *   symbol table nodes | one object header per dataset | data, in order
 *
 * the same structures h5py writes by default ("earliest" library bounds), so
 * that HDF5 1.10 reads the file and can edit it in place (delete, create,
 * overwrite) as the Python store does. Every node is allocated at its full
 * size, so HDF5 can insert into it without moving it.
 */

const O = 8; // size of offsets
const L = 8; // size of lengths
const UNDEFINED = 0xffff_ffff_ffff_ffffn;

/** Group B-tree internal node K and symbol-table leaf K: HDF5's defaults. */
const GROUP_K = 16;
const LEAF_K = 4;
const SUPERBLOCK_SIZE = 96;
const ENTRY_SIZE = 2 * O + 24;
const SNOD_SIZE = 8 + 2 * LEAF_K * ENTRY_SIZE;
const BTREE_NODE_SIZE = 8 + 2 * O + 2 * GROUP_K * O + (2 * GROUP_K + 1) * L;
/** The root group's header has room to spare, so that h5py can add attributes without moving it. */
const ROOT_HEADER_SIZE = 16 + 256;
const HEAP_HEADER_SIZE = 32;

// One dataset's object header: prefix + dataspace + datatype + fill value + layout.
const DATASPACE_BODY = 24;
const DATATYPE_BODY = 16;
const FILL_BODY = 8;
const LAYOUT_BODY = 24;
const DATASET_HEADER_SIZE = 16 + 8 + DATASPACE_BODY + 8 + DATATYPE_BODY + 8 + FILL_BODY + 8 + LAYOUT_BODY;

export interface ShardEntry {
  name: string;
  length: number;
}

export interface ShardImage {
  /** Bytes [0, metadata.length) of the file. */
  metadata: Uint8Array;
  /** File offset of each entry's data (in the order given); data follow the metadata back to back. */
  offsets: number[];
  /** Size of the whole file. */
  size: number;
}

const encoder = new TextEncoder();

/** Lays out a shard holding `entries` (names unique) in the given data order. */
export function shardImage(entries: ShardEntry[]): ShardImage {
  const names = entries.map((e) => encoder.encode(e.name));
  for (const name of names) {
    if (name.length === 0 || name.includes(0) || name.includes(0x2f)) throw new Error(`invalid dataset name ${JSON.stringify(new TextDecoder().decode(name))}`);
  }
  // Symbols are sorted by name bytes (strcmp), as HDF5 looks them up.
  const sorted = entries.map((_, i) => i).sort((a, b) => Buffer.compare(names[a]!, names[b]!));
  for (let i = 1; i < sorted.length; i++) {
    if (Buffer.compare(names[sorted[i - 1]!]!, names[sorted[i]!]!) === 0) throw new Error(`dataset ${entries[sorted[i]!]!.name} given twice`);
  }

  // Local heap: "" at offset 0 (the B-tree's lowest key), then each name, 8-byte aligned.
  const heapOffsets: number[] = new Array(entries.length);
  let heapSize = 8;
  for (let i = 0; i < entries.length; i++) {
    heapOffsets[i] = heapSize;
    heapSize += align8(names[i]!.length + 1);
  }

  // Symbol table nodes of up to 2*LEAF_K sorted symbols, then B-tree levels of up to 2*GROUP_K children.
  const snodCount = Math.max(0, Math.ceil(sorted.length / (2 * LEAF_K)));
  const levels: number[] = []; // node count per B-tree level, leaves first
  for (let n = snodCount; ; ) {
    const nodes = Math.max(1, Math.ceil(n / (2 * GROUP_K)));
    levels.push(nodes);
    if (nodes === 1) break;
    n = nodes;
  }
  const btreeNodes = levels.reduce((a, b) => a + b, 0);

  const rootHeader = SUPERBLOCK_SIZE;
  const heapHeader = rootHeader + ROOT_HEADER_SIZE;
  const heapData = heapHeader + HEAP_HEADER_SIZE;
  const btreeStart = heapData + heapSize;
  const snodStart = btreeStart + btreeNodes * BTREE_NODE_SIZE;
  const headerStart = snodStart + snodCount * SNOD_SIZE;
  const dataStart = headerStart + entries.length * DATASET_HEADER_SIZE;

  const offsets: number[] = [];
  let end = dataStart;
  for (const entry of entries) {
    offsets.push(end);
    end += entry.length;
  }
  const image = new Uint8Array(dataStart);
  const view = new DataView(image.buffer);
  const u64 = (at: number, value: number | bigint) => view.setBigUint64(at, BigInt(value), true);

  // Superblock v0.
  image.set([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a], 0);
  // versions (superblock, free space, root symbol table, reserved, shared header) are 0
  image[13] = O;
  image[14] = L;
  view.setUint16(16, LEAF_K, true);
  view.setUint16(18, GROUP_K, true);
  // consistency flags (4) = 0
  u64(24, 0); // base address
  u64(32, UNDEFINED); // free-space info
  u64(40, end); // end of file
  u64(48, UNDEFINED); // driver info
  const rootBtree = btreeStart + (btreeNodes - 1) * BTREE_NODE_SIZE; // the root node is the last one
  // Root group symbol table entry: cached B-tree and heap addresses (cache type 1).
  u64(56, 0);
  u64(64, rootHeader);
  view.setUint32(72, 1, true);
  u64(80, rootBtree);
  u64(88, heapHeader);

  // Root group object header v1: a symbol table message, then free space as a NIL message.
  let at = rootHeader;
  image[at] = 1;
  view.setUint16(at + 2, 2, true); // messages
  view.setUint32(at + 4, 1, true); // reference count
  view.setUint32(at + 8, ROOT_HEADER_SIZE - 16, true);
  at += 16;
  at = message(view, at, 0x11, 0, 16);
  u64(at - 16, rootBtree);
  u64(at - 8, heapHeader);
  message(view, at, 0x00, 0, rootHeader + ROOT_HEADER_SIZE - at - 8);

  // Local heap.
  image.set(encoder.encode("HEAP"), heapHeader);
  u64(heapHeader + 8, heapSize);
  u64(heapHeader + 16, 1); // free list: none (H5HL_FREE_NULL)
  u64(heapHeader + 24, heapData);
  for (let i = 0; i < entries.length; i++) image.set(names[i]!, heapData + heapOffsets[i]!);

  // Symbol table nodes.
  const snodLastName: number[] = [];
  for (let s = 0; s < snodCount; s++) {
    const node = snodStart + s * SNOD_SIZE;
    const members = sorted.slice(s * 2 * LEAF_K, (s + 1) * 2 * LEAF_K);
    image.set(encoder.encode("SNOD"), node);
    image[node + 4] = 1;
    view.setUint16(node + 6, members.length, true);
    members.forEach((i, k) => {
      const entry = node + 8 + k * ENTRY_SIZE;
      u64(entry, heapOffsets[i]!);
      u64(entry + O, headerStart + i * DATASET_HEADER_SIZE);
    });
    snodLastName.push(heapOffsets[members.at(-1)!]!);
  }

  // Group B-tree, level by level. Each child spans (low key, high key]: the
  // low key is the name just before its first symbol ("" for the first).
  let children = Array.from({ length: snodCount }, (_, s) => ({ address: snodStart + s * SNOD_SIZE, high: snodLastName[s]! }));
  let nodeAddress = btreeStart;
  for (let level = 0; level < levels.length; level++) {
    const count = levels[level]!;
    const next: { address: number; high: number }[] = [];
    let low = 0;
    for (let n = 0; n < count; n++) {
      const node = nodeAddress + n * BTREE_NODE_SIZE;
      const members = children.slice(n * 2 * GROUP_K, (n + 1) * 2 * GROUP_K);
      image.set(encoder.encode("TREE"), node);
      image[node + 4] = 0; // group node
      image[node + 5] = level;
      view.setUint16(node + 6, members.length, true);
      u64(node + 8, n > 0 ? node - BTREE_NODE_SIZE : UNDEFINED);
      u64(node + 16, n < count - 1 ? node + BTREE_NODE_SIZE : UNDEFINED);
      let p = node + 24;
      u64(p, low);
      p += L;
      for (const child of members) {
        u64(p, child.address);
        u64(p + O, child.high);
        p += O + L;
      }
      const high = members.length > 0 ? members.at(-1)!.high : low;
      next.push({ address: node, high });
      low = high;
    }
    children = next;
    nodeAddress += count * BTREE_NODE_SIZE;
  }

  // One object header per dataset.
  entries.forEach((entry, i) => {
    let h = headerStart + i * DATASET_HEADER_SIZE;
    image[h] = 1;
    view.setUint16(h + 2, 4, true); // messages
    view.setUint32(h + 4, 1, true); // reference count
    view.setUint32(h + 8, DATASET_HEADER_SIZE - 16, true);
    h += 16;
    // Dataspace v1: rank 1, maximum dimensions present (= dimensions, as h5py writes).
    h = message(view, h, 0x01, 0, DATASPACE_BODY);
    image[h - DATASPACE_BODY] = 1;
    image[h - DATASPACE_BODY + 1] = 1;
    image[h - DATASPACE_BODY + 2] = 1;
    u64(h - 16, entry.length);
    u64(h - 8, entry.length);
    // Datatype: fixed-point v1, little-endian unsigned, 1 byte, offset 0, precision 8 (constant).
    h = message(view, h, 0x03, 1, DATATYPE_BODY);
    image[h - DATATYPE_BODY] = 0x10;
    view.setUint32(h - DATATYPE_BODY + 4, 1, true);
    view.setUint16(h - DATATYPE_BODY + 10, 8, true);
    // Fill value v2: allocation late, fill on allocation, no fill value defined (constant).
    h = message(view, h, 0x05, 1, FILL_BODY);
    image[h - FILL_BODY] = 2;
    image[h - FILL_BODY + 1] = 2;
    // Layout v3, contiguous: address and size (an empty dataset has no storage).
    h = message(view, h, 0x08, 0, LAYOUT_BODY);
    image[h - LAYOUT_BODY] = 3;
    image[h - LAYOUT_BODY + 1] = 1;
    u64(h - LAYOUT_BODY + 2, entry.length > 0 ? offsets[i]! : UNDEFINED);
    u64(h - LAYOUT_BODY + 10, entry.length);
  });

  return { metadata: image, offsets, size: end };
}

/** Writes a v1 message header at `at`; returns the end of its (zeroed) body. */
function message(view: DataView, at: number, type: number, flags: number, size: number): number {
  view.setUint16(at, type, true);
  view.setUint16(at + 2, size, true);
  view.setUint8(at + 4, flags);
  return at + 8 + size;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

/** The size of the file shardImage() would lay out for `entries`, computed without building it. */
export function shardImageSize(entries: ShardEntry[]): number {
  let heapSize = 8;
  let data = 0;
  for (const entry of entries) {
    heapSize += align8(Buffer.byteLength(entry.name) + 1);
    data += entry.length;
  }
  const snodCount = Math.ceil(entries.length / (2 * LEAF_K));
  let btreeNodes = 0;
  for (let n = snodCount; ; ) {
    const nodes = Math.max(1, Math.ceil(n / (2 * GROUP_K)));
    btreeNodes += nodes;
    if (nodes === 1) break;
    n = nodes;
  }
  return SUPERBLOCK_SIZE + ROOT_HEADER_SIZE + HEAP_HEADER_SIZE + heapSize + btreeNodes * BTREE_NODE_SIZE + snodCount * SNOD_SIZE + entries.length * DATASET_HEADER_SIZE + data;
}

/**
 * Sorts in row-major order of chunk dataset names ("2.9" before "2.10");
 * names that are not all digits and dots sort by their text, after those.
 */
export function sortByDatasetName<T extends { name: string }>(items: T[]): void {
  const keys = new Map<string, number[] | null>();
  for (const item of items) {
    if (keys.has(item.name)) continue;
    const parts = item.name.split(".");
    keys.set(item.name, parts.every((p) => /^\d{1,15}$/.test(p)) ? parts.map(Number) : null);
  }
  items.sort((a, b) => {
    const ka = keys.get(a.name)!;
    const kb = keys.get(b.name)!;
    if (ka && kb) {
      for (let i = 0; i < Math.min(ka.length, kb.length); i++) if (ka[i] !== kb[i]) return ka[i]! - kb[i]!;
      return ka.length - kb.length;
    }
    if (ka || kb) return ka ? -1 : 1;
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  });
}
