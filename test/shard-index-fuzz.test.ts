/**
 * Damaged shards: the index (indexShardFile) either throws a CorruptShardError
 * naming the file, or returns { ok: false } (h5wasm then reads the shard), or
 * returns an index whose every placed dataset holds exactly the bytes h5py
 * reads from that same damaged file, and that lists every link h5py opens as
 * a dataset. Never another exception, never a hang, never a read (so never
 * an allocation) larger than the file.
 *
 * The damage: truncations at every boundary of every structure the index
 * reads (plain, and with the superblock's end-of-file address moved to the
 * cut so the file still "opens"), a sweep of other lengths, and seeded
 * random changes to metadata bytes (anything outside a placed dataset's
 * bytes): byte and bit flips, off-by-one counts, addresses made undefined or
 * zero, swapped runs (entries out of order), and changes behind a checksum
 * with the checksum made right again so that they reach the decoder.
 *
 * h5py reads all damaged files of a batch in one Python process. Environment:
 * H5NEST_FUZZ_CASES, the number of random-damage cases (default 4000; the
 * truncations, about 13000, come on top: about 30 s in all);
 * H5NEST_FUZZ_SEED, the seed; H5NEST_FUZZ_KEEP, a folder to keep the files
 * of failing cases in (with cases.txt saying what each one is).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { CorruptShardError, type IndexOutcome, indexShardFile } from "@h5nest/workers";
import { createV2Array, H5NestedStore } from "h5nest";
// Internals, to learn which byte ranges the index reads (the structures worth damaging) and to forge checksums.
import { FileWindow } from "../packages/workers/dist/hdf5/bytes.js";
import { lookup3 } from "../packages/workers/dist/hdf5/lookup3.js";
import { sha256 } from "./helpers/arrays.ts";
import { fillArray } from "./helpers/data.ts";
import { requirePython } from "./helpers/python.ts";
import { tempDir } from "./helpers/tmp.ts";
import { compareWithH5py, type DamagedRead, describeFiles, makeFlavours, readWithH5py } from "./python/h5py-reference.ts";

const RANDOM_CASES = Number(process.env.H5NEST_FUZZ_CASES ?? 4000);
const SEED = Number(process.env.H5NEST_FUZZ_SEED ?? 20240601);
const KEEP = process.env.H5NEST_FUZZ_KEEP;
/** An index call on a file of this size takes a few milliseconds; this leaves room for a slow CI machine, not for a loop. */
const MAX_INDEX_MS = 200;
const BATCH = 400;

/** The files damaged, with their share of the random cases: make_flavours.py flavours, and a shard h5nest writes ("h5nest-shard"). */
const TARGETS: { flavour: string; why: string; weight: number }[] = [
  { flavour: "h5nest-shard", why: "a shard as h5nest writes it (superblock 0, old-style group, 64 datasets)", weight: 2 },
  { flavour: "earliest-sym-k2", why: "old-style group: v1 B-tree of several levels, symbol nodes, local heap; no checksums", weight: 3 },
  { flavour: "earliest-small", why: "old-style group, one symbol node", weight: 1 },
  { flavour: "earliest-offsets8-lengths4", why: "old-style group with 4-byte lengths and a soft link", weight: 1 },
  { flavour: "latest-dense-200", why: "dense new-style group: fractal heap with an indirect block, v2 B-tree of two levels", weight: 3 },
  { flavour: "v1-continuations", why: "v1 object headers with continuation blocks", weight: 2 },
  { flavour: "v2-continuations", why: "v2 object headers with continuation blocks", weight: 1 },
  { flavour: "v108-compact-links", why: "link messages in a v2 object header", weight: 1 },
  { flavour: "earliest-opaque", why: "OPAQUE scalars of many sizes, old-style group", weight: 1 },
  { flavour: "compact-layout-earliest", why: "compact datasets: data inside v1 object headers", weight: 1 },
  { flavour: "userblock", why: "userblock before a version 0 superblock", weight: 1 },
  { flavour: "userblock-latest", why: "userblock before a version 3 superblock", weight: 1 },
];

/** Signatures of structures whose last 4 bytes are a lookup3 checksum of the rest. */
const TAIL_CHECKSUMMED = new Set(["OHDR", "OCHK", "BTHD", "BTIN", "BTLF", "FRHP", "FHIB"]);

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Superblock {
  start: number;
  version: number;
  offsets: number;
  /** File offset of the end-of-file address field. */
  eofField: number;
  /** Bytes the checksum of a version 2/3 superblock covers (it follows them). */
  checksummed: number | null;
}

