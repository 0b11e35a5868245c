export { ShardScheduler, type ShardSchedulerOptions } from "./shard-scheduler.js";
