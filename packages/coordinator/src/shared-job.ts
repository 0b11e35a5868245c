/**
 * One maintenance job (consolidate, compact) shared by every process that
 * runs it on one store through one Redis. The work is two BullMQ queues of
 * tasks: folders to list, and shards to fold. Each process takes tasks as it
 * has room, so nobody waits while unclaimed work remains, and each folder is
 * listed by one process (the walk is split too). Listing waits while many
 * shards wait (Redis memory stays bounded); the shard tasks have slots of
 * their own, so a listing that waits never holds up the work that makes room. A process that dies leaves
 * its tasks to the others: BullMQ moves a task whose lock was not renewed
 * for a term back to the queue (its stall check).
 *
 * A job is a "run": `h5nest:<store id>:job:<kind>` names the run in
 * progress. The first process creates it (queues holding the root task,
 * then SET NX), later ones join it. The run is over when its queues hold no
 * task waiting or in progress; whoever sees that first ends it (compare and
 * delete) and removes its queues. A process arriving after that starts a new
 * run, so a job started again later walks the store again. Progress
 * counters live in a Redis hash per run, kept an hour after it ends.
 */
import { createHash, randomBytes } from "node:crypto";
import os from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import type { Job, Queue } from "bullmq";
import type { Redis } from "ioredis";
import { LockUnavailableError } from "./lease.js";

/** A unit of work: list a folder ("scan") or work on one file ("work"), by its path in the store. */
export interface Task {
  type: "scan" | "work";
  path: string;
}

/** Figures of the whole job, across processes. */
export interface JobProgress {
  /** Processes that joined this run. */
  processes: number;
  foldersScanned: number;
  /** "work" tasks found so far, and done (a total that grows while folders are listed). */
  tasksFound: number;
  tasksDone: number;
  /** What the work moved or wrote (the job's handler says what to count). */
  chunks: number;
  bytes: number;
  /** Tasks waiting or in progress now. */
  remaining: number;
}

export interface SharedJobOptions {
  url: string;
  /** The store's identity. */
  namespace: string;
  kind: string;
  /** A task held by a process that stopped renewing it goes back to the queue after about this long (and one stall check). */
  termMs: number;
  /** Shard tasks in progress at once in this process. */
  concurrency: number;
  /** Shard tasks waiting above which listing waits (default 20,000): bounds the run's memory in Redis. */
  maxWaiting?: number;
}

export interface TaskContext {
  /** Adds tasks found while working (a folder's entries); waits while the queue is very long (bounded memory in Redis). */
  add(tasks: Task[]): Promise<void>;
  /** Adds to this run's counters (and this process's share). */
  count(figures: { chunks?: number; bytes?: number }): void;
  /** True when the task was started before (a process died with it, or failed it): look for its leftovers. */
  retried: boolean;
}

export type TaskHandler = (task: Task, context: TaskContext) => Promise<void>;

/** Shard tasks waiting above which listing waits: Redis holds about this many per run at most (a few hundred bytes each). */
const MAX_WAITING = 20_000;
/** Folders listed at once by one process (listing is cheap next to folding, and may wait for room). */
const SCAN_CONCURRENCY = 1;
const TASK_OPTIONS = { removeOnComplete: true, attempts: 1000, backoff: { type: "fixed", delay: 1000 } } as const;
const ADD_BATCH = 500;
const RUN_KEEP_S = 3600;

type BullMQ = typeof import("bullmq");
let loaded: Promise<BullMQ> | null = null;
/** BullMQ is loaded on the first shared job only: it costs 100-150 ms, which every other use of h5nest would pay. */
function bullmq(): Promise<BullMQ> {
  loaded ??= import("bullmq");
  return loaded;
}