function superblockOf(bytes: Uint8Array): Superblock {
  const signature = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a];
  for (let start = 0; start + 8 <= bytes.length; start = start === 0 ? 512 : start * 2) {
    if (!signature.every((b, i) => bytes[start + i] === b)) continue;
    const version = bytes[start + 8]!;
    if (version <= 1) {
      const offsets = bytes[start + 13]!;
      return { start, version, offsets, eofField: start + (version === 0 ? 24 : 28) + 2 * offsets, checksummed: null };
    }
    const offsets = bytes[start + 9]!;
    return { start, version, offsets, eofField: start + 12 + 2 * offsets, checksummed: 12 + 4 * offsets };
  }
  throw new Error("no superblock");
}

function writeUint(bytes: Uint8Array, at: number, width: number, value: number): void {
  for (let i = 0; i < width; i++) {
    bytes[at + i] = value % 256;
    value = Math.floor(value / 256);
  }
}

function readUint(bytes: Uint8Array, at: number, width: number): number {
  let value = 0;
  for (let i = width - 1; i >= 0; i--) value = value * 256 + bytes[at + i]!;
  return value;
}

function readU32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

/** A checksummed structure: the checksum at `at` covers [start, end) with its own 4 bytes taken as zero when inside. */
interface Checksummed {
  start: number;
  end: number;
  at: number;
}

function fixChecksum(bytes: Uint8Array, s: Checksummed): void {
  const covered = bytes.slice(s.start, s.end);
  if (s.at < s.end) covered.fill(0, s.at - s.start, s.at - s.start + 4);
  writeUint(bytes, s.at, 4, lookup3(covered));
}

/** What the damage starts from: the intact file, what the index reads of it, and where its data lies. */
interface Target {
  flavour: string;
  bytes: Uint8Array;
  /** The intact file's index. */
  outcome: IndexOutcome & { ok: true };
  reads: Read[];
  superblock: Superblock;
  /** Start and end of every structure the index reads, and of every placed dataset. */
  boundaries: number[];
  /** Metadata bytes the index reads (outside placed data). */
  readPositions: number[];
  /** Every byte outside placed data. */
  metadataPositions: number[];
  checksummed: Checksummed[];
}

/** Records every FileWindow.read (offset, length) while `body` runs. */
interface Read {
  offset: number;
  length: number;
  /** What the index was reading ("local heap", `object header of "0.0"`, ...). */
  what: string;
}

function recordReads<T>(body: () => T): { result: T; reads: Read[] } {
  const reads: Read[] = [];
  const original = FileWindow.prototype.read;
  FileWindow.prototype.read = function (this: FileWindow, offset: number, length: number, what: string) {
    reads.push({ offset, length, what });
    return original.call(this, offset, length, what);
  };
  try {
    return { result: body(), reads };
  } finally {
    FileWindow.prototype.read = original;
  }
}

function placedRanges(outcome: IndexOutcome): { offset: number; length: number }[] {
  if (!outcome.ok) return [];
  return [...outcome.index.datasets.values()].filter((p): p is { offset: number; length: number } => !("unplaced" in p));
}

function prepareTarget(file: string, flavour: string): Target {
  const bytes = new Uint8Array(fs.readFileSync(file));
  const { result: outcome, reads } = recordReads(() => indexShardFile(file));
  assert.ok(outcome.ok, `${flavour} indexes`);
  const data = new Uint8Array(bytes.length);
  for (const p of placedRanges(outcome)) data.fill(1, p.offset, p.offset + p.length);
  const superblock = superblockOf(bytes);
  const boundaries = new Set<number>([superblock.start, superblock.eofField]);
  const read = new Uint8Array(bytes.length);
  const largest = new Map<number, number>();
  for (const r of reads) {
    boundaries.add(r.offset).add(r.offset + r.length);
    read.fill(1, r.offset, r.offset + r.length);
    largest.set(r.offset, Math.max(largest.get(r.offset) ?? 0, r.length));
  }
  for (const p of placedRanges(outcome)) boundaries.add(p.offset).add(p.offset + p.length);
  const checksummed: Checksummed[] = [];
  if (superblock.checksummed !== null) {
    checksummed.push({ start: superblock.start, end: superblock.start + superblock.checksummed, at: superblock.start + superblock.checksummed });
  }
  const O = superblock.offsets;
  for (const [start, length] of largest) {
    const signature = String.fromCharCode(...bytes.subarray(start, start + 4));
    const end = start + length;
    if (TAIL_CHECKSUMMED.has(signature) && length > 8 && lookup3(bytes.subarray(start, end - 4)) === readU32(bytes, end - 4)) {
      checksummed.push({ start, end: end - 4, at: end - 4 });
    } else if (signature === "FHDB") {
      // The checksum follows the heap address and a block offset of 1 to 8 bytes; find which by trying.
      for (let width = 1; width <= 8; width++) {
        const candidate = { start, end, at: start + 5 + O + width };
        const copy = bytes.slice(start, end);
        copy.fill(0, candidate.at - start, candidate.at - start + 4);
        if (lookup3(copy) === readU32(bytes, candidate.at)) {
          checksummed.push(candidate);
          break;
        }
      }
    }
  }
  const readPositions: number[] = [];
  const metadataPositions: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    if (data[i]) continue;
    metadataPositions.push(i);
    if (read[i]) readPositions.push(i);
  }
  return { flavour, bytes, outcome, reads, superblock, boundaries: [...boundaries].sort((a, b) => a - b), readPositions, metadataPositions, checksummed };
}

