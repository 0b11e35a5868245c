// Launcher of bench/ingest-child.ts, one writer process of the distributed
// ingest benchmark (bench/distributed.ts). Like main.mjs, it registers tsx in
// this thread only, so h5nest's worker threads start without tsx and esbuild.
import { register } from "tsx/esm/api";

register();
await import("./ingest-child.ts");
