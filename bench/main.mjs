// Launcher of bench/run.ts (npm run bench). It registers tsx in the main
// thread only. With `node --import tsx`, every h5nest worker thread inherits
// the flag and loads tsx and esbuild too, which adds several hundred ms to
// each store's worker start: an artifact of the benchmark, not of h5nest.
import { register } from "tsx/esm/api";

register();
await import("./run.ts");