/** One damaged file: its bytes are made when its batch runs (a full run holds tens of thousands). */
interface Case {
  name: string;
  make(): Uint8Array;
}

function truncations(target: Target, sweep: number): Case[] {
  const size = target.bytes.length;
  const lengths = new Set<number>();
  for (const b of target.boundaries) for (const d of [-1, 0, 1]) if (b + d > 0 && b + d < size) lengths.add(b + d);
  const step = Math.max(1, Math.floor(size / sweep));
  for (let n = 1; n < size; n += step) lengths.add(n);
  const cases: Case[] = [];
  const sb = target.superblock;
  for (const length of [...lengths].sort((a, b) => a - b)) {
    cases.push({ name: `${target.flavour} cut at ${length}`, make: () => target.bytes.slice(0, length) });
    // The same cut with the superblock saying the file ends there: HDF5 then opens it and meets the missing structures.
    const fieldsEnd = sb.checksummed === null ? sb.eofField + sb.offsets : sb.start + sb.checksummed + 4;
    if (length >= fieldsEnd) {
      cases.push({
        name: `${target.flavour} cut at ${length}, end-of-file address moved there`,
        make: () => {
          const bytes = target.bytes.slice(0, length);
          writeUint(bytes, sb.eofField, sb.offsets, length - sb.start + readUint(target.bytes, sb.eofField - sb.offsets * 2, sb.offsets));
          if (sb.checksummed !== null) fixChecksum(bytes, { start: sb.start, end: sb.start + sb.checksummed, at: sb.start + sb.checksummed });
          return bytes;
        },
      });
    }
  }
  return cases;
}

/** One byte of damage: the value written at a file offset. */
interface Change {
  at: number;
  value: number;
}

function randomDamage(target: Target, random: () => number, count: number): Case[] {
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)]!;
  const cases: Case[] = [];
  const data = new Set<number>();
  for (let i = 0, j = 0; i < target.bytes.length; i++) {
    if (target.metadataPositions[j] === i) j++;
    else data.add(i);
  }
  const writable = (at: number) => at >= 0 && at < target.bytes.length && !data.has(at);
  for (let n = 0; n < count; n++) {
    // Planned on a scratch copy so that later changes see earlier ones; only the list of changes is kept.
    const bytes = target.bytes.slice();
    const changes: Change[] = [];
    const kind = random();
    const position = random() < 0.8 && target.readPositions.length ? pick(target.readPositions) : pick(target.metadataPositions);
    const change = (at: number, value: number) => {
      if (!writable(at) || bytes[at] === value) return;
      changes.push({ at, value });
      bytes[at] = value;
    };
    let fixed: Checksummed | undefined;
    if (kind < 0.25) change(position, bytes[position]! ^ (1 + Math.floor(random() * 255)));
    else if (kind < 0.4) change(position, bytes[position]! ^ (1 << Math.floor(random() * 8)));
    else if (kind < 0.5) change(position, (bytes[position]! + (random() < 0.5 ? 1 : 255)) % 256);
    else if (kind < 0.6) {
      // An address or length made all-ones ("undefined") or zero.
      const value = random() < 0.5 ? 0xff : 0;
      const width = pick([2, 4, 8]);
      for (let i = 0; i < width; i++) change(position + i, value);
    } else if (kind < 0.68) {
      for (let i = 0; i < 2 + Math.floor(random() * 3); i++) {
        const at = position + Math.floor(random() * 64) - 32;
        if (writable(at)) change(at, bytes[at]! ^ (1 + Math.floor(random() * 255)));
      }
    } else if (kind < 0.78) {
      // Two runs of a structure swapped (entries, keys or records out of order), in 4-byte steps.
      const width = pick([4, 8, 16, 24, 40]);
      const other = position + (random() < 0.5 ? -1 : 1) * width * (1 + Math.floor(random() * 4));
      const a = bytes.slice(position, position + width);
      const b = bytes.slice(other, other + width);
      if (other >= 0 && a.length === width && b.length === width) {
        for (let i = 0; i < width; i++) {
          change(position + i, b[i]!);
          change(other + i, a[i]!);
        }
      }
    } else if (target.checksummed.length) {
      // A change behind a checksum, with the checksum made right again.
      fixed = pick(target.checksummed);
      const inside = (at: number) => at >= fixed!.start && at < fixed!.end && (at < fixed!.at || at >= fixed!.at + 4);
      let at = fixed.start + Math.floor(random() * (fixed.end - fixed.start));
      for (let tries = 0; tries < 16 && !(inside(at) && writable(at)); tries++) at = fixed.start + Math.floor(random() * (fixed.end - fixed.start));
      if (inside(at)) {
        if (random() < 0.5) change(at, bytes[at]! ^ (1 << Math.floor(random() * 8)));
        else change(at, bytes[at]! ^ (1 + Math.floor(random() * 255)));
      }
    } else {
      change(position, bytes[position]! ^ 0x55);
    }
    if (!changes.length) {
      n--;
      continue;
    }
    const checksum = fixed;
    cases.push({
      name: `${target.flavour} bytes ${changes.map((c) => `${c.at}:${target.bytes[c.at]!.toString(16)}>${c.value.toString(16)}`).join(",")}${checksum ? ` (checksum at ${checksum.at} fixed)` : ""}`,
      make: () => {
        const damaged = target.bytes.slice();
        for (const c of changes) damaged[c.at] = c.value;
        if (checksum) fixChecksum(damaged, checksum);
        return damaged;
      },
    });
  }
  return cases;
}

