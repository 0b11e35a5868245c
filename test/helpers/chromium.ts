/**
 * Debian's chromium, headless, driven through the DevTools protocol over a
 * pipe (--remote-debugging-pipe: JSON messages separated by NUL bytes on file
 * descriptors 3 and 4), so no WebSocket client is needed. Under CI a missing
 * chromium fails the test; elsewhere the test says so loudly and skips.
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import type { Readable, Writable } from "node:stream";
import type { TestContext } from "node:test";
import { tempDir } from "./tmp.ts";

export const CHROMIUM = "/usr/bin/chromium";

/** Skips (or under CI fails) the test when chromium is missing. Returns false when skipped. */
export function requireChromium(t: TestContext): boolean {
  if (fs.existsSync(CHROMIUM)) return true;
  const message = `MISSING TOOLS: ${CHROMIUM} (apt-get install chromium)`;
  if (process.env.CI === "true") throw new Error(`${message} (required under CI)`);
  console.warn(`\n*** ${message}: browser test skipped ***\n`);
  t.skip(message);
  return false;
}

type Message = { id?: number; method?: string; params?: Record<string, unknown>; result?: unknown; error?: { message: string }; sessionId?: string };

export class Browser {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>();
  private readonly listeners: ((message: Message) => void)[] = [];
  private stderr = "";

  private constructor(
    private readonly child: ChildProcess,
    private readonly input: Writable,
    output: Readable,
  ) {
    let buffered = Buffer.alloc(0);
    output.on("data", (data: Buffer) => {
      buffered = Buffer.concat([buffered, data]);
      let end: number;
      while ((end = buffered.indexOf(0)) >= 0) {
        const message = JSON.parse(buffered.subarray(0, end).toString("utf8")) as Message;
        buffered = buffered.subarray(end + 1);
        if (message.id !== undefined) {
          const waiter = this.pending.get(message.id);
          this.pending.delete(message.id);
          if (message.error) waiter?.reject(new Error(`${message.error.message}\nchromium stderr: ${this.stderr.slice(-2000)}`));
          else waiter?.resolve(message.result);
        } else {
          for (const listener of this.listeners) listener(message);
        }
      }
    });
    child.stderr!.setEncoding("utf8").on("data", (text: string) => (this.stderr = (this.stderr + text).slice(-20000)));
    child.on("exit", () => {
      for (const waiter of this.pending.values()) waiter.reject(new Error(`chromium exited\n${this.stderr.slice(-2000)}`));
      this.pending.clear();
    });
  }

  /** Starts chromium headless with a fresh profile; closed after the test. */
  static async launch(t: TestContext): Promise<Browser> {
    const profile = await tempDir(t, "h5nest-chromium-");
    const child = spawn(
      CHROMIUM,
      [
        "--headless=new",
        "--no-sandbox", // CI runs as root, where chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--remote-debugging-pipe",
        `--user-data-dir=${profile}`,
        "about:blank",
      ],
      { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] },
    );
    const browser = new Browser(child, child.stdio[3] as Writable, child.stdio[4] as Readable);
    t.after(() => browser.close());
    await browser.send("Browser.getVersion");
    return browser;
  }

  send<T = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: (v) => resolve(v as T), reject });
      this.input.write(`${JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) })}\0`);
    });
  }

  on(listener: (message: Message) => void): void {
    this.listeners.push(listener);
  }

  /** A new tab, attached; every URL it requests is recorded in `requests`. */
  async newPage(): Promise<Page> {
    const { targetId } = await this.send<{ targetId: string }>("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send<{ sessionId: string }>("Target.attachToTarget", { targetId, flatten: true });
    const page = new Page(this, sessionId);
    this.on((message) => {
      if (message.sessionId !== sessionId) return;
      if (message.method === "Network.requestWillBeSent") page.requests.push(String((message.params as { request: { url: string } }).request.url));
      if (message.method === "Runtime.exceptionThrown") page.errors.push(JSON.stringify(message.params));
      if (message.method === "Runtime.consoleAPICalled") page.console.push(JSON.stringify((message.params as { args: unknown[] }).args));
    });
    await page.send("Network.enable");
    await page.send("Runtime.enable");
    await page.send("Page.enable");
    return page;
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.send("Browser.close").catch(() => {});
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(timer);
  }
}

export class Page {
  readonly requests: string[] = [];
  readonly errors: string[] = [];
  readonly console: string[] = [];

  constructor(
    private readonly browser: Browser,
    private readonly sessionId: string,
  ) {}

  send<T = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    return this.browser.send<T>(method, params, this.sessionId);
  }

  async goto(url: string): Promise<void> {
    await this.send("Page.navigate", { url });
  }

  /** Evaluates `expression` in the page (awaiting a promise) and returns its value as JSON. */
  async evaluate<T>(expression: string): Promise<T> {
    const result = await this.send<{ result: { value?: T }; exceptionDetails?: { text: string; exception?: { description?: string } } }>("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    });
    if (result.exceptionDetails) throw new Error(`in the page: ${result.exceptionDetails.exception?.description ?? result.exceptionDetails.text}`);
    return result.result.value as T;
  }

  /** Polls `expression` until it is truthy; returns its value. */
  async waitFor<T>(expression: string, what: string, timeoutMs = 30_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await this.evaluate<T>(expression).catch(() => undefined);
      if (value) return value;
      if (Date.now() > deadline) {
        const state = await this.evaluate<string>("document.body ? document.body.dataset.state + ' ' + document.getElementById('status')?.textContent : 'no body'").catch(() => "?");
        throw new Error(`timed out waiting for ${what}; page state: ${state}; errors: ${this.errors.join("\n")}; console: ${this.console.join("\n")}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}
