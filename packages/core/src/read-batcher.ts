/**
 * Gathers the chunk reads issued in one turn (zarrita asks for every chunk of
 * a region at once) and sends them to the workers as a few batches, keeping
 * the keys of one shard together so that each shard is opened once.
 */
import type { ReadItem, WorkerPool } from "@h5nest/workers";

interface PendingRead {
  item: ReadItem;
  resolve(value: Uint8Array | undefined): void;
  reject(error: unknown): void;
}

const MAX_BATCH = 256;

export class ReadBatcher {
  private pending: PendingRead[] = [];
  private scheduled = false;

  constructor(private readonly pool: WorkerPool) {}

  read(item: ReadItem): Promise<Uint8Array | undefined> {
    return new Promise((resolve, reject) => {
      this.pending.push({ item, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.dispatch());
      }
    });
  }

  private dispatch(): void {
    this.scheduled = false;
    const reads = this.pending;
    this.pending = [];
    reads.sort((a, b) => compare(a.item.shardPath ?? "", b.item.shardPath ?? ""));
    const size = Math.min(MAX_BATCH, Math.max(16, Math.ceil(reads.length / this.pool.threads)));
    for (let start = 0; start < reads.length; start += size) {
      const batch = reads.slice(start, start + size);
      this.pool.read(batch.map((r) => r.item)).then(
        (results) =>
          results.forEach((result, i) => {
            if (result instanceof Error) batch[i]!.reject(result);
            else batch[i]!.resolve(result);
          }),
        (error: unknown) => {
          for (const r of batch) r.reject(error);
        },
      );
    }
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
