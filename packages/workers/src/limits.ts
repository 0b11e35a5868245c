/**
 * Largest dataset one call moves through a worker's WebAssembly heap, which
 * is capped at 2 GiB and never shrinks.
 */
export const MAX_DATASET_BYTES = 512 * 1024 * 1024;
