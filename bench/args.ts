/** Command-line options of the benchmark runner. */

export interface BenchArgs {
  /** Interleaved rounds; every figure is the median over them. */
  rounds: number;
  /** Chunks in the main workload (a multiple of 256: one z-plane holds 256 chunks). */
  chunks: number;
  /** Print the results as JSON on stdout instead of the tables. */
  json: boolean;
  /** Run the 2 GiB region-write memory benchmark (and only it unless --with-main is given). */
  memory: boolean;
  /** With --memory or --distributed: run the main benchmark too. */
  withMain: boolean;
  /** Run the distributed ingest benchmark (several writer processes sharing shard leases). */
  distributed: boolean;
  /** Run the lease throughput benchmark (64 RedisLeaseProvider clients on one Redis; not in the default run). */
  leases: boolean;
  /** Length of one timed window of the lease benchmark, seconds. */
  leaseSeconds: number;
  /** Client processes of the lease benchmark (the 64 clients are spread evenly over them). */
  leaseProcesses: number;
  /** Run the consolidate benchmark only (it also runs by default, after the main one, unless --no-consolidate). */
  consolidate: boolean;
  /** Skip the consolidate benchmark in a default run. */
  noConsolidate: boolean;
  /** Run the store-level benchmark only (it also runs by default, last, unless --no-store). */
  store: boolean;
  /** Skip the store-level benchmark in a default run. */
  noStore: boolean;
  /** Run the serve benchmark (h5nest serve vs a static file server over HTTP; not in the default run). */
  serve: boolean;
  /** Run the scale-out consolidation benchmark: 1, 2, 4 `h5nest consolidate --redis` processes sharing one job (not in the default run). */
  consolidateShared: boolean;
  /** Shards (z-planes of 256 chunks of 8 KiB) in the raw store of --consolidate-shared. */
  sharedShards: number;
  /** Also consolidate once at `chunks` and at `consolidateScaleChunks` and compare peak RSS (implies --consolidate). */
  consolidateScale: boolean;
  consolidateScaleChunks: number;
  /** z-planes of the memory benchmark (1024 planes = 2 GiB). */
  memoryPlanes: number;
  /** With --memory: zarr.set calls (planes) kept in flight at once (1 = strictly plane by plane). */
  memoryInflight: number;
  /** Worker threads of h5nest (default: its own default, the available cores). */
  workers: number | undefined;
  /** In-flight writes/reads of the plain fs baseline. */
  fsConcurrency: number;
}

const USAGE = `usage: npm run bench -- [options]
  --rounds N           interleaved rounds, medians reported (default 5)
  --chunks N           chunks of 8 KiB in the main workload, multiple of 256 (default 4096)
  --json               print the results as JSON instead of tables
  --memory             run the 2 GiB region-write memory benchmark (instead of the main one)
  --distributed        run the distributed ingest benchmark (2 writer processes with distributedLock
                       true or Redis vs 1 process without a lock; instead of the main one)
  --leases             run the lease throughput benchmark: 64 RedisLeaseProvider clients on one redis-server,
                       grants/s vs a plain SET NX + DEL lock (not in the default run)
  --lease-seconds N    timed window of every lease variant and round, seconds (default 5)
  --lease-processes N  client processes of --leases, dividing 64 (default 4)
  --consolidate        run only the consolidate benchmark (by default it runs after the main one)
  --no-consolidate     skip the consolidate benchmark in a default run
  --store              run only the store-level benchmark (store.get/set: h5nest vs FileSystemStore, Map,
                       Python stores; 8 KiB and 1 MiB chunks; by default it runs after the consolidate one)
  --no-store           skip the store-level benchmark in a default run
  --serve              run the serve benchmark: h5nest serve vs a static file server (serve-static) over HTTP on
                       127.0.0.1, 8 KiB and 1 MiB chunks (not in the default run; --with-main adds the main one)
  --consolidate-shared  run the scale-out consolidation benchmark: 1, 2 and 4 \`h5nest consolidate --redis\` processes
                       sharing one job through one redis-server vs 1 process without --redis (not in the default run;
                       --workers N per process, default 1 here)
  --shared-shards N    shards of 256 chunks of 8 KiB in the store of --consolidate-shared (default 96)
  --consolidate-scale  consolidate benchmark plus single runs at --chunks and at 65536 chunks: peak RSS as the store grows
  --consolidate-scale-chunks N  the larger store of --consolidate-scale, multiple of 256 (default 65536)
  --with-main          with --memory, --distributed, --leases, --consolidate[-scale|-shared], --store or --serve: run the main benchmark as well
  --memory-planes N    z-planes of 1024x1024 uint16 in the memory benchmark (default 1024 = 2 GiB)
  --memory-inflight K  planes written concurrently in the memory benchmark (default 1)
  --workers N          h5nest worker threads (default: h5nest's default, the available cores)
  --fs-concurrency N   files in flight for the plain fs baseline (default 64)
environment:
  H5NEST_PY_STORE=DIR  checkout of CBI-PITT/zarr_stores: also measure the Python H5_Nested_Store
  H5NEST_BENCH_REDIS=FILE  redis-server for --distributed, --leases and --consolidate-shared (default /usr/bin/redis-server)`;

