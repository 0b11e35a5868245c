/**
 * Serve benchmark (npm run bench -- --serve; see bench/README.md): the same
 * chunks over HTTP on the loopback, `h5nest serve` (chunks in HDF5 shards,
 * read through the shard index) against a static file server (serve-static,
 * bench/static-server.mjs) over the same bytes as plain files, both child
 * processes, one client here (keep-alive). Rounds interleaved (order
 * rotated), medians, ratios as medians of per-round ratios. Every body is
 * compared with the bytes written, outside the timings.
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { H5NestedStore } from "h5nest";
import { describe, provenance, rebuiltSince } from "./provenance.js";
import { pairedRatio, rotate, type Stat, stat } from "./stats.js";
import { prepare, type Prepared, STORE_WORKLOADS } from "./store-bench.js";
import { formatTable, num, range } from "./table.js";
import { ARRAY_PATH, type TempRoot } from "./workloads.js";

const REPO = path.resolve(import.meta.dirname, "..");
const CLI = path.join(REPO, "packages/core/dist/cli.js");
const STATIC_SERVER = path.join(REPO, "bench/static-server.mjs");

/** Requests in flight for "read all" (a zarr client reading a region issues many at once). */
const IN_FLIGHT = 16;

type Op = "all" | "one";
const OP_LABELS: Record<Op, string> = { all: `read all, ${IN_FLIGHT} in flight`, one: "read all, 1 at a time" };

interface ServeVariant {
  id: string;
  label: string;
  /** Starts the server over `dir`; resolves with its base URL. */
  command(dir: string): string[];
}

const VARIANTS: ServeVariant[] = [
  { id: "h5nest", label: "h5nest serve (HDF5 shards)", command: (dir) => [CLI, "serve", dir, "--port", "0"] },
  { id: "static", label: "static files (serve-static)", command: (dir) => [STATIC_SERVER, dir, "0"] },
];

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

interface Server {
  url: string;
  child: ChildProcess;
}

async function start(args: string[]): Promise<Server> {
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.setEncoding("utf8").on("data", (text: string) => {
      out += text;
      const match = /http:\/\/127\.0\.0\.1:\d+\//.exec(out);
      if (match) resolve(match[0]);
    });
    child.on("exit", (code) => reject(new Error(`node ${args.join(" ")} exited (${code}) before listening: ${out}`)));
  });
  return { url, child };
}

async function stop(server: Server): Promise<void> {
  const exited = new Promise((resolve) => server.child.once("exit", resolve));
  server.child.kill("SIGINT");
  await exited;
}

/** GETs every key with `inFlight` requests at a time on keep-alive connections; the bodies, in key order. */
async function readAll(url: string, keys: string[], inFlight: number): Promise<{ ms: number; bodies: Buffer[] }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: inFlight });
  const base = new URL(url);
  const bodies = new Array<Buffer>(keys.length);
  let next = 0;
  const one = (i: number) =>
    new Promise<void>((resolve, reject) => {
      const req = http.get({ agent, host: base.hostname, port: base.port, path: keys[i] }, (res) => {
        const parts: Buffer[] = [];
        res.on("data", (d: Buffer) => parts.push(d));
        res.on("end", () => {
          if (res.statusCode !== 200) reject(new Error(`${keys[i]}: HTTP ${res.statusCode}`));
          bodies[i] = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
          resolve();
        });
      });
      req.on("error", reject);
    });
  const t = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < keys.length) await one(next++);
    }),
  );
  const ms = performance.now() - t;
  agent.destroy();
  return { ms, bodies };
}

function check(label: string, p: Prepared, bodies: Buffer[]): void {
  bodies.forEach((body, i) => {
    const want = p.chunks[i]!;
    if (body.length !== want.length || !body.equals(Buffer.from(want.buffer, want.byteOffset, want.byteLength))) {
      throw new Error(`${label}: ${p.keys[i]} differs from the bytes written (${body.length} bytes read, ${want.length} written)`);
    }
  });
}

/** The same keys and bytes twice: an h5nest store (writeDirect: one shard per z-plane) and plain files. */
async function writeStores(p: Prepared, temp: TempRoot, workers: number | undefined): Promise<{ h5nest: string; files: string }> {
  const h5dir = await temp.fresh(`serve-h5nest-${p.workload.id}`);
  const store = await H5NestedStore.open(h5dir, workers ? { workers } : {});
  for (const [key, bytes] of p.meta) await store.set(key, bytes);
  await Promise.all(p.keys.map((key, i) => store.set(key, p.chunks[i]!)));
  await store.close();
  const names = await fs.readdir(path.join(h5dir, ARRAY_PATH, "0", "0"));
  if (names.length !== p.workload.grid.planes || !names.every((n) => n.endsWith(".h5"))) throw new Error(`h5nest: expected one shard per plane, found ${names.join(", ")}`);
  const files = await temp.fresh(`serve-files-${p.workload.id}`);
  const folders = new Set<string>();
  for (const key of [...p.meta.map(([k]) => k), ...p.keys]) folders.add(path.dirname(path.join(files, key)));
  for (const folder of folders) await fs.mkdir(folder, { recursive: true });
  for (const [key, bytes] of p.meta) await fs.writeFile(path.join(files, key), bytes);
  for (let i = 0; i < p.keys.length; i++) await fs.writeFile(path.join(files, p.keys[i]!), p.chunks[i]!);
  return { h5nest: h5dir, files };
}

export interface ServeRow {
  workload: string;
  operation: string;
  variant: string;
  ms: Stat | null;
  chunksPerSec: Stat | null;
  mbPerSec: Stat | null;
  h5nestOverThis: Stat | null;
  ok: number;
  runs: number;
}

