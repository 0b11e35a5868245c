/**
 * The local lease server: grants shard leases to the processes of one machine
 * over an abstract Unix socket named after the store's identity and the
 * server's generation. One grant per shard at a time; waiting acquires are
 * served in order as leases are released or expire.
 *
 * Every request gets an answer or a typed refusal; a frame that cannot be
 * answered (malformed, oversized, unknown version) closes that connection
 * only. Nothing a peer or the disk does throws out of the server: a state
 * file it cannot write (a full disk) makes it refuse grants and report.
 *
 * Takeover safety. The servers of one store keep their state in a folder
 * inside the store (`<store>/.h5nest/leases`), which every candidate reads
 * whatever its path to the store, user or environment:
 *  - `server.<generation>.json`: before granting past it, a server records a
 *    wall-clock horizon by which every lease it granted has expired; after a
 *    clean close, its live leases (adopted by the next server).
 *  - A new server first records its own file, then reads the earlier ones
 *    and grants nothing before their horizons (adopting handed-over leases).
 *  - A server that moves its horizon writes the new one, then looks for a
 *    newer generation, and grants past its old horizon only if there is none.
 * Either the newer server reads the moved horizon, or the older one sees the
 * newer server: two owners never coexist, even when a stopped server wakes
 * up after it was replaced.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { encodeFrame, FrameDecoder, MAX_TERM_MS, parseRequest, type Request, type Response } from "./frames.js";
import { LeaseNamespaceError, LockUnavailableError, ProtocolError } from "./lease.js";
import { type Grant, LeaseTable } from "./lease-table.js";

export interface LeaseServerOptions {
  /** The store's identity (letters, digits, `-`, `_`): processes naming the same one share leases. */
  namespace: string;
  /** The folder inside the store where servers record their state (every candidate reads it). */
  stateDir: string;
  /** This server's generation: it serves under `socketName(namespace, generation)`. */
  generation: number;
  /** Longest term granted. */
  maxTermMs: number;
  /** JSON lines of grants and releases, for tests (H5NEST_LEASE_LOG). */
  logFile?: string;
  /** Problems the server survives (a state file it cannot write): reported, never thrown. */
  onReport?: (message: string) => void;
  /** Called once if the server stops serving by itself (a newer server replaced it). */
  onStopped?: (reason: string) => void;
}

const NAMESPACE = /^[A-Za-z0-9_-]{1,64}$/;
const STATE_FILE = /^server\.(\d{1,15})\.json$/;
/** Probes and temporary files older than this are leftovers of dead processes. */
const LEFTOVER_MS = 60_000;
/** How often a server checks that no newer one replaced it. */
const WATCH_MS = 1000;

/** The abstract socket name of a store's lease server of `generation`. */
export function socketName(namespace: string, generation: number): string {
  if (!NAMESPACE.test(namespace)) throw new RangeError(`invalid lease namespace ${JSON.stringify(namespace)}`);
  return `\0h5nest-lease-${namespace}-${generation}`;
}

export function stateFileOf(stateDir: string, generation: number): string {
  return path.join(stateDir, `server.${generation}.json`);
}

/** The generations that left a state file, ascending. Throws typed errors (never a raw errno). */
export function generations(stateDir: string): number[] {
  let names: string[];
  try {
    names = fs.readdirSync(stateDir);
  } catch (error) {
    throw stateError(stateDir, "read", error);
  }
  const found: number[] = [];
  for (const name of names) {
    const match = STATE_FILE.exec(name);
    if (match) found.push(Number(match[1]));
  }
  return found.sort((a, b) => a - b);
}

/** A typed error for a failed operation on the state folder. */
export function stateError(stateDir: string, what: string, error: unknown): Error {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  const detail = `cannot ${what} ${stateDir}: ${(error as Error)?.message ?? String(error)}`;
  if (code === "EACCES" || code === "EPERM" || code === "EROFS") {
    const uid = typeof process.getuid === "function" ? process.getuid() : "?";
    return new LeaseNamespaceError(
      stateDir,
      `${detail} (uid ${uid}). Every process that writes a store with distributedLock must be able to write this folder: give the users a common group and make the store folder group-writable`,
    );
  }
  return new LockUnavailableError(stateDir, detail);
}

