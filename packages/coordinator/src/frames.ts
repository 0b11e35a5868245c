/**
 * The local lease protocol's wire format: a 4-byte big-endian length, then a
 * msgpack map. Frames are versioned and size-limited; anything malformed is a
 * ProtocolError, and the server closes that one connection.
 */
import { Packr, Unpackr } from "msgpackr";
import { ProtocolError } from "./lease.js";

export const PROTOCOL_VERSION = 1;
export const MAX_FRAME_BYTES = 16 * 1024;
/** Longest lease (shard) name, in UTF-8 bytes: Linux's PATH_MAX. A frame always has room for it. */
export const MAX_SHARD_BYTES = 4096;
const MAX_OWNER_LENGTH = 256;
/** No term longer than this is granted; a takeover waits at least this long. */
export const MAX_TERM_MS = 120_000;
/** Shortest term a server accepts. */
export const MIN_TERM_MS = 100;
/** A client proves it can write the lease folder (and sees the same one) with a file of this name in it. */
export const PROBE_NAME = /^probe\.[0-9a-f]{32}$/;

/** Why a lease (shard) name cannot be sent, or null when it can. */
export function invalidShardName(shard: string): string | null {
  if (typeof shard !== "string" || shard.length === 0) return "the lease name is empty";
  const bytes = Buffer.byteLength(shard, "utf8");
  if (bytes > MAX_SHARD_BYTES) return `the lease name (the shard's path in the store) is ${bytes} bytes, over the ${MAX_SHARD_BYTES}-byte limit`;
  return null;
}

export type Request =
  /** `probe`: the name of a file the client created in the lease folder (the first hello of a connection). */
  | { v: 1; id: number; op: "hello"; owner: string; probe?: string }
  | { v: 1; id: number; op: "acquire"; shard: string; owner: string; termMs: number }
  | { v: 1; id: number; op: "renew"; shard: string; owner: string; token: number; termMs: number }
  | { v: 1; id: number; op: "release"; shard: string; owner: string; token: number };

export type Response =
  /** `waitedMs`: how long an acquire waited in the server's queue before its grant. */
  | { v: 1; id: number; ok: true; token?: number; termMs?: number; maxTermMs?: number; waitedMs?: number; generation?: number; pid?: number }
  | { v: 1; id: number; ok: false; code: string; message: string };

const packr = new Packr({ useRecords: false, mapsAsObjects: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

export function encodeFrame(message: Request | Response): Buffer {
  const body = packr.pack(message);
  if (body.length > MAX_FRAME_BYTES) throw new ProtocolError(`frame of ${body.length} bytes exceeds ${MAX_FRAME_BYTES}`);
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, 4);
  return frame;
}

/** Splits a byte stream into decoded frames; throws ProtocolError on the first bad one. */
export class FrameDecoder {
  private buffered: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): unknown[] {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    const messages: unknown[] = [];
    while (this.buffered.length >= 4) {
      const length = this.buffered.readUInt32BE(0);
      if (length === 0 || length > MAX_FRAME_BYTES) throw new ProtocolError(`frame length ${length} outside 1..${MAX_FRAME_BYTES}`);
      if (this.buffered.length < 4 + length) break;
      const body = this.buffered.subarray(4, 4 + length);
      this.buffered = this.buffered.subarray(4 + length);
      try {
        messages.push(unpackr.unpack(body));
      } catch (error) {
        throw new ProtocolError(`undecodable frame: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    return messages;
  }
}

function field<T>(record: Record<string, unknown>, name: string, check: (value: unknown) => value is T, what: string): T {
  const value = record[name];
  if (!check(value)) throw new ProtocolError(`field ${name} must be ${what}`);
  return value;
}

const isId = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isToken = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;
const isTerm = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= MIN_TERM_MS && (v as number) <= MAX_TERM_MS;
const isShard = (v: unknown): v is string => typeof v === "string" && invalidShardName(v) === null;
const isProbe = (v: unknown): v is string => typeof v === "string" && PROBE_NAME.test(v);
const isOwner = (v: unknown): v is string => typeof v === "string" && v.length > 0 && v.length <= MAX_OWNER_LENGTH;

/**
 * Checks a decoded frame is a request this server understands. A map of
 * this version with a valid id but a bad field throws a ProtocolError whose
 * `replyTo` is that id: the server answers it with a refusal.
 */
export function parseRequest(value: unknown): Request {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new ProtocolError("a frame must be a map");
  const record = value as Record<string, unknown>;
  if (record.v !== PROTOCOL_VERSION) throw new ProtocolError(`unknown protocol version ${JSON.stringify(record.v)}`);
  const id = field(record, "id", isId, "a non-negative integer");
  try {
    return parseFields(record, id);
  } catch (error) {
    if (error instanceof ProtocolError) error.replyTo = id;
    throw error;
  }
}

function parseFields(record: Record<string, unknown>, id: number): Request {
  const owner = field(record, "owner", isOwner, `a string of 1..${MAX_OWNER_LENGTH} characters`);
  switch (record.op) {
    case "hello":
      if (record.probe !== undefined) return { v: 1, id, op: "hello", owner, probe: field(record, "probe", isProbe, "a probe file name") };
      return { v: 1, id, op: "hello", owner };
    case "acquire":
      return { v: 1, id, op: "acquire", owner, shard: field(record, "shard", isShard, `a shard path of 1..${MAX_SHARD_BYTES} bytes`), termMs: field(record, "termMs", isTerm, `an integer of ${MIN_TERM_MS}..${MAX_TERM_MS}`) };
    case "renew":
      return {
        v: 1,
        id,
        op: "renew",
        owner,
        shard: field(record, "shard", isShard, `a shard path of 1..${MAX_SHARD_BYTES} bytes`),
        token: field(record, "token", isToken, "a positive integer"),
        termMs: field(record, "termMs", isTerm, `an integer of ${MIN_TERM_MS}..${MAX_TERM_MS}`),
      };
    case "release":
      return { v: 1, id, op: "release", owner, shard: field(record, "shard", isShard, `a shard path of 1..${MAX_SHARD_BYTES} bytes`), token: field(record, "token", isToken, "a positive integer") };
    default:
      throw new ProtocolError(`unknown op ${JSON.stringify(record.op)}`);
  }
}