/** Writes one shard of 64 chunks of 16 bytes with an H5NestedStore and copies it to `file`. */
async function writeH5nestShard(file: string, root: string): Promise<void> {
  const store = await H5NestedStore.open(root, { workers: 1 });
  try {
    const vol = await createV2Array(store, "vol", { shape: [1, 64, 16], chunks: [1, 8, 2], dtype: "|u1", compressor: null });
    await fillArray(vol, "|u1");
  } finally {
    await store.close();
  }
  await fsp.copyFile(path.join(root, "vol/0.h5"), file);
}

/** How much one index call reads and allocates: each read(2) buffer is allocated for it. */
const io = { limit: Infinity, largest: 0, total: 0 };
const realReadSync = fs.readSync;

function instrumentReads(): () => void {
  fs.readSync = function (fd: number, buffer: NodeJS.ArrayBufferView, ...rest: unknown[]) {
    io.largest = Math.max(io.largest, buffer.byteLength);
    if (buffer.byteLength > io.limit) throw new Error(`a read buffer of ${buffer.byteLength} bytes for a file of ${io.limit}`);
    const n = (realReadSync as (...args: unknown[]) => number)(fd, buffer, ...rest);
    io.total += n;
    return n;
  } as typeof fs.readSync;
  return () => {
    fs.readSync = realReadSync;
  };
}

type Verdict = "corrupt" | "not indexed" | "nothing placed" | "agrees with h5py";

