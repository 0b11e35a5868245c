/**
 * Writes a new shard file in a few large writes: the metadata laid out by
 * shard-image.ts in one, the data streamed after it with writev, in bounded
 * batches. Data come from memory (new chunks), raw chunk files (folds) or
 * byte ranges of the old shard (kept datasets); nothing holds a whole shard.
 */
import fs from "node:fs";
import { writeFailed } from "./errors.js";
import { type FileIdentity, identityOf, sameIdentity } from "./files.js";
import { shardImage, sortByDatasetName } from "./hdf5/shard-image.js";
import { type IndexedShard, type Placed, readPlaced } from "./indexed-shards.js";

export type ShardSource = { name: string; length: number } & (
  | { bytes: Uint8Array }
  | { rawPath: string; identity: FileIdentity }
  | { place: Placed }
);

/** Bytes gathered before one writev (and at most this much read ahead). */
const BATCH_BYTES = 16 * 1024 * 1024;
const BATCH_PARTS = 1000;

/** Writes `sources` (names unique) as a shard at `file` (a fresh `.partial` path). */
export function writeShardFile(file: string, sources: ShardSource[], oldShard: IndexedShard | null, fsync: boolean): void {
  // Row-major chunk order: a plane of chunks is one range for later reads.
  sortByDatasetName(sources);
  const image = shardImage(sources);
  let fd: number;
  try {
    fd = fs.openSync(file, "wx");
  } catch (error) {
    throw writeFailed(file, error);
  }
  try {
    let position = 0;
    let parts: Uint8Array[] = [image.metadata];
    let partBytes = image.metadata.length;
    let kept: { index: number; place: Placed }[] = [];
    let keptBytes = 0;
    const flushKept = () => {
      if (kept.length === 0) return;
      const bytes = readPlaced(oldShard!, kept.map((k) => k.place));
      for (const b of bytes) parts.push(b);
      partBytes += keptBytes;
      kept = [];
      keptBytes = 0;
    };
    const flush = () => {
      flushKept();
      writeAll(fd, parts, position, partBytes, file);
      position += partBytes;
      parts = [];
      partBytes = 0;
    };
    sources.forEach((source, index) => {
      if (partBytes + keptBytes + source.length > BATCH_BYTES || parts.length + kept.length >= BATCH_PARTS) flush();
      if ("place" in source) {
        kept.push({ index, place: source.place });
        keptBytes += source.length;
        return;
      }
      flushKept(); // keep the data in file order
      parts.push("bytes" in source ? source.bytes : readRawChunk(source.rawPath, source.identity, source.length));
      partBytes += source.length;
    });
    flush();
    if (position !== image.size) throw new Error(`wrote ${position} bytes of ${image.size}`);
    if (fsync) fs.fsyncSync(fd);
  } catch (error) {
    throw error instanceof Error && "code" in error && typeof error.code === "string" && error.code.startsWith("H5NEST_") ? error : writeFailed(file, error);
  } finally {
    fs.closeSync(fd);
  }
}

function writeAll(fd: number, parts: Uint8Array[], position: number, total: number, file: string): void {
  if (total === 0) return;
  const written = fs.writevSync(fd, parts, position);
  if (written === total) return;
  // A short writev (rare, e.g. a signal): finish part by part.
  let offset = 0;
  for (const part of parts) {
    const done = Math.min(part.length, Math.max(0, written - offset));
    let at = done;
    while (at < part.length) {
      const n = fs.writeSync(fd, part, at, part.length - at, position + offset + at);
      if (n <= 0) throw writeFailed(file, new Error("write returned no progress"));
      at += n;
    }
    offset += part.length;
  }
}

/** A raw chunk file's bytes, if it is still the file whose size the layout planned. */
function readRawChunk(rawPath: string, identity: FileIdentity, length: number): Uint8Array {
  const fd = fs.openSync(rawPath, "r");
  try {
    if (!sameIdentity(identityOf(fs.fstatSync(fd)), identity)) {
      throw writeFailed(rawPath, new Error("the raw chunk file changed while its shard was being written; nothing was replaced"));
    }
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, out, done, length - done, done);
      if (n === 0) throw writeFailed(rawPath, new Error("the raw chunk file shrank while its shard was being written"));
      done += n;
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}
