#!/usr/bin/env node
/**
 * The h5nest command line: consolidate, compact, info, verify, ls, refs, serve, demo.
 * Exit codes: 0 done, 1 errors (named on stderr), 2 bad usage, 130 interrupted.
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { finished } from "node:stream/promises";
import { runDemo } from "./demo.js";
import fs from "node:fs/promises";
import { InvalidOptionError, NotAStoreError } from "./errors.js";
import { type H5NestedStoreOptions, resolveOptions } from "./options.js";
import { H5NestedStore } from "./store.js";
import { createCompactView, createConsolidateView, formatBytes, plural, printInfo } from "./cli-output.js";
import { writeRefs } from "./refs.js";
import { serveStore } from "./serve.js";

interface StoreFlags {
  depth?: number;
  ext?: string;
  workers?: number;
  fsync?: boolean;
  json?: boolean;
  lock?: boolean;
  redis?: string;
  leaseMs?: number;
}

function positiveInteger(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) throw new InvalidArgumentError("expected a positive integer");
  return value;
}

function percentage(text: string): number {
  const match = /^(\d+(?:\.\d+)?)%?$/.exec(text.trim());
  const value = match ? Number(match[1]) / 100 : Number.NaN;
  if (!(value >= 0 && value <= 1)) throw new InvalidArgumentError("expected a percentage such as 20%");
  return value;
}

function portNumber(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || value > 65535) throw new InvalidArgumentError("expected a port number from 0 (any free port) to 65535");
  return value;
}

function byteCount(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim())) throw new InvalidArgumentError("expected a number of bytes");
  return value;
}

/** The options of commands that only read: the layout, and worker threads for what the shard index cannot place. */
function readOptions(command: Command): Command {
  return command
    .addOption(new Option("--depth <n>", "consolidate depth D (the last D-1 chunk indices name the dataset)").argParser(positiveInteger).default(3))
    .option("--ext <ext>", "shard file extension", ".h5")
    .addOption(new Option("--workers <n>", "worker threads for datasets the shard index cannot place (default: available cores)").argParser(positiveInteger));
}

function storeOptions(command: Command): Command {
  return command
    .addOption(new Option("--depth <n>", "consolidate depth D (the last D-1 chunk indices name the dataset)").argParser(positiveInteger).default(3))
    .option("--ext <ext>", "shard file extension", ".h5")
    .addOption(new Option("--workers <n>", "worker threads (default: available cores, at most 64)").argParser(positiveInteger))
    .option("--fsync", "fsync files and folders around every rename", false)
    .option("--lock", "take shard leases like writers opened with distributedLock: true (same machine)", false)
    .option("--redis <url>", "take shard leases in Redis, like writers opened with distributedLock: { redis }")
    .addOption(new Option("--lease-ms <ms>", "lease term with --lock or --redis (default 10000)").argParser(positiveInteger))
    .option("--json", "print JSON lines instead of text", false);
}

/** Opens an existing store: a mistyped path is an error, not a new empty store. */
async function openStore(dir: string, flags: StoreFlags): Promise<H5NestedStore> {
  const options: H5NestedStoreOptions = {
    consolidateDepth: flags.depth ?? 3,
    containerExt: flags.ext ?? ".h5",
    fsync: flags.fsync ?? false,
    ...(flags.workers ? { workers: flags.workers } : {}),
    ...(flags.redis || flags.lock
      ? {
          distributedLock: {
            ...(flags.redis ? { redis: flags.redis } : {}),
            ...(flags.leaseMs ? { leaseMs: flags.leaseMs } : {}),
            // Why the first write waits (a Redis new to h5nest): said, not silent.
            onNotice: (message: string) => process.stderr.write(`${flags.json ? JSON.stringify({ event: "notice", message }) : `h5nest: ${message}`}\n`),
          },
        }
      : {}),
  };
  resolveOptions(options); // a bad flag is a usage error, whatever the path
  const stat = await fs.stat(dir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOTDIR") throw new NotAStoreError(dir, "a part of the path is not a folder");
    return null;
  });
  if (!stat) throw new NotAStoreError(dir, "no such folder");
  return H5NestedStore.open(dir, options);
}

/** First Ctrl-C: stop after the commits in flight. Second: leave at once (still a valid store). */
function interruptible(quiet: boolean): AbortController {
  const controller = new AbortController();
  process.on("SIGINT", () => {
    if (controller.signal.aborted) process.exit(130);
    if (!quiet) process.stderr.write("\nstopping after the commits in flight (Ctrl-C again to leave now)...\n");
    controller.abort();
  });
  return controller;
}

function fail(message: string): void {
  process.stderr.write(`h5nest: ${message}\n`);
  process.exitCode = 1;
}