test("damaged shards: a CorruptShardError, { ok: false }, or exactly the bytes h5py reads", { timeout: 15 * 60_000 }, async (t) => {
  if (!(await requirePython(t))) return;
  const started = performance.now();
  const dir = await tempDir(t, "h5nest-fuzz-");
  const originals = path.join(dir, "originals");
  await makeFlavours(originals, TARGETS.map((x) => x.flavour).filter((f) => f !== "h5nest-shard"));
  await writeH5nestShard(path.join(originals, "h5nest-shard.h5"), path.join(dir, "store"));
  const targets = TARGETS.map(({ flavour }) => prepareTarget(path.join(originals, `${flavour}.h5`), flavour));

  // The intact files agree with h5py (else every damaged case would be suspect), and hold the structures named in TARGETS.
  const views = await describeFiles(targets.map((x) => path.join(originals, `${x.flavour}.h5`)));
  for (const target of targets) {
    const file = path.join(originals, `${target.flavour}.h5`);
    assert.deepEqual(compareWithH5py(file, indexShardFile(file), views[file]!), []);
  }
  const signatures = (flavour: string) => {
    const target = targets.find((x) => x.flavour === flavour)!;
    return new Set(target.checksummed.map((c) => String.fromCharCode(...target.bytes.subarray(c.start, c.start + 4))));
  };
  assert.ok(signatures("latest-dense-200").has("BTIN"), "the dense group's v2 B-tree has internal nodes");
  assert.ok(signatures("latest-dense-200").has("FHIB"), "the dense group's fractal heap has an indirect block");
  assert.ok(signatures("v2-continuations").has("OCHK"), "v2 continuation blocks");

  // Every boundary cut (and a sweep of 50 other lengths per file), then the random damage, shared out by weight.
  const random = mulberry32(SEED);
  const cases: Case[] = targets.flatMap((target) => truncations(target, 50));
  const cuts = cases.length;
  const totalWeight = TARGETS.reduce((n, x) => n + x.weight, 0);
  targets.forEach((target, i) => cases.push(...randomDamage(target, random, Math.round((RANDOM_CASES * TARGETS[i]!.weight) / totalWeight))));

  const verdicts = new Map<Verdict, number>();
  const failures: string[] = [];
  let slowest = { ms: 0, name: "" };
  let largestRatio = 0;
  // Taken after the first batch: the growth from there on would be a leak, not the warm-up of buffers and caches.
  let rssBefore = 0;
  const restore = instrumentReads();
  t.after(restore);
  // Thousands of small files are written and removed: in memory (/dev/shm) where there is one.
  const work = await fsp.mkdtemp(path.join(fs.existsSync("/dev/shm") ? "/dev/shm" : dir, "h5nest-fuzz-cases-"));
  t.after(() => fsp.rm(work, { recursive: true, force: true }));

  const fail = async (c: Case, file: string, why: string) => {
    failures.push(`${c.name}: ${why}`);
    if (KEEP) {
      await fsp.mkdir(KEEP, { recursive: true });
      await fsp.copyFile(file, path.join(KEEP, `case-${failures.length}.h5`));
      await fsp.appendFile(path.join(KEEP, "cases.txt"), `case-${failures.length}.h5 ${c.name}: ${why}\n`);
    }
  };

  for (let b = 0; b < cases.length; b += BATCH) {
    const batch = cases.slice(b, b + BATCH);
    const files = batch.map((_, i) => path.join(work, `case-${b + i}.h5`));
    const contents = batch.map((c) => c.make());
    await Promise.all(batch.map((_, i) => fsp.writeFile(files[i]!, contents[i]!)));
    const ask: { index: number; outcome: IndexOutcome & { ok: true } }[] = [];
    for (let i = 0; i < batch.length; i++) {
      const c = batch[i]!;
      const file = files[i]!;
      const size = contents[i]!.length;
      io.limit = size;
      io.total = 0;
      io.largest = 0;
      const t0 = performance.now();
      let outcome: IndexOutcome | undefined;
      let thrown: unknown;
      try {
        outcome = indexShardFile(file);
      } catch (error) {
        thrown = error;
      }
      let ms = performance.now() - t0;
      largestRatio = Math.max(largestRatio, io.total / Math.max(size, 1));
      // A garbage collection or a busy machine can stall one call; a slow path in the index stalls every call on that file.
      for (let retry = 0; retry < 3 && ms > MAX_INDEX_MS / 4; retry++) {
        const again = performance.now();
        try {
          indexShardFile(file);
        } catch {
          // the verdict is the first call's
        }
        ms = Math.min(ms, performance.now() - again);
      }
      if (ms > slowest.ms) slowest = { ms, name: c.name };
      if (thrown !== undefined) {
        if (!(thrown instanceof CorruptShardError)) await fail(c, file, `threw ${thrown instanceof Error ? (thrown.stack ?? thrown.message) : String(thrown)}`);
        else if (thrown.file !== file || !thrown.detail) await fail(c, file, `CorruptShardError names ${thrown.file}: ${thrown.detail}`);
        // indexShard turns a stray RangeError into a CorruptShardError as a last resort; every damage should meet a check first.
        else if (/^metadata out of range/.test(thrown.detail)) await fail(c, file, `damage found by a RangeError, not a check: ${thrown.detail}`);
        else verdicts.set("corrupt", (verdicts.get("corrupt") ?? 0) + 1);
        continue;
      }
      if (!outcome!.ok) verdicts.set("not indexed", (verdicts.get("not indexed") ?? 0) + 1);
      else if (placedRanges(outcome!).length === 0) verdicts.set("nothing placed", (verdicts.get("nothing placed") ?? 0) + 1);
      else ask.push({ index: i, outcome: outcome as IndexOutcome & { ok: true } });
    }

    // One Python process for the whole batch.
    const answers = await readWithH5py(
      ask.map(({ index, outcome }) => ({
        path: files[index]!,
        names: [...outcome.index.datasets].filter(([, p]) => !("unplaced" in p)).map(([name]) => name),
      })),
    );
    const byPath = new Map<string, DamagedRead>(answers.map((a) => [a.path, a]));
    for (const { index, outcome } of ask) {
      const c = batch[index]!;
      const file = files[index]!;
      const answer = byPath.get(file);
      const problems = answer ? disagreements(contents[index]!, outcome, answer) : ["h5py gave no answer"];
      if (problems.length) await fail(c, file, problems.slice(0, 4).join("; "));
      else verdicts.set("agrees with h5py", (verdicts.get("agrees with h5py") ?? 0) + 1);
    }
    await Promise.all(files.map((f) => fsp.rm(f)));
    if (b === 0) rssBefore = process.memoryUsage().rss;
  }
  restore();
  const rssGrowth = process.memoryUsage().rss - rssBefore;
  const seconds = (performance.now() - started) / 1000;
  t.diagnostic(`${cases.length} damaged files (${cuts} cut short, seed ${SEED}) in ${seconds.toFixed(1)} s: ${JSON.stringify(Object.fromEntries(verdicts))}`);
  t.diagnostic(`slowest index call ${slowest.ms.toFixed(1)} ms (${slowest.name}); most read per call ${largestRatio.toFixed(2)}x the file; RSS grew ${(rssGrowth / 2 ** 20).toFixed(0)} MiB`);

  assert.deepEqual(failures, [], `${failures.length} of ${cases.length} damaged files (seed ${SEED}):\n${failures.slice(0, 30).join("\n")}`);
  assert.ok(cases.length - cuts >= Math.min(RANDOM_CASES, 2000) && cuts >= 1000, `${cuts} cuts and ${cases.length - cuts} random cases`);
  assert.ok(slowest.ms < MAX_INDEX_MS, `an index call took ${slowest.ms.toFixed(0)} ms: ${slowest.name}`);
  // The page cache may read a whole 16 KiB page for a small structure; beyond that, nothing is read twice over.
  assert.ok(largestRatio < 4, `an index call read ${largestRatio.toFixed(1)}x its file`);
  assert.ok(rssGrowth < 256 * 2 ** 20, `RSS grew by ${rssGrowth} bytes`);
});

