/**
 * consolidate and compact shared by every process that runs them on one
 * store through one Redis (distributedLock: { redis }). The tree is divided
 * into tasks: listing one folder (its subfolders become tasks of their own)
 * and folding or compacting one shard. Every process takes tasks from the
 * run's queue (see SharedJob in @h5nest/coordinator), so N processes make
 * one walk between them and each shard is worked on once. Each commit still
 * takes the shard's lease, so writers beside the job stay safe.
 */
import path from "node:path";
import { type JobProgress, SharedJob, type Task, type TaskContext } from "@h5nest/coordinator";
import { CorruptShardError } from "@h5nest/workers";
import { type StoreFile, walkFiles } from "./walk.js";
import {
  type CompactOptions,
  type CompactSummary,
  compactShard,
  type ConsolidateOptions,
  type ConsolidateSummary,
  describeError,
  foldShard,
  isRawFolder,
  type SharedJobReport,
  type StoreInternals,
  sweepInto,
} from "./maintenance.js";

/** Where the shared job lives: the store's Redis and identity. */
export interface SharedJobTarget {
  url: string;
  namespace: string;
  termMs: number;
}


/** Tasks found in a folder are added in batches of this many (a folder may hold millions of entries). */
const TASK_BATCH = 500;
const PROGRESS_EVERY_MS = 500;

/**
 * Lists one folder (not below it): subfolders become tasks (`visitFolder`
 * says which kind, or null to leave it), files go to `visitFile`. Streams
 * the folder, adding tasks in batches.
 */
async function scanFolder(
  store: StoreInternals,
  relative: string,
  context: TaskContext,
  visitFolder: (folder: string) => Promise<Task["type"] | null>,
  visitFile: (file: StoreFile) => Promise<Task | null>,
): Promise<void> {
  let batch: Task[] = [];
  for await (const file of walkFiles(store.layout, { folder: path.join(store.layout.root, relative), enter: () => false })) {
    let task: Task | null = null;
    if (file.kind === "folder") {
      const type = await visitFolder(file.path);
      if (type) task = { type, path: path.relative(store.layout.root, file.path) };
    } else {
      task = await visitFile(file);
    }
    if (task) batch.push(task);
    if (batch.length >= TASK_BATCH) {
      await context.add(batch);
      batch = [];
    }
  }
  if (batch.length > 0) await context.add(batch);
}

/**
 * Runs a shared job to its end, reporting the whole job's progress on the
 * way, and records in `summary` the job, the error that stopped this
 * process (Redis gone, a full disk), or that it was interrupted.
 */
async function runShared(
  summary: { job?: SharedJobReport; fatal: Error | null; interrupted: boolean },
  store: StoreInternals,
  target: SharedJobTarget,
  kind: string,
  handle: (task: Task, context: TaskContext) => Promise<void>,
  options: { signal?: AbortSignal; onJobProgress?: (job: JobProgress) => void },
): Promise<void> {
  try {
    summary.job = await runJob(target, kind, store.concurrency * 2, handle, options.signal, options.onJobProgress);
  } catch (error) {
    summary.fatal = error as Error;
  }
  summary.interrupted = summary.fatal === null && (options.signal?.aborted ?? false);
}

async function runJob(
  target: SharedJobTarget,
  kind: string,
  concurrency: number,
  handle: (task: Task, context: TaskContext) => Promise<void>,
  signal: AbortSignal | undefined,
  onJobProgress: ((job: JobProgress) => void) | undefined,
): Promise<SharedJobReport> {
  const job = await SharedJob.join({ ...target, kind, concurrency }, { type: "scan", path: "" });
  const ticker = onJobProgress
    ? setInterval(() => {
        job.progress().then(onJobProgress, () => {});
      }, PROGRESS_EVERY_MS)
    : null;
  try {
    await job.run(handle, signal);
    const [progress, shares] = await Promise.all([job.progress(), job.shares()]);
    onJobProgress?.(progress);
    return { ...progress, runId: job.runId, shares: Object.fromEntries(shares) };
  } finally {
    if (ticker) clearInterval(ticker);
    await job.close();
  }
}

/** Sweeps the dead temporary files of one shard (`<shard>.<hex>.partial` beside it). */
async function sweepLeftoversOf(store: StoreInternals, shard: string, summary: ConsolidateSummary): Promise<void> {
  const prefix = `${path.basename(shard)}.`;
  for await (const file of walkFiles(store.layout, { folder: path.dirname(shard), enter: () => false })) {
    if (file.kind === "temp" && file.name.startsWith(prefix)) await sweepInto(store, file.path, summary);
  }
}

export async function consolidateShared(
  store: StoreInternals,
  target: SharedJobTarget,
  options: ConsolidateOptions = {},
): Promise<ConsolidateSummary> {
  const summary: ConsolidateSummary = { shards: 0, chunks: 0, bytes: 0, swept: 0, errors: [], fatal: null, interrupted: false };
  const { layout } = store;
  const handle = async (task: Task, context: TaskContext): Promise<void> => {
    if (task.type === "scan") {
      await scanFolder(
        store,
        task.path,
        context,
        async (folder) => ((await isRawFolder(store, folder)) ? "work" : "scan"),
        // A leftover temporary file: swept by its owner, if provably dead.
        async (file) => (file.kind === "temp" ? (await sweepInto(store, file.path, summary), null) : null),
      );
      return;
    }
    const shard = path.join(layout.root, task.path) + layout.ext;
    // A process died with this task: it may have left the shard's temporary file beside it.
    if (context.retried) await sweepLeftoversOf(store, shard, summary);
    try {
      const moved = await foldShard(store, shard, summary, options);
      if (moved) context.count(moved);
    } catch (error) {
      if (error instanceof CorruptShardError) summary.errors.push(describeError(shard, error));
      else throw error; // fatal here (a full disk): the task goes back to the queue for the others
    }
  };
  await runShared(summary, store, target, "consolidate", handle, options);
  return summary;
}

export async function compactShared(
  store: StoreInternals,
  target: SharedJobTarget,
  options: CompactOptions = {},
): Promise<CompactSummary> {
  const minWaste = options.minWaste ?? 0.2;
  const summary: CompactSummary = { shardsSeen: 0, shardsRewritten: 0, bytesBefore: 0, bytesAfter: 0, errors: [], fatal: null, interrupted: false };
  const { layout } = store;
  const handle = async (task: Task, context: TaskContext): Promise<void> => {
    if (task.type === "scan") {
      await scanFolder(
        store,
        task.path,
        context,
        // Raw folders hold chunk files, not shards: not listed.
        async (folder) => ((await isRawFolder(store, folder)) ? null : "scan"),
        async (file) => (file.kind === "shard" ? { type: "work", path: path.relative(layout.root, file.path) } : null),
      );
      return;
    }
    const shard = path.join(layout.root, task.path);
    try {
      const rewritten = await compactShard(store, shard, minWaste, summary, options);
      if (rewritten) context.count({ chunks: rewritten.datasets, bytes: rewritten.freed });
    } catch (error) {
      if (error instanceof CorruptShardError) summary.errors.push(describeError(shard, error));
      else if ((error as NodeJS.ErrnoException).code === "ENOENT") return; // removed meanwhile
      else throw error;
    }
  };
  await runShared(summary, store, target, "compact", handle, options);
  return summary;
}
