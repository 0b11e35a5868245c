/**
 * Leases for processes on many machines, kept in Redis (ioredis). One Lua
 * script grants a lease atomically: `SET key "<owner> <token>" NX PX term`
 * with the fencing token from `INCR`, so tokens follow grant order. Renewal
 * and release are compare-and-set scripts.
 *
 * A Redis that lost data could grant a lease that an owner still uses: one
 * restarted without persistence, or from an older snapshot, or a replica
 * promoted before it received the latest writes. Every grant checks, inside
 * the same script, that the server is the one that made the previous grants:
 * `h5nest:runid` holds the `run_id` of the server that last granted. When
 * it differs from the answering server's (any restart or failover changes
 * it; a restored snapshot or a replica brings the old value back) or the
 * epoch key is missing, Redis is new to us: the epoch restarts, and nothing
 * is granted for one lease term. (The first use of a Redis, and the first
 * grant after any restart or failover, therefore waits one term.)
 *
 * Redis unreachable or silent: LockUnavailableError, within a bounded time,
 * and no write happens without a lease. An acquire that gets no grant within
 * `acquireTimeoutMs` fails the same way.
 */
import { randomBytes } from "node:crypto";
import os from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import type { Redis } from "ioredis";
import { invalidShardName, MAX_TERM_MS, MIN_TERM_MS } from "./frames.js";
import { deadlineAfter, type Lease, LeaseLostError, type LeaseProvider, LeaseRefusedError, LockUnavailableError, now } from "./lease.js";

export interface RedisLeaseOptions {
  url: string;
  /** Prefix of every lease key, so stores don't collide: the store's identity. */
  namespace: string;
  termMs: number;
  /** An acquire that is not granted within this long fails (default max(120 s, 4 terms + 30 s)). */
  acquireTimeoutMs?: number;
  /** Told once per wait when Redis is new to us and grants nothing for a term (the CLI prints it). */
  onNotice?: ((message: string) => void) | null;
}

/**
 * KEYS: lease, fence, epoch, runid. ARGV: owner, term.
 * Returns the token, 0 when held, -ms to wait when Redis is new to us.
 */
