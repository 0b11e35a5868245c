/**
 * zarrita's zlib and gzip codecs only decode. Importing h5nest registers the
 * `numcodecs` package's implementations, which encode too, so that zarrita
 * can write zlib and gzip arrays (v3 names and v2 "numcodecs.*" names).
 */
import * as zarr from "zarrita";
import GZip from "numcodecs/gzip";
import Zlib from "numcodecs/zlib";

type CodecLoader = Parameters<typeof zarr.registry.set>[1];

const zlib = (async () => Zlib) as unknown as CodecLoader;
const gzip = (async () => GZip) as unknown as CodecLoader;

zarr.registry.set("zlib", zlib);
zarr.registry.set("numcodecs.zlib", zlib);
zarr.registry.set("gzip", gzip);
zarr.registry.set("numcodecs.gzip", gzip);
