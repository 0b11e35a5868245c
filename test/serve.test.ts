/**
 * `h5nest serve` as a child process on 127.0.0.1: keys and their bytes
 * (raw file first, then the shard), HEAD, ranges, ETags, large values
 * streamed, CORS, the log line, a clean stop on Ctrl-C; and hostile
 * requests: traversal in every spelling, shard and temporary file names,
 * malformed and huge ranges, other methods, thousands of connections, slow
 * readers. Every hostile request gets a clear status, nothing outside the
 * store is ever sent, and the server keeps serving.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { test, type TestContext } from "node:test";
import { createV2Array, H5NestedStore } from "h5nest";
import * as zarr from "zarrita";
import { describeRun, h5nest } from "./helpers/cli.ts";
import { rawGet, rawRequest, type ServerProcess, startServe } from "./helpers/http.ts";
import { tempDir } from "./helpers/tmp.ts";

const BIG = 3 * 1024 * 1024 + 123; // over the 1 MiB a response reads in one go: streamed

interface Fixture {
  dir: string;
  root: string;
  secret: string;
  /** Key -> bytes that GET must return. */
  values: Map<string, Buffer>;
}

function pattern(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = (i * 131 + seed * 17 + (i >> 9)) & 0xff;
  return out;
}

/** A store with chunks in shards, a raw file shadowing a shard dataset, and large values in a shard and in a raw file. */
async function makeFixture(t: TestContext): Promise<Fixture> {
  const dir = await tempDir(t, "h5nest-serve-");
  const root = path.join(dir, "store");
  const secret = `TOP-SECRET-${randomBytes(8).toString("hex")}`;
  await fsp.writeFile(path.join(dir, "secret.txt"), secret);
  const values = new Map<string, Buffer>();
  const store = await H5NestedStore.open(root, { workers: 1 });
  try {
    await createV2Array(store, "img", { shape: [1, 1, 2, 64, 64], chunks: [1, 1, 1, 32, 32], dtype: "<u2", compressor: null });
    await createV2Array(store, "big", { shape: [1, 1, 1, 1, BIG], chunks: [1, 1, 1, 1, BIG], dtype: "|u1", compressor: null });
    const writes: Promise<void>[] = [];
    for (let z = 0; z < 2; z++) {
      for (let y = 0; y < 2; y++) {
        for (let x = 0; x < 2; x++) {
          const key = `img/0/0/${z}/${y}/${x}`;
          values.set(key, pattern(2048, z * 4 + y * 2 + x));
          writes.push(store.set(key, values.get(key)!));
        }
      }
    }
    values.set("big/0/0/0/0/0", pattern(BIG, 99));
    writes.push(store.set("big/0/0/0/0/0", values.get("big/0/0/0/0/0")!));
    await Promise.all(writes);
  } finally {
    await store.close();
  }
  assert.ok(fs.existsSync(path.join(root, "img/0/0/1.h5")) && fs.existsSync(path.join(root, "big/0/0/0.h5")), "chunks are in shards");
  // A raw file at a key's path wins over its shard dataset (docs/format.md section 5).
  const shadow = pattern(2048, 1234);
  await fsp.mkdir(path.join(root, "img/0/0/1/1"), { recursive: true });
  await fsp.writeFile(path.join(root, "img/0/0/1/1/1"), shadow);
  values.set("img/0/0/1/1/1", shadow);
  // A large raw file (a key with a dot is never a chunk: always a plain file).
  values.set("blob.bin", pattern(BIG, 7));
  await fsp.writeFile(path.join(root, "blob.bin"), values.get("blob.bin")!);
  values.set(".zgroup", await fsp.readFile(path.join(root, ".zgroup")));
  return { dir, root, secret, values };
}

async function get(url: string, init: RequestInit = {}): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const response = await fetch(url, init);
  return { status: response.status, headers: response.headers, body: Buffer.from(await response.arrayBuffer()) };
}

function openFds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** The soft limit of open files of this process: the tests open many sockets. */
function fileLimit(): number {
  const line = fs.readFileSync("/proc/self/limits", "utf8").split("\n").find((l) => l.startsWith("Max open files"));
  const soft = Number(line?.split(/\s+/)[3]);
  return Number.isFinite(soft) ? soft : 1024;
}

