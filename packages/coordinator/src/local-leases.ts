/**
 * Leases for the processes of one machine. The first process to open a store
 * wins an election (binding an abstract Unix socket name, which the kernel
 * frees when that process dies) and serves leases on a filesystem socket
 * (mode 0600, in a 0700 folder under $XDG_RUNTIME_DIR or the temp folder);
 * the others connect. When the server dies, its clients elect a new one,
 * which grants nothing until every earlier lease has expired.
 */
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { encodeFrame, FrameDecoder, type Request, type Response } from "./frames.js";
import { deadlineAfter, type Lease, LeaseLostError, type LeaseProvider, LockUnavailableError, now } from "./lease.js";
import { LeaseServer } from "./lease-server.js";

export interface LocalLeaseOptions {
  /** Absolute path of the store: processes opening the same store share a server. */
  storeRoot: string;
  termMs: number;
  /** Give up (LockUnavailableError) when no server can be reached for this long. */
  connectTimeoutMs?: number;
}

export interface LeaseEndpoint {
  socketPath: string;
  stateFile: string;
  electionName: string;
}

/** Where the lease server of `storeRoot` listens. */
export function leaseEndpoint(storeRoot: string): LeaseEndpoint {
  const uid = typeof process.getuid === "function" ? process.getuid() : 0;
  const hash = createHash("sha256").update(fs.realpathSync(storeRoot)).digest("hex").slice(0, 24);
  const folder = path.join(process.env.XDG_RUNTIME_DIR || os.tmpdir(), `h5nest-${uid}`);
  fs.mkdirSync(folder, { recursive: true, mode: 0o700 });
  fs.chmodSync(folder, 0o700);
  return {
    socketPath: path.join(folder, `${hash}.sock`),
    stateFile: path.join(folder, `${hash}.state`),
    electionName: `\0h5nest-lease-${uid}-${hash}`,
  };
}

type Pending = { request: Request; resolve(response: Response): void; reject(error: Error): void };

export class LocalLeaseProvider implements LeaseProvider {
  readonly termMs: number;
  private readonly owner = `${os.hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`;
  private readonly endpoint: LeaseEndpoint;
  private readonly connectTimeoutMs: number;
  private socket: net.Socket | null = null;
  private connecting: Promise<void> | null = null;
  private election: net.Server | null = null;
  private server: LeaseServer | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  private constructor(options: LocalLeaseOptions) {
    this.termMs = options.termMs;
    this.endpoint = leaseEndpoint(options.storeRoot);
    this.connectTimeoutMs = options.connectTimeoutMs ?? 30_000;
  }

  static async open(options: LocalLeaseOptions): Promise<LocalLeaseProvider> {
    const provider = new LocalLeaseProvider(options);
    await provider.ensureConnected();
    return provider;
  }

  /** True when this process serves the leases. */
  get serving(): boolean {
    return this.server !== null;
  }

  async acquire(shard: string): Promise<Lease> {
    const start = now();
    const response = await this.call({ v: 1, id: 0, op: "acquire", shard, owner: this.owner, termMs: this.termMs });
    if (!response.ok || response.token === undefined) throw new LockUnavailableError(this.endpoint.socketPath, "acquire refused");
    // The grant came at least waitedMs after we sent the request: the term runs from there.
    const granted = start + BigInt(Math.floor((response.waitedMs ?? 0) * 1e6));
    const termMs = response.termMs ?? this.termMs;
    return { shard, owner: this.owner, token: response.token, termMs, deadline: deadlineAfter(granted, termMs) };
  }

  async renew(lease: Lease): Promise<void> {
    const start = now();
    const response = await this.call({ v: 1, id: 0, op: "renew", shard: lease.shard, owner: lease.owner, token: lease.token, termMs: lease.termMs });
    if (!response.ok) throw new LeaseLostError(lease.shard, response.message);
    lease.termMs = response.termMs ?? lease.termMs;
    deadlineAfter(start, lease.termMs, lease.deadline);
  }

  async release(lease: Lease): Promise<void> {
    await this.call({ v: 1, id: 0, op: "release", shard: lease.shard, owner: lease.owner, token: lease.token });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.socket?.destroy();
    for (const p of this.pending.values()) p.reject(new LockUnavailableError(this.endpoint.socketPath, "closed"));
    this.pending.clear();
    await this.server?.close();
    this.server = null;
    await new Promise<void>((resolve) => (this.election ? this.election.close(() => resolve()) : resolve()));
  }

  private async call(request: Request): Promise<Response> {
    if (this.closed) throw new LockUnavailableError(this.endpoint.socketPath, "closed");
    await this.ensureConnected();
    const id = this.nextId++;
    const framed = { ...request, id };
    return new Promise<Response>((resolve, reject) => {
      this.pending.set(id, { request: framed, resolve, reject });
      this.socket!.write(encodeFrame(framed));
    });
  }

  private ensureConnected(): Promise<void> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve();
    this.connecting ??= this.connectOrServe().finally(() => (this.connecting = null));
    return this.connecting;
  }

  /** Connects to the server, or wins the election and becomes it; retries until the timeout. */
  private async connectOrServe(): Promise<void> {
    const giveUp = Date.now() + this.connectTimeoutMs;
    let pause = 5;
    for (;;) {
      if (this.closed) throw new LockUnavailableError(this.endpoint.socketPath, "closed");
      try {
        await this.connect();
        return;
      } catch {
        if (!this.server && (await this.elect())) {
          this.server = await LeaseServer.listen({
            socketPath: this.endpoint.socketPath,
            stateFile: this.endpoint.stateFile,
            maxTermMs: this.termMs,
            ...(process.env.H5NEST_LEASE_LOG ? { logFile: process.env.H5NEST_LEASE_LOG } : {}),
          });
          continue;
        }
      }
      if (Date.now() > giveUp) throw new LockUnavailableError(this.endpoint.socketPath, "no lease server answers");
      await sleep(pause);
      pause = Math.min(pause * 2, 200);
    }
  }

  private async elect(): Promise<boolean> {
    const election = net.createServer();
    return new Promise<boolean>((resolve) => {
      election.once("error", () => resolve(false));
      election.listen(this.endpoint.electionName, () => {
        this.election = election;
        resolve(true);
      });
    });
  }

  private async connect(): Promise<void> {
    const socket = net.createConnection(this.endpoint.socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    socket.removeAllListeners("error");
    const decoder = new FrameDecoder();
    socket.on("data", (chunk: Buffer) => {
      let messages: unknown[];
      try {
        messages = decoder.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      for (const message of messages) {
        const response = message as Response;
        const waiting = this.pending.get(response.id);
        if (!waiting) continue;
        this.pending.delete(response.id);
        waiting.resolve(response);
      }
    });
    socket.on("error", () => socket.destroy());
    socket.on("close", () => this.lost(socket));
    this.socket = socket;
  }

  /**
   * The server went away. Renewals and releases in flight fail (the lease
   * may still be used until its deadline, which no successor can cut short);
   * acquires are sent again to the next server.
   */
  private lost(socket: net.Socket): void {
    if (this.socket !== socket) return;
    this.socket = null;
    if (this.closed) return;
    const retry: Pending[] = [];
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      if (p.request.op === "acquire") retry.push(p);
      else p.reject(new LockUnavailableError(this.endpoint.socketPath, "the lease server went away"));
    }
    void this.ensureConnected().then(
      () => {
        for (const p of retry) this.call(p.request).then(p.resolve, p.reject);
      },
      (error: Error) => {
        for (const p of retry) p.reject(error);
      },
    );
  }
}