/** Where the index disagrees with h5py on one damaged file (empty when it does not). */
function disagreements(bytes: Uint8Array, outcome: IndexOutcome & { ok: true }, answer: DamagedRead): string[] {
  if ("died" in answer) return [`h5py ${answer.died} (${answer.detail}) on a file the index placed datasets of`];
  if (answer.open !== null) return [`h5py cannot open it (${answer.open}), the index placed datasets`];
  const problems: string[] = [];
  for (const [name, place] of outcome.index.datasets) {
    if ("unplaced" in place) continue;
    const read = answer.reads[name];
    const ours = sha256(bytes.subarray(place.offset, place.offset + place.length));
    if (read === undefined || read.startsWith("error")) problems.push(`"${name}" placed at ${place.offset}+${place.length}, h5py: ${read}`);
    else if (read !== ours) problems.push(`"${name}" placed at ${place.offset}+${place.length}: not the bytes h5py reads`);
  }
  // A link h5py opens as a dataset must be listed (else its chunk would read as missing); the index may leave out groups and named types.
  for (const [name, cls] of Object.entries(answer.classes)) {
    if (cls === "dataset" && !outcome.index.datasets.has(name)) problems.push(`"${name}" is a dataset to h5py but not listed`);
  }
  for (const name of outcome.index.datasets.keys()) {
    if (answer.keys !== null && !answer.keys.includes(name)) problems.push(`"${name}" listed but not among h5py's links`);
  }
  return problems;
}

/** The largest read the index made of a structure labelled `what` (the `nth` such structure in file order of reading). */
function structure(target: Target, what: string | RegExp, nth = 0): Read {
  const matches = (r: Read) => (typeof what === "string" ? r.what === what : what.test(r.what));
  const starts = [...new Set(target.reads.filter(matches).map((r) => r.offset))];
  const offset = starts[nth];
  assert.ok(offset !== undefined, `${target.flavour}: no ${what} #${nth}`);
  const length = Math.max(...target.reads.filter((r) => matches(r) && r.offset === offset).map((r) => r.length));
  return { offset, length, what: String(what) };
}

/** The messages of chunk 0 of the version 1 object header at `header`: type, and where the message and its body start. */
function v1Messages(bytes: Uint8Array, header: number): { type: number; at: number; body: number; size: number }[] {
  const out: { type: number; at: number; body: number; size: number }[] = [];
  const end = header + 16 + readUint(bytes, header + 8, 4);
  for (let at = header + 16; at + 8 <= end; ) {
    const type = readUint(bytes, at, 2);
    const size = readUint(bytes, at + 2, 2);
    out.push({ type, at, body: at + 8, size });
    at += 8 + size;
  }
  return out;
}

/** Where the datasets' version 1 object headers start (the index reads each one's 16-byte prefix). */
function v1Headers(target: Target): number[] {
  return [...new Set(target.reads.filter((r) => /^object header of /.test(r.what) && r.length === 16 && target.bytes[r.offset] === 1).map((r) => r.offset))];
}

function message(bytes: Uint8Array, header: number, type: number): { at: number; body: number; size: number } {
  const found = v1Messages(bytes, header).find((m) => m.type === type);
  assert.ok(found, `message ${type} in the header at ${header}`);
  return found;
}

/**
 * Damage made on purpose, each of a kind HDF5 rejects, each aimed at one check
 * of the index. `loops`: HDF5 1.10 never returns on it (it walks the cycle
 * for ever, allocating as it goes), so h5py is not asked; the index must
 * still answer at once.
 */
