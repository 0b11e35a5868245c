/**
 * Library-version bounds for files we write. HDF5 1.10 (Debian's h5py and
 * h5dump) reads them; the bounds are not stored in the file, so every write
 * open passes them (see ShardBuilder).
 */
export const LIBVER_BOUNDS = ["v108", "v110"] as const;

/**
 * Largest dataset one call moves through a worker's WebAssembly heap, which
 * is capped at 2 GiB and never shrinks.
 */
export const MAX_DATASET_BYTES = 512 * 1024 * 1024;
