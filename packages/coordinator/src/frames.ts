/**
 * The local lease protocol's wire format: a 4-byte big-endian length, then a
 * msgpack map. Frames are versioned and size-limited; anything malformed is a
 * ProtocolError, and the server closes that one connection.
 */
import { Packr, Unpackr } from "msgpackr";
import { ProtocolError } from "./lease.js";

export const PROTOCOL_VERSION = 1;
export const MAX_FRAME_BYTES = 16 * 1024;
const MAX_SHARD_LENGTH = 4096;
const MAX_OWNER_LENGTH = 256;
/** No term longer than this is granted; a takeover waits at least this long. */
export const MAX_TERM_MS = 120_000;

export type Request =
  | { v: 1; id: number; op: "hello"; owner: string }
  | { v: 1; id: number; op: "acquire"; shard: string; owner: string; termMs: number }
  | { v: 1; id: number; op: "renew"; shard: string; owner: string; token: number; termMs: number }
  | { v: 1; id: number; op: "release"; shard: string; owner: string; token: number };

export type Response =
  /** `waitedMs`: how long an acquire waited in the server's queue before its grant. */
  | { v: 1; id: number; ok: true; token?: number; termMs?: number; maxTermMs?: number; waitedMs?: number }
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
const isTerm = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 100 && (v as number) <= MAX_TERM_MS;
const isShard = (v: unknown): v is string => typeof v === "string" && v.length > 0 && v.length <= MAX_SHARD_LENGTH;
const isOwner = (v: unknown): v is string => typeof v === "string" && v.length > 0 && v.length <= MAX_OWNER_LENGTH;

/** Checks a decoded frame is a request this server understands. */
export function parseRequest(value: unknown): Request {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new ProtocolError("a frame must be a map");
  const record = value as Record<string, unknown>;
  if (record.v !== PROTOCOL_VERSION) throw new ProtocolError(`unknown protocol version ${JSON.stringify(record.v)}`);
  const id = field(record, "id", isId, "a non-negative integer");
  const owner = field(record, "owner", isOwner, `a string of 1..${MAX_OWNER_LENGTH} characters`);
  switch (record.op) {
    case "hello":
      return { v: 1, id, op: "hello", owner };
    case "acquire":
      return { v: 1, id, op: "acquire", owner, shard: field(record, "shard", isShard, "a shard path"), termMs: field(record, "termMs", isTerm, `an integer of 100..${MAX_TERM_MS}`) };
    case "renew":
      return {
        v: 1,
        id,
        op: "renew",
        owner,
        shard: field(record, "shard", isShard, "a shard path"),
        token: field(record, "token", isToken, "a positive integer"),
        termMs: field(record, "termMs", isTerm, `an integer of 100..${MAX_TERM_MS}`),
      };
    case "release":
      return { v: 1, id, op: "release", owner, shard: field(record, "shard", isShard, "a shard path"), token: field(record, "token", isToken, "a positive integer") };
    default:
      throw new ProtocolError(`unknown op ${JSON.stringify(record.op)}`);
  }
}