const sha = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

test("GET, HEAD, ranges and ETags of keys in shards and raw files", async (t) => {
  const f = await makeFixture(t);
  const serve = await startServe(t, f.root, ["--verbose"]);

  await t.test("every key's bytes: shard datasets, the raw file that shadows one, large values (streamed), metadata", async () => {
    for (const [key, want] of f.values) {
      const got = await get(`${serve.url}${key}`);
      assert.equal(got.status, 200, key);
      assert.equal(got.headers.get("content-length"), String(want.length), key);
      assert.equal(sha(got.body), sha(want), `${key}: the bytes stored`);
      assert.equal(got.headers.get("accept-ranges"), "bytes");
      assert.match(got.headers.get("etag") ?? "", /^"[0-9a-f]+-[A-Za-z0-9+/]+"$/, "a strong ETag");
    }
    assert.equal((await get(`${serve.url}.zgroup`)).headers.get("content-type"), "application/json");
    assert.equal((await get(`${serve.url}img/0/0/0/0/0`)).headers.get("content-type"), "application/octet-stream");
  });

  await t.test("a missing key is 404, also below a raw file or in a missing shard", async () => {
    for (const key of ["img/0/0/0/5/5", "img/0/0/7/0/0", "nothing/.zarray", "blob.bin/x", "img"]) assert.equal((await get(`${serve.url}${key}`)).status, 404, key);
  });

  await t.test("HEAD gives the length and no body", async () => {
    for (const key of ["img/0/0/0/0/1", "big/0/0/0/0/0", "blob.bin"]) {
      const head = await rawGet(serve.port, `/${key}`, {}, "HEAD");
      assert.equal(head.status, 200);
      assert.equal(head.headers["content-length"], String(f.values.get(key)!.length));
      assert.equal(head.body.length, 0, "no body after the headers");
    }
  });

  await t.test("ranges: 206 with Content-Range, suffixes, clamping, across a streamed value, 416 beyond the end", async () => {
    const cases: [string, string, number, number | null][] = [
      ["img/0/0/0/0/0", "bytes=0-9", 0, 10],
      ["img/0/0/0/0/0", "bytes=-16", 2032, 16],
      ["img/0/0/0/0/0", "bytes=2040-", 2040, 8],
      ["img/0/0/0/0/0", "bytes=100-99999999999999999999", 100, 1948],
      ["img/0/0/0/0/0", "bytes=-5000", 0, 2048], // a suffix longer than the value: all of it (RFC 9110)
      ["img/0/0/1/1/1", "bytes=1000-1999", 1000, 1000],
      ["big/0/0/0/0/0", `bytes=${BIG - 2_500_000}-`, BIG - 2_500_000, 2_500_000],
      ["big/0/0/0/0/0", "bytes=1048000-2097999", 1048000, 1_050_000],
      ["blob.bin", "bytes=5-1500000", 5, 1_499_996],
    ];
    for (const [key, range, start, length] of cases) {
      const got = await get(`${serve.url}${key}`, { headers: { Range: range } });
      const want = f.values.get(key)!;
      assert.equal(got.status, 206, `${key} ${range}`);
      assert.equal(got.headers.get("content-range"), `bytes ${start}-${start + length! - 1}/${want.length}`, `${key} ${range}`);
      assert.ok(got.body.equals(want.subarray(start, start + length!)), `${key} ${range}: the bytes of the range`);
    }
    for (const range of ["bytes=99999999999999999999-", "bytes=2048-", "bytes=5000-6000", "bytes=5-2", "bytes=-0"]) {
      const got = await get(`${serve.url}img/0/0/0/0/0`, { headers: { Range: range } });
      assert.equal(got.status, 416, range);
      assert.equal(got.headers.get("content-range"), "bytes */2048", range);
    }
  });

  await t.test("ETag: 304 on If-None-Match, If-Range with another tag sends it all, a new ETag when the value changes", async () => {
    const url = `${serve.url}img/0/0/0/1/1`;
    const first = await get(url);
    const tag = first.headers.get("etag")!;
    assert.equal((await get(url)).headers.get("etag"), tag, "stable while the shard is unchanged");
    // (A raw request: fetch() adds Cache-Control: no-cache to conditional requests, an end-to-end reload.)
    const cached = await rawGet(serve.port, "/img/0/0/0/1/1", { "If-None-Match": tag });
    assert.equal(cached.status, 304);
    assert.equal(cached.body.length, 0);
    const stale = await get(url, { headers: { Range: "bytes=0-3", "If-Range": '"old"' } });
    assert.equal(stale.status, 200, "If-Range names another version: the whole value");
    assert.equal(stale.body.length, 2048);
    assert.equal((await get(url, { headers: { Range: "bytes=0-3", "If-Range": tag } })).status, 206);
    // A commit writes a new shard file: the next request sees its bytes and a new tag.
    const store = await H5NestedStore.open(f.root, { workers: 1 });
    const changed = pattern(3000, 555);
    try {
      await store.set("img/0/0/0/1/1", changed);
    } finally {
      await store.close();
    }
    const after = await rawGet(serve.port, "/img/0/0/0/1/1", { "If-None-Match": tag });
    assert.equal(after.status, 200, "the old tag no longer matches");
    assert.notEqual(after.headers.etag, tag);
    assert.ok(after.body.equals(changed), "the new bytes");
    f.values.set("img/0/0/0/1/1", changed);
  });

  await t.test("--verbose: one log line per request", async () => {
    const before = serve.stdout().split("\n").length;
    await get(`${serve.url}img/0/0/0/0/0`);
    await get(`${serve.url}img/0/0/0/9/9`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const lines = serve.stdout().split("\n").slice(before - 1).filter(Boolean);
    assert.ok(lines.some((l) => / GET \/img\/0\/0\/0\/0\/0 200 2048 [\d.]+ms$/.test(l)), lines.join("\n"));
    assert.ok(lines.some((l) => / GET \/img\/0\/0\/0\/9\/9 404 /.test(l)), lines.join("\n"));
  });

  await t.test("no CORS header unless asked", async () => {
    assert.equal((await get(`${serve.url}.zgroup`)).headers.get("access-control-allow-origin"), null);
  });

  await t.test("Ctrl-C: a clean stop, also with an idle keep-alive connection open", async () => {
    const agent = new http.Agent({ keepAlive: true });
    await new Promise<void>((resolve, reject) => {
      http.get(`${serve.url}.zgroup`, { agent }, (res) => res.resume().on("end", resolve)).on("error", reject);
    });
    const stopped = await serve.stop("SIGINT");
    agent.destroy();
    assert.equal(stopped.code, 0, serve.stderr());
    assert.ok(stopped.ms < 5000, `stopped in ${stopped.ms.toFixed(0)} ms`);
    assert.match(serve.stderr(), /stopped/);
  });
});

test("--cors: the origin header, exposed headers and preflight", async (t) => {
  const f = await makeFixture(t);
  const serve = await startServe(t, f.root, ["--cors", "*"]);
  const got = await get(`${serve.url}img/0/0/0/0/0`, { headers: { Origin: "https://viewer.example" } });
  assert.equal(got.headers.get("access-control-allow-origin"), "*");
  assert.match(got.headers.get("access-control-expose-headers") ?? "", /Content-Range/);
  const preflight = await rawGet(serve.port, "/img/0/0/0/0/0", { Origin: "https://viewer.example", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range" }, "OPTIONS");
  assert.equal(preflight.status, 204);
  assert.match(preflight.headers["access-control-allow-headers"] ?? "", /Range/);
});

test("hostile requests: a clear status, nothing outside the store, the server keeps serving", async (t) => {
  const f = await makeFixture(t);
  const serve = await startServe(t, f.root, ["--max-connections", "100", "--timeout", "1500"]);
  const relativeSecret = path.relative(f.root, path.join(f.dir, "secret.txt")); // "../secret.txt"
  assert.equal(relativeSecret, "../secret.txt");

  const neverLeaks = (label: string, response: { raw: Buffer }) => {
    assert.ok(!response.raw.includes(f.secret), `${label}: the secret outside the store was sent`);
    assert.ok(!response.raw.includes("root:x:0:0"), `${label}: /etc/passwd was sent`);
    assert.ok(!response.raw.includes(f.dir), `${label}: the server's paths were sent`);
  };

  await t.test("traversal in every spelling, absolute paths, shard and temporary file names, NUL, backslashes: 400", async () => {
    const targets = [
      "/../secret.txt",
      "/img/../../secret.txt",
      "/%2e%2e/secret.txt",
      "/%2E%2E/secret.txt",
      "/%2e%2e%2fsecret.txt",
      "/.%2e/secret.txt",
      "/img/%2e%2e/%2e%2e/secret.txt",
      "/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
      "/%252e%252e/secret.txt", // double-encoded: decoded once, a name with '%' that does not exist
      "/%2F%2Fetc/passwd",
      "///etc/passwd",
      "/..%5csecret.txt",
      "/img%5c..%5c..%5csecret.txt",
      "/img/%00/x",
      "/img/0/0/0.h5",
      "/big/0/0/0.h5",
      "/img/0/0/1.h5.0123456789abcdef0123456789abcdef.partial",
      "/img//0",
      "/img/./0",
      "/%zz",
      "/%",
    ];
    for (const target of targets) {
      const response = await rawGet(serve.port, target);
      neverLeaks(target, response);
      const expected = target.startsWith("/%252e") ? 404 : 400;
      assert.equal(response.status, expected, `${target}: ${response.raw.toString("latin1").slice(0, 300)}`);
    }
    // Absolute paths given in other forms stay inside the store: at most a 404.
    for (const target of ["/etc/passwd", `/${encodeURIComponent(path.join(f.dir, "secret.txt"))}`, "/%2Fetc%2Fpasswd"]) {
      const response = await rawGet(serve.port, target);
      neverLeaks(target, response);
      assert.equal(response.status, 404, target);
    }
    // Absolute-form and asterisk targets are no keys.
    for (const target of ["http://127.0.0.1/../secret.txt", "*"]) {
      const response = await rawGet(serve.port, target);
      neverLeaks(target, response);
      assert.equal(response.status, 400, target);
    }
  });

  await t.test("the viewer's files: only module files of zarrita and its codecs, confined to their packages", async () => {
    assert.equal((await rawGet(serve.port, "/__h5nest/viewer.js")).status, 200);
    for (const target of [
      "/__h5nest/lib/zarrita/package.json",
      "/__h5nest/lib/zarrita/../../../secret.txt",
      "/__h5nest/lib/zarrita/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.js",
      "/__h5nest/lib/typescript/lib/typescript.js",
      "/__h5nest/../secret.txt",
      "/__h5nest/nothing",
    ]) {
      const response = await rawGet(serve.port, target);
      neverLeaks(target, response);
      assert.ok([400, 403, 404].includes(response.status), `${target}: ${response.status}`);
    }
  });

  await t.test("malformed, multiple, foreign-unit and huge ranges: the whole value (RFC 9110 lets a server ignore them) or 416", async () => {
    const key = "/img/0/0/0/0/0";
    const whole = f.values.get("img/0/0/0/0/0")!;
    const many = `bytes=${Array.from({ length: 1500 }, (_, i) => `${i * 2}-${i * 2}`).join(",")}`;
    for (const range of ["bytes=abc", "bytes=", "bytes=1.5-3", "bytes=0x10-20", "items=0-5", "bytes=0-1,4-5", many, `bytes=${"9".repeat(5000)}-`]) {
      const response = await rawGet(serve.port, key, { Range: range });
      const label = range.slice(0, 40);
      if (response.status === 416) {
        assert.equal(response.headers["content-range"], "bytes */2048", label);
      } else {
        assert.equal(response.status, 200, `${label}: ${response.status}`);
        assert.ok(response.body.equals(whole), `${label}: the whole value`);
      }
    }
    assert.equal((await rawGet(serve.port, key, { Range: `bytes=${"9".repeat(20_000)}-` })).status, 431, "a header over Node's 16 KiB limit");
  });

  await t.test("other methods: 405 with Allow, nothing written", async () => {
    for (const method of ["POST", "PUT", "DELETE", "PATCH", "PROPFIND"]) {
      const response = await rawRequest(serve.port, `${method} /img/0/0/0/0/0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\n\r\nevil`);
      assert.equal(response.status, 405, method);
      assert.equal(response.headers.allow, "GET, HEAD, OPTIONS");
    }
    const connect = await rawRequest(serve.port, "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n");
    assert.ok(!connect.raw.includes("SSH"), "no tunnel");
    assert.ok((await get(`${serve.url}img/0/0/0/0/0`)).body.equals(f.values.get("img/0/0/0/0/0")!), "the value is unchanged");
  });

  await t.test("thousands of idle connections: at most --max-connections held, each cut within the timeout, then serving again", async () => {
    const pid = serve.child.pid!;
    const baseline = openFds(pid);
    const count = Math.min(3000, Math.floor((fileLimit() - 200) / 2));
    const sockets: net.Socket[] = [];
    /** How long each connection lived, from its connect to its close by the server. */
    const lifetimes: number[] = [];
    let closed = 0;
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, openFds(pid) - baseline)), 20);
    for (let batch = 0; batch < count; batch += 250) {
      await Promise.all(
        Array.from({ length: Math.min(250, count - batch) }, () => {
          const socket = net.connect(serve.port, "127.0.0.1");
          sockets.push(socket);
          let connectedAt: number | null = null;
          socket.on("error", () => {});
          socket.on("close", () => {
            closed++;
            if (connectedAt !== null) lifetimes.push(performance.now() - connectedAt);
          });
          // A request that never ends its headers (slowloris).
          return new Promise<void>((resolve) => {
            socket.once("connect", () => {
              connectedAt = performance.now();
              socket.write("GET /img/0/0/0/0/0 HTTP/1.1\r\nHost: x\r\n");
              resolve();
            });
            socket.once("close", () => resolve());
          });
        }),
      );
    }
    // Generous: on a loaded machine the connects alone take seconds; the bound judged is each connection's lifetime.
    const deadline = performance.now() + 20_000;
    while (closed < sockets.length && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    clearInterval(sampler);
    assert.equal(closed, sockets.length, `all ${sockets.length} connections closed by the server (${closed} were)`);
    assert.ok(peak <= 100 + 10, `the server held at most --max-connections sockets (peak ${peak} descriptors over its baseline)`);
    const longest = Math.max(...lifetimes);
    assert.ok(longest < 5000, `each cut within the 1.5 s timeout and its check interval (longest ${longest.toFixed(0)} ms)`);
    const after = await get(`${serve.url}img/0/0/0/0/0`);
    assert.equal(after.status, 200, "still serving");
    const settle = performance.now() + 3000;
    while (openFds(pid) > baseline + 5 && performance.now() < settle) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(openFds(pid) <= baseline + 5, `no descriptor left behind (${openFds(pid)} open, ${baseline} before)`);
  });

  await t.test("headers trickled a byte at a time: cut when the headers take longer than the timeout", async () => {
    // Never idle, so only the headers timeout (checked often enough) ends them.
    const sockets = Array.from({ length: 50 }, () => net.connect(serve.port, "127.0.0.1").on("error", () => {}));
    const closedAt: number[] = [];
    const started = performance.now();
    for (const socket of sockets) socket.on("close", () => closedAt.push(performance.now() - started));
    const trickle = setInterval(() => {
      for (const socket of sockets) if (!socket.destroyed) socket.write("X");
    }, 200);
    for (const socket of sockets) socket.write("GET /img/0/0/0/0/0 HTTP/1.1\r\nX-Slow: ");
    while (closedAt.length < sockets.length && performance.now() - started < 10_000) await new Promise((resolve) => setTimeout(resolve, 50));
    clearInterval(trickle);
    for (const socket of sockets) socket.destroy();
    assert.equal(closedAt.length, sockets.length, "every trickling connection was cut");
    assert.ok(Math.max(...closedAt) < 6000, `within the 1.5 s timeout and its check interval (${Math.max(...closedAt).toFixed(0)} ms; without the check the headers timeout waits for Node's 30 s sweep)`);
    assert.equal((await get(`${serve.url}img/0/0/0/0/0`)).status, 200, "still serving");
  });

  await t.test("1000 concurrent requests are all answered (bounded concurrency queues them)", async () => {
    const n = Math.min(1000, Math.floor((fileLimit() - 200) / 2));
    const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
    // --max-connections 100 here: over it, a connection is closed at once; retry those.
    const once = (key: string) =>
      new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
        http
          .get(`${serve.url}${key}`, { agent }, (res) => {
            const parts: Buffer[] = [];
            res.on("data", (d: Buffer) => parts.push(d)).on("end", () => resolve({ status: res.statusCode!, body: Buffer.concat(parts) }));
          })
          .on("error", reject);
      });
    const fetchWithRetry = async (key: string): Promise<{ status: number; body: Buffer }> => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await once(key);
        } catch (error) {
          if (attempt > 50) throw error;
          await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 50));
        }
      }
    };
    const keys = [...f.values.keys()].filter((k) => f.values.get(k)!.length < 10_000);
    const started = performance.now();
    const results = await Promise.all(Array.from({ length: n }, (_, i) => fetchWithRetry(keys[i % keys.length]!)));
    agent.destroy();
    results.forEach((r, i) => {
      assert.equal(r.status, 200);
      assert.ok(r.body.equals(f.values.get(keys[i % keys.length]!)!));
    });
    assert.ok(performance.now() - started < 60_000);
  });

  await t.test("slow readers: slots are freed after the timeout, a waiting request is told 503 in the meantime", async () => {
    // 40 clients ask for 64 MiB and never read: 32 hold the response slots
    // (more than the kernel's socket buffers take, 4 MiB on Linux by default).
    await fsp.writeFile(path.join(f.root, "huge.bin"), Buffer.alloc(64 * 1024 * 1024, 1));
    const stalled: net.Socket[] = [];
    let inProgress = 0;
    for (let i = 0; i < 40; i++) {
      const socket = net.connect(serve.port, "127.0.0.1");
      socket.on("error", () => {});
      // Stop reading at the first bytes: the response is in progress and holds its slot.
      socket.once("data", () => {
        socket.pause();
        inProgress++;
      });
      socket.write("GET /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n");
      stalled.push(socket);
    }
    const waitUntil = performance.now() + 10_000;
    while (inProgress < 32 && performance.now() < waitUntil) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(inProgress >= 32, `32 responses in progress (${inProgress} begun), the others wait for a slot`);
    const waiting = await rawGet(serve.port, "/img/0/0/0/0/0");
    assert.equal(waiting.status, 503, "no slot within half the timeout");
    assert.equal(waiting.headers["retry-after"], "1");
    const started = performance.now();
    let answered = await rawGet(serve.port, "/img/0/0/0/0/0");
    while (answered.status !== 200 && performance.now() - started < 5000) answered = await rawGet(serve.port, "/img/0/0/0/0/0");
    assert.equal(answered.status, 200, "served again once the idle readers were cut");
    assert.ok(performance.now() - started < 5000);
    for (const socket of stalled) socket.destroy();
  });
});

