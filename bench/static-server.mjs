// A plain static file server: express's serve-static (send underneath: Range,
// ETag, Last-Modified) on Node's http module, with keep-alive as Node sets it.
// The baseline of the serve benchmark, and the "any static HTTP server" that
// serves shard files to the readers of `h5nest refs --url` in the tests.
//   node bench/static-server.mjs <folder> [port]   -> prints "listening <url>"
import http from "node:http";
import serveStatic from "serve-static";

const [folder, port = "0"] = process.argv.slice(2);
if (!folder) {
  console.error("usage: node bench/static-server.mjs <folder> [port]");
  process.exit(2);
}
// dotfiles "allow": zarr v2 metadata are dotfiles (.zarray, .zgroup).
const files = serveStatic(folder, { dotfiles: "allow", index: false, fallthrough: true });
const server = http.createServer((req, res) => {
  files(req, res, () => {
    res.writeHead(404, { "Content-Type": "text/plain" }).end("not found\n");
  });
});
server.listen(Number(port), "127.0.0.1", () => {
  const address = server.address();
  console.log(`listening http://127.0.0.1:${typeof address === "object" && address ? address.port : port}/`);
});
const stop = () => server.close(() => process.exit(0));
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