const program = new Command()
  .name("h5nest")
  .description("Zarr arrays with chunks sharded into HDF5 files (H5 nested stores)")
  .showHelpAfterError()
  .exitOverride((error) => process.exit(error.exitCode === 0 ? 0 : 2));

storeOptions(program.command("consolidate <store>").description("move every raw chunk file into its shard, in place, crash-safe")).action(
  async (dir: string, flags: StoreFlags) => {
    const store = await openStore(dir, flags);
    const controller = interruptible(flags.json ?? false);
    // With --redis the job is shared by every process running it on this store.
    const view = createConsolidateView(flags.json ?? false, Boolean(flags.redis));
    try {
      if (view.wantsTotal) view.start(await store.consolidationSize(controller.signal));
      const summary = await store.consolidate({ signal: controller.signal, onProgress: (p) => view.shard(p), onJobProgress: (job) => view.job(job) });
      view.finish(summary);
      for (const error of summary.errors) fail(`skipped ${error.file}: ${error.message} (its raw chunk files stay)`);
      if (summary.fatal) fail(`stopped: ${summary.fatal.message}; nothing was lost, rerun when fixed`);
      if (summary.interrupted) process.exitCode = 130;
    } finally {
      await store.close();
    }
  },
);

storeOptions(
  program
    .command("compact <store>")
    .description("rewrite shards that keep the space of replaced chunks")
    .addOption(new Option("--min-waste <percent>", "rewrite shards whose reclaimable bytes reach this share of their size").argParser(percentage).default(0.2, "20%")),
).action(async (dir: string, flags: StoreFlags & { minWaste: number }) => {
  const store = await openStore(dir, flags);
  const controller = interruptible(flags.json ?? false);
  try {
    const view = createCompactView(flags.json ?? false, Boolean(flags.redis));
    const summary = await store
      .compact({ minWaste: flags.minWaste, signal: controller.signal, onProgress: (p) => view.shard(p), onJobProgress: (job) => view.job(job) })
      .finally(() => view.stop());
    const reclaimed = summary.bytesBefore - summary.bytesAfter;
    if (flags.json) console.log(JSON.stringify({ event: "summary", ...summary, fatal: summary.fatal?.message ?? null, reclaimedBytes: reclaimed }));
    else {
      console.log(
        `rewrote ${summary.shardsRewritten} of ${summary.shardsSeen} shards: ${formatBytes(summary.bytesBefore)} -> ${formatBytes(summary.bytesAfter)}, reclaimed ${formatBytes(reclaimed)}`,
      );
      if (summary.job) console.log(`whole job (${plural(summary.job.processes, "process", "processes")}): ${summary.job.tasksDone} shards checked, ${formatBytes(summary.job.bytes)} reclaimed`);
    }
    for (const error of summary.errors) fail(`skipped ${error.file}: ${error.message}`);
    if (summary.fatal) fail(`stopped: ${summary.fatal.message}`);
    if (summary.interrupted) process.exitCode = 130;
  } finally {
    await store.close();
  }
});

storeOptions(program.command("info <store>").description("arrays, raw chunk files, shards, stored and reclaimable bytes")).action(
  async (dir: string, flags: StoreFlags) => {
    const store = await openStore(dir, flags);
    try {
      const result = await store.info();
      if (flags.json) console.log(JSON.stringify(result));
      else printInfo(dir, result);
    } finally {
      await store.close();
    }
  },
);

storeOptions(program.command("verify <store>").description("open every shard and read every dataset; non-zero exit on damage")).action(
  async (dir: string, flags: StoreFlags) => {
    const store = await openStore(dir, flags);
    try {
      const summary = await store.verify({
        onShard: (file, error) => {
          if (flags.json) console.log(JSON.stringify({ event: "shard", file, ok: !error, ...(error ? { error: error.message } : {}) }));
          else if (error) process.stderr.write(`CORRUPT ${file}: ${error.message}\n`);
        },
      });
      if (flags.json) console.log(JSON.stringify({ event: "summary", ...summary }));
      else {
        const state = summary.corrupt.length ? `${summary.corrupt.length} corrupt` : "all readable";
        console.log(`checked ${summary.shards} shards, ${summary.datasets} datasets, ${formatBytes(summary.bytes)}: ${state}`);
      }
      if (summary.corrupt.length) process.exitCode = 1;
    } finally {
      await store.close();
    }
  },
);