/** Ends a run if it is still the one named: KEYS run key, ARGV run id. */
const END_RUN = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`;

export class SharedJob {
  readonly runId: string;
  readonly owner = `${os.hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
  /** Folders to list, and files (shards) to work on. */
  private readonly queues: Record<Task["type"], Queue>;
  private readonly counters: Redis;
  private readonly progressKey: string;
  private pendingCounts = new Map<string, number>();
  /** The counter flush in progress, and whether another is queued behind it (one at a time, each taking all counts so far). */
  private flushing: Promise<unknown> = Promise.resolve();
  private flushQueued = false;

  private constructor(
    private readonly options: SharedJobOptions,
    private readonly connection: Redis,
    runId: string,
    queues: Record<Task["type"], Queue>,
  ) {
    this.runId = runId;
    this.queues = queues;
    this.counters = connection;
    this.progressKey = `h5nest:${options.namespace}:job:${options.kind}:${runId}:progress`;
  }

  private static runKey(options: SharedJobOptions): string {
    return `h5nest:${options.namespace}:job:${options.kind}`;
  }

  private static queuesOf(bull: BullMQ, options: SharedJobOptions, runId: string, connection: Redis): Record<Task["type"], Queue> {
    const queue = (type: Task["type"]) => {
      // BullMQ refuses ':' in queue names; the store id and run id are hex.
      const made = new bull.Queue(`${options.kind}-${type}-${options.namespace}-${runId}`, { connection, prefix: "h5nest" });
      made.on("error", () => {
        // Connection trouble, reported by the bounded calls (BullMQ would print it).
      });
      return made;
    };
    return { scan: queue("scan"), work: queue("work") };
  }

  /** Joins the run in progress for this store and kind, or starts one whose first task is `root`. */
  static async join(options: SharedJobOptions, root: Task): Promise<SharedJob> {
    // BullMQ wants commands to wait for a reconnect (no retry limit per request), and copies
    // this connection for its blocking reads: reconnecting stops after the bounded wait, so
    // that a Redis gone for good lets every connection, timer and queued command end.
    const giveUpAfter = Math.max(5000, 2 * options.termMs);
    const { Redis: RedisClient } = await import("ioredis");
    const connection = new RedisClient(options.url, {
      maxRetriesPerRequest: null,
      lazyConnect: true,
      connectTimeout: 5000,
      retryStrategy: (times) => (times * 250 > giveUpAfter ? null : 250),
    });
    connection.on("error", () => {
      // Reported through failing or timed-out commands.
    });
    try {
      const bull = await bullmq();
      await bounded(options, connection.connect(), "connect");
      const runKey = SharedJob.runKey(options);
      for (let attempt = 0; ; attempt++) {
        const current = await bounded(options, connection.get(runKey), "read the job");
        if (current) {
          const job = new SharedJob(options, connection, current, SharedJob.queuesOf(bull, options, current, connection));
          // A run whose queues are empty has ended (its last process may have died before saying so): end it, start anew.
          if ((await job.remaining()) > 0) return await job.register();
          await job.end();
          await job.closeQueues();
          if (attempt > 5) throw new LockUnavailableError(options.url, "could not start or join a job");
          continue;
        }
        // Create the queues holding the root task first, then name them: a run is never seen empty.
        const runId = randomBytes(8).toString("hex");
        const job = new SharedJob(options, connection, runId, SharedJob.queuesOf(bull, options, runId, connection));
        await bounded(options, job.queues[root.type].add("task", root, { jobId: taskId(root), ...TASK_OPTIONS }), "add");
        const named = await bounded(options, connection.set(runKey, runId, "NX"), "start the job");
        if (named === "OK") return await job.register();
        await Promise.all(Object.values(job.queues).map((queue) => queue.obliterate({ force: true }).catch(() => {})));
        await job.closeQueues();
      }
    } catch (error) {
      connection.disconnect();
      if (error instanceof LockUnavailableError) throw error;
      throw new LockUnavailableError(options.url, error instanceof Error ? error.message : String(error));
    }
  }

  private async register(): Promise<SharedJob> {
    await bounded(
      this.options,
      this.counters.multi().hsetnx(this.progressKey, `proc:${this.owner}`, "0").hincrby(this.progressKey, "processes", 1).expire(this.progressKey, RUN_KEEP_S * 24).exec(),
      "register",
    );
    return this;
  }

  /** Tasks waiting or in progress (including ones a dead process held, until the stall check requeues them). */
  async remaining(): Promise<number> {
    let sum = 0;
    // Listings first: only a listing adds tasks, and it adds them before it completes. So
    // when no listing is left, every shard task is already in the work queue counted next.
    for (const queue of [this.queues.scan, this.queues.work]) {
      const counts = await bounded(this.options, queue.getJobCounts("active", "waiting", "delayed", "prioritized", "waiting-children"), "count tasks");
      sum += Object.values(counts).reduce((total, n) => total + n, 0);
    }
    return sum;
  }

  /**
   * Takes tasks until the run is over everywhere (or `signal` aborts, or the
   * handler throws: the task goes back to the queue for another process, and
   * this process stops taking tasks and rethrows).
   */
  async run(handler: TaskHandler, signal?: AbortSignal): Promise<void> {
    const bull = await bullmq();
    let failure: unknown = null;
    const processTask = async (job: Job) => {
      const task = job.data as Task;
      if (failure !== null || signal?.aborted) throw new Error("this process is stopping"); // back to the queue
      const context: TaskContext = {
        add: (tasks) => this.add(tasks),
        count: (figures) => this.count(figures),
        retried: job.attemptsStarted > 1 || job.stalledCounter > 0,
      };
      try {
        await handler(task, context);
      } catch (error) {
        failure ??= error;
        throw error;
      }
      this.count(task.type === "scan" ? { foldersScanned: 1 } : { tasksDone: 1 });
    };
    const workers = (["scan", "work"] as const).map((type) => {
      const worker = new bull.Worker(this.queues[type].name, processTask, {
        connection: this.counters,
        prefix: "h5nest",
        concurrency: type === "scan" ? SCAN_CONCURRENCY : this.options.concurrency,
        lockDuration: this.options.termMs,
        stalledInterval: this.options.termMs,
        // A task a dead process held goes back to the queue however often processes die.
        maxStalledCount: 1000,
        drainDelay: 1,
        autorun: true,
      });
      worker.on("error", () => {
        // Connection trouble: the checks below bound how long we wait for Redis.
      });
      return worker;
    });
    const stopping = () => failure !== null || (signal?.aborted ?? false);
    try {
      for (;;) {
        if (stopping()) break;
        await sleep(100);
        if ((await this.remaining()) === 0) break;
      }
    } catch (error) {
      failure ??= error; // Redis does not answer
    } finally {
      // Tasks in progress finish; those not started stay queued for the others. Every step is
      // bounded: with Redis gone, BullMQ would wait for it forever. (A forced close after a
      // graceful one would not help: BullMQ keeps the first close's promise.)
      await settlesWithin(Promise.all(workers.map((worker) => worker.pause(false))), this.limitMs());
      await settlesWithin(Promise.all(workers.map((worker) => worker.close(true))), this.limitMs());
      await this.flushCounts().catch((error: unknown) => void (failure ??= error));
    }
    if (failure !== null) throw failure;
    // Empty queues are a finished run, even when this process was asked to stop meanwhile.
    if ((await this.remaining()) === 0) await this.end();
  }

  private async add(tasks: Task[]): Promise<void> {
    for (let start = 0; start < tasks.length; start += ADD_BATCH) {
      const batch = tasks.slice(start, start + ADD_BATCH);
      for (const type of ["scan", "work"] as const) {
        const some = batch.filter((task) => task.type === type);
        if (some.length === 0) continue;
        // Only shard tasks wait for room: their own slots drain them, whatever the listings do.
        if (type === "work") while ((await bounded(this.options, this.queues.work.getWaitingCount(), "count tasks")) > (this.options.maxWaiting ?? MAX_WAITING)) await sleep(200);
        // The same task twice while one waits is one task (a folder listed again after a process died).
        await bounded(this.options, this.queues[type].addBulk(some.map((task) => ({ name: "task", data: task, opts: { jobId: taskId(task), ...TASK_OPTIONS } }))), "add tasks");
        if (type === "work") this.count({ tasksFound: some.length });
      }
    }
  }

  private count(figures: Record<string, number | undefined>): void {
    for (const [name, value] of Object.entries(figures)) {
      if (!value) continue;
      this.pendingCounts.set(name, (this.pendingCounts.get(name) ?? 0) + value);
      if (name === "chunks") this.pendingCounts.set(`proc:${this.owner}`, (this.pendingCounts.get(`proc:${this.owner}`) ?? 0) + value);
    }
    if (this.pendingCounts.size === 0 || this.flushQueued) return;
    this.flushQueued = true;
    this.flushing = this.flushing
      .then(() => {
        this.flushQueued = false;
        return this.flushCounts();
      })
      .catch(() => {});
  }

  /** Sends the counts gathered since the last flush (one MULTI). */
  private async flushCounts(): Promise<void> {
    if (this.pendingCounts.size === 0) return;
    const counts = this.pendingCounts;
    this.pendingCounts = new Map();
    const multi = this.counters.multi();
    for (const [name, value] of counts) multi.hincrby(this.progressKey, name, value);
    await bounded(this.options, multi.exec(), "count");
  }

  /** The whole job's figures now. */
  async progress(): Promise<JobProgress> {
    const [fields, remaining] = await Promise.all([bounded(this.options, this.counters.hgetall(this.progressKey), "read progress"), this.remaining()]);
    const n = (name: string) => Number(fields[name] ?? 0);
    return {
      processes: n("processes"),
      foldersScanned: n("foldersScanned"),
      tasksFound: n("tasksFound"),
      tasksDone: n("tasksDone"),
      chunks: n("chunks"),
      bytes: n("bytes"),
      remaining,
    };
  }

  /** Chunks each process of this run counted, by owner (hostname:pid:random). */
  async shares(): Promise<Map<string, number>> {
    const fields = await bounded(this.options, this.counters.hgetall(this.progressKey), "read progress");
    const shares = new Map<string, number>();
    for (const [name, value] of Object.entries(fields)) if (name.startsWith("proc:")) shares.set(name.slice(5), Number(value));
    return shares;
  }

  /** Ends the run if it is still current; its queues go, its counters stay an hour. */
  private async end(): Promise<void> {
    const ended = await bounded(this.options, this.counters.eval(END_RUN, 1, SharedJob.runKey(this.options), this.runId), "end the job");
    await bounded(this.options, this.counters.expire(this.progressKey, RUN_KEEP_S), "end the job");
    if (ended === 1) {
      for (const queue of Object.values(this.queues)) await bounded(this.options, queue.obliterate({ force: true }), "remove the queue").catch(() => {});
    }
  }

  /** How long any Redis step may take before the job counts Redis as gone. */
  private limitMs(): number {
    return Math.max(5000, 2 * this.options.termMs);
  }

  private async closeQueues(): Promise<void> {
    await settlesWithin(Promise.all(Object.values(this.queues).map((queue) => queue.close())), this.limitMs());
  }

  async close(): Promise<void> {
    await this.flushCounts().catch(() => {});
    await this.closeQueues();
    this.counters.disconnect();
  }
}

/** BullMQ job ids may not hold ':' (nor be plain integers): a digest of the task. */
function taskId(task: Task): string {
  return `${task.type}-${createHash("sha1").update(task.path).digest("hex")}`;
}

/** True when `work` settles within `ms` (its outcome ignored). */
async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([work.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A Redis call that fails with LockUnavailableError when it fails or Redis does not answer within two terms. */
async function bounded<T>(options: SharedJobOptions, work: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = Math.max(5000, 2 * options.termMs);
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new LockUnavailableError(options.url, `no answer to "${what}" within ${limit} ms`)), limit);
  });
  try {
    return await Promise.race([work, timeout]);
  } catch (error) {
    // Whatever ioredis or BullMQ threw ("Connection is closed."), the caller sees one typed error.
    if (error instanceof LockUnavailableError) throw error;
    throw new LockUnavailableError(options.url, `${what}: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    clearTimeout(timer);
  }
}
