/**
 * The files of the viewer that `h5nest serve` shows at `/`: its HTML page, its
 * script, the list of arrays, and zarrita's ESM build with the modules it
 * imports, served from node_modules so that the browser needs no network but
 * this server (no CDN; the page's Content-Security-Policy allows only 'self').
 * Everything lives under `/__h5nest/`: zarr v3 reserves node names starting
 * with `__`, so no store key is shadowed there.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import type http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import send from "send";
import { listArrays } from "./hierarchy.js";

export const ASSET_PREFIX = "/__h5nest/";
const LIB_PREFIX = `${ASSET_PREFIX}lib/`;

/** The viewer's own folder (packages/core/viewer, beside dist/ and src/). */
const VIEWER_DIR = fileURLToPath(new URL("../viewer/", import.meta.url));
const PACKAGE_DIR = fileURLToPath(new URL("../", import.meta.url));

/**
 * The bare module specifiers the browser meets: zarrita's own imports
 * (codecs with WebAssembly are imported lazily, only for arrays that use them).
 * `from` names the package whose dependency the specifier is.
 */
const BROWSER_IMPORTS: { specifier: string; from: string | null }[] = [
  { specifier: "zarrita", from: null },
  { specifier: "@zarrita/storage/fetch", from: "zarrita" },
  { specifier: "numcodecs/blosc", from: "zarrita" },
  { specifier: "numcodecs/lz4", from: "zarrita" },
  { specifier: "numcodecs/zstd", from: "zarrita" },
];

/** Only module files leave node_modules. */
const LIB_EXTENSIONS = new Set([".js", ".mjs", ".wasm", ".map"]);

function packageNameOf(specifier: string): { name: string; subpath: string } {
  const parts = specifier.split("/");
  const count = specifier.startsWith("@") ? 2 : 1;
  const name = parts.slice(0, count).join("/");
  const rest = parts.slice(count).join("/");
  return { name, subpath: rest ? `./${rest}` : "." };
}

/** Node's lookup: `node_modules/<name>` in `fromDir` or any folder above it. */
function findPackageDir(name: string, fromDir: string): string | null {
  let dir = fromDir;
  for (;;) {
    const candidate = path.join(dir, "node_modules", ...name.split("/"));
    if (fs.existsSync(path.join(candidate, "package.json"))) return fs.realpathSync(candidate);
    const parent = path.dirname(dir);
    if (parent === dir) return null;
    dir = parent;
  }
}

type ExportEntry = string | null | ExportEntry[] | { [condition: string]: ExportEntry };

/** The file a package exports at `subpath`, under the conditions a browser module loader uses. */
function exportTarget(packageDir: string, subpath: string): string | null {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageDir, "package.json"), "utf8")) as {
    exports?: ExportEntry;
    module?: string;
    main?: string;
  };
  const pick = (entry: ExportEntry | undefined): string | null => {
    if (typeof entry === "string") return entry;
    if (Array.isArray(entry)) return entry.map(pick).find((e) => e !== null) ?? null;
    if (!entry) return null;
    for (const condition of ["browser", "import", "default"]) if (condition in entry) return pick(entry[condition]);
    return null;
  };
  const exports = pkg.exports;
  const isMap = exports && typeof exports === "object" && !Array.isArray(exports) && Object.keys(exports).some((k) => k.startsWith("."));
  if (isMap) return pick((exports as Record<string, ExportEntry>)[subpath]);
  if (subpath !== ".") return null;
  return pick(exports) ?? pkg.module ?? pkg.main ?? null;
}

export interface ViewerOptions {
  /** Store root, for the array list. */
  root: string;
  /** Names that are not folders of groups or arrays (shard files). */
  skip: (name: string) => boolean;
}

export class ViewerAssets {
  /** Package name -> its folder, for the packages the import map points into. */
  private readonly packages = new Map<string, string>();
  private readonly page: Buffer | null;
  private readonly pageTag: string;
  private readonly csp: string;
  readonly problem: string | null;