storeOptions(program.command("ls <store> [prefix]").description("list keys (raw files and shard datasets), each once")).action(
  async (dir: string, prefix: string | undefined, flags: StoreFlags) => {
    const store = await openStore(dir, flags);
    try {
      for await (const key of store.keys(prefix ?? "")) {
        // Waits for a slow reader of the pipe: the listing never piles up in memory.
        if (!process.stdout.write(`${flags.json ? JSON.stringify(key) : key}\n`)) await once(process.stdout, "drain");
      }
    } finally {
      await store.close();
    }
  },
);

readOptions(
  program
    .command("refs <store> [path]")
    .description("write kerchunk references (spec version 1) of the store, or of one array or group: a snapshot of byte ranges")
    .option("--out <file>", "write to this file (default: standard output)")
    .option("--url <prefix>", "URL the store's folder is served under (default: file:// paths of this machine)")
    .addOption(new Option("--max-inline <bytes>", "inline datasets the shard index cannot place up to this size, else list them as errors").argParser(byteCount).default(65536)),
).action(async (dir: string, subset: string | undefined, flags: StoreFlags & { out?: string; url?: string; maxInline: number }) => {
  const store = await openStore(dir, flags);
  try {
    // A file appears complete or not at all: written beside, renamed at the end.
    const temp = flags.out ? `${flags.out}.${randomBytes(16).toString("hex")}.partial` : null;
    const out = temp ? createWriteStream(temp) : process.stdout;
    let summary;
    try {
      summary = await writeRefs(store, out, { ...(flags.url ? { url: flags.url } : {}), ...(subset ? { path: subset } : {}), maxInline: flags.maxInline });
      if (temp) {
        out.end();
        await finished(out);
        await fs.rename(temp, flags.out!);
      }
    } catch (error) {
      if (temp) {
        // The stream may still be opening its file: remove it only once the stream has closed.
        out.destroy();
        await finished(out).catch(() => {});
        await fs.rm(temp, { force: true });
      }
      throw error;
    }
    const where = flags.out ? ` to ${flags.out}` : "";
    process.stderr.write(
      `h5nest refs: ${summary.keys} keys${where}: ${summary.metadata} metadata inlined, ${summary.shardRanges} chunks in shards, ${summary.rawFiles} raw chunk files, ${summary.inlined} inlined; ` +
        "a snapshot: make it again after writing to the store\n",
    );
    for (const error of summary.errors) fail(`not in the refs: ${error.key}: ${error.reason}`);
    if (summary.errorCount > summary.errors.length) fail(`... and ${summary.errorCount - summary.errors.length} more keys not in the refs`);
  } finally {
    await store.close();
  }
});

readOptions(
  program
    .command("serve <store>")
    .description("serve the store read-only over HTTP as zarr keys (Range, ETag), with a viewer at /")
    .addOption(new Option("--port <port>", "port to listen on (0: any free port)").argParser(portNumber).default(8080))
    .option("--host <address>", "address to listen on", "127.0.0.1")
    .option("--cors <origin>", "send Access-Control-Allow-Origin: <origin> (e.g. '*') so pages of other origins can read")
    .option("--verbose", "print a line per request", false)
    .addOption(new Option("--max-connections <n>", "open connections at most; more are closed at once").argParser(positiveInteger).default(1000))
    .addOption(new Option("--timeout <ms>", "ms allowed for a request's headers and an idle connection (a request waits for a response slot half as long)").argParser(positiveInteger).default(10000)),
).action(
  async (dir: string, flags: StoreFlags & { port: number; host: string; cors?: string; verbose: boolean; maxConnections: number; timeout: number }) => {
    const store = await openStore(dir, flags);
    const server = await serveStore(store, {
      port: flags.port,
      host: flags.host,
      cors: flags.cors ?? null,
      log: flags.verbose ? (line) => console.log(line) : null,
      maxConnections: flags.maxConnections,
      timeoutMs: flags.timeout,
    }).catch(async (error: unknown) => {
      await store.close();
      throw error;
    });
    console.log(`h5nest serve: ${store.root} read-only at ${server.url} (viewer at ${server.url}; Ctrl-C stops)`);
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
        process.once("SIGINT", () => process.exit(130)); // a second Ctrl-C leaves at once
        process.stderr.write("h5nest serve: stopping (the responses in progress finish first)\n");
        resolve();
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
    });
    await server.close();
    await store.close();
    process.stderr.write("h5nest serve: stopped\n");
  },
);

program
  .command("demo [folder]")
  .description("build a small NestedDirectoryStore, show info, consolidate it, verify it")
  .action(async (folder: string | undefined) => runDemo(folder));

// `h5nest ls store | head`: the reader left; that ends the listing, quietly.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0);
  throw error;
});

try {
  await program.parseAsync();
} catch (error) {
  fail(error instanceof Error ? error.message : String(error));
  if (error instanceof InvalidOptionError) process.exitCode = 2;
}
