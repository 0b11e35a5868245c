#!/usr/bin/env node
/**
 * The h5nest command line: consolidate, compact, info, verify, ls, demo.
 * Exit codes: 0 done, 1 errors (named on stderr), 2 bad usage, 130 interrupted.
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { runDemo } from "./demo.js";
import fs from "node:fs/promises";
import { InvalidOptionError, NotAStoreError } from "./errors.js";
import { type H5NestedStoreOptions, resolveOptions } from "./options.js";
import { H5NestedStore } from "./store.js";
import { createConsolidateView, formatBytes, printInfo } from "./cli-output.js";

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
      ? { distributedLock: { ...(flags.redis ? { redis: flags.redis } : {}), ...(flags.leaseMs ? { leaseMs: flags.leaseMs } : {}) } }
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
    const view = createConsolidateView(flags.json ?? false);
    try {
      if (view.wantsTotal) view.start(await store.consolidationSize(controller.signal));
      const summary = await store.consolidate({ signal: controller.signal, onProgress: (p) => view.shard(p) });
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
    const summary = await store.compact({
      minWaste: flags.minWaste,
      signal: controller.signal,
      onProgress: (p) => {
        if (flags.json) console.log(JSON.stringify({ event: "shard", ...p }));
      },
    });
    const reclaimed = summary.bytesBefore - summary.bytesAfter;
    if (flags.json) console.log(JSON.stringify({ event: "summary", ...summary, fatal: summary.fatal?.message ?? null, reclaimedBytes: reclaimed }));
    else {
      console.log(
        `rewrote ${summary.shardsRewritten} of ${summary.shardsSeen} shards: ${formatBytes(summary.bytesBefore)} -> ${formatBytes(summary.bytesAfter)}, reclaimed ${formatBytes(reclaimed)}`,
      );
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
      for await (const key of store.keys(prefix ?? "")) console.log(flags.json ? JSON.stringify(key) : key);
    } finally {
      await store.close();
    }
  },
);

program
  .command("demo [folder]")
  .description("build a small NestedDirectoryStore, show info, consolidate it, verify it")
  .action(async (folder: string | undefined) => runDemo(folder));

try {
  await program.parseAsync();
} catch (error) {
  fail(error instanceof Error ? error.message : String(error));
  if (error instanceof InvalidOptionError) process.exitCode = 2;
}
