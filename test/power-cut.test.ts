/**
 * Power loss with `fsync: true`, for real: the store lives on ext4 in a loop
 * device; after the writer's acknowledgements the file system is shut down
 * without flushing its journal (EXT4_IOC_SHUTDOWN, NOLOGFLUSH), which is what
 * a power cut leaves on disk. Remounted, every acknowledged state must hold:
 * a value written into a shard is not shadowed by the raw file it replaced,
 * and a deleted key stays deleted.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { H5NestedStore } from "h5nest";
import { PYTHON } from "./helpers/python.js";

const child = path.join(import.meta.dirname, "children", "powercut-writer.ts");
const chunk = (fill: number) => new Uint8Array(new Uint16Array(16 * 16).fill(fill).buffer);

/** Why this machine cannot run the test, or null. */
function cannotMount(): string | null {
  if (process.getuid?.() !== 0) return "needs root (mount, losetup)";
  for (const tool of ["/usr/sbin/mkfs.ext4", "/usr/bin/mount", "/usr/bin/umount", PYTHON]) if (!fs.existsSync(tool)) return `needs ${tool}`;
  if (!fs.readFileSync("/proc/filesystems", "utf8").includes("ext4")) return "needs ext4";
  return null;
}

/** A fresh ext4 file system in a loop device, mounted with a long commit interval (no timely journal commit hides a missing fsync). */
async function loopMount(t: import("node:test").TestContext): Promise<{ mountpoint: string; image: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "h5nest-powercut-"));
  const image = path.join(dir, "disk.img");
  const mountpoint = path.join(dir, "mnt");
  fs.mkdirSync(mountpoint);
  fs.writeFileSync(image, "");
  fs.truncateSync(image, 64 * 1024 * 1024);
  execFileSync("/usr/sbin/mkfs.ext4", ["-q", "-F", image]);
  const mount = () => execFileSync("/usr/bin/mount", ["-o", "loop,commit=600", image, mountpoint]);
  mount();
  t.after(() => {
    try {
      execFileSync("/usr/bin/umount", [mountpoint]);
    } catch {
      // Already unmounted.
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { mountpoint, image };
}

/** Cuts the power under `mountpoint`: a shutdown that drops the journal's uncommitted transactions. */
function powerCut(mountpoint: string): void {
  execFileSync(PYTHON, [
    "-c",
    "import fcntl, os, struct, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\nfcntl.ioctl(fd, 0x8004587D, struct.pack('I', 2))  # EXT4_IOC_SHUTDOWN, NOLOGFLUSH",
    mountpoint,
  ]);
}

test("fsync: true: acknowledged shard writes and deletes survive a power cut", async (t) => {
  const missing = cannotMount();
  if (missing) {
    if (process.env.CI === "true") throw new Error(`power-cut test: ${missing} (required under CI)`);
    t.skip(missing);
    return;
  }
  const { mountpoint, image } = await loopMount(t);
  const root = path.join(mountpoint, "store");
  const proc = spawn(process.execPath, ["--import", "tsx", child, root], { stdio: ["ignore", "pipe", "inherit"] });
  let output = "";
  proc.stdout.setEncoding("utf8");
  await new Promise<void>((resolve, reject) => {
    proc.stdout.on("data", (text: string) => {
      output += text;
      if (output.includes("ack delete\n")) resolve();
    });
    proc.on("exit", (code) => reject(new Error(`writer exited (${code}) before its last acknowledgement: ${output}`)));
  });
  powerCut(mountpoint);
  proc.kill("SIGKILL");
  await new Promise((resolve) => proc.on("exit", resolve));
  execFileSync("/usr/bin/umount", [mountpoint]);
  execFileSync("/usr/bin/mount", ["-o", "loop", image, mountpoint]);

  const store = await H5NestedStore.open(root, { workers: 1 });
  try {
    assert.deepEqual(await store.get("img/0/0/0/1/1"), chunk(2), "the shard's value, not the raw file it absorbed");
    assert.deepEqual(await store.get("img/0/0/0/3/3"), chunk(2));
    assert.equal(await store.get("img/0/0/1/0/0"), undefined, "the deleted key stays deleted");
  } finally {
    await store.close();
  }
});
