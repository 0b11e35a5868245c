/** Runs the built h5nest CLI (packages/core/dist/cli.js) as a child process. */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";

export const CLI = path.resolve(import.meta.dirname, "../../packages/core/dist/cli.js");

export interface CliResult {
  /** Exit code (null when killed by a signal). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `h5nest <args>`; never rejects on a non-zero exit. Kills it after `timeoutMs`. */
export async function h5nest(args: string[], timeoutMs = 30_000): Promise<CliResult> {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: build first (cd /work/main && npx tsc -b)`);
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (text: string) => (stdout += text));
  child.stderr.setEncoding("utf8").on("data", (text: string) => (stderr += text));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (c, s) => resolve([c, s]));
  });
  clearTimeout(timer);
  return { code, signal, stdout, stderr };
}

/** A readable description of a run, for assertion messages. */
export function describeRun(args: string[], result: CliResult): string {
  return `h5nest ${args.join(" ")} -> exit ${result.code}${result.signal ? ` (${result.signal})` : ""}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

/** Parses --json output: one JSON value a line. */
export function jsonLines<T = Record<string, unknown>>(stdout: string): T[] {
  return stdout
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as T);
}

/** Identity and content of a file: changes when it is rewritten, renamed over, or edited. */
export interface FileState {
  ino: number;
  size: number;
  mtimeMs: number;
  sha256: string;
}

export async function fileState(file: string): Promise<FileState> {
  const stat = await fsp.stat(file);
  const bytes = await fsp.readFile(file);
  return { ino: stat.ino, size: stat.size, mtimeMs: stat.mtimeMs, sha256: createHash("sha256").update(bytes).digest("hex") };
}

export async function exists(file: string): Promise<boolean> {
  return fsp.stat(file).then(
    () => true,
    () => false,
  );
}

/** Maps `items` through `work` with at most `limit` running at once (CLI runs are whole processes). */
export async function mapLimit<T, R>(items: T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await work(items[i]!);
      }
    }),
  );
  return results;
}
