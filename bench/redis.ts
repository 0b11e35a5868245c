/**
 * A redis-server for the distributed ingest and lease benchmarks: 127.0.0.1, a free
 * port, no persistence, in a temp folder. Null (with the reason) when
 * redis-server is missing (H5NEST_BENCH_REDIS selects another binary).
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";

export const REDIS_SERVER = process.env.H5NEST_BENCH_REDIS || "/usr/bin/redis-server";

export interface BenchRedis {
  url: string;
  version: string;
  /** INFO of one section ("cpu", "commandstats", ...) on the bench's own connection. */
  info(section: string): Promise<string>;
  stop(): Promise<void>;
}

/** A number field of an INFO text ("used_cpu_user", or "calls" inside "cmdstat_incr:calls=..."), 0 if absent. */
export function infoField(info: string, field: string, inside?: string): number {
  const line = inside ? new RegExp(`^${inside}:(.*)$`, "m").exec(info)?.[1] ?? "" : info;
  const match = new RegExp(`(?:^|,)${field}[:=]([\\d.]+)`, "m").exec(line);
  return match ? Number(match[1]) : 0;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** One PING on a fresh connection: true on +PONG. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.createConnection({ host: "127.0.0.1", port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once("error", () => done(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.once("data", (data: Buffer) => done(data.toString().startsWith("+PONG")));
  });
}

/**
 * Marks this Redis as one h5nest has long been using: `h5nest:epoch` a day
 * ago and `h5nest:runid` = this server's run_id (the ACQUIRE script restarts
 * the epoch, i.e. waits one term, when either is missing or differs).
 */
async function markEpoch(admin: Redis): Promise<void> {
  const runId = /run_id:(\w+)/.exec(await admin.info("server"))?.[1];
  if (!runId) throw new Error("no run_id in INFO server");
  await admin.set("h5nest:epoch", String(Date.now() - 86_400_000));
  await admin.set("h5nest:runid", runId);
}

export async function startBenchRedis(dir: string): Promise<BenchRedis | { missing: string }> {
  try {
    fs.accessSync(REDIS_SERVER, fs.constants.X_OK);
  } catch {
    return { missing: `${REDIS_SERVER} not found (apt-get install redis-server)` };
  }
  const port = await freePort();
  const proc: ChildProcess = spawn(REDIS_SERVER, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  proc.stdout!.setEncoding("utf8").on("data", (t: string) => (output = (output + t).slice(-4000)));
  proc.stderr!.setEncoding("utf8").on("data", (t: string) => (output = (output + t).slice(-4000)));
  let admin: Redis | null = null;
  const stop = async (): Promise<void> => {
    admin?.disconnect();
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    proc.kill("SIGTERM");
    await exited;
  };
  const giveUp = Date.now() + 10_000;
  while (!(await ping(port))) {
    if (proc.exitCode !== null || Date.now() > giveUp) {
      await stop();
      return { missing: `redis-server did not answer PING on port ${port}: ${output.trim().split("\n").pop() ?? ""}` };
    }
    await sleep(20);
  }
  // h5nest waits one lease term the first time it meets a Redis (it cannot tell
  // a new Redis from one that lost its data); a Redis in service has met it long
  // ago, so mark this fresh one as such rather than time that one-off wait.
  const url = `redis://127.0.0.1:${port}`;
  admin = new Redis(url, { maxRetriesPerRequest: 1 });
  const client = admin;
  try {
    await markEpoch(client);
  } catch (error) {
    await stop();
    throw error;
  }
  const version = /version=([^,\s]+)/.exec(output)?.[1] ?? "?";
  return { url, version, info: (section) => client.info(section), stop };
}