test("the port in use: a clear error and exit 1", async (t) => {
  const f = await makeFixture(t);
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
  t.after(() => blocker.close());
  const port = String((blocker.address() as net.AddressInfo).port);
  const args = ["serve", f.root, "--port", port];
  const run = await h5nest(args, 10_000);
  assert.equal(run.code, 1, describeRun(args, run));
  assert.match(run.stderr, new RegExp(`cannot listen on 127.0.0.1:${port}: the address is in use`));
  const usage = await h5nest(["serve", f.root, "--port", "70000"]);
  assert.equal(usage.code, 2, "a port out of range is a usage error");
});

test("zarrita reads an array through h5nest serve while a writer commits to the store", async (t) => {
  const f = await makeFixture(t);
  const serve: ServerProcess = await startServe(t, f.root);
  const { FetchStore } = await import("@zarrita/storage");
  const array = await zarr.open.v2(zarr.root(new FetchStore(serve.url)).resolve("img"), { kind: "array" });
  const store = await H5NestedStore.open(f.root, { workers: 1 });
  try {
    const writer = await zarr.open.v2(zarr.root(store).resolve("img"), { kind: "array" });
    for (let round = 1; round <= 3; round++) {
      await zarr.set(writer, null, round);
      await store.flush();
      const got = await zarr.get(array, null);
      assert.ok((got.data as Uint16Array).every((v) => v === round), `round ${round}: every value served is the committed one`);
    }
  } finally {
    await store.close();
  }
});