const CRAFTED: { flavour: string; damage: string; detail: RegExp; loops?: true; make(bytes: Uint8Array, target: Target): void }[] = [
  {
    flavour: "earliest-small",
    damage: "a message flagged both shared and not shareable",
    detail: /bad flag combination/,
    make: (bytes, t) => void (bytes[structure(t, 'object header of "0.0"').offset + 16 + 4] = 0x06),
  },
  {
    flavour: "earliest-small",
    damage: "a datatype message of version 0",
    detail: /datatype message version/,
    make: (bytes, t) => {
      const at = message(bytes, structure(t, 'object header of "0.0"').offset, 3).body;
      bytes[at] = bytes[at]! & 0x0f;
    },
  },
  {
    flavour: "earliest-small",
    damage: "a dataspace message of version 0",
    detail: /dataspace message version/,
    make: (bytes, t) => void (bytes[message(bytes, structure(t, 'object header of "0.1"').offset, 1).body] = 0),
  },
  {
    flavour: "earliest-small",
    damage: "a fill value message of version 9",
    detail: /fill value message version/,
    make: (bytes, t) => void (bytes[message(bytes, structure(t, 'object header of "0.2"').offset, 5).body] = 9),
  },
  {
    flavour: "earliest-small",
    damage: "a dataset's layout message made a null message (HDF5 still opens it as a dataset)",
    detail: /no layout message/,
    make: (bytes, t) => void writeUint(bytes, message(bytes, structure(t, 'object header of "1.0"').offset, 8).at, 2, 0),
  },
  {
    flavour: "earliest-small",
    damage: 'a name with "/" in it',
    detail: /"\/"/,
    make: (bytes, t) => {
      const heap = structure(t, "local heap data");
      const name = Buffer.from(bytes.buffer, bytes.byteOffset + heap.offset, heap.length).indexOf("0.2\0");
      assert.ok(name >= 0);
      bytes[heap.offset + name + 1] = 0x2f;
    },
  },
  {
    flavour: "earliest-small",
    damage: "two symbol table entries swapped (out of name order)",
    detail: /cannot be found by name/,
    make: (bytes, t) => {
      const node = structure(t, "symbol table node").offset + 8;
      const size = t.superblock.offsets + 8 + 24; // lengths are 8 bytes here too
      const first = bytes.slice(node, node + size);
      bytes.copyWithin(node, node + size, node + 2 * size);
      bytes.set(first, node + size);
    },
  },
  {
    flavour: "earliest-sym-k2",
    damage: "a group B-tree key made the empty name",
    detail: /cannot be found by name/,
    make: (bytes, t) => writeUint(bytes, structure(t, "group B-tree node").offset + 8 + 16 + 8 + 8, 8, 0),
  },
  {
    flavour: "earliest-small",
    damage: "a local heap free block running past the heap",
    detail: /free list/,
    make: (bytes, t) => {
      const heap = structure(t, "local heap").offset;
      const free = readUint(bytes, heap + 16, 8);
      const size = readUint(bytes, heap + 8, 8);
      assert.notEqual(free, 1, "the heap has a free block");
      writeUint(bytes, readUint(bytes, heap + 24, 8) + t.superblock.start + free + 8, 8, size);
    },
  },
  {
    flavour: "earliest-small",
    damage: "a local heap free list that loops",
    detail: /free list loops/,
    loops: true,
    make: (bytes, t) => {
      const heap = structure(t, "local heap").offset;
      const free = readUint(bytes, heap + 16, 8);
      assert.notEqual(free, 1, "the heap has a free block");
      writeUint(bytes, readUint(bytes, heap + 24, 8) + t.superblock.start + free, 8, free);
    },
  },
  {
    flavour: "v1-continuations",
    damage: "a continuation back into the chunk that holds it",
    detail: /continuation blocks form a loop/,
    loops: true,
    make: (bytes, t) => {
      const header = v1Headers(t).find((h) => v1Messages(bytes, h).some((m) => m.type === 0x10));
      assert.ok(header !== undefined, "a dataset header with a continuation");
      const cont = message(bytes, header, 0x10).body;
      writeUint(bytes, cont, 8, header + 16 - t.superblock.start);
      writeUint(bytes, cont + 8, 8, readUint(bytes, header + 8, 4));
    },
  },
  {
    flavour: "v1-continuations",
    damage: "a continuation block at another object's header (one address, two kinds of structure to HDF5's metadata cache)",
    detail: /is also a/,
    make: (bytes, t) => {
      const headers = v1Headers(t);
      const holder = headers.find((h) => v1Messages(bytes, h).some((m) => m.type === 0x10))!;
      const other = headers.find((h) => h !== holder)!;
      // 8 messages make the other header's prefix read as one well-formed 8-byte message, so only the shared address is wrong.
      writeUint(bytes, other + 2, 2, 8);
      const cont = message(bytes, holder, 0x10).body;
      writeUint(bytes, cont, 8, other - t.superblock.start);
      writeUint(bytes, cont + 8, 8, 16 + readUint(bytes, other + 8, 4));
    },
  },
  {
    flavour: "userblock",
    damage: "a base address moved past the userblock (HDF5 moves the end of file with it)",
    detail: /beyond the end|truncated/,
    make: (bytes, t) => writeUint(bytes, t.superblock.eofField - 2 * t.superblock.offsets, 8, t.superblock.start + 8192),
  },
  {
    flavour: "v1-continuations",
    damage: "a continuation block of 0 bytes",
    detail: /continuation block of 0 bytes/,
    make: (bytes, t) => {
      const header = v1Headers(t).find((h) => v1Messages(bytes, h).some((m) => m.type === 0x10));
      assert.ok(header !== undefined, "a dataset header with a continuation");
      writeUint(bytes, message(bytes, header, 0x10).body + 8, 8, 0);
    },
  },
  {
    flavour: "latest-dense-200",
    damage: "a link filed under the wrong name hash (checksum made right)",
    detail: /wrong name hash|out of order/,
    make: (bytes, t) => {
      const leaf = t.checksummed.find((c) => String.fromCharCode(...bytes.subarray(c.start, c.start + 4)) === "BTLF");
      assert.ok(leaf);
      bytes[leaf.start + 6] = bytes[leaf.start + 6]! ^ 0x01;
      fixChecksum(bytes, leaf);
    },
  },
  {
    flavour: "latest-dense-200",
    damage: "a fractal heap naming an empty huge-object tree (checksum made right)",
    detail: /huge-object tree/,
    make: (bytes, t) => {
      const heap = structure(t, "fractal heap header");
      writeUint(bytes, heap.offset + 4 + 1 + 2 + 2 + 1 + 4 + 8, 8, 0x100);
      fixChecksum(bytes, { start: heap.offset, end: heap.offset + heap.length - 4, at: heap.offset + heap.length - 4 });
    },
  },
  {
    flavour: "userblock-latest",
    damage: "v2 B-tree nodes larger than the file (checksum made right)",
    detail: /beyond the end/,
    make: (bytes, t) => {
      const header = structure(t, "v2 B-tree header");
      writeUint(bytes, header.offset + 6, 4, 0x8200);
      fixChecksum(bytes, { start: header.offset, end: header.offset + header.length - 4, at: header.offset + header.length - 4 });
    },
  },
  {
    flavour: "userblock-latest",
    damage: "a version 3 superblock marked open for writing (checksum made right)",
    detail: /open for writing/,
    make: (bytes, t) => {
      const sb = t.superblock;
      bytes[sb.start + 11] = 0x01;
      fixChecksum(bytes, { start: sb.start, end: sb.start + sb.checksummed!, at: sb.start + sb.checksummed! });
    },
  },
];

