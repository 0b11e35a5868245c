/**
 * Shard leases for writers in several processes or machines. A lease names
 * one owner, a fencing token that only grows, and a local deadline after
 * which its holder must not rename anything.
 */

export interface Lease {
  shard: string;
  owner: string;
  /** Grows with every grant, across servers too. */
  token: number;
  /** The term granted (a server may grant less than asked): renew well within it. */
  termMs: number;
  /**
   * Local monotonic deadline (process.hrtime ns), shared with worker threads
   * so a commit can check it right before its rename. Renewals move it.
   */
  deadline: BigInt64Array;
}

export interface LeaseProvider {
  /**
   * Waits until this process holds the shard's lease. Bounded: a lock service
   * that does not answer, or no grant in time, is a LockUnavailableError.
   */
  acquire(shard: string): Promise<Lease>;
  /** Extends the lease; throws LeaseLostError when it is no longer ours. */
  renew(lease: Lease): Promise<void>;
  release(lease: Lease): Promise<void>;
  /** The lease term in milliseconds (renew well before it runs out). */
  readonly termMs: number;
  close(): Promise<void>;
}

/** Margin kept between a lease's deadline and any rename (clock rates, scheduling). */
export const SAFETY_MARGIN_MS = 250;

export function now(): bigint {
  return process.hrtime.bigint();
}

/** A deadline `termMs` after `start` (hrtime ns), minus the safety margin, in shared memory. */
export function deadlineAfter(start: bigint, termMs: number, into?: BigInt64Array): BigInt64Array {
  const cell = into ?? new BigInt64Array(new SharedArrayBuffer(8));
  Atomics.store(cell, 0, start + BigInt(Math.floor((termMs - SAFETY_MARGIN_MS) * 1e6)));
  return cell;
}

export function timeLeftMs(lease: Lease): number {
  return Number(Atomics.load(lease.deadline, 0) - now()) / 1e6;
}

/** The lease was lost (expired, or granted to another owner): nothing was renamed. */
export class LeaseLostError extends Error {
  override readonly name = "LeaseLostError";
  readonly code = "H5NEST_LEASE_LOST";
  constructor(
    readonly shard: string,
    detail: string,
  ) {
    super(`lease for ${shard} lost: ${detail}`);
  }
}

/** No lease could be had: the lease server or Redis is unreachable. No write was done. */
export class LockUnavailableError extends Error {
  override readonly name = "LockUnavailableError";
  readonly code = "H5NEST_LOCK_UNAVAILABLE";
  constructor(
    readonly where: string,
    detail: string,
  ) {
    super(`lock service ${where} unavailable: ${detail}`);
  }
}

/**
 * The lock service refused a request as invalid (a shard name over the
 * protocol's limit, a term out of range). Retrying cannot help: nothing was
 * granted and nothing was written.
 */
export class LeaseRefusedError extends Error {
  override readonly name = "LeaseRefusedError";
  readonly code = "H5NEST_LEASE_REFUSED";
  constructor(
    readonly where: string,
    detail: string,
  ) {
    super(`lock service ${where} refused the request: ${detail}`);
  }
}

/**
 * This process cannot share the store's lease namespace: it cannot write the
 * lease folder inside the store (another user's store, a read-only mount),
 * or the lease server that answers for this store's identity serves another
 * folder (a copy of the store that kept its identity). No write was done.
 */
export class LeaseNamespaceError extends Error {
  override readonly name = "LeaseNamespaceError";
  readonly code = "H5NEST_LEASE_NAMESPACE";
  constructor(
    readonly where: string,
    detail: string,
  ) {
    super(`cannot share the leases of ${where}: ${detail}`);
  }
}

/** Turns a refusal frame's code into its typed error. */
export function refusalError(where: string, code: string, message: string, shard?: string): Error {
  switch (code) {
    case "H5NEST_LEASE_LOST":
      return new LeaseLostError(shard ?? "?", message);
    case "H5NEST_LEASE_NAMESPACE":
      return new LeaseNamespaceError(where, message);
    case "H5NEST_LOCK_UNAVAILABLE":
      return new LockUnavailableError(where, message);
    default:
      return new LeaseRefusedError(where, `${code}: ${message}`);
  }
}

/** A peer broke the lease protocol (bad frame, unknown version, oversized). */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  readonly code = "H5NEST_PROTOCOL";
  /** The id of the request that was refused, when the frame was a request with a valid id (it gets a refusal reply). */
  replyTo?: number;
}
