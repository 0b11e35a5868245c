export { ShardScheduler, type ShardSchedulerOptions } from "./shard-scheduler.js";
export { type Lease, type LeaseProvider, LeaseLostError, LockUnavailableError, ProtocolError, SAFETY_MARGIN_MS, timeLeftMs } from "./lease.js";
export { LocalLeaseProvider, type LocalLeaseOptions, leaseEndpoint } from "./local-leases.js";
export { RedisLeaseProvider, type RedisLeaseOptions } from "./redis-leases.js";
export { LeaseServer } from "./lease-server.js";
export { encodeFrame, FrameDecoder, MAX_FRAME_BYTES, MAX_TERM_MS, PROTOCOL_VERSION, parseRequest } from "./frames.js";
export { LeaseTable } from "./lease-table.js";
