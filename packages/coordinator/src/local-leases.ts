/**
 * Leases for the processes of one machine. A store's lease server is found
 * by the store's identity, never by its path, user or environment: it listens
 * on the abstract Unix socket `h5nest-lease-<store id>-<generation>`, and
 * keeps its state in a folder inside the store (see lease-server.ts).
 *
 * A client connects to the latest generation recorded in that folder. When
 * nobody answers there (the server died, or stopped answering), the client
 * stands for the next generation: binding its name elects it (the kernel
 * frees the name when its process dies), and the new server grants nothing
 * before every earlier lease has expired.
 *
 * Every call has a deadline. A server that does not answer a request (or a
 * ping while an acquire waits in its queue) within `answerTimeoutMs` of this
 * process's running time fails the calls with LockUnavailableError, and the
 * next call elects another server. An acquire also gives up after
 * `acquireTimeoutMs`. Invalid requests are refused up front, typed.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { encodeFrame, FrameDecoder, invalidShardName, MAX_TERM_MS, MIN_TERM_MS, type Request, type Response } from "./frames.js";
import { deadlineAfter, type Lease, LeaseRefusedError, type LeaseProvider, LockUnavailableError, now, refusalError } from "./lease.js";
import { generations, LeaseServer, socketName, stateError } from "./lease-server.js";

export interface LocalLeaseOptions {
  /** The store's identity: processes naming the same one share leases (letters, digits, `-`, `_`). */
  namespace: string;
  /** The folder inside the store that holds the lease servers' state (created if missing). */
  stateDir: string;
  termMs: number;
  /** Give up (LockUnavailableError) when no server can be reached or elected for this long (default 30 s). */
  connectTimeoutMs?: number;
  /** A server that leaves a request unanswered this long is unresponsive (default termMs / 2, within 2.5 to 5 s). */
  answerTimeoutMs?: number;
  /** An acquire that is not granted within this long fails (default max(120 s, 4 terms + 30 s)). */
  acquireTimeoutMs?: number;
}

/** Where a store's leases live: its state folder and the socket of a generation. */
export function leaseEndpoint(namespace: string, stateDir: string): { stateDir: string; latest(): number; socket(generation?: number): string } {
  return {
    stateDir,
    latest: () => generations(stateDir).at(-1) ?? 0,
    socket: (generation?: number) => socketName(namespace, generation ?? generations(stateDir).at(-1) ?? 0),
  };
}

type Pending = {
  request: Request;
  resolve(response: Response): void;
  reject(error: Error): void;
  /** Awake-time deadline of an acquire. */
  giveUpAt?: number;
};

/** An acquire whose connection closed: it is sent again to the next server. */
class ServerGone extends Error {}

const TICK_MS = 100;

export class LocalLeaseProvider implements LeaseProvider {
  readonly termMs: number;
  private readonly owner = `${os.hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`;
  private readonly namespace: string;
  private readonly stateDir: string;
  private readonly connectTimeoutMs: number;
  private readonly answerTimeoutMs: number;
  private readonly acquireTimeoutMs: number;
  private socket: net.Socket | null = null;
  private generation = 0;
  private serverPid = 0;
  private connecting: Promise<void> | null = null;
  private server: LeaseServer | null = null;
  private readonly pending = new Map<number, Pending>();
  private readonly pings = new Set<number>();
  /** Acquires given up on (id to shard): a late grant is released at once. */
  private readonly abandoned = new Map<number, string>();
  /** Generations found dead or unresponsive. */
  private readonly dead = new Set<number>();
  private nextId = 1;
  private closed = false;
  private closing: Promise<void> | null = null;
  private readonly abort = new AbortController();
  /** Milliseconds this process has been running (a stopped or frozen process does not count its pause against a server). */
  private awake = 0;
  private lastTick = performance.now();
  private lastActivity = 0;
  /** Awake time since which a frame is awaited with nothing heard, or null. */
  private waitingSince: number | null = null;
  private readonly watchdog: NodeJS.Timeout;

  private constructor(options: LocalLeaseOptions) {
    if (!Number.isInteger(options.termMs) || options.termMs < MIN_TERM_MS || options.termMs > MAX_TERM_MS) {
      throw new RangeError(`termMs must be an integer from ${MIN_TERM_MS} to ${MAX_TERM_MS}, got ${options.termMs}`);
    }
    socketName(options.namespace, 0); // validates the namespace
    this.termMs = options.termMs;
    this.namespace = options.namespace;
    this.stateDir = options.stateDir;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 30_000;
    // Long enough for a loaded (not stopped) server; a takeover costs a term.
    this.answerTimeoutMs = options.answerTimeoutMs ?? Math.min(5000, Math.max(2500, Math.floor(options.termMs / 2)));
    this.acquireTimeoutMs = options.acquireTimeoutMs ?? Math.max(120_000, 4 * options.termMs + 30_000);
    this.watchdog = setInterval(() => this.tick(), TICK_MS);
    this.watchdog.unref();
  }

