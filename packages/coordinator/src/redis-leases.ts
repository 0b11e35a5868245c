/**
 * Leases for processes on many machines, kept in Redis (ioredis): a lease is
 * `SET key "<owner> <token>" NX PX term`; the fencing token comes from INCR;
 * renewal and release are compare-and-set Lua scripts. Redis unreachable:
 * LockUnavailableError, and no write happens without a lease.
 */
import { randomBytes } from "node:crypto";
import os from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { deadlineAfter, type Lease, LeaseLostError, type LeaseProvider, LockUnavailableError, now } from "./lease.js";

export interface RedisLeaseOptions {
  url: string;
  /** Prefix of every key, so stores (and tests) don't collide: normally the store's path. */
  namespace: string;
  termMs: number;
}

const RENEW = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`;

export class RedisLeaseProvider implements LeaseProvider {
  readonly termMs: number;
  private readonly owner = `${os.hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`;
  private readonly redis: Redis;
  private readonly namespace: string;
  private readonly url: string;

  private constructor(options: RedisLeaseOptions) {
    this.termMs = options.termMs;
    this.namespace = options.namespace;
    this.url = options.url;
    this.redis = new Redis(options.url, {
      // Fail at once while disconnected instead of queueing: a write must not
      // wait for a lease that may never come.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => 200,
      lazyConnect: true,
    });
    this.redis.on("error", () => {
      // Reported through the failing commands; ioredis keeps reconnecting.
    });
  }

  static async open(options: RedisLeaseOptions): Promise<RedisLeaseProvider> {
    const provider = new RedisLeaseProvider(options);
    try {
      await provider.redis.connect();
    } catch (error) {
      provider.redis.disconnect();
      throw new LockUnavailableError(options.url, error instanceof Error ? error.message : String(error));
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
    const key = this.key(shard);
    let pause = 2;
    for (;;) {
      const token = await this.command(() => this.redis.incr(`h5nest:${this.namespace}:fence`));
      const start = now();
      const value = `${this.owner} ${token}`;
      const set = await this.command(() => this.redis.set(key, value, "PX", this.termMs, "NX"));
      if (set === "OK") return { shard, owner: this.owner, token, deadline: deadlineAfter(start, this.termMs) };
      // Held by another owner: wait for its release or expiry.
      await sleep(pause);
      pause = Math.min(pause * 2, 50);
    }
  }

  async renew(lease: Lease): Promise<void> {
    const start = now();
    const renewed = await this.command(() => this.redis.eval(RENEW, 1, this.key(lease.shard), `${lease.owner} ${lease.token}`, this.termMs));
    if (renewed !== 1) throw new LeaseLostError(lease.shard, "the lease expired or belongs to another owner");
    deadlineAfter(start, this.termMs, lease.deadline);
  }

  async release(lease: Lease): Promise<void> {
    await this.command(() => this.redis.eval(RELEASE, 1, this.key(lease.shard), `${lease.owner} ${lease.token}`));
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
