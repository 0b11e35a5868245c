import util from "node:util";

/**
 * Errors raised inside worker threads. Classes do not survive postMessage, so
 * workers send {@link WireError} records and the pool rebuilds the class.
 */

/** A shard file that HDF5 cannot open or read (truncated, corrupt, not HDF5). */
export class CorruptShardError extends Error {
  override readonly name = "CorruptShardError";
  readonly code = "H5NEST_CORRUPT_SHARD";
  constructor(
    readonly file: string,
    readonly detail: string,
  ) {
    super(`corrupt or unreadable shard ${file}: ${detail}`);
  }
}

/** A chunk larger than one worker's WebAssembly heap can take in one call. */
export class ChunkTooLargeError extends Error {
  override readonly name = "ChunkTooLargeError";
  readonly code = "H5NEST_CHUNK_TOO_LARGE";
  constructor(
    readonly file: string,
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(`chunk of ${bytes} bytes for ${file} exceeds the ${limit}-byte limit of one HDF5 call`);
  }
}

/** A file-system failure while writing (ENOSPC, EACCES, EROFS, ...). Nothing was replaced. */
export class WriteFailedError extends Error {
  override readonly name = "WriteFailedError";
  readonly code = "H5NEST_WRITE_FAILED";
  constructor(
    readonly file: string,
    readonly errno: string,
    readonly detail: string,
  ) {
    super(`writing ${file} failed (${errno}): ${detail}`);
  }
}

/** The writer's lease ran out before its rename: nothing was renamed, the old file stands. */
export class LeaseExpiredError extends Error {
  override readonly name = "LeaseExpiredError";
  readonly code = "H5NEST_LEASE_EXPIRED";
  constructor(readonly file: string) {
    super(`the lease for ${file} ran out before the rename; nothing was changed`);
  }
}

export type WorkerError = CorruptShardError | ChunkTooLargeError | WriteFailedError | LeaseExpiredError;

/** The plain-object form of a worker error, as sent between threads. */
export type WireError =
  | { code: "H5NEST_CORRUPT_SHARD"; file: string; detail: string }
  | { code: "H5NEST_CHUNK_TOO_LARGE"; file: string; bytes: number; limit: number }
  | { code: "H5NEST_WRITE_FAILED"; file: string; errno: string; detail: string }
  | { code: "H5NEST_LEASE_EXPIRED"; file: string }
  | { code: "H5NEST_INTERNAL"; detail: string };

export function toWire(error: unknown): WireError {
  if (error instanceof CorruptShardError) return { code: error.code, file: error.file, detail: error.detail };
  if (error instanceof ChunkTooLargeError) {
    return { code: error.code, file: error.file, bytes: error.bytes, limit: error.limit };
  }
  if (error instanceof WriteFailedError) {
    return { code: error.code, file: error.file, errno: error.errno, detail: error.detail };
  }
  if (error instanceof LeaseExpiredError) return { code: error.code, file: error.file };
  return { code: "H5NEST_INTERNAL", detail: error instanceof Error ? (error.stack ?? error.message) : String(error) };
}

export function fromWire(wire: WireError): Error {
  switch (wire.code) {
    case "H5NEST_CORRUPT_SHARD":
      return new CorruptShardError(wire.file, wire.detail);
    case "H5NEST_CHUNK_TOO_LARGE":
      return new ChunkTooLargeError(wire.file, wire.bytes, wire.limit);
    case "H5NEST_WRITE_FAILED":
      return new WriteFailedError(wire.file, wire.errno, wire.detail);
    case "H5NEST_LEASE_EXPIRED":
      return new LeaseExpiredError(wire.file);
    default:
      return new Error(`h5nest worker failed: ${wire.detail}`);
  }
}

/** Wraps a Node file-system error as a WriteFailedError naming `file`. */
export function writeFailed(file: string, error: unknown): WriteFailedError {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  const text = error instanceof Error ? error.message : String(error);
  if (typeof code === "string") return new WriteFailedError(file, code, text);
  // HDF5 (in WebAssembly) reports a failed write(2) as text:
  // "... errno = 51, error message = 'No space left on device' ...". Its errno
  // numbers are not Linux's, so the message is looked up instead.
  const message = /error message = '([^']+)'/.exec(text)?.[1];
  if (message) return new WriteFailedError(file, errnoNamed(message) ?? "EIO", message);
  const innermost = text.split("\n").map((line) => line.trim()).filter((line) => /^#\d+:/.test(line)).at(-1);
  return new WriteFailedError(file, "EIO", innermost?.replace(/^#\d+:.*?\(\):\s*/, "") ?? text);
}

/** The errno name (ENOSPC, EDQUOT, ...) whose system message is `message`. */
function errnoNamed(message: string): string | undefined {
  const wanted = message.toLowerCase();
  for (const [name, description] of util.getSystemErrorMap().values()) {
    if (description.toLowerCase() === wanted) return name;
  }
  return undefined;
}