  static async open(options: LocalLeaseOptions): Promise<LocalLeaseProvider> {
    const provider = new LocalLeaseProvider(options);
    try {
      prepareStateDir(options.stateDir);
      await provider.ensureConnected();
    } catch (error) {
      await provider.close();
      throw error;
    }
    return provider;
  }

  /** True when this process serves the leases. */
  get serving(): boolean {
    return this.server?.serving ?? false;
  }

  private get where(): string {
    return this.generation ? `${this.stateDir} (lease server generation ${this.generation}, pid ${this.serverPid})` : this.stateDir;
  }

  async acquire(shard: string): Promise<Lease> {
    const problem = invalidShardName(shard);
    if (problem) throw new LeaseRefusedError(this.stateDir, problem);
    const giveUpAt = this.awake + this.acquireTimeoutMs;
    for (;;) {
      const start = now();
      let response: Response;
      try {
        response = await this.call({ v: 1, id: 0, op: "acquire", shard, owner: this.owner, termMs: this.termMs }, giveUpAt);
      } catch (error) {
        if (error instanceof ServerGone && this.awake < giveUpAt) continue; // the server died: ask its successor
        if (error instanceof ServerGone) throw new LockUnavailableError(this.where, `no lease for ${shard} within ${this.acquireTimeoutMs} ms`);
        throw error;
      }
      if (!response.ok) throw refusalError(this.where, response.code, response.message, shard);
      if (response.token === undefined) throw new LeaseRefusedError(this.where, "a grant without a token");
      // The grant came at least waitedMs after we sent the request: the term runs from there.
      const granted = start + BigInt(Math.floor((response.waitedMs ?? 0) * 1e6));
      const termMs = response.termMs ?? this.termMs;
      return { shard, owner: this.owner, token: response.token, termMs, deadline: deadlineAfter(granted, termMs) };
    }
  }

  async renew(lease: Lease): Promise<void> {
    const start = now();
    const response = await this.call({ v: 1, id: 0, op: "renew", shard: lease.shard, owner: lease.owner, token: lease.token, termMs: lease.termMs }).catch((error: unknown) => {
      throw error instanceof ServerGone ? new LockUnavailableError(this.where, "the lease server went away") : error;
    });
    if (!response.ok) throw refusalError(this.where, response.code, response.message, lease.shard);
    lease.termMs = response.termMs ?? lease.termMs;
    deadlineAfter(start, lease.termMs, lease.deadline);
  }

  async release(lease: Lease): Promise<void> {
    const response = await this.call({ v: 1, id: 0, op: "release", shard: lease.shard, owner: lease.owner, token: lease.token }).catch((error: unknown) => {
      throw error instanceof ServerGone ? new LockUnavailableError(this.where, "the lease server went away") : error;
    });
    if (!response.ok) throw refusalError(this.where, response.code, response.message, lease.shard);
  }

