/**
 * A redis-server for the distributed ingest benchmark: 127.0.0.1, a free
 * port, no persistence, in a temp folder. Null (with the reason) when
 * redis-server is missing (H5NEST_BENCH_REDIS selects another binary).
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

export const REDIS_SERVER = process.env.H5NEST_BENCH_REDIS || "/usr/bin/redis-server";

export interface BenchRedis {
  url: string;
  version: string;
  stop(): Promise<void>;
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

function markEpoch(port: number): Promise<void> {
  const value = String(Date.now() - 86_400_000);
  const command = `*3\r\n$3\r\nSET\r\n$12\r\nh5nest:epoch\r\n$${value.length}\r\n${value}\r\n`;
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ host: "127.0.0.1", port });
    socket.once("error", reject);
    socket.once("connect", () => socket.write(command));
    socket.once("data", (data: Buffer) => {
      socket.destroy();
      if (data.toString().startsWith("+OK")) resolve();
      else reject(new Error(`SET h5nest:epoch: ${data.toString().trim()}`));
    });
  });
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
  const stop = async (): Promise<void> => {
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
  await markEpoch(port);
  const version = /version=([^,\s]+)/.exec(output)?.[1] ?? "?";
  return { url: `redis://127.0.0.1:${port}`, version, stop };
}