interface HandedOver {
  shard: string;
  owner: string;
  token: number;
  /** Wall-clock ms. */
  expiresAt: number;
}

/**
 * What a server leaves for its successors. While it runs: `leasesUntil`, a
 * wall-clock time by which all its leases have expired (a successor grants
 * nothing before it). After a clean close also `handover`: its live leases
 * (wall-clock expiry), which the successor adopts, so that only those shards
 * wait and their owners can renew or release them.
 */
interface ServerState {
  generation: number;
  pid: number;
  leasesUntil: number;
  handover?: HandedOver[];
  closed?: boolean;
}

/**
 * The state a server left; null when the file is gone. A file that cannot be
 * parsed (it should not happen: files are replaced by rename) is taken as a
 * server whose leases may live for a maximal term from now.
 */
export function readState(stateDir: string, generation: number): ServerState | null {
  const file = stateFileOf(stateDir, generation);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw stateError(stateDir, `read ${path.basename(file)} in`, error);
  }
  try {
    const state = JSON.parse(text) as Partial<ServerState>;
    if (typeof state.leasesUntil !== "number") throw new Error("no leasesUntil");
    const handover = Array.isArray(state.handover) ? state.handover.filter(isHandedOver) : undefined;
    return { generation, pid: Number(state.pid) || 0, leasesUntil: state.leasesUntil, ...(handover ? { handover } : {}), ...(state.closed ? { closed: true } : {}) };
  } catch {
    return { generation, pid: 0, leasesUntil: Date.now() + MAX_TERM_MS + horizonSlackMs(MAX_TERM_MS) };
  }
}

function isHandedOver(value: unknown): value is HandedOver {
  const v = value as HandedOver;
  return typeof v === "object" && v !== null && typeof v.shard === "string" && typeof v.owner === "string" && Number.isSafeInteger(v.token) && typeof v.expiresAt === "number";
}