function positiveInt(flag: string, text: string | undefined): number {
  const value = Number(text);
  if (text === undefined || !Number.isInteger(value) || value < 1) {
    throw new Error(`${flag} needs a positive integer, got ${JSON.stringify(text)}\n${USAGE}`);
  }
  return value;
}

export function parseArgs(argv: string[]): BenchArgs {
  const args: BenchArgs = {
    rounds: 5,
    chunks: 4096,
    json: false,
    memory: false,
    withMain: false,
    distributed: false,
    leases: false,
    leaseSeconds: 5,
    leaseProcesses: 4,
    consolidate: false,
    noConsolidate: false,
    store: false,
    noStore: false,
    serve: false,
    consolidateShared: false,
    sharedShards: 96,
    consolidateScale: false,
    consolidateScaleChunks: 65536,
    memoryPlanes: 1024,
    memoryInflight: 1,
    workers: undefined,
    fsConcurrency: 64,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const [name, inline] = flag.includes("=") ? [flag.slice(0, flag.indexOf("=")), flag.slice(flag.indexOf("=") + 1)] : [flag, undefined];
    const value = (): string | undefined => inline ?? argv[++i];
    switch (name) {
      case "--rounds":
        args.rounds = positiveInt(name, value());
        break;
      case "--chunks":
        args.chunks = positiveInt(name, value());
        if (args.chunks % 256 !== 0) throw new Error(`--chunks must be a multiple of 256 (one z-plane), got ${args.chunks}`);
        break;
      case "--json":
        args.json = true;
        break;
      case "--memory":
        args.memory = true;
        break;
      case "--with-main":
        args.withMain = true;
        break;
      case "--distributed":
        args.distributed = true;
        break;
      case "--leases":
        args.leases = true;
        break;
      case "--lease-seconds":
        args.leaseSeconds = positiveInt(name, value());
        break;
      case "--lease-processes":
        args.leaseProcesses = positiveInt(name, value());
        if (64 % args.leaseProcesses !== 0) throw new Error(`--lease-processes must divide 64, got ${args.leaseProcesses}`);
        break;
      case "--consolidate":
        args.consolidate = true;
        break;
      case "--no-consolidate":
        args.noConsolidate = true;
        break;
      case "--store":
        args.store = true;
        break;
      case "--no-store":
        args.noStore = true;
        break;
      case "--serve":
        args.serve = true;
        break;
      case "--consolidate-shared":
        args.consolidateShared = true;
        break;
      case "--shared-shards":
        args.sharedShards = positiveInt(name, value());
        break;
      case "--consolidate-scale":
        args.consolidate = true;
        args.consolidateScale = true;
        break;
      case "--consolidate-scale-chunks":
        args.consolidateScaleChunks = positiveInt(name, value());
        if (args.consolidateScaleChunks % 256 !== 0) throw new Error(`--consolidate-scale-chunks must be a multiple of 256, got ${args.consolidateScaleChunks}`);
        break;
      case "--memory-planes":
        args.memoryPlanes = positiveInt(name, value());
        break;
      case "--memory-inflight":
        args.memoryInflight = positiveInt(name, value());
        break;
      case "--workers":
        args.workers = positiveInt(name, value());
        break;
      case "--fs-concurrency":
        args.fsConcurrency = positiveInt(name, value());
        break;
      case "--help":
      case "-h":
        console.log(USAGE);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${flag}\n${USAGE}`);
    }
  }
  return args;
}
