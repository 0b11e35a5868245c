/**
 * A real redis-server for the distributed-lock tests: started on 127.0.0.1
 * and a free port, without persistence (`--save "" --appendonly no`), waited
 * for with PING, stopped in t.after. When /usr/bin/redis-server is missing a
 * test says so loudly; under CI (CI=true) it fails instead of skipping.
 * Also a minimal RESP client (no dependency) to look at the server's keys.
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type { TestContext } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

export const REDIS_SERVER = process.env.H5NEST_REDIS_SERVER || "/usr/bin/redis-server";

/** Null when redis-server is usable, else what is missing. */
export function missingRedis(): string | null {
  try {
    fs.accessSync(REDIS_SERVER, fs.constants.X_OK);
    return null;
  } catch {
    return `${REDIS_SERVER} (apt-get install redis-server)`;
  }
}

/** Skips (or under CI fails) the test when redis-server is missing. Returns false when skipped. */
export function requireRedis(t: TestContext): boolean {
  const missing = missingRedis();
  if (!missing) return true;
  const message = `MISSING TOOL: ${missing}`;
  if (process.env.CI === "true") throw new Error(`${message} (required under CI)`);
  console.warn(`\n*** ${message}: Redis distributed-lock test skipped ***\n`);
  t.skip(message);
  return false;
}

/** A TCP port on 127.0.0.1 that nothing listened on a moment ago. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

type Reply = string | number | null | Reply[] | Error;

/** Parses one RESP reply at `offset`; null when the buffer holds only part of it. */
function parseReply(buffer: Buffer, offset: number): { value: Reply; next: number } | null {
  const eol = buffer.indexOf("\r\n", offset);
  if (eol < 0) return null;
  const head = buffer.toString("utf8", offset + 1, eol);
  switch (String.fromCharCode(buffer[offset]!)) {
    case "+":
      return { value: head, next: eol + 2 };
    case "-":
      return { value: new Error(head), next: eol + 2 };
    case ":":
      return { value: Number(head), next: eol + 2 };
    case "$": {
      const length = Number(head);
      if (length < 0) return { value: null, next: eol + 2 };
      if (buffer.length < eol + 2 + length + 2) return null;
      return { value: buffer.toString("utf8", eol + 2, eol + 2 + length), next: eol + 2 + length + 2 };
    }
    case "*": {
      const count = Number(head);
      if (count < 0) return { value: null, next: eol + 2 };
      const items: Reply[] = [];
      let at = eol + 2;
      for (let i = 0; i < count; i++) {
        const item = parseReply(buffer, at);
        if (!item) return null;
        items.push(item.value);
        at = item.next;
      }
      return { value: items, next: at };
    }
    default:
      throw new Error(`unexpected RESP reply ${JSON.stringify(buffer.toString("utf8", offset, eol))}`);
  }
}

/** Sends one command to the Redis at 127.0.0.1:`port` on a fresh connection and returns its reply. */
export async function redisCommand(port: number, args: (string | number)[], timeoutMs = 2000): Promise<Reply> {
  const socket = net.createConnection({ host: "127.0.0.1", port });
  try {
    return await new Promise<Reply>((resolve, reject) => {
      let buffer = Buffer.alloc(0);
      const timer = setTimeout(() => reject(new Error(`redis ${args[0]}: no reply in ${timeoutMs} ms`)), timeoutMs);
      socket.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      socket.on("data", (chunk: Buffer) => {
        buffer = Buffer.concat([buffer, chunk]);
        const parsed = parseReply(buffer, 0);
        if (parsed) {
          clearTimeout(timer);
          resolve(parsed.value);
        }
      });
      socket.once("connect", () => {
        const parts = args.map(String);
        socket.write(`*${parts.length}\r\n${parts.map((p) => `$${Buffer.byteLength(p)}\r\n${p}\r\n`).join("")}`);
      });
    });
  } finally {
    socket.destroy();
  }
}

