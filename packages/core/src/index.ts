import "./codecs.js";
export { H5NestedStore } from "./store.js";
export { FOLD_RATIO } from "./shard-writer.js";
export type { H5NestedStoreOptions, DistributedLockOptions } from "./options.js";
export type {
  ArraySummary,
  CompactOptions,
  CompactSummary,
  ConsolidateOptions,
  ConsolidateProgress,
  ConsolidateSummary,
  ShardError,
  StoreInfo,
  VerifyOptions,
  VerifySummary,
} from "./maintenance.js";
export { Layout, canWriteToShard, keySegments, isTempName, normalizeExt } from "./layout.js";
export type { LayoutOptions, Location, ShardLocation, ShardPlacement, ArrayInfo } from "./layout.js";
export {
  InvalidKeyError,
  InvalidOptionError,
  InvalidRangeError,
  InvalidValueError,
  LockRequiredError,
  NotAStoreError,
  ReadOnlyShardError,
  StoreClosedError,
  StoreConfigMismatchError,
  StoreIdentityError,
} from "./errors.js";
export type { RangeQuery } from "./read-batcher.js";
export { CorruptShardError, ChunkTooLargeError, LeaseExpiredError, WriteFailedError, MAX_DATASET_BYTES } from "@h5nest/workers";
export { LeaseLostError, LeaseNamespaceError, LeaseRefusedError, LockUnavailableError } from "@h5nest/coordinator";
export { createV2Array, type V2ArrayOptions } from "./v2.js";
export { serveStore, ListenFailedError, type ServeOptions, type RunningServer } from "./serve.js";
export { writeRefs, NothingToReferenceError, type RefsOptions, type RefsSummary, type RefsError } from "./refs.js";