  /** Stops everything this provider started (connection, election, serving role), in bounded time. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      this.abort.abort();
      clearInterval(this.watchdog);
      const socket = this.socket;
      this.socket = null;
      this.failPending(() => new LockUnavailableError(this.where, "closed"));
      socket?.destroy();
      // A connection or election under way stops at its next step and undoes what it made.
      await this.connecting?.catch(() => {});
      const server = this.server;
      this.server = null;
      await server?.close();
    })();
    return this.closing;
  }

  private throwIfClosed(): void {
    if (this.closed) throw new LockUnavailableError(this.where, "closed");
  }

  private async call(request: Request, giveUpAt?: number): Promise<Response> {
    this.throwIfClosed();
    await this.ensureConnected();
    this.throwIfClosed();
    return this.send(request, giveUpAt);
  }

  private send(request: Request, giveUpAt?: number): Promise<Response> {
    const socket = this.socket;
    if (!socket || socket.destroyed) return Promise.reject(new ServerGone());
    const id = this.nextId++;
    const framed = { ...request, id };
    let frame: Buffer;
    try {
      frame = encodeFrame(framed);
    } catch (error) {
      return Promise.reject(new LeaseRefusedError(this.where, (error as Error).message));
    }
    return new Promise<Response>((resolve, reject) => {
      this.pending.set(id, { request: framed, resolve, reject, ...(giveUpAt !== undefined ? { giveUpAt } : {}) });
      socket.ref(); // keep the process alive while an answer is due
      this.wrote(socket, frame);
    });
  }

  private wrote(socket: net.Socket, frame: Buffer): void {
    this.waitingSince ??= this.awake;
    this.lastActivity = this.awake;
    socket.write(frame);
  }

  private failPending(error: (p: Pending) => Error): void {
    const failed = [...this.pending.values()];
    this.pending.clear();
    this.pings.clear();
    this.waitingSince = null;
    for (const p of failed) p.reject(error(p));
  }

  /**
   * Every tick: counts this process's running time, gives up acquires past
   * their deadline, pings a server that owes an answer, and declares it
   * unresponsive when nothing came back in time.
   */
  private tick(): void {
    const real = performance.now();
    this.awake += Math.min(real - this.lastTick, 3 * TICK_MS);
    this.lastTick = real;
    for (const [id, p] of this.pending) {
      if (p.giveUpAt === undefined || this.awake < p.giveUpAt) continue;
      this.pending.delete(id);
      this.abandoned.set(id, (p.request as { shard: string }).shard);
      p.reject(new LockUnavailableError(this.where, `no lease for ${(p.request as { shard?: string }).shard} within ${this.acquireTimeoutMs} ms`));
    }
    const socket = this.socket;
    if (!socket) return;
    if (this.waitingSince !== null && this.awake - this.waitingSince > this.answerTimeoutMs) {
      this.unresponsive(socket);
      return;
    }
    if (this.pending.size > 0 && this.pings.size === 0 && this.awake - this.lastActivity >= this.answerTimeoutMs / 3) {
      const id = this.nextId++;
      this.pings.add(id);
      this.wrote(socket, encodeFrame({ v: 1, id, op: "hello", owner: this.owner }));
    }
    if (this.pending.size === 0) socket.unref();
  }

  /** The server owes an answer it did not give in time: fail every call; the next one elects another server. */
  private unresponsive(socket: net.Socket): void {
    this.dead.add(this.generation);
    this.socket = null;
    const waited = this.awake - (this.waitingSince ?? this.awake);
    this.failPending(() => new LockUnavailableError(this.where, `the lease server did not answer within ${Math.round(waited)} ms`));
    socket.destroy();
  }

