// Launcher of bench/lease-child.ts, one client process of the lease benchmark
// (bench/leases.ts). Like main.mjs, it registers tsx in this thread only.
import { register } from "tsx/esm/api";

register();
await import("./lease-child.ts");