export interface ServeReport {
  config: Record<string, unknown>;
  notices: string[];
  rows: ServeRow[];
  failures: string[];
  failed: boolean;
}

export async function runServeBench(temp: TempRoot, rounds: number, workers: number | undefined): Promise<ServeReport> {
  const code = provenance();
  const rows: ServeRow[] = [];
  const failures: string[] = [];
  for (const workload of STORE_WORKLOADS) {
    const p = await prepare(workload);
    const dirs = await writeStores(p, temp, workers);
    const servers = new Map<string, Server>();
    for (const v of VARIANTS) servers.set(v.id, await start(v.command(v.id === "h5nest" ? dirs.h5nest : dirs.files)));
    const results = new Map<string, Map<Op, (number | null)[]>>(VARIANTS.map((v) => [v.id, new Map<Op, (number | null)[]>([["all", []], ["one", []]])]));
    try {
      log(`serve benchmark ${workload.label}: warm-up (not counted)`);
      for (const v of VARIANTS) check(v.label, p, (await readAll(servers.get(v.id)!.url, p.keys, IN_FLIGHT)).bodies);
      for (let round = 0; round < rounds; round++) {
        const parts: string[] = [];
        for (const v of rotate(VARIANTS, round)) {
          for (const op of ["all", "one"] as Op[]) {
            try {
              const { ms, bodies } = await readAll(servers.get(v.id)!.url, p.keys, op === "all" ? IN_FLIGHT : 1);
              check(v.label, p, bodies);
              results.get(v.id)!.get(op)![round] = ms;
              parts.push(`${v.id} ${op} ${ms.toFixed(0)}`);
            } catch (error) {
              results.get(v.id)!.get(op)![round] = null;
              const message = error instanceof Error ? error.message : String(error);
              failures.push(`${workload.label} ${v.label} ${op}: ${message}`);
              parts.push(`${v.id} ${op} FAILED`);
            }
          }
        }
        log(`serve ${workload.id} round ${round + 1}/${rounds} (ms): ${parts.join("; ")}`);
      }
    } finally {
      for (const server of servers.values()) await stop(server);
      await temp.remove(dirs.h5nest);
      await temp.remove(dirs.files);
    }
    const g = workload.grid;
    const chunkBytes = g.chunkHeight * g.chunkWidth * 2;
    for (const op of ["all", "one"] as Op[]) {
      const rate = (id: string) => results.get(id)!.get(op)!.map((ms) => (ms == null ? null : p.keys.length / (ms / 1000)));
      for (const v of VARIANTS) {
        const ms = results.get(v.id)!.get(op)!.filter((x): x is number => x != null);
        const rates = rate(v.id).filter((x): x is number => x != null);
        rows.push({
          workload: `${workload.label} (${g.planes} shards)`,
          operation: OP_LABELS[op],
          variant: v.label,
          ms: stat(ms),
          chunksPerSec: stat(rates),
          mbPerSec: stat(rates.map((c) => (c * chunkBytes) / 1e6)),
          h5nestOverThis: v.id === "h5nest" ? null : pairedRatio(rate("h5nest"), rate(v.id)),
          ok: ms.length,
          runs: rounds,
        });
      }
    }
  }
  const notices: string[] = [];
  const rebuilt = rebuiltSince(code);
  if (rebuilt) notices.push(rebuilt);
  const config = { code: describe(code), commit: code.commit, rounds, inFlight: IN_FLIGHT, workers: workers ?? "default", node: process.version, tmpdir: temp.dir };
  return { config, notices, rows, failures, failed: rebuilt !== null || failures.length > 0 };
}

export function renderServe(report: ServeReport): string {
  const c = report.config;
  const out: string[] = [
    `h5nest serve benchmark: GET of every chunk over HTTP on 127.0.0.1 (keep-alive, one Node client), h5nest serve over HDF5 shards ` +
      `vs serve-static over the same bytes as plain files; ${c.rounds} interleaved rounds, medians; node ${c.node}; MB = 10^6 bytes`,
    String(c.code),
    ...report.notices.map((n) => `*** NOTICE: ${n} ***`),
    "",
  ];
  let last = "";
  const rows = report.rows.map((r) => {
    const group = `${r.workload}|${r.operation}`;
    const head = group === last ? ["", ""] : [r.workload, r.operation];
    last = group;
    const ratio = r.h5nestOverThis ? `${r.h5nestOverThis.median.toFixed(2)}x (${r.h5nestOverThis.min.toFixed(2)}..${r.h5nestOverThis.max.toFixed(2)})` : "-";
    return [...head, r.variant, num(r.ms?.median), num(r.chunksPerSec?.median), num(r.mbPerSec?.median), range(r.chunksPerSec?.min, r.chunksPerSec?.max), ratio, `${r.ok}/${r.runs}`];
  });
  out.push(formatTable(["workload", "operation", "variant", "ms", "chunks/s", "MB/s", "min..max chunks/s", "h5nest / this (min..max)", "ok"], rows, ["left", "left", "left", "right", "right", "right", "right", "right", "right"]));
  out.push("");
  out.push("h5nest / this: h5nest serve's chunks/s over the static server's in the same round, median of per-round ratios; >1 = h5nest faster (target: >= 1x for 8 KiB chunks).");
  out.push(`timed: from the first request to the last body received; "${IN_FLIGHT} in flight" keeps ${IN_FLIGHT} keep-alive connections busy, "1 at a time" awaits each response.`);
  out.push("both servers run as child processes started once per workload (warm: one untimed pass first); every body is compared with the bytes written, untimed.");
  for (const failure of report.failures) out.push(`*** FAILED ${failure} ***`);
  return out.join("\n");
}
