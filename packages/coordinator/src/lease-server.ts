/**
 * The local lease server: grants shard leases to the processes of one machine
 * over a Unix socket. One grant per shard at a time; waiting acquires are
 * served in order as leases are released or expire. A bad frame closes that
 * connection only.
 *
 * Takeover safety: the server records in a state file, before granting past
 * it, a wall-clock time by which every lease it granted has expired. A new
 * server grants nothing before that time.
 */
import fs from "node:fs";
import net from "node:net";
import { encodeFrame, FrameDecoder, MAX_TERM_MS, parseRequest, type Request, type Response } from "./frames.js";
import { type Grant, LeaseTable } from "./lease-table.js";

export interface LeaseServerOptions {
  socketPath: string;
  /** Where the server records until when its leases may live (survives its death). */
  stateFile: string;
  /** Longest term granted. */
  maxTermMs: number;
  /** JSON lines of grants and releases, for tests (H5NEST_LEASE_LOG). */
  logFile?: string;
}

interface Waiter {
  socket: net.Socket;
  request: Extract<Request, { op: "acquire" }>;
  /** When the request arrived (monotonic ms). */
  received: number;
}

const monotonicMs = () => Number(process.hrtime.bigint()) / 1e6;
/** Slack added to the recorded horizon so that it is rewritten rarely (but a takeover waits little longer). */
const horizonSlackMs = (termMs: number) => Math.min(5_000, termMs / 2);

/**
 * What a server leaves for its successor. While it runs: `leasesUntil`, a
 * wall-clock time by which all its leases have expired (a successor after a
 * crash grants nothing before it). After a clean close also `handover`: its
 * live leases (wall-clock expiry), which the successor adopts, so that only
 * those shards wait and their owners can renew or release them.
 */
interface ServerState {
  leasesUntil: number;
  handover?: { shard: string; owner: string; token: number; expiresAt: number }[];
}

export function readState(stateFile: string): ServerState {
  try {
    const state = JSON.parse(fs.readFileSync(stateFile, "utf8")) as Partial<ServerState>;
    return {
      leasesUntil: typeof state.leasesUntil === "number" ? state.leasesUntil : 0,
      ...(Array.isArray(state.handover) ? { handover: state.handover } : {}),
    };
  } catch {
    return { leasesUntil: 0 };
  }
}

function writeState(stateFile: string, state: ServerState): void {
  const temp = `${stateFile}.${process.pid}.tmp`;
  fs.writeFileSync(temp, JSON.stringify({ ...state, pid: process.pid }), { mode: 0o600 });
  fs.renameSync(temp, stateFile);
}

export class LeaseServer {
  private readonly table = new LeaseTable(Date.now() * 1000);
  private readonly waiters = new Map<string, Waiter[]>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly sockets = new Set<net.Socket>();
  /** Monotonic time before which nothing is granted (an earlier server's leases may live). */
  private readonly notBefore: number;
  /** Wall-clock horizon recorded in the state file. */
  private horizon: number;
  private closed = false;

  private constructor(
    private readonly server: net.Server,
    private readonly options: LeaseServerOptions,
  ) {
    const earlier = readState(options.stateFile);
    const at = monotonicMs();
    const wall = Date.now();
    this.notBefore = at + Math.max(0, earlier.leasesUntil - wall);
    this.horizon = earlier.leasesUntil;
    for (const grant of earlier.handover ?? []) {
      if (grant.expiresAt > wall) this.table.adopt({ ...grant, expiresAt: at + (grant.expiresAt - wall) });
      this.horizon = Math.max(this.horizon, grant.expiresAt);
    }
    server.on("connection", (socket) => this.accept(socket));
  }