  constructor(private readonly options: ViewerOptions) {
    const imports: Record<string, string> = {};
    const problems: string[] = [];
    for (const { specifier, from } of BROWSER_IMPORTS) {
      const { name, subpath } = packageNameOf(specifier);
      const base = from ? this.packages.get(from) : PACKAGE_DIR;
      const dir = base ? findPackageDir(name, base) : null;
      const target = dir ? exportTarget(dir, subpath) : null;
      if (!dir || !target) {
        problems.push(`cannot find ${specifier} in node_modules`);
        continue;
      }
      this.packages.set(name, dir);
      imports[specifier] = `${LIB_PREFIX}${name}/${path.posix.normalize(target)}`;
    }
    this.problem = problems.length ? problems.join("; ") : null;
    const importMap = JSON.stringify({ imports });
    const template = readOrNull(path.join(VIEWER_DIR, "index.html"));
    this.page = template ? Buffer.from(template.replace("<!-- importmap -->", `<script type="importmap">${importMap}</script>`)) : null;
    this.pageTag = `"${createHash("sha1").update(this.page ?? "").digest("base64url")}"`;
    // Nothing but this server: the import map is the page's only inline
    // script (allowed by its hash); the blosc, lz4 and zstd codecs are
    // WebAssembly built with emscripten's embind, which compiles its call
    // wrappers with new Function ('unsafe-eval'), a local matter: connect-src
    // still allows no other host.
    const mapHash = createHash("sha256").update(importMap).digest("base64");
    this.csp = [
      "default-src 'self'",
      `script-src 'self' 'sha256-${mapHash}' 'wasm-unsafe-eval' 'unsafe-eval'`,
      "style-src 'self' 'unsafe-inline'",
      "img-src 'self' data: blob:",
      "connect-src 'self'",
      "object-src 'none'",
      "base-uri 'none'",
      "frame-ancestors 'none'",
    ].join("; ");
  }

  /** Serves `/` and `/__h5nest/...`; `pathname` is the raw (still encoded) path of the request. */
  async handle(req: http.IncomingMessage, res: http.ServerResponse, pathname: string): Promise<void> {
    if (pathname === "/") return this.sendPage(req, res);
    if (pathname === `${ASSET_PREFIX}arrays.json`) return this.sendArrays(req, res);
    if (pathname === `${ASSET_PREFIX}viewer.js`) return this.sendFile(req, res, VIEWER_DIR, "/viewer.js");
    if (pathname.startsWith(LIB_PREFIX)) {
      const rest = pathname.slice(LIB_PREFIX.length);
      const count = rest.startsWith("@") ? 2 : 1;
      const parts = rest.split("/");
      const dir = this.packages.get(parts.slice(0, count).join("/"));
      const file = `/${parts.slice(count).join("/")}`;
      if (dir && LIB_EXTENSIONS.has(path.posix.extname(file))) return this.sendFile(req, res, dir, file);
    }
    res.writeHead(404, { "Content-Type": "text/plain; charset=utf-8" }).end("not found\n");
  }

  private sendPage(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (!this.page) {
      res.writeHead(500, { "Content-Type": "text/plain; charset=utf-8" }).end("the viewer's files are missing from this installation\n");
      return;
    }
    const headers = {
      "Content-Type": "text/html; charset=utf-8",
      "Content-Security-Policy": this.csp,
      "Cache-Control": "no-cache",
      ETag: this.pageTag,
      "X-Content-Type-Options": "nosniff",
    };
    if (req.headers["if-none-match"] === this.pageTag) {
      res.writeHead(304, headers).end();
      return;
    }
    res.writeHead(200, { ...headers, "Content-Length": this.page.length });
    res.end(req.method === "HEAD" ? undefined : this.page);
  }

  private async sendArrays(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const listing = await listArrays(this.options.root, { skip: this.options.skip });
    const body = Buffer.from(JSON.stringify({ ...listing, problem: this.problem }));
    res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-cache", "Content-Length": body.length });
    res.end(req.method === "HEAD" ? undefined : body);
  }

  /** A static file through `send` (ranges, ETags, refusal of `..`), confined to `root`. */
  private sendFile(req: http.IncomingMessage, res: http.ServerResponse, root: string, file: string): Promise<void> {
    return new Promise((resolve) => {
      const stream = send(req, file, { root, index: false, dotfiles: "deny", cacheControl: false });
      stream.on("headers", (response: http.ServerResponse) => response.setHeader("Cache-Control", "no-cache"));
      stream.on("error", (error: { status?: number }) => {
        const status = error.status ?? 500;
        if (!res.headersSent) res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8" });
        res.end(status === 404 ? "not found\n" : `error ${status}\n`);
        resolve();
      });
      stream.on("end", () => resolve());
      res.on("close", () => resolve());
      stream.pipe(res);
    });
  }
}

function readOrNull(file: string): string | null {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return null;
  }
}