test("damage made on purpose, of kinds HDF5 rejects: the index rejects each with a CorruptShardError", async (t) => {
  if (!(await requirePython(t))) return;
  const dir = await tempDir(t, "h5nest-crafted-");
  const originals = path.join(dir, "originals");
  const flavours = [...new Set(CRAFTED.map((c) => c.flavour))];
  await makeFlavours(originals, flavours);
  const targets = new Map(flavours.map((f) => [f, prepareTarget(path.join(originals, `${f}.h5`), f)]));
  const requests: { path: string; names: string[] }[] = [];
  const problems: string[] = [];
  for (const [i, crafted] of CRAFTED.entries()) {
    const target = targets.get(crafted.flavour)!;
    const bytes = target.bytes.slice();
    crafted.make(bytes, target);
    const file = path.join(dir, `crafted-${i}.h5`);
    await fsp.writeFile(file, bytes);
    const started = performance.now();
    try {
      const outcome = indexShardFile(file);
      problems.push(`${crafted.flavour}, ${crafted.damage}: indexed (${outcome.ok ? "ok" : outcome.reason}), not rejected`);
    } catch (error) {
      if (!(error instanceof CorruptShardError) || !crafted.detail.test(error.detail)) problems.push(`${crafted.flavour}, ${crafted.damage}: ${String(error)}`);
    }
    if (performance.now() - started > MAX_INDEX_MS) problems.push(`${crafted.flavour}, ${crafted.damage}: took ${(performance.now() - started).toFixed(0)} ms`);
    if (!crafted.loops) requests.push({ path: file, names: [...target.outcome.index.datasets.keys()] });
  }
  // Each is damage indeed: h5py (one process for all) cannot open the file, or fails on some dataset, or dies.
  const asked = CRAFTED.filter((c) => !c.loops);
  const answers = await readWithH5py(requests);
  for (const [i, answer] of answers.entries()) {
    const crafted = asked[i]!;
    const rejected = "died" in answer || answer.open !== null || Object.values(answer.reads).some((r) => r.startsWith("error"));
    if (!rejected) problems.push(`${crafted.flavour}, ${crafted.damage}: h5py reads every dataset (the case is no damage to HDF5)`);
  }
  assert.deepEqual(problems, [], problems.join("\n"));
});
