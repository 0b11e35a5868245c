/** Options of H5NestedStore.open, checked strictly: a typo is an error, not a default. */
import os from "node:os";
import { MAX_TERM_MS } from "@h5nest/coordinator";
import { InvalidOptionError } from "./errors.js";
import { normalizeExt } from "./layout.js";

export interface H5NestedStoreOptions {
  /** Consolidate depth D, at least 2: the last D-1 chunk indices name the dataset (default 3). */
  consolidateDepth?: number;
  /** Shard file extension, with or without the dot, never empty (default ".h5"). */
  containerExt?: string;
  /** Write new chunks into shards (true, default) or as raw files like NestedDirectoryStore (false). */
  writeDirect?: boolean;
  /** fsync files and folders around every rename so that writes survive power loss (default false). */
  fsync?: boolean;
  /** Worker threads for HDF5 work (default: available cores, at most 64). */
  workers?: number;
  /** Bytes of writes queued before set() waits (default 256 MiB). */
  maxPendingBytes?: number;
  /**
   * Several processes write the store: `true` shares shard leases through a
   * local server (one machine); `{ redis: "redis://host:port" }` through Redis
   * (many machines). `leaseMs` is the lease term (default 10000, at most 120000).
   */
  distributedLock?: boolean | DistributedLockOptions;
}

export interface DistributedLockOptions {
  redis?: string;
  leaseMs?: number;
  /**
   * Told, in a sentence, when a write waits for a reason worth knowing: a
   * Redis new to h5nest (first use, a restart or a failover) grants nothing
   * for one lease term, since leases granted before may still be in use.
   */
  onNotice?: (message: string) => void;
}

export type ResolvedOptions = Required<Omit<H5NestedStoreOptions, "distributedLock">> & {
  distributedLock: { redis: string | null; leaseMs: number; onNotice: ((message: string) => void) | null } | null;
};

const DEFAULTS: ResolvedOptions = {
  consolidateDepth: 3,
  containerExt: ".h5",
  writeDirect: true,
  fsync: false,
  workers: Math.max(1, os.availableParallelism()),
  maxPendingBytes: 256 * 1024 * 1024,
  distributedLock: null,
};

function distributedLock(value: unknown): ResolvedOptions["distributedLock"] {
  if (value === undefined || value === false || value === null) return null;
  if (value === true) return { redis: null, leaseMs: 10_000, onNotice: null };
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new InvalidOptionError("distributedLock", "must be true, false or { redis?, leaseMs? }");
  }
  const given = value as Record<string, unknown>;
  for (const name of Object.keys(given)) {
    if (name !== "redis" && name !== "leaseMs" && name !== "onNotice") {
      throw new InvalidOptionError(`distributedLock.${name}`, "unknown option (known: redis, leaseMs, onNotice)");
    }
  }
  const redis = given.redis;
  if (redis !== undefined && (typeof redis !== "string" || !/^rediss?:\/\//.test(redis))) {
    throw new InvalidOptionError("distributedLock.redis", `must be a redis:// URL, got ${JSON.stringify(redis)}`);
  }
  // The lease protocol grants no longer term (and a takeover waits at least this long).
  const leaseMs = given.leaseMs === undefined ? 10_000 : integerAtLeast("distributedLock.leaseMs", given.leaseMs, 1000, MAX_TERM_MS);
  const onNotice = given.onNotice;
  if (onNotice !== undefined && typeof onNotice !== "function") throw new InvalidOptionError("distributedLock.onNotice", "must be a function");
  return { redis: (redis as string | undefined) ?? null, leaseMs, onNotice: (onNotice as ((message: string) => void) | undefined) ?? null };
}

function integerAtLeast(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`;
    throw new InvalidOptionError(name, `must be an integer ${range}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Deeper than any array has dimensions (zarr arrays have at most a few dozen): larger is a mistake. */
export const MAX_DEPTH = 64;

/** Each worker thread loads its own HDF5 (tens of MiB): more than this is a mistake. */
export const MAX_WORKERS = 64;

function boolean(name: string, value: unknown): boolean {
  if (typeof value !== "boolean") throw new InvalidOptionError(name, `must be true or false, got ${JSON.stringify(value)}`);
  return value;
}

export function resolveOptions(options: unknown): ResolvedOptions {
  if (options === undefined) return { ...DEFAULTS };
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new InvalidOptionError("options", "must be an object");
  }
  const given = options as Record<string, unknown>;
  for (const name of Object.keys(given)) {
    if (!(name in DEFAULTS)) {
      throw new InvalidOptionError(name, `unknown option (known: ${Object.keys(DEFAULTS).join(", ")})`);
    }
  }
  const pick = <K extends keyof ResolvedOptions>(name: K): unknown => (given[name] === undefined ? DEFAULTS[name] : given[name]);
  const ext = pick("containerExt");
  if (typeof ext !== "string" || ext === "" || ext === "." || /[/\\\0]/.test(ext)) {
    throw new InvalidOptionError("containerExt", `must be a non-empty file extension, got ${JSON.stringify(ext)}`);
  }
  const extension = normalizeExt(ext);
  for (const name of [".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json"]) {
    if (name.endsWith(extension)) throw new InvalidOptionError("containerExt", `${extension} would make ${name} a shard file`);
  }
  return {
    consolidateDepth: integerAtLeast("consolidateDepth", pick("consolidateDepth"), 2, MAX_DEPTH),
    containerExt: extension,
    writeDirect: boolean("writeDirect", pick("writeDirect")),
    fsync: boolean("fsync", pick("fsync")),
    workers: integerAtLeast("workers", pick("workers"), 1, MAX_WORKERS),
    maxPendingBytes: integerAtLeast("maxPendingBytes", pick("maxPendingBytes"), 1),
    distributedLock: distributedLock(given.distributedLock),
  };
}
