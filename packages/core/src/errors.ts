/**
 * Errors of the store. Each has a literal `name` and a string `code` (codes
 * survive postMessage from worker threads; classes do not).
 */

/** A key that could leave the store or alias a file that is not its own. Nothing was read or written. */
export class InvalidKeyError extends Error {
  override readonly name = "InvalidKeyError";
  readonly code = "H5NEST_INVALID_KEY";
  constructor(
    readonly key: string,
    readonly reason: string,
  ) {
    super(`invalid key ${JSON.stringify(key)}: ${reason}`);
  }
}

/** An unknown or invalid option passed to H5NestedStore.open. */
export class InvalidOptionError extends Error {
  override readonly name = "InvalidOptionError";
  readonly code = "H5NEST_INVALID_OPTION";
  constructor(
    readonly option: string,
    reason: string,
  ) {
    super(`option ${option}: ${reason}`);
  }
}

/** The store was used after close(). */
export class StoreClosedError extends Error {
  override readonly name = "StoreClosedError";
  readonly code = "H5NEST_STORE_CLOSED";
  constructor(readonly root: string) {
    super(`the store at ${root} is closed`);
  }
}

/** A value that is not a Uint8Array was given to set(). */
export class InvalidValueError extends Error {
  override readonly name = "InvalidValueError";
  readonly code = "H5NEST_INVALID_VALUE";
  constructor(readonly key: string) {
    super(`value for key ${JSON.stringify(key)} must be a Uint8Array`);
  }
}

/** The path given as a store cannot be one (a file, or a missing folder where one must exist). */
export class NotAStoreError extends Error {
  override readonly name = "NotAStoreError";
  readonly code = "H5NEST_NOT_A_STORE";
  constructor(
    readonly path: string,
    reason: string,
  ) {
    super(`${path} is not a store: ${reason}`);
  }
}

/** A byte range given to getRange() that is not one (negative, fractional, missing fields). */
export class InvalidRangeError extends Error {
  override readonly name = "InvalidRangeError";
  readonly code = "H5NEST_INVALID_RANGE";
  constructor(
    readonly key: string,
    reason: string,
  ) {
    super(`invalid range for key ${JSON.stringify(key)}: ${reason}`);
  }
}

/**
 * The store was created with another layout than the one asked for: its
 * identity record (`.h5nest/store.json`) says which. Opening it with another
 * consolidateDepth or containerExt would misplace every chunk.
 */
export class StoreConfigMismatchError extends Error {
  override readonly name = "StoreConfigMismatchError";
  readonly code = "H5NEST_CONFIG_MISMATCH";
  constructor(
    readonly root: string,
    readonly option: "consolidateDepth" | "containerExt",
    readonly recorded: number | string,
    readonly given: number | string,
  ) {
    super(
      `the store at ${root} was created with ${option} ${JSON.stringify(recorded)}, not ${JSON.stringify(given)}: ` +
        `open it with ${option}: ${JSON.stringify(recorded)} (or leave the option out)`,
    );
  }
}

/** The store's identity record (`.h5nest/store.json`) is damaged, or cannot be read or created. */
export class StoreIdentityError extends Error {
  override readonly name = "StoreIdentityError";
  readonly code = "H5NEST_STORE_IDENTITY";
  constructor(
    readonly path: string,
    reason: string,
  ) {
    super(`store identity ${path}: ${reason}`);
  }
}

/** A key held in a shard h5nest never writes (the legacy `<store>.h5` beside the store folder). Nothing was changed. */
export class ReadOnlyShardError extends Error {
  override readonly name = "ReadOnlyShardError";
  readonly code = "H5NEST_READ_ONLY_SHARD";
  constructor(
    readonly key: string,
    readonly file: string,
  ) {
    super(`cannot delete ${JSON.stringify(key)}: it is held in ${file}, the legacy shard beside the store folder, which h5nest reads but never writes`);
  }
}

/**
 * A maintenance job without leases was refused: processes are writing this
 * store with distributedLock (their lease server answers), and a job that
 * does not take leases could undo their acknowledged writes. Nothing was changed.
 */
export class LockRequiredError extends Error {
  override readonly name = "LockRequiredError";
  readonly code = "H5NEST_LOCK_REQUIRED";
  constructor(
    readonly path: string,
    readonly job: string,
  ) {
    super(
      `refusing to ${job} ${path} without leases: processes are writing it with distributedLock (their lease server answers); ` +
        `run it with --lock (distributedLock: true) so it takes their leases, or stop the writers first`,
    );
  }
}
