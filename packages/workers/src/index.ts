export { WorkerPool, type WorkerPoolOptions, type ReadResult } from "./pool.js";
export type { CommitRequest, CommitResult, ChunkPut, ChunkRef } from "./commit.js";
export type { ReadItem, ShardReport } from "./read.js";
export { CorruptShardError, ChunkTooLargeError, LeaseExpiredError, WriteFailedError, type WorkerError } from "./errors.js";
export { MAX_DATASET_BYTES } from "./limits.js";
export {
  indexShard,
  indexShardFile,
  openShardIndex,
  type DatasetPlace,
  type IndexOutcome,
  type LazyIndexOutcome,
  type LazyShardIndex,
  type ShardIndex,
} from "./hdf5/shard-index.js";
export { IndexedShardCache, type IndexedShard, isPlaced, type Placed, readPlaced } from "./indexed-shards.js";
export { writeShardFile, type ShardSource } from "./shard-file.js";
export { shardImageSize } from "./hdf5/shard-image.js";
