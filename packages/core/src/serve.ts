/**
 * `h5nest serve`: a store, read only, over HTTP as plain zarr keys, so that
 * zarrita's FetchStore, fsspec's HTTP mapper and any zarr-over-HTTP client
 * read it. GET/HEAD of `/<key>` returns the key's bytes (raw file first, then
 * the shard, through the shard index), a single Range gives 206 (zarr v3
 * sharded arrays read by range), ETags come from the identity of the file
 * holding the bytes. `/` is the viewer (viewer-assets.ts).
 *
 * HTTP details are the libraries' (range-parser, fresh, etag, send); what is
 * ours is the mapping of a request to a key, which refuses anything that is
 * not a key (layout.ts): `..`, encoded or not, absolute paths, NUL bytes,
 * shard and temporary file names. Requests are bounded in count (sockets),
 * in time (headers, idle sockets, waiting for a slot) and in memory (at most
 * `concurrency` responses in progress, values over 1 MiB streamed).
 */
import fs from "node:fs";
import http from "node:http";
import { performance } from "node:perf_hooks";
import { pipeline } from "node:stream";
import etag from "etag";
import fresh from "fresh";
import parseRange from "range-parser";
import { InvalidKeyError } from "./errors.js";
import { Layout, type Location } from "./layout.js";
import type { H5NestedStore } from "./store.js";
import { readAt, type StoredValue, ValueLocator } from "./values.js";
import { ASSET_PREFIX, ViewerAssets } from "./viewer-assets.js";

export interface ServeOptions {
  /** Address to listen on (default 127.0.0.1: only this machine). */
  host?: string;
  /** Port (default 8080; 0 picks a free one). */
  port?: number;
  /** Value of Access-Control-Allow-Origin (e.g. "*" or "https://example.org"); none by default. */
  cors?: string | null;
  /** Called with one line per request (the CLI's --verbose). */
  log?: ((line: string) => void) | null;
  /** Called with server-side failures (a corrupt shard, an I/O error); default: stderr. */
  onError?: (message: string) => void;
  /** Responses in progress at once; more requests wait (default 32). */
  concurrency?: number;
  /** Open sockets at most; more are closed at once (default 1000). */
  maxConnections?: number;
  /** Milliseconds allowed to receive a request's headers and for a socket to stay idle; a request waits for a slot half as long (default 10000). */
  timeoutMs?: number;
  /** Serve the viewer at `/` (default true). */
  viewer?: boolean;
}

export interface RunningServer {
  readonly server: http.Server;
  /** e.g. "http://127.0.0.1:8080/" */
  readonly url: string;
  readonly port: number;
  /** Stops accepting, lets the responses in progress finish (at most `graceMs`), then closes every socket. */
  close(graceMs?: number): Promise<void>;
}

/** The server could not listen (port in use, address not available, no permission). */
export class ListenFailedError extends Error {
  override readonly name = "ListenFailedError";
  readonly code = "H5NEST_LISTEN_FAILED";
  constructor(
    readonly address: string,
    readonly errno: string,
  ) {
    super(`cannot listen on ${address}: ${errno === "EADDRINUSE" ? "the address is in use" : errno}`);
  }
}

/** Values up to this size are read with one positioned read and sent from memory; larger ones are streamed. */
const SYNC_READ_MAX = 1024 * 1024;

const METADATA_SUFFIXES = [".json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"];

/** A counting semaphore whose waiters give up after a deadline. */
class Slots {
  private waiting: { grant: () => void }[] = [];
  constructor(private free: number) {}

  /** A release function, or null when no slot came free within `timeoutMs`. */
  acquire(timeoutMs: number): Promise<(() => void) | null> | (() => void) {
    if (this.free > 0) {
      this.free--;
      return this.releaser();
    }
    return new Promise((resolve) => {
      const waiter = {
        grant: () => {
          clearTimeout(timer);
          resolve(this.releaser());
        },
      };
      const timer = setTimeout(() => {
        this.waiting = this.waiting.filter((w) => w !== waiter);
        resolve(null);
      }, timeoutMs);
      this.waiting.push(waiter);
    });
  }

  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.waiting.shift();
      if (next) next.grant();
      else this.free++;
    };
  }
}

/** Body length of each response, for the log line (headers given to writeHead are not readable afterwards). */
const bodyLengths = new WeakMap<http.ServerResponse, number>();

function head(res: http.ServerResponse, status: number, headers: http.OutgoingHttpHeaders): http.ServerResponse {
  const length = headers["Content-Length"];
  if (typeof length === "number" && res.req.method !== "HEAD") bodyLengths.set(res, length);
  return res.writeHead(status, headers);
}

