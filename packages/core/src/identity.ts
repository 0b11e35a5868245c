/**
 * A store's identity record: `.h5nest/store.json` at the store root, written
 * once and atomically, read by every open.
 *
 *   {"h5nest":"store","version":1,"id":"<32 hex>","consolidateDepth":3,"containerExt":".h5"}
 *
 * - `id` names the store's lease namespace (local lease servers and Redis
 *   keys), so that every path to the store (symlinks, bind mounts, NFS or
 *   Lustre mounted at different places), every user and every environment
 *   shares one set of leases. The local lease servers keep their state in
 *   `.h5nest/leases/`, where every candidate finds it.
 * - `consolidateDepth` and `containerExt` are the layout the store was
 *   created with: opening it with another one fails (StoreConfigMismatchError)
 *   instead of misplacing chunks.
 *
 * Python zarr and the Python H5_Nested_Store ignore the folder (a name with a
 * dot is neither an array nor a group, and their consolidation only walks
 * array folders). Stores without a record (written by Python, or by older
 * versions) take the options given; the first writer that may write shards
 * records them. A writer that only writes raw files (writeDirect: false)
 * records nothing, so that its tree stays NestedDirectoryStore's.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { StoreIdentityError } from "./errors.js";

export const IDENTITY_FOLDER = ".h5nest";
const RECORD = "store.json";

export interface StoreIdentity {
  /** 32 hex digits, random, fixed at creation. */
  id: string;
  consolidateDepth: number;
  /** With its leading dot. */
  containerExt: string;
}

export function identityFolder(root: string): string {
  return path.join(root, IDENTITY_FOLDER);
}

export function identityFile(root: string): string {
  return path.join(root, IDENTITY_FOLDER, RECORD);
}

/** The folder of the local lease servers' state (see @h5nest/coordinator's lease server). */
export function leaseStateFolder(root: string): string {
  return path.join(root, IDENTITY_FOLDER, "leases");
}

function parse(file: string, text: string): StoreIdentity {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(text) as Record<string, unknown>;
  } catch (error) {
    throw new StoreIdentityError(file, `not JSON (${(error as Error).message})`);
  }
  if (typeof record !== "object" || record === null || Array.isArray(record)) throw new StoreIdentityError(file, "not a JSON object");
  const { id, consolidateDepth, containerExt } = record;
  if (typeof id !== "string" || !/^[0-9a-f]{32}$/.test(id)) throw new StoreIdentityError(file, `id must be 32 hex digits, got ${JSON.stringify(id)}`);
  if (typeof consolidateDepth !== "number" || !Number.isInteger(consolidateDepth) || consolidateDepth < 2) {
    throw new StoreIdentityError(file, `consolidateDepth must be an integer of at least 2, got ${JSON.stringify(consolidateDepth)}`);
  }
  if (typeof containerExt !== "string" || !/^\.[^/\\\0]+$/.test(containerExt)) {
    throw new StoreIdentityError(file, `containerExt must be an extension with its dot, got ${JSON.stringify(containerExt)}`);
  }
  return { id, consolidateDepth, containerExt };
}

/** The store's identity, or null when it has none. Throws StoreIdentityError when the record is damaged or unreadable. */
export async function readStoreIdentity(root: string): Promise<StoreIdentity | null> {
  const file = identityFile(root);
  // A record made by a file system without hard links is written in place: it may be empty for an instant.
  for (let attempt = 0; ; attempt++) {
    let text: string;
    try {
      // Synchronous: a few hundred bytes, read once at open; async readFile costs four thread-pool hops.
      text = readFileSync(file, "utf8");
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return null;
      if (code === "ENOTDIR") throw new StoreIdentityError(file, `${identityFolder(root)} is not a folder`);
      throw new StoreIdentityError(file, `cannot read it: ${(error as Error).message}`);
    }
    if (text.trim() !== "" || attempt >= 20) return parse(file, text);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Creates `folder` if needed with the permissions of the folder that holds it
 * (so that the users who may write the store may write it too; the sticky
 * bit is dropped so that each can replace the others' files).
 */
export async function makeSharedFolder(folder: string): Promise<void> {
  const parent = await fs.stat(path.dirname(folder));
  const mode = (parent.mode & 0o2777) | 0o700;
  try {
    await fs.mkdir(folder, { mode });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return;
    throw error;
  }
  await fs.chmod(folder, mode); // the umask must not make it private
}

/**
 * Records the store's identity with `config` unless it has one; returns the
 * record that is on disk afterwards (when several processes record at once,
 * all get the same one: the first link wins).
 */
export async function recordStoreIdentity(root: string, config: { consolidateDepth: number; containerExt: string }): Promise<StoreIdentity> {
  const existing = await readStoreIdentity(root);
  if (existing) return existing;
  const folder = identityFolder(root);
  const file = identityFile(root);
  const record = { h5nest: "store", version: 1, id: randomBytes(16).toString("hex"), consolidateDepth: config.consolidateDepth, containerExt: config.containerExt };
  const text = `${JSON.stringify(record)}\n`;
  try {
    await makeSharedFolder(folder);
    const temp = path.join(folder, `${RECORD}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`);
    await writeDurably(temp, text, "w");
    try {
      await fs.link(temp, file);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "EEXIST") {
        if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "ENOSYS" && code !== "EMLINK") throw error;
        // No hard links here: create it exclusively (readers retry while it is empty).
        await writeDurably(file, text, "wx").catch((e: NodeJS.ErrnoException) => {
          if (e.code !== "EEXIST") throw e;
        });
      }
    } finally {
      await fs.rm(temp, { force: true });
    }
    const handle = await fs.open(folder, "r");
    await handle.sync().finally(() => handle.close());
  } catch (error) {
    if (error instanceof StoreIdentityError) throw error;
    throw new StoreIdentityError(file, `cannot record it: ${(error as Error).message}`);
  }
  const recorded = await readStoreIdentity(root);
  if (!recorded) throw new StoreIdentityError(file, "it vanished right after it was recorded");
  return recorded;
}

async function writeDurably(file: string, text: string, flag: "w" | "wx"): Promise<void> {
  const handle = await fs.open(file, flag, 0o644);
  try {
    await handle.chmod(0o644); // readable by every user of the store, whatever the umask
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
}