  private ensureConnected(): Promise<void> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve();
    this.connecting ??= this.connectOrServe().finally(() => (this.connecting = null));
    return this.connecting;
  }

  /**
   * Connects to the latest lease server, or stands for the next generation
   * and serves; retries until the connect timeout. Undoes its own work if
   * the provider is closed meanwhile.
   */
  private async connectOrServe(): Promise<void> {
    const giveUp = Date.now() + this.connectTimeoutMs;
    let pause = 5;
    for (;;) {
      this.throwIfClosed();
      const latest = generations(this.stateDir).at(-1) ?? 0;
      if (latest > 0 && !this.dead.has(latest) && (await this.attach(latest))) return;
      if (latest > 0) this.dead.add(latest);
      // Nobody answers at the latest generation: stand for the next ones.
      for (let generation = latest + 1; generation <= latest + 3; generation++) {
        this.throwIfClosed();
        if (this.dead.has(generation)) continue;
        if (!this.server?.serving) {
          const server = await LeaseServer.listen({
            namespace: this.namespace,
            stateDir: this.stateDir,
            generation,
            maxTermMs: this.termMs,
            onReport: (message) => process.emitWarning(message, { code: "H5NEST_LEASE_SERVER" }),
            onStopped: () => {
              if (this.server === server) this.server = null;
            },
            ...(process.env.H5NEST_LEASE_LOG ? { logFile: process.env.H5NEST_LEASE_LOG } : {}),
          });
          if (server && this.closed) {
            await server.close();
            this.throwIfClosed();
          }
          if (server) {
            const previous = this.server;
            this.server = server;
            await previous?.close();
          }
        }
        if (await this.attach(generation)) return;
        this.dead.add(generation);
      }
      if (Date.now() > giveUp) throw new LockUnavailableError(this.stateDir, `no lease server answers (tried up to generation ${latest + 3})`);
      await sleep(pause, undefined, { signal: this.abort.signal }).catch(() => {});
      pause = Math.min(pause * 2, 200);
    }
  }

  /**
   * Connects to the server of `generation` and says hello with a probe file
   * (proving this process can write the lease folder, and that it is the
   * server's folder). False when nobody answers there; throws when the
   * server refuses this store.
   */
  private async attach(generation: number): Promise<boolean> {
    const socket = net.createConnection(socketName(this.namespace, generation));
    const connected = await new Promise<boolean>((resolve) => {
      socket.once("connect", () => resolve(true));
      socket.once("error", () => resolve(false));
    });
    socket.removeAllListeners("error");
    socket.on("error", () => socket.destroy());
    if (!connected || this.closed) {
      socket.destroy();
      this.throwIfClosed();
      return false;
    }
    const decoder = new FrameDecoder();
    socket.on("data", (chunk: Buffer) => {
      let messages: unknown[];
      try {
        messages = decoder.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      if (this.socket === socket) {
        this.waitingSince = null;
        this.lastActivity = this.awake;
      }
      for (const message of messages) this.answer(socket, message as Response);
    });
    socket.on("close", () => this.lost(socket));
    this.socket = socket;
    this.generation = generation;
    this.serverPid = 0;
    const probe = `probe.${randomBytes(16).toString("hex")}`;
    const probeFile = path.join(this.stateDir, probe);
    try {
      fs.writeFileSync(probeFile, "", { mode: 0o600 });
    } catch (error) {
      this.socket = null;
      socket.destroy();
      throw stateError(this.stateDir, "write", error);
    }
    let response: Response;
    try {
      response = await this.send({ v: 1, id: 0, op: "hello", owner: this.owner, probe });
    } catch {
      if (this.socket === socket) this.socket = null;
      socket.destroy();
      this.throwIfClosed();
      return false; // gone or unresponsive
    } finally {
      fs.rmSync(probeFile, { force: true });
    }
    if (!response.ok) {
      this.socket = null;
      socket.destroy();
      throw refusalError(this.stateDir, response.code, response.message);
    }
    this.serverPid = response.pid ?? 0;
    if (this.closed) {
      socket.destroy();
      this.throwIfClosed();
    }
    return true;
  }

  private answer(socket: net.Socket, response: Response): void {
    if (this.pings.delete(response.id)) return;
    const waiting = this.pending.get(response.id);
    if (!waiting) {
      // A grant for an acquire given up on: give it back at once.
      const shard = this.abandoned.get(response.id);
      this.abandoned.delete(response.id);
      if (shard !== undefined && response.ok && response.token !== undefined && this.socket === socket) {
        this.send({ v: 1, id: 0, op: "release", shard, owner: this.owner, token: response.token }).catch(() => {});
      }
      return;
    }
    this.pending.delete(response.id);
    waiting.resolve(response);
    if (this.pending.size === 0 && this.socket === socket) socket.unref();
  }

  /**
   * The server went away. Renewals and releases in flight fail (the lease
   * may still be used until its deadline, which no successor can cut short);
   * acquires are asked again of the next server.
   */
  private lost(socket: net.Socket): void {
    if (this.socket !== socket) return;
    this.socket = null;
    this.failPending(() => new ServerGone());
  }
}

/**
 * Creates the lease state folder if needed, with the permissions of the
 * folder that holds it (minus the sticky bit, so that every user who can
 * write the store can replace the servers' files).
 */
export function prepareStateDir(stateDir: string): void {
  try {
    if (fs.statSync(stateDir, { throwIfNoEntry: false })?.isDirectory()) return;
    const parent = fs.statSync(path.dirname(stateDir));
    const mode = (parent.mode & 0o2777) | 0o700;
    try {
      fs.mkdirSync(stateDir, { mode });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      return;
    }
    fs.chmodSync(stateDir, mode); // the umask must not make it private
  } catch (error) {
    throw stateError(stateDir, "create", error);
  }
}

/**
 * True when a lease server answers for this store (some process is writing
 * it with distributedLock). A connection on the latest generation's socket
 * proves a live process: the kernel frees an abstract name when its owner dies.
 */
export async function leaseServerLive(namespace: string, stateDir: string, timeoutMs = 1000): Promise<boolean> {
  let latest: number | undefined;
  try {
    latest = generations(stateDir).at(-1);
  } catch {
    return false; // no lease state: nobody ever served this store's leases here
  }
  if (latest === undefined) return false;
  return new Promise((resolve) => {
    const socket = net.createConnection({ path: socketName(namespace, latest) });
    const done = (live: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(live);
    };
    const timer = setTimeout(() => done(true), timeoutMs); // connecting but slow: someone holds the name
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}
