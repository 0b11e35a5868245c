/**
 * One owner per shard at a time, in one process. Operations for a shard are
 * queued; whenever the shard has no commit in flight and a worker slot is
 * free, everything queued for it becomes one batch (group commit). Pending
 * bytes are bounded: submit() waits while the queues are full (backpressure).
 */

export interface ShardSchedulerOptions<Op> {
  /** Batches in flight at once, across all shards (normally the worker count). */
  concurrency: number;
  /** Bytes queued or in flight above which submit() waits. */
  maxPendingBytes: number;
  /** Largest batch handed to one execute() call (a single larger op still goes alone). */
  maxBatchBytes: number;
  /**
   * Applies a batch for `owner`. Never called twice at once for one owner.
   * `grant` is a number that grows with every batch handed out.
   */
  execute(owner: string, ops: Op[], grant: number): Promise<void>;
}

interface Queued<Op> {
  op: Op;
  bytes: number;
  resolve(): void;
  reject(error: unknown): void;
}

interface Waiter {
  bytes: number;
  resolve(): void;
}

export class ShardScheduler<Op> {
  private readonly queues = new Map<string, Queued<Op>[]>();
  /** Owners with queued ops and nothing in flight, oldest first. */
  private readonly ready = new Set<string>();
  private readonly busy = new Set<string>();
  private readonly admission: Waiter[] = [];
  private readonly idleWaiters: (() => void)[] = [];
  private pendingBytes = 0;
  /** submit() calls not yet queued (waiting for admission). */
  private entering = 0;
  private pumpScheduled = false;
  /** Resolves when the latest slow submit has entered its queue (keeps submits in call order). */
  private enteredTail: Promise<void> = Promise.resolve();
  private grants = 0;

  constructor(private readonly options: ShardSchedulerOptions<Op>) {
    if (!(options.concurrency >= 1)) throw new RangeError("concurrency must be at least 1");
  }

  /**
   * Queues `op` for `owner`; resolves when the batch holding it has been
   * applied. `complete`: the number of queued ops that make a whole batch
   * (every chunk of a shard); reaching it starts the batch at once, without
   * waiting for the turn to end, so workers start while callers still produce.
   */
  submit(owner: string, op: Op, bytes: number, whole?: number | Promise<number | undefined>): Promise<void> {
    // The common case (shard size known, no earlier submit still entering,
    // room in the queues) queues at once, without a microtask per step:
    // set() is called once per chunk.
    const fits = this.pendingBytes === 0 || this.pendingBytes + bytes <= this.options.maxPendingBytes;
    if (!(whole instanceof Promise) && this.entering === 0 && this.admission.length === 0 && fits) {
      this.pendingBytes += bytes;
      return this.enqueue(owner, op, bytes, whole);
    }
    return this.submitSlowly(owner, op, bytes, whole);
  }

  /** Submits that must wait (for `whole`, or for room) enter the queues one by one, in call order. */
  private async submitSlowly(owner: string, op: Op, bytes: number, whole?: number | Promise<number | undefined>): Promise<void> {
    this.entering += 1;
    const previous = this.enteredTail;
    let entered!: () => void;
    this.enteredTail = new Promise<void>((resolve) => (entered = resolve));
    let queued: Promise<void>;
    try {
      const complete = await whole;
      await previous;
      await this.admit(bytes);
      queued = this.enqueue(owner, op, bytes, complete);
    } finally {
      this.entering -= 1;
      entered();
      this.notifyIdle();
    }
    return queued;
  }

  private enqueue(owner: string, op: Op, bytes: number, complete: number | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let queue = this.queues.get(owner);
      if (!queue) {
        queue = [];
        this.queues.set(owner, queue);
      }
      queue.push({ op, bytes, resolve, reject });
      if (this.busy.has(owner)) return;
      if (complete !== undefined && queue.length >= complete && this.busy.size < this.options.concurrency) {
        this.ready.delete(owner);
        this.start(owner);
        return;
      }
      this.ready.add(owner);
      this.schedulePump();
    });
  }

  /** Resolves once nothing is queued or in flight. */
  drain(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Bytes queued or in flight now. */
  get pending(): number {
    return this.pendingBytes;
  }

  private isIdle(): boolean {
    return this.entering === 0 && this.queues.size === 0 && this.busy.size === 0;
  }

  private admit(bytes: number): Promise<void> {
    // An op larger than the whole budget is admitted alone rather than never.
    const fits = this.pendingBytes === 0 || this.pendingBytes + bytes <= this.options.maxPendingBytes;
    if (fits && this.admission.length === 0) {
      this.pendingBytes += bytes;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.admission.push({ bytes, resolve }));
  }

  private wakeAdmissions(): void {
    while (this.admission.length > 0) {
      const next = this.admission[0]!;
      const fits = this.pendingBytes === 0 || this.pendingBytes + next.bytes <= this.options.maxPendingBytes;
      if (!fits) return;
      this.admission.shift();
      this.pendingBytes += next.bytes;
      next.resolve();
    }
  }

  /**
   * Batches start on the next macrotask, so that every op submitted in the
   * same turn (zarrita issues all chunks of a region at once) joins them.
   */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    while (this.busy.size < this.options.concurrency && this.ready.size > 0) {
      const owner = this.ready.values().next().value as string;
      this.ready.delete(owner);
      this.start(owner);
    }
  }

  private start(owner: string): void {
    const queue = this.queues.get(owner);
    if (!queue || queue.length === 0) return;
    let bytes = 0;
    let count = 0;
    while (count < queue.length && (count === 0 || bytes + queue[count]!.bytes <= this.options.maxBatchBytes)) {
      bytes += queue[count]!.bytes;
      count += 1;
    }
    const batch = queue.splice(0, count);
    if (queue.length === 0) this.queues.delete(owner);
    this.busy.add(owner);
    const grant = ++this.grants;
    let outcome: Promise<void>;
    try {
      outcome = this.options.execute(
        owner,
        batch.map((entry) => entry.op),
        grant,
      );
    } catch (error) {
      outcome = Promise.reject(error);
    }
    outcome.then(
      () => this.finish(owner, batch, bytes, null),
      (error: unknown) => this.finish(owner, batch, bytes, { error }),
    );
  }

  private finish(owner: string, batch: Queued<Op>[], bytes: number, failure: { error: unknown } | null): void {
    this.busy.delete(owner);
    this.pendingBytes -= bytes;
    if (this.queues.has(owner)) this.ready.add(owner);
    for (const entry of batch) {
      if (failure) entry.reject(failure.error);
      else entry.resolve();
    }
    this.wakeAdmissions();
    this.pump();
    this.notifyIdle();
  }

  private notifyIdle(): void {
    if (this.isIdle()) {
      for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }
}