  /** Listens on `socketPath` (removing a stale socket file first: the caller won the election). */
  static async listen(options: LeaseServerOptions): Promise<LeaseServer> {
    fs.rmSync(options.socketPath, { force: true });
    const server = net.createServer();
    const leaseServer = new LeaseServer(server, { ...options, maxTermMs: Math.min(options.maxTermMs, MAX_TERM_MS) });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.socketPath, () => {
        server.off("error", reject);
        resolve();
      });
    });
    fs.chmodSync(options.socketPath, 0o600);
    return leaseServer;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const timer of this.timers.values()) clearTimeout(timer);
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    fs.rmSync(this.options.socketPath, { force: true });
    // A clean stop hands its live leases over: a successor blocks only those
    // shards. An earlier server's horizon this one was still waiting out stays.
    const at = monotonicMs();
    const wall = Date.now();
    const handover = this.table.live(at).map((grant) => ({ ...grant, expiresAt: wall + (grant.expiresAt - at) }));
    writeState(this.options.stateFile, { leasesUntil: wall + Math.max(0, this.notBefore - at), handover });
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    const decoder = new FrameDecoder();
    socket.on("data", (chunk: Buffer) => {
      let requests: Request[];
      try {
        requests = decoder.push(chunk).map(parseRequest);
      } catch {
        socket.destroy(); // malformed, oversized or unknown version: this connection only
        return;
      }
      for (const request of requests) this.handle(socket, request);
    });
    socket.on("error", () => socket.destroy());
    socket.on("close", () => {
      this.sockets.delete(socket);
      for (const [shard, list] of this.waiters) {
        const kept = list.filter((w) => w.socket !== socket);
        if (kept.length) this.waiters.set(shard, kept);
        else this.waiters.delete(shard);
      }
    });
  }

  private reply(socket: net.Socket, response: Response): void {
    if (!socket.destroyed) socket.write(encodeFrame(response));
  }

  private handle(socket: net.Socket, request: Request): void {
    const at = monotonicMs();
    switch (request.op) {
      case "hello":
        this.reply(socket, { v: 1, id: request.id, ok: true, maxTermMs: this.options.maxTermMs });
        return;
      case "acquire": {
        const list = this.waiters.get(request.shard) ?? [];
        list.push({ socket, request: { ...request, termMs: Math.min(request.termMs, this.options.maxTermMs) }, received: at });
        this.waiters.set(request.shard, list);
        this.service(request.shard);
        return;
      }
      case "renew": {
        const termMs = Math.min(request.termMs, this.options.maxTermMs);
        this.recordHorizon(termMs);
        const grant = this.table.renew(request.shard, request.owner, request.token, termMs, at);
        if (grant) {
          this.log("renew", grant);
          this.reply(socket, { v: 1, id: request.id, ok: true, token: grant.token, termMs });
          this.arm(request.shard, grant.expiresAt);
        } else {
          this.reply(socket, { v: 1, id: request.id, ok: false, code: "H5NEST_LEASE_LOST", message: "the lease expired or belongs to another owner" });
        }
        return;
      }
      case "release": {
        const released = this.table.release(request.shard, request.owner, request.token, at);
        if (released) this.log("release", { shard: request.shard, owner: request.owner, token: request.token, expiresAt: at });
        this.reply(socket, { v: 1, id: request.id, ok: true });
        this.service(request.shard);
        return;
      }
    }
  }

  /** Grants the shard to its first live waiter if it is free; otherwise wakes up when it may be. */
  private service(shard: string): void {
    if (this.closed) return;
    const at = monotonicMs();
    if (at < this.notBefore) return this.arm(shard, this.notBefore);
    const list = this.waiters.get(shard);
    while (list && list.length > 0) {
      const waiter = list[0]!;
      if (waiter.socket.destroyed) {
        list.shift();
        continue;
      }
      const holder = this.table.holder(shard, at);
      if (holder) return this.arm(shard, holder.expiresAt);
      this.recordHorizon(waiter.request.termMs);
      const grant = this.table.tryGrant(shard, waiter.request.owner, waiter.request.termMs, at)!;
      list.shift();
      this.log("grant", grant);
      const waitedMs = Math.floor(at - waiter.received);
      this.reply(waiter.socket, { v: 1, id: waiter.request.id, ok: true, token: grant.token, termMs: waiter.request.termMs, waitedMs });
      this.arm(shard, grant.expiresAt);
      return;
    }
    this.waiters.delete(shard);
  }

  /** Before any lease may outlive the recorded horizon, move the horizon (synchronously, on disk). */
  private recordHorizon(termMs: number): void {
    const needed = Date.now() + termMs;
    if (needed <= this.horizon) return;
    this.horizon = needed + horizonSlackMs(this.options.maxTermMs);
    writeState(this.options.stateFile, { leasesUntil: this.horizon });
  }

  private arm(shard: string, at: number): void {
    const existing = this.timers.get(shard);
    if (existing) clearTimeout(existing);
    if (!this.waiters.get(shard)?.length) {
      this.timers.delete(shard);
      return;
    }
    const timer = setTimeout(() => {
      this.timers.delete(shard);
      this.service(shard);
    }, Math.max(0, at - monotonicMs()) + 1);
    this.timers.set(shard, timer);
  }

  private log(event: string, grant: Grant): void {
    if (!this.options.logFile) return;
    const line = {
      event,
      server: process.pid,
      shard: grant.shard,
      owner: grant.owner,
      token: grant.token,
      at: `${process.hrtime.bigint()}`,
      // expiresAt is monotonic ms; expressed in hrtime ns like `at`.
      expires: `${BigInt(Math.round(grant.expiresAt * 1e6))}`,
    };
    fs.appendFileSync(this.options.logFile, `${JSON.stringify(line)}\n`);
  }
}
