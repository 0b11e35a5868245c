/**
 * HTTP servers as child processes for tests: `h5nest serve` (the built CLI)
 * and the static file server of bench/static-server.mjs, both on 127.0.0.1
 * with a free port; plus raw socket requests (HTTP clients normalise `..`
 * away, an attacker's socket does not).
 */
import { type ChildProcess, spawn } from "node:child_process";
import net from "node:net";
import path from "node:path";
import type { TestContext } from "node:test";
import { CLI } from "./cli.ts";

export const STATIC_SERVER = path.resolve(import.meta.dirname, "../../bench/static-server.mjs");

export interface ServerProcess {
  child: ChildProcess;
  /** e.g. "http://127.0.0.1:41234/" */
  url: string;
  port: number;
  stdout(): string;
  stderr(): string;
  /** Sends `signal` and resolves with the exit code (kills after `timeoutMs`). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
}

/** Starts `node <args>` and waits for the first http://127.0.0.1:<port>/ URL on its stdout. Killed after the test. */
export async function startServer(t: TestContext, args: string[], timeoutMs = 15_000): Promise<ServerProcess> {
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.setEncoding("utf8").on("data", (text: string) => (out += text));
  child.stderr!.setEncoding("utf8").on("data", (text: string) => (err += text));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no URL from node ${args.join(" ")} within ${timeoutMs} ms\nstdout: ${out}\nstderr: ${err}`)), timeoutMs);
    const check = () => {
      const match = /http:\/\/127\.0\.0\.1:\d+\//.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve(match[0]);
      }
    };
    child.stdout!.on("data", check);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`node ${args.join(" ")} exited (${code ?? signal}) before listening\nstdout: ${out}\nstderr: ${err}`));
    });
  });
  return {
    child,
    url,
    port: Number(new URL(url).port),
    stdout: () => out,
    stderr: () => err,
    async stop(signal = "SIGINT", stopTimeoutMs = 10_000) {
      const start = performance.now();
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), stopTimeoutMs);
      const result = await exited;
      clearTimeout(timer);
      return { ...result, ms: performance.now() - start };
    },
  };
}

/** `h5nest serve <root> --port 0 <extra>` */
export function startServe(t: TestContext, root: string, extra: string[] = []): Promise<ServerProcess> {
  return startServer(t, [CLI, "serve", root, "--port", "0", ...extra]);
}

/** The static file server (serve-static) over `folder`. */
export function startStatic(t: TestContext, folder: string): Promise<ServerProcess> {
  return startServer(t, [STATIC_SERVER, folder, "0"]);
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  /** The whole response as received. */
  raw: Buffer;
}

/** Writes `request` (a whole HTTP/1.1 request, CRLFs included) on a fresh socket and reads until the server closes it. */
export async function rawRequest(port: number, request: string | Buffer, timeoutMs = 5000): Promise<RawResponse> {
  const socket = net.connect(port, "127.0.0.1");
  const parts: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete response within ${timeoutMs} ms to ${JSON.stringify(String(request).slice(0, 200))}`));
    }, timeoutMs);
    socket.on("data", (data: Buffer) => parts.push(data));
    socket.on("error", () => {}); // a reset after the response is fine: what was read is judged
    socket.on("close", () => {
      clearTimeout(timer);
      resolve();
    });
    socket.write(request);
  });
  const raw = Buffer.concat(parts);
  const split = raw.indexOf("\r\n\r\n");
  const head = (split < 0 ? raw : raw.subarray(0, split)).toString("latin1");
  const [statusLine = "", ...lines] = head.split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(statusLine.split(" ")[1] ?? 0), headers, body: split < 0 ? Buffer.alloc(0) : raw.subarray(split + 4), raw };
}

/** A GET with `Connection: close` through a raw socket, the target sent exactly as given. */
export function rawGet(port: number, target: string, headers: Record<string, string> = {}, method = "GET"): Promise<RawResponse> {
  const lines = [`${method} ${target} HTTP/1.1`, "Host: 127.0.0.1", "Connection: close", ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  return rawRequest(port, `${lines.join("\r\n")}\r\n\r\n`);
}