const ACQUIRE = `
local info = redis.call("INFO", "server")
local runid = string.match(info, "run_id:(%w+)") or "unknown"
local clock = redis.call("TIME")
local nowMs = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local epoch = tonumber(redis.call("GET", KEYS[3]) or "0")
if epoch == 0 or redis.call("GET", KEYS[4]) ~= runid then
  -- A new Redis, or one that may have lost writes (restart, older snapshot, failover):
  -- leases granted before may live on without their keys. Wait one term from now.
  redis.call("SET", KEYS[3], nowMs)
  redis.call("SET", KEYS[4], runid)
  epoch = nowMs
end
local term = tonumber(ARGV[2])
if nowMs < epoch + term then return -(epoch + term - nowMs) end
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
local token = redis.call("INCR", KEYS[2])
-- After a data loss the counter restarts: keep tokens above the clock (microseconds).
local floor = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
if token < floor then
  redis.call("SET", KEYS[2], floor)
  token = floor
end
-- %.0f: Lua would print a large number as 1.7e+15, which renew/release could not match.
redis.call("SET", KEYS[1], ARGV[1] .. " " .. string.format("%.0f", token), "PX", term)
return token`;
const RENEW = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`;

export class RedisLeaseProvider implements LeaseProvider {
  readonly termMs: number;
  private readonly owner = `${os.hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`;
  private readonly redis: Redis;
  private readonly namespace: string;
  private readonly url: string;
  private readonly acquireTimeoutMs: number;
  private readonly onNotice: ((message: string) => void) | null;
  /** When the wait for a Redis new to us ends (Date.now()), once told: told once per wait. */
  private toldUntil = 0;
  private closed = false;

  private constructor(options: RedisLeaseOptions, RedisClient: typeof Redis) {
    this.termMs = options.termMs;
    this.acquireTimeoutMs = options.acquireTimeoutMs ?? Math.max(120_000, 4 * options.termMs + 30_000);
    this.namespace = options.namespace;
    this.url = options.url;
    this.onNotice = options.onNotice ?? null;
    this.redis = new RedisClient(options.url, {
      // Fail at once while disconnected instead of queueing, and never wait
      // on a silent server longer than a third of a term.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: Math.max(200, Math.floor(options.termMs / 3)),
      connectTimeout: 5000,
      retryStrategy: () => 200,
      lazyConnect: true,
    });
    this.redis.on("error", () => {
      // Reported through the failing commands; ioredis keeps reconnecting.
    });
  }

  static async open(options: RedisLeaseOptions): Promise<RedisLeaseProvider> {
    if (!Number.isInteger(options.termMs) || options.termMs < MIN_TERM_MS || options.termMs > MAX_TERM_MS) {
      throw new RangeError(`termMs must be an integer from ${MIN_TERM_MS} to ${MAX_TERM_MS}, got ${options.termMs}`);
    }
    // ioredis is loaded by the first Redis user only: it costs every other use of h5nest about 80 ms.
    const { Redis: RedisClient } = await import("ioredis");
    const provider = new RedisLeaseProvider(options, RedisClient);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("no answer within 5 s")), 5000);
    });
    try {
      await Promise.race([provider.redis.connect().then(() => provider.redis.ping()), timeout]);
    } catch (error) {
      provider.redis.disconnect();
      throw new LockUnavailableError(options.url, error instanceof Error ? error.message : String(error));
    } finally {
      clearTimeout(timer);
    }
    return provider;
  }

  private key(shard: string): string {
    return `h5nest:${this.namespace}:lease:${shard}`;
  }

  private async command<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      throw new LockUnavailableError(this.url, error instanceof Error ? error.message : String(error));
    }
  }

  async acquire(shard: string): Promise<Lease> {
    const problem = invalidShardName(shard);
    if (problem) throw new LeaseRefusedError(this.url, problem);
    const keys = [this.key(shard), `h5nest:${this.namespace}:fence`, "h5nest:epoch", "h5nest:runid"];
    const giveUp = Date.now() + this.acquireTimeoutMs;
    let pause = 1;
    for (;;) {
      if (this.closed) throw new LockUnavailableError(this.url, "closed");
      if (Date.now() > giveUp) throw new LockUnavailableError(this.url, `no lease for ${shard} within ${this.acquireTimeoutMs} ms`);
      const start = now();
      const answer = Number(await this.command(() => this.redis.eval(ACQUIRE, 4, ...keys, this.owner, this.termMs)));
      if (answer > 0) return { shard, owner: this.owner, token: answer, termMs: this.termMs, deadline: deadlineAfter(start, this.termMs) };
      if (answer < 0) {
        this.tellWait(-answer);
        await sleep(Math.min(-answer, Math.max(0, giveUp - Date.now()) + 1)); // Redis is new to us: earlier leases may still live
        continue;
      }
      // Held by another owner: wait for its release or expiry.
      await sleep(pause);
      pause = Math.min(pause * 2, 16);
    }
  }

  private tellWait(ms: number): void {
    if (!this.onNotice || Date.now() < this.toldUntil) return;
    this.toldUntil = Date.now() + ms;
    const seconds = Math.max(1, Math.round(ms / 1000));
    this.onNotice(
      `Redis at ${this.url} is new to h5nest (first use, a restart or a failover): no lease is granted for one lease term, ` +
        `since leases granted before may still be in use; waiting ${seconds} s`,
    );
  }

  async renew(lease: Lease): Promise<void> {
    const start = now();
    const renewed = await this.command(() => this.redis.eval(RENEW, 1, this.key(lease.shard), `${lease.owner} ${lease.token}`, lease.termMs));
    if (renewed !== 1) throw new LeaseLostError(lease.shard, "the lease expired or belongs to another owner");
    deadlineAfter(start, lease.termMs, lease.deadline);
  }

  async release(lease: Lease): Promise<void> {
    await this.command(() => this.redis.eval(RELEASE, 1, this.key(lease.shard), `${lease.owner} ${lease.token}`));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.redis.disconnect();
  }
}