/** Replaces `file` atomically (write a temporary file, rename it over). Throws the raw error. */
export function writeFileAtomic(file: string, text: string): void {
  const temp = `${file}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  try {
    fs.writeFileSync(temp, text, { mode: 0o644 });
    fs.chmodSync(temp, 0o644); // readable by every user of the store, whatever the umask
    fs.renameSync(temp, file);
  } catch (error) {
    fs.rmSync(temp, { force: true });
    throw error;
  }
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

export class LeaseServer {
  private readonly table = new LeaseTable(Date.now() * 1000);
  private readonly waiters = new Map<string, Waiter[]>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly sockets = new Set<net.Socket>();
  /** Connections whose client proved it can write the state folder (hello with a probe). */
  private readonly trusted = new WeakSet<net.Socket>();
  /** Monotonic time before which nothing is granted (an earlier server's leases may live). */
  private notBefore = 0;
  /** Wall-clock horizon recorded in the state file. */
  private horizon = 0;
  /** Why the state file could not be written, while it cannot. */
  private stateProblem: string | null = null;
  private stopped = false;
  private watcher: NodeJS.Timeout | null = null;
  private readonly stateFile: string;

  private constructor(
    private readonly server: net.Server,
    private readonly options: LeaseServerOptions,
  ) {
    this.stateFile = stateFileOf(options.stateDir, options.generation);
  }

  /**
   * Stands for election as generation `generation`: binds its abstract name
   * (the kernel frees it when this process dies). Null when another process
   * holds that name, or a newer server exists already. Throws typed errors
   * when the state folder cannot be used.
   */
  static async listen(options: LeaseServerOptions): Promise<LeaseServer | null> {
    const name = socketName(options.namespace, options.generation);
    const server = net.createServer();
    const early: net.Socket[] = [];
    let leaseServer: LeaseServer | null = null;
    server.on("connection", (socket) => (leaseServer ? leaseServer.accept(socket) : early.push(socket)));
    const won = await new Promise<boolean>((resolve, reject) => {
      server.once("error", (error: NodeJS.ErrnoException) => (error.code === "EADDRINUSE" ? resolve(false) : reject(error)));
      server.listen(name, () => resolve(true));
    });
    if (!won) return null;
    server.removeAllListeners("error");
    server.on("error", () => {}); // a listening socket reports nothing we could act on
    server.unref(); // serving never keeps a process alive by itself
    const created = new LeaseServer(server, { ...options, maxTermMs: Math.min(options.maxTermMs, MAX_TERM_MS) });
    try {
      if (!created.claim()) {
        await created.shutdown();
        return null;
      }
    } catch (error) {
      await created.shutdown();
      throw error;
    }
    leaseServer = created;
    for (const socket of early) created.accept(socket);
    created.watcher = setInterval(() => created.watch(), WATCH_MS);
    created.watcher.unref();
    return created;
  }

  get generation(): number {
    return this.options.generation;
  }

  /** False once closed or replaced. */
  get serving(): boolean {
    return !this.stopped;
  }

  /**
   * Records this server's file first, then reads every earlier server's:
   * nothing is granted before their horizons; their handed-over leases are
   * adopted. False when a newer server exists already.
   */
  private claim(): boolean {
    const { stateDir, generation } = this.options;
    try {
      writeFileAtomic(this.stateFile, JSON.stringify({ generation, pid: process.pid, leasesUntil: 0 }));
    } catch (error) {
      throw stateError(stateDir, "record a lease server in", error);
    }
    const all = generations(stateDir);
    if (all.some((g) => g > generation)) return false;
    const at = monotonicMs();
    const wall = Date.now();
    let until = 0;
    const adopted = new Map<string, HandedOver>();
    const expired: number[] = [];
    for (const earlier of all) {
      if (earlier >= generation) continue;
      const state = readState(stateDir, earlier);
      if (!state) continue;
      until = Math.max(until, state.leasesUntil);
      let live = state.leasesUntil > wall;
      for (const grant of state.handover ?? []) {
        if (grant.expiresAt <= wall) continue;
        live = true;
        const known = adopted.get(grant.shard);
        if (!known || grant.token > known.token) adopted.set(grant.shard, grant);
      }
      if (!live) expired.push(earlier);
    }
    this.notBefore = at + Math.max(0, until - wall);
    this.horizon = until;
    for (const grant of adopted.values()) {
      this.table.adopt({ ...grant, expiresAt: at + (grant.expiresAt - wall) });
      this.horizon = Math.max(this.horizon, grant.expiresAt);
    }
    // Servers whose leases have all ended need no file any more.
    for (const earlier of expired) fs.rmSync(stateFileOf(stateDir, earlier), { force: true });
    return true;
  }

  /** True when a newer server has recorded itself (this one was replaced). */
  private replaced(): boolean {
    return generations(this.options.stateDir).some((g) => g > this.options.generation);
  }

  /** Every second: stop if replaced; remove leftovers of dead processes. Never throws. */
  private watch(): void {
    if (this.stopped) return;
    let names: string[];
    try {
      names = fs.readdirSync(this.options.stateDir);
    } catch (error) {
      // The state folder is gone: a successor could not see this server's horizon.
      this.stop(`its state folder cannot be read (${(error as Error).message})`);
      return;
    }
    const newer = names.map((name) => STATE_FILE.exec(name)).find((m) => m && Number(m[1]) > this.options.generation);
    if (newer) {
      this.stop(`lease server generation ${newer[1]} replaced it`);
      return;
    }
    if (!names.includes(path.basename(this.stateFile))) {
      this.stop("its state file was removed");
      return;
    }
    const old = Date.now() - LEFTOVER_MS;
    for (const name of names) {
      if (!name.startsWith("probe.") && !name.endsWith(".tmp")) continue;
      const file = path.join(this.options.stateDir, name);
      try {
        if (fs.statSync(file).mtimeMs < old) fs.rmSync(file, { force: true });
      } catch {
        // gone already
      }
    }
  }

  /** Stops serving at once, without handing anything over (a newer server waits out this one's horizon). */
  private stop(reason: string): void {
    if (this.stopped) return;
    this.options.onReport?.(`lease server ${this.options.generation} (pid ${process.pid}) stopped: ${reason}`);
    void this.shutdown();
    this.options.onStopped?.(reason);
  }

  private async shutdown(): Promise<void> {
    this.stopped = true;
    if (this.watcher) clearInterval(this.watcher);
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Stops serving and hands the live leases over to the next server. Never throws. */
  async close(): Promise<void> {
    if (this.stopped) return;
    await this.shutdown();
    // A clean stop hands its live leases over: a successor blocks only those
    // shards. An earlier server's horizon this one was still waiting out stays.
    const at = monotonicMs();
    const wall = Date.now();
    const handover = this.table.live(at).map((grant) => ({ ...grant, expiresAt: wall + (grant.expiresAt - at) }));
    const state: ServerState = { generation: this.options.generation, pid: process.pid, leasesUntil: wall + Math.max(0, this.notBefore - at), handover, closed: true };
    try {
      if (!this.replaced()) writeFileAtomic(this.stateFile, JSON.stringify(state));
    } catch (error) {
      // The file keeps the horizon it had: a successor waits longer, never less.
      this.options.onReport?.(`lease server ${this.options.generation} could not record its handover: ${(error as Error).message}`);
    }
  }

  private accept(socket: net.Socket): void {
    if (this.stopped) {
      socket.destroy();
      return;
    }
    socket.unref();
    this.sockets.add(socket);
    const decoder = new FrameDecoder();
    socket.on("data", (chunk: Buffer) => {
      let messages: unknown[];
      try {
        messages = decoder.push(chunk);
      } catch {
        socket.destroy(); // malformed or oversized: this connection only
        return;
      }
      for (const message of messages) {
        let request: Request;
        try {
          request = parseRequest(message);
        } catch (error) {
          const replyTo = error instanceof ProtocolError ? error.replyTo : undefined;
          if (replyTo === undefined) {
            socket.destroy(); // not a request we could answer
            return;
          }
          this.refuse(socket, replyTo, "H5NEST_LEASE_REFUSED", (error as Error).message);
          continue;
        }
        try {
          this.handle(socket, request);
        } catch (error) {
          // Never out of an I/O callback: that would take the host process down.
          this.refuse(socket, request.id, "H5NEST_LOCK_UNAVAILABLE", `the lease server failed: ${(error as Error).message}`);
        }
      }
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

  private refuse(socket: net.Socket, id: number, code: string, message: string): void {
    this.reply(socket, { v: 1, id, ok: false, code, message: message.slice(0, 2000) });
  }

  private handle(socket: net.Socket, request: Request): void {
    if (this.stopped) {
      socket.destroy();
      return;
    }
    const at = monotonicMs();
    if (request.op === "hello") {
      if (request.probe !== undefined) {
        // The client created this file in its own path to the lease folder: seeing it here
        // proves the client can write the folder, and that it is this server's folder.
        if (!fs.existsSync(path.join(this.options.stateDir, request.probe))) {
          this.refuse(
            socket,
            request.id,
            "H5NEST_LEASE_NAMESPACE",
            `the lease server (pid ${process.pid}) for this store identity serves ${this.options.stateDir}, which is another folder: ` +
              "a copy of a store keeps its identity; remove the copy's .h5nest/store.json to give it its own",
          );
          return;
        }
        this.trusted.add(socket);
      }
      if (!this.trusted.has(socket)) {
        this.refuse(socket, request.id, "H5NEST_LEASE_REFUSED", "say hello with a probe file first");
        return;
      }
      this.reply(socket, { v: 1, id: request.id, ok: true, maxTermMs: this.options.maxTermMs, generation: this.options.generation, pid: process.pid });
      return;
    }
    if (!this.trusted.has(socket)) {
      this.refuse(socket, request.id, "H5NEST_LEASE_REFUSED", "say hello with a probe file first");
      return;
    }
    switch (request.op) {
      case "acquire": {
        const list = this.waiters.get(request.shard) ?? [];
        list.push({ socket, request: { ...request, termMs: Math.min(request.termMs, this.options.maxTermMs) }, received: at });
        this.waiters.set(request.shard, list);
        this.service(request.shard);
        return;
      }
      case "renew": {
        const termMs = Math.min(request.termMs, this.options.maxTermMs);
        const holder = this.table.holder(request.shard, at);
        if (!holder || holder.token !== request.token || holder.owner !== request.owner) {
          this.refuse(socket, request.id, "H5NEST_LEASE_LOST", "the lease expired or belongs to another owner");
          return;
        }
        if (!this.recordHorizon(termMs)) {
          this.refuse(socket, request.id, "H5NEST_LOCK_UNAVAILABLE", this.stateProblem ?? "the lease server stopped");
          return;
        }
        const grant = this.table.renew(request.shard, request.owner, request.token, termMs, at)!;
        this.log("renew", grant);
        this.reply(socket, { v: 1, id: request.id, ok: true, token: grant.token, termMs });
        this.arm(request.shard, grant.expiresAt);
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
    if (this.stopped) return;
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
      if (!this.recordHorizon(waiter.request.termMs)) {
        // Nothing is granted that a successor could not see: refuse, the callers may retry.
        for (const refused of list.splice(0)) {
          this.refuse(refused.socket, refused.request.id, "H5NEST_LOCK_UNAVAILABLE", this.stateProblem ?? "the lease server stopped");
        }
        break;
      }
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

  /**
   * Before any lease may outlive the recorded horizon, move the horizon (on
   * disk, synchronously), then make sure no newer server started meanwhile.
   * False when the horizon could not be moved: nothing may be granted past it.
   */
  private recordHorizon(termMs: number): boolean {
    if (this.stopped) return false;
    const needed = Date.now() + termMs;
    if (needed <= this.horizon) return true;
    const horizon = needed + horizonSlackMs(this.options.maxTermMs);
    try {
      writeFileAtomic(this.stateFile, JSON.stringify({ generation: this.options.generation, pid: process.pid, leasesUntil: horizon }));
    } catch (error) {
      const problem = `the lease server (pid ${process.pid}) cannot record its state in ${this.options.stateDir}: ${(error as Error).message}`;
      if (this.stateProblem === null) this.options.onReport?.(`${problem}; it grants nothing until it can`);
      this.stateProblem = problem;
      return false;
    }
    if (this.stateProblem !== null) this.options.onReport?.(`lease server ${this.options.generation} records its state again`);
    this.stateProblem = null;
    let replaced: boolean;
    try {
      replaced = this.replaced();
    } catch {
      replaced = true; // cannot tell: grant nothing
    }
    if (replaced) {
      this.stop("a newer lease server replaced it");
      return false;
    }
    this.horizon = horizon;
    return true;
  }

  private arm(shard: string, at: number): void {
    const existing = this.timers.get(shard);
    if (existing) clearTimeout(existing);
    if (this.stopped || !this.waiters.get(shard)?.length) {
      this.timers.delete(shard);
      return;
    }
    const timer = setTimeout(
      () => {
        this.timers.delete(shard);
        this.service(shard);
      },
      Math.max(0, at - monotonicMs()) + 1,
    );
    this.timers.set(shard, timer);
  }

  private log(event: string, grant: Grant): void {
    if (!this.options.logFile) return;
    const line = {
      event,
      server: process.pid,
      generation: this.options.generation,
      shard: grant.shard,
      owner: grant.owner,
      token: grant.token,
      at: `${process.hrtime.bigint()}`,
      // expiresAt is monotonic ms; expressed in hrtime ns like `at`.
      expires: `${BigInt(Math.round(grant.expiresAt * 1e6))}`,
    };
    try {
      fs.appendFileSync(this.options.logFile, `${JSON.stringify(line)}\n`);
    } catch {
      // a test log: never worth a crash
    }
  }
}
