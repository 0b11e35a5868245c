export { ShardScheduler, type ShardSchedulerOptions } from "./shard-scheduler.js";
export {
  type Lease,
  type LeaseProvider,
  LeaseLostError,
  LeaseNamespaceError,
  LeaseRefusedError,
  LockUnavailableError,
  ProtocolError,
  SAFETY_MARGIN_MS,
  timeLeftMs,
} from "./lease.js";
export { LocalLeaseProvider, type LocalLeaseOptions, leaseEndpoint, leaseServerLive, prepareStateDir } from "./local-leases.js";
export { RedisLeaseProvider, type RedisLeaseOptions } from "./redis-leases.js";
export { LeaseServer, socketName, generations, readState, stateFileOf } from "./lease-server.js";
export {
  encodeFrame,
  FrameDecoder,
  invalidShardName,
  MAX_FRAME_BYTES,
  MAX_SHARD_BYTES,
  MAX_TERM_MS,
  MIN_TERM_MS,
  PROBE_NAME,
  PROTOCOL_VERSION,
  parseRequest,
} from "./frames.js";
export { LeaseTable } from "./lease-table.js";
export { SharedJob, type SharedJobOptions, type JobProgress, type Task, type TaskContext, type TaskHandler } from "./shared-job.js";
