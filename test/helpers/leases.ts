/**
 * Local leases of a store, for tests: its identity (recorded if missing),
 * providers of it in this process, and raw protocol connections to its
 * current lease server (which, like every client, prove with a probe file
 * in the lease folder that they may use it).
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { encodeFrame, FrameDecoder, generations, LocalLeaseProvider, type LocalLeaseOptions, socketName } from "@h5nest/coordinator";
import { leaseStateFolder, recordStoreIdentity } from "../../packages/core/src/identity.ts";

export interface StoreLeases {
  namespace: string;
  stateDir: string;
}

/** The store's lease namespace and state folder (records the store's identity with the default layout if it has none). */
export async function storeLeases(storeRoot: string): Promise<StoreLeases> {
  const identity = await recordStoreIdentity(storeRoot, { consolidateDepth: 3, containerExt: ".h5" });
  return { namespace: identity.id, stateDir: leaseStateFolder(storeRoot) };
}

export async function openProvider(storeRoot: string, termMs: number, extra: Partial<LocalLeaseOptions> = {}): Promise<LocalLeaseProvider> {
  return LocalLeaseProvider.open({ ...(await storeLeases(storeRoot)), termMs, ...extra });
}

/** The abstract socket name of the store's latest lease server. */
export async function latestSocket(storeRoot: string): Promise<string> {
  const { namespace, stateDir } = await storeLeases(storeRoot);
  return socketName(namespace, generations(stateDir).at(-1) ?? 0);
}

/** Creates a probe file in the lease folder; returns its name and a remover. */
export function makeProbe(stateDir: string): { name: string; remove(): void } {
  const name = `probe.${randomBytes(16).toString("hex")}`;
  fs.writeFileSync(path.join(stateDir, name), "");
  return { name, remove: () => fs.rmSync(path.join(stateDir, name), { force: true }) };
}

/** A raw protocol connection that sends requests and matches replies by id. */
export class RawClient {
  private readonly decoder = new FrameDecoder();
  private readonly waiting = new Map<number, (reply: Record<string, unknown>) => void>();
  private nextId = 1;
  closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      for (const reply of this.decoder.push(chunk) as Record<string, unknown>[]) {
        this.waiting.get(reply.id as number)?.(reply);
        this.waiting.delete(reply.id as number);
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      this.closed = true;
    });
  }

  /** Connects to `socketPath` (with `trust`, says hello with a probe in that lease folder first). */
  static async connect(socketPath: string, trust?: StoreLeases): Promise<RawClient> {
    const socket = net.createConnection(socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    const client = new RawClient(socket);
    if (trust) {
      const probe = makeProbe(trust.stateDir);
      try {
        const reply = await client.request({ v: 1, op: "hello", owner: "raw:0:0", probe: probe.name });
        if (reply.ok !== true) throw new Error(`hello refused: ${JSON.stringify(reply)}`);
      } finally {
        probe.remove();
      }
    }
    return client;
  }

  /** Connects to the store's latest lease server, trusted. */
  static async toStore(storeRoot: string): Promise<RawClient> {
    const leases = await storeLeases(storeRoot);
    return RawClient.connect(socketName(leases.namespace, generations(leases.stateDir).at(-1) ?? 0), leases);
  }

  request(message: Record<string, unknown>, timeoutMs = 5000): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply to ${JSON.stringify(message)}`)), timeoutMs);
      this.waiting.set(id, (reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
      this.socket.write(encodeFrame({ ...message, id } as never));
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