export interface RedisServer {
  readonly port: number;
  readonly url: string;
  /** The running redis-server, or null after kill(). */
  readonly process: ChildProcess | null;
  /** Sends one command (see redisCommand). */
  command(...args: (string | number)[]): Promise<Reply>;
  /** Kills the server (SIGKILL by default) and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts a new redis-server on the same port (the old one must be gone) and waits for PING. */
  restart(): Promise<void>;
  /** What the server printed (for assertion messages). */
  log(): string;
}

async function waitForPing(port: number, proc: ChildProcess, output: () => string, timeoutMs = 10_000): Promise<void> {
  const giveUp = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`redis-server on port ${port} exited (${proc.exitCode ?? proc.signalCode}) before answering PING:\n${output()}`);
    }
    try {
      if ((await redisCommand(port, ["PING"], 500)) === "PONG") return;
    } catch {
      // not listening yet
    }
    if (Date.now() > giveUp) throw new Error(`redis-server on port ${port} did not answer PING within ${timeoutMs} ms:\n${output()}`);
    await sleep(20);
  }
}

/** The run_id of the Redis at `port` (it changes with every restart, and differs between a master and its replicas). */
export async function runId(port: number): Promise<string> {
  const info = String(await redisCommand(port, ["INFO", "server"]));
  const match = /run_id:(\w+)/.exec(info);
  if (!match) throw new Error(`no run_id in INFO server of port ${port}`);
  return match[1]!;
}

/** Marks the Redis at `port` as one h5nest has used for a day, without losing data: no first-use wait. */
export async function markLongInUse(port: number): Promise<void> {
  await redisCommand(port, ["SET", "h5nest:epoch", Date.now() - 86_400_000]);
  await redisCommand(port, ["SET", "h5nest:runid", await runId(port)]);
}

/**
 * Starts redis-server on 127.0.0.1 (on `port`, or a free one), without
 * persistence, in a temp folder; stops it when the test ends.
 */
export async function startRedis(t: TestContext, port?: number): Promise<RedisServer> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "h5nest-redis-"));
  let current: ChildProcess | null = null;
  let output = "";
  const chosen = port ?? (await freePort());

  const launch = async (): Promise<void> => {
    const proc = spawn(REDIS_SERVER, ["--port", String(chosen), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    proc.stdout!.setEncoding("utf8").on("data", (text: string) => (output = (output + text).slice(-8000)));
    proc.stderr!.setEncoding("utf8").on("data", (text: string) => (output = (output + text).slice(-8000)));
    current = proc;
    await waitForPing(chosen, proc, () => output);
  };

  const kill = async (signal: NodeJS.Signals = "SIGKILL"): Promise<void> => {
    const proc = current;
    current = null;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    proc.kill(signal);
    await exited;
  };

  t.after(async () => {
    await kill("SIGKILL");
    await fsp.rm(dir, { recursive: true, force: true });
  });

  await launch();
  // h5nest waits one lease term the first time it meets a Redis (it cannot tell
  // a new Redis from one that lost its data). Tests start each Redis fresh;
  // this marks it as long in use by this very server (its run_id). restart()
  // does not: that is a data loss.
  await markLongInUse(chosen);
  return {
    port: chosen,
    url: `redis://127.0.0.1:${chosen}`,
    get process() {
      return current;
    },
    command: (...args) => redisCommand(chosen, args),
    kill,
    async restart() {
      if (current) throw new Error("restart: the previous redis-server still runs (kill it first)");
      // The port is free as soon as the killed server's listening socket closes; retry briefly if not.
      for (let attempt = 0; ; attempt++) {
        try {
          await launch();
          return;
        } catch (error) {
          if (attempt >= 20) throw error;
          current = null;
          await sleep(100);
        }
      }
    },
    log: () => output,
  };
}

/**
 * A TCP proxy on 127.0.0.1 in front of a Redis, as a virtual address in
 * front of a master: `failover(port)` drops every connection and sends the
 * next ones to another server (a promoted replica).
 */
export async function startProxy(t: TestContext, targetPort: number): Promise<{ url: string; failover(port: number): void }> {
  let target = targetPort;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.createConnection({ host: "127.0.0.1", port: target });
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `redis://127.0.0.1:${port}`,
    failover(next: number) {
      target = next;
      for (const socket of sockets) socket.destroy();
      sockets.clear();
    },
  };
}