function plain(res: http.ServerResponse, status: number, message: string, headers: http.OutgoingHttpHeaders = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = `${message}\n`;
  head(res, status, { ...headers, "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(body) });
  res.end(res.req.method === "HEAD" ? undefined : body);
}

function contentTypeOf(location: Location): string {
  return location.kind === "meta" && METADATA_SUFFIXES.some((s) => location.key.endsWith(s)) ? "application/json" : "application/octet-stream";
}

/** True unless If-Range names another version (then the whole value is sent, RFC 9110 13.1.5). */
function ifRangeHolds(req: http.IncomingMessage, tag: string): boolean {
  const ifRange = req.headers["if-range"];
  if (ifRange === undefined) return true;
  return ifRange === tag; // strong comparison; a date never matches (we send no Last-Modified)
}

/**
 * RFC 9110 14.1.2: a suffix range longer than the value selects all of it.
 * range-parser calls it unsatisfiable; a value shorter than the tail a
 * client asks for is common (a small shard object, a short chunk).
 */
function suffixOverSize(size: number, header: string): parseRange.Ranges | null {
  const match = /^bytes=-(\d+)$/.exec(header.trim());
  if (!match || size === 0 || Number(match[1]) <= size || Number(match[1]) === 0) return null;
  return Object.assign([{ start: 0, end: size - 1 }], { type: "bytes" });
}

export async function serveStore(store: H5NestedStore, options: ServeOptions = {}): Promise<RunningServer> {
  const host = options.host ?? "127.0.0.1";
  const timeoutMs = options.timeoutMs ?? 10_000;
  const layout = new Layout({ root: store.root, depth: store.options.consolidateDepth, ext: store.options.containerExt });
  const locator = new ValueLocator(layout);
  const slots = new Slots(options.concurrency ?? 32);
  const viewer = options.viewer === false ? null : new ViewerAssets({ root: store.root, skip: (name) => layout.isShardName(name) });
  const cors = options.cors ?? null;
  const onError = options.onError ?? ((message: string) => process.stderr.write(`h5nest serve: ${message}\n`));

  const server = http.createServer({
    headersTimeout: timeoutMs,
    requestTimeout: timeoutMs,
    // Node checks these timeouts on this interval (30 s by default): check often enough to honour them.
    connectionsCheckingInterval: Math.max(100, Math.min(1000, timeoutMs / 4)),
    noDelay: true,
  });
  server.keepAliveTimeout = Math.min(5000, timeoutMs);
  server.maxConnections = options.maxConnections ?? 1000;
  server.timeout = timeoutMs; // idle sockets (a client that stops reading) are destroyed

  const respondValue = async (req: http.IncomingMessage, res: http.ServerResponse, location: Location, value: StoredValue, retried: boolean): Promise<void> => {
    let fd = value.kind === "file" ? value.fd : null; // ours to close unless a stream takes it
    try {
      let size: number;
      let bytesOf: (start: number, end: number) => Buffer | Promise<Buffer>;
      if (value.kind === "unplaced") {
        // Only h5wasm reads it: the store's fallback read (worker threads start now, once).
        const bytes = await store.get(location.key);
        if (!bytes) return plain(res, 404, "no such key");
        const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        size = buffer.length;
        bytesOf = (start, end) => buffer.subarray(start, end + 1);
      } else {
        size = value.size;
        const base = value.kind === "range" ? value.offset : 0;
        const readFd = value.kind === "range" ? value.shard.fd : value.fd;
        bytesOf = (start, end) => readAt(readFd, base + start, end - start + 1);
      }
      const tag = etag(value.identity);
      const headers: http.OutgoingHttpHeaders = {
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-cache",
        "Content-Type": contentTypeOf(location),
        ETag: tag,
      };
      if (fresh(req.headers, { etag: tag })) {
        head(res, 304, headers).end();
        return;
      }
      let start = 0;
      let end = size - 1;
      let status = 200;
      const rangeHeader = req.headers.range;
      if (rangeHeader !== undefined && ifRangeHolds(req, tag)) {
        const ranges = suffixOverSize(size, rangeHeader) ?? parseRange(size, rangeHeader, { combine: true });
        if (ranges === -1) {
          headers["Content-Range"] = `bytes */${size}`;
          return plain(res, 416, "range not satisfiable", headers);
        }
        // -2 (malformed), another unit, or several ranges: RFC 9110 lets a
        // server ignore Range, and the whole value follows with 200.
        if (ranges !== -2 && ranges.type === "bytes" && ranges.length === 1) {
          start = ranges[0]!.start;
          end = ranges[0]!.end;
          status = 206;
          headers["Content-Range"] = `bytes ${start}-${end}/${size}`;
        }
      }
      const length = Math.max(0, end - start + 1);
      headers["Content-Length"] = length;
      if (req.method === "HEAD" || length === 0) {
        head(res, status, headers).end();
        return;
      }
      if (length <= SYNC_READ_MAX || value.kind === "unplaced") {
        const body = await bytesOf(start, end);
        // A file that shrank under us (replaced by a commit, edited in place): never a short body.
        if (body.length !== length) return plain(res, 503, "the value changed while being read; retry", { "Retry-After": "1" });
        head(res, status, headers).end(body);
        return;
      }
      // Large values are streamed from a descriptor of our own: the shard
      // cache may close its descriptor while the stream runs.
      if (value.kind === "range") {
        fd = fs.openSync(value.shard.path, "r");
        const stat = fs.fstatSync(fd, { bigint: true });
        if (`${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeNs}` !== value.shard.identity) {
          // The shard was replaced since it was indexed: look the key up again, once.
          fs.closeSync(fd);
          fd = null;
          const again = retried ? null : locator.open(location);
          if (!again) return plain(res, 503, "the value changed while being read; retry", { "Retry-After": "1" });
          return respondValue(req, res, location, again, true);
        }
      }
      const base = value.kind === "range" ? value.offset : 0;
      const stream = fs.createReadStream("", { fd: fd!, start: base + start, end: base + end, autoClose: true });
      fd = null; // the stream closes it
      head(res, status, headers);
      await new Promise<void>((resolve) => pipeline(stream, res, () => resolve()));
    } finally {
      if (fd !== null) fs.closeSync(fd);
    }
  };

  const handleKey = async (req: http.IncomingMessage, res: http.ServerResponse, pathname: string): Promise<void> => {
    let key: string;
    try {
      key = decodeURIComponent(pathname.slice(1));
    } catch {
      return plain(res, 400, "malformed percent-encoding in the path");
    }
    let location: Location;
    try {
      location = locator.locate(key);
    } catch (error) {
      if (error instanceof InvalidKeyError) return plain(res, 400, `${error.message} (nothing was read)`);
      throw error;
    }
    // Half the timeout: a request that cannot start soon is told so before
    // the clients holding the slots are cut off as idle.
    const slot = slots.acquire(timeoutMs / 2);
    const release = slot instanceof Promise ? await slot : slot;
    if (!release) return plain(res, 503, "too many requests in progress; retry", { "Retry-After": "1" });
    // The slot is held until the response has left (or the client is gone):
    // a body sent from memory counts until the socket has taken it.
    res.once("close", release);
    if (res.destroyed) return release();
    try {
      const value = locator.open(location);
      if (!value) return plain(res, 404, "no such key");
      await respondValue(req, res, location, value, false);
    } catch (error) {
      release();
      throw error;
    }
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const started = performance.now();
    if (options.log) {
      const log = options.log;
      res.on("close", () => {
        const ms = (performance.now() - started).toFixed(1);
        const sent = res.writableFinished ? String(bodyLengths.get(res) ?? res.getHeader("content-length") ?? 0) : "aborted";
        log(`${new Date().toISOString()} ${req.socket.remoteAddress ?? "-"} ${req.method} ${req.url} ${res.statusCode} ${sent} ${ms}ms`);
      });
    }
    if (cors) {
      res.setHeader("Access-Control-Allow-Origin", cors);
      res.setHeader("Access-Control-Expose-Headers", "Content-Length, Content-Range, ETag, Accept-Ranges");
      if (cors !== "*") res.setHeader("Vary", "Origin");
    }
    const method = req.method ?? "";
    if (method === "OPTIONS") {
      const headers: http.OutgoingHttpHeaders = { Allow: "GET, HEAD, OPTIONS", "Content-Length": 0 };
      if (cors) {
        headers["Access-Control-Allow-Methods"] = "GET, HEAD, OPTIONS";
        headers["Access-Control-Allow-Headers"] = "Range, If-None-Match, If-Range";
        headers["Access-Control-Max-Age"] = "600";
      }
      head(res, 204, headers).end();
      return;
    }
    if (method !== "GET" && method !== "HEAD") return plain(res, 405, "read only: GET and HEAD", { Allow: "GET, HEAD, OPTIONS" });
    const target = req.url ?? "";
    // Origin form only ("/path"): an absolute-form target ("http://host/x") or "*" is no key.
    if (!target.startsWith("/")) return plain(res, 400, "the request target must be a path starting with /");
    const query = target.indexOf("?");
    const pathname = query < 0 ? target : target.slice(0, query);
    if (viewer && (pathname === "/" || pathname.startsWith(ASSET_PREFIX))) return viewer.handle(req, res, pathname);
    return handleKey(req, res, pathname);
  };

  server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    handle(req, res).catch((error: unknown) => {
      const message = error instanceof Error ? error.message : String(error);
      onError(`${req.method} ${req.url}: ${message}`);
      // The client learns that the server failed, not the server's paths.
      const code = (error as { code?: unknown }).code;
      plain(res, 500, `server error${typeof code === "string" ? ` (${code})` : ""}`);
    });
  });

  const port = options.port ?? 8080;
  await new Promise<void>((resolve, reject) => {
    const fail = (error: NodeJS.ErrnoException) => reject(new ListenFailedError(`${host}:${port}`, error.code ?? error.message));
    server.once("error", fail);
    server.listen(port, host, () => {
      server.off("error", fail);
      resolve();
    });
  });
  server.on("error", (error) => onError(error.message));
  const address = server.address();
  const boundPort = typeof address === "object" && address ? address.port : port;
  const urlHost = host.includes(":") ? `[${host}]` : host;

  let closing: Promise<void> | null = null;
  return {
    server,
    url: `http://${urlHost}:${boundPort}/`,
    port: boundPort,
    close(graceMs = 2000) {
      closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        server.close(() => {
          clearTimeout(timer);
          locator.close();
          resolve();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}
