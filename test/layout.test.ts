/**
 * The pure key -> file mapping (docs/format.md sections 1, 3 and 7): Layout,
 * canWriteToShard, keySegments, normalizeExt, isTempName. No I/O.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { describe, test } from "node:test";
import {
  type ArrayInfo,
  canWriteToShard,
  InvalidKeyError,
  isTempName,
  keySegments,
  Layout,
  type Location,
  normalizeExt,
} from "h5nest";

/** A store root that is never touched: Layout does no I/O. */
const ROOT = path.resolve("/tmp/h5nest-layout-test/store");
const HEX32 = "0123456789abcdef0123456789abcdef";

function layout(depth: number, ext = ".h5", root = ROOT): Layout {
  return new Layout({ root, depth, ext });
}

function chunk(location: Location): Extract<Location, { kind: "chunk" }> {
  assert.equal(location.kind, "chunk", `${location.key} should be a chunk`);
  return location as Extract<Location, { kind: "chunk" }>;
}

/** Absolute path of a `/`-separated path relative to ROOT. */
function inRoot(relative: string): string {
  return path.join(ROOT, ...relative.split("/"));
}

// ---------------------------------------------------------------------------
// Section 3: shard and dataset of chunk keys.

interface ShardCase {
  depth: number;
  key: string;
  /** Shard path relative to ROOT, "<legacy>" for `<root><ext>`, null for none. */
  shard: string | null;
  dataset?: string;
  note: string;
}

const LEGACY = "<legacy>";

const SHARD_CASES: ShardCase[] = [
  // docs/format.md section 3, literal examples (D = 3).
  { depth: 3, key: "arr/0/0/4/3/7", shard: "arr/0/0/4.h5", dataset: "3.7", note: "5-D v2 example" },
  { depth: 3, key: "grp/img/c/2/5/9", shard: "grp/img/c/2.h5", dataset: "5.9", note: "3-D v3 example" },
  { depth: 3, key: "grp/arr/0/1", shard: "grp/arr.h5", dataset: "0.1", note: "2-D array: shard beside its folder" },
  { depth: 3, key: "grp/line/3", shard: "grp.h5", dataset: "line.3", note: "1-D array: shard in the parent group" },
  // 1-D to 6-D v2 arrays "arr" under the root, D = 3.
  { depth: 3, key: "arr/7", shard: LEGACY, dataset: "arr.7", note: "1-D array at the store root: <store>.h5" },
  { depth: 3, key: "arr/0/1", shard: "arr.h5", dataset: "0.1", note: "2-D" },
  { depth: 3, key: "arr/0/1/2", shard: "arr/0.h5", dataset: "1.2", note: "3-D" },
  { depth: 3, key: "arr/0/1/2/3", shard: "arr/0/1.h5", dataset: "2.3", note: "4-D" },
  { depth: 3, key: "arr/0/1/2/3/4", shard: "arr/0/1/2.h5", dataset: "3.4", note: "5-D" },
  { depth: 3, key: "arr/0/1/2/3/4/5", shard: "arr/0/1/2/3.h5", dataset: "4.5", note: "6-D" },
  { depth: 3, key: "a/b/c/d/10/11/12", shard: "a/b/c/d/10.h5", dataset: "11.12", note: "3-D, deep groups, multi-digit" },
  // The root array itself (prefix ""), D = 3.
  { depth: 3, key: "0/1", shard: LEGACY, dataset: "0.1", note: "2-D root array: legacy root shard" },
  { depth: 3, key: "0/1/2", shard: "0.h5", dataset: "1.2", note: "3-D root array: shard inside" },
  { depth: 3, key: "3", shard: null, note: "1-D root array: fewer than D-1 segments" },
  // v3 keys, D = 3.
  { depth: 3, key: "img/c/4", shard: "img.h5", dataset: "c.4", note: "1-D v3: beside the array folder" },
  { depth: 3, key: "img/c/4/5", shard: "img/c.h5", dataset: "4.5", note: "2-D v3: inside the array folder" },
  { depth: 3, key: "c/4", shard: LEGACY, dataset: "c.4", note: "1-D v3 root array" },
  // D = 2.
  { depth: 2, key: "arr/0/0/4/3/7", shard: "arr/0/0/4/3.h5", dataset: "7", note: "5-D, D=2" },
  { depth: 2, key: "grp/img/c/2/5/9", shard: "grp/img/c/2/5.h5", dataset: "9", note: "3-D v3, D=2" },
  { depth: 2, key: "arr/5", shard: "arr.h5", dataset: "5", note: "1-D, D=2: beside" },
  { depth: 2, key: "arr/0/5", shard: "arr/0.h5", dataset: "5", note: "2-D, D=2: inside" },
  { depth: 2, key: "7", shard: LEGACY, dataset: "7", note: "1-D root array, D=2: <store>.h5" },
  { depth: 2, key: "arr/0/1/2/3/4/5", shard: "arr/0/1/2/3/4.h5", dataset: "5", note: "6-D, D=2" },
  // D = 4.
  { depth: 4, key: "arr/0/0/4/3/7", shard: "arr/0/0.h5", dataset: "4.3.7", note: "5-D, D=4" },
  { depth: 4, key: "grp/img/c/2/5/9", shard: "grp/img/c.h5", dataset: "2.5.9", note: "3-D v3, D=4" },
  { depth: 4, key: "arr/0/1/2/3", shard: "arr/0.h5", dataset: "1.2.3", note: "4-D, D=4" },
  { depth: 4, key: "arr/0/1/2/3/4/5", shard: "arr/0/1/2.h5", dataset: "3.4.5", note: "6-D, D=4" },
  { depth: 4, key: "arr/0/1/2", shard: "arr.h5", dataset: "0.1.2", note: "3-D, D=4: beside" },
  { depth: 4, key: "a/b/c", shard: LEGACY, dataset: "a.b.c", note: "exactly D-1 segments, D=4" },
  { depth: 4, key: "a/b", shard: null, note: "fewer than D-1 segments, D=4" },
  { depth: 4, key: "a", shard: null, note: "one segment, D=4" },
  // Group names with dots: chunks for reading (the last segment decides).
  { depth: 3, key: "v1.2/img/0/0/0", shard: "v1.2/img/0.h5", dataset: "0.0", note: "group name with a dot" },
];

function expectedShardPath(relative: string, ext = ".h5", root = ROOT): string {
  if (relative === LEGACY) return root + ext;
  const noExt = relative.slice(0, -".h5".length);
  return path.join(root, ...noExt.split("/")) + ext;
}

describe("Layout.locate: chunk keys", () => {
  for (const c of SHARD_CASES) {
    test(`D=${c.depth} ${c.key} (${c.note})`, () => {
      const l = layout(c.depth);
      const location = chunk(l.locate(c.key));
      assert.equal(location.key, c.key);
      assert.equal(location.rawPath, inRoot(c.key));
      if (c.shard === null) {
        assert.equal(location.shard, null);
        return;
      }
      assert.deepEqual(location.shard, {
        path: expectedShardPath(c.shard),
        dataset: c.dataset,
        placement: c.shard === LEGACY ? "legacy-root" : "inside",
      });
    });
  }

  test("the leading '/' of zarrita keys is dropped: same location", () => {
    for (const c of SHARD_CASES) {
      const l = layout(c.depth);
      assert.deepEqual(l.locate(`/${c.key}`), l.locate(c.key), c.key);
    }
  });

  test("a legacy root shard is a file beside the store folder, outside it", () => {
    const shard = chunk(layout(3).locate("arr/7")).shard!;
    assert.equal(shard.path, `${ROOT}.h5`);
    assert.equal(path.dirname(shard.path), path.dirname(ROOT));
    assert.ok(!shard.path.startsWith(ROOT + path.sep));
  });

  test("a shard never lies anywhere but inside the root or at <root><ext>", () => {
    for (const c of SHARD_CASES) {
      const shard = chunk(layout(c.depth).locate(c.key)).shard;
      if (!shard) continue;
      if (shard.placement === "legacy-root") assert.equal(shard.path, ROOT + ".h5", c.key);
      else assert.ok(shard.path.startsWith(ROOT + path.sep), `${c.key}: ${shard.path}`);
    }
  });

  test("exactly D-1 segments give the legacy root shard, fewer give none, more give 'inside'", () => {
    for (const depth of [2, 3, 4, 5, 6]) {
      const l = layout(depth);
      for (let n = 1; n <= depth + 2; n++) {
        const segments = Array.from({ length: n }, (_, i) => String(i + 1));
        const shard = chunk(l.locate(segments.join("/"))).shard;
        if (n < depth - 1) assert.equal(shard, null, `D=${depth} n=${n}`);
        else {
          assert.ok(shard, `D=${depth} n=${n}`);
          assert.equal(shard.placement, n === depth - 1 ? "legacy-root" : "inside", `D=${depth} n=${n}`);
          assert.equal(shard.dataset, segments.slice(n - (depth - 1)).join("."), `D=${depth} n=${n}`);
        }
      }
    }
  });
});

// ---------------------------------------------------------------------------
// Section 1: metadata keys and other dotted last segments.

const META_KEYS = [
  ".zgroup",
  ".zattrs",
  ".zarray",
  ".zmetadata",
  "zarr.json",
  "grp/.zgroup",
  "grp/.zattrs",
  "grp/arr/.zarray",
  "grp/img/zarr.json",
  "a/b/c/d/e/f/.zattrs",
  "arr/0.0", // a v2 chunk with dimension_separator "." is not a nested chunk
  "arr/0/0/4/3/7.1",
  "notes.txt",
  "grp/readme.md",
  "grp/x.",
  "v1.2/img/.zarray",
  "arr/0.0123.partial", // not a temp name: the hex part is not 32 digits
  `arr/0.${HEX32.toUpperCase()}.partial`, // Python writes lowercase hex only
];

describe("Layout.locate: metadata and dotted last segments", () => {
  for (const depth of [2, 3, 4]) {
    for (const key of META_KEYS) {
      test(`D=${depth} ${key} is a plain file, never in a shard`, () => {
        const l = layout(depth);
        const location = l.locate(key);
        assert.deepEqual(location, { kind: "meta", key, rawPath: inRoot(key) });
        assert.deepEqual(l.locate(`/${key}`), location);
      });
    }
  }
});

// ---------------------------------------------------------------------------
// Container extension.

describe("container extension", () => {
  test("normalizeExt adds the dot only when missing", () => {
    const cases: [string, string][] = [
      ["h5", ".h5"],
      [".h5", ".h5"],
      ["hdf5", ".hdf5"],
      [".hdf5", ".hdf5"],
      ["zarr.h5", ".zarr.h5"],
      [".zarr.h5", ".zarr.h5"],
    ];
    for (const [given, expected] of cases) assert.equal(normalizeExt(given), expected, given);
  });

  test("Layout gives the same answers for an extension with or without its dot", () => {
    for (const ext of ["h5", ".h5", "hdf5", ".hdf5"]) {
      const l = layout(3, ext);
      const dotted = normalizeExt(ext);
      assert.equal(l.ext, dotted);
      assert.deepEqual(chunk(l.locate("arr/0/0/4/3/7")).shard, {
        path: inRoot("arr/0/0/4") + dotted,
        dataset: "3.7",
        placement: "inside",
      });
      assert.deepEqual(chunk(l.locate("arr/7")).shard, { path: ROOT + dotted, dataset: "arr.7", placement: "legacy-root" });
    }
    assert.deepEqual(layout(3, "h5").locate("grp/img/c/2/5/9"), layout(3, ".h5").locate("grp/img/c/2/5/9"));
  });

  test("the root is resolved: relative roots and trailing separators", () => {
    assert.equal(layout(3, ".h5", `${ROOT}/`).root, ROOT);
    assert.equal(layout(3, ".h5", `${ROOT}/./x/..`).root, ROOT);
    assert.equal(layout(3, ".h5", "rel/store").root, path.resolve("rel/store"));
    assert.equal(chunk(layout(3, ".h5", `${ROOT}/`).locate("0/1")).shard!.path, `${ROOT}.h5`);
  });

  test("isShardName: a name ending in the extension, longer than it", () => {
    const l = layout(3, "h5");
    assert.equal(l.isShardName("0.h5"), true);
    assert.equal(l.isShardName("labels.h5"), true);
    assert.equal(l.isShardName(".h5"), false);
    assert.equal(l.isShardName("0.h5x"), false);
    assert.equal(l.isShardName("0.hdf5"), false);
    assert.equal(l.isShardName("0"), false);
    const h = layout(3, "hdf5");
    assert.equal(h.isShardName("0.hdf5"), true);
    assert.equal(h.isShardName("0.h5"), false);
  });

  test("a key ending in another extension than the store's is an ordinary dotted key", () => {
    const l = layout(3, ".hdf5");
    assert.equal(l.locate("arr/0.h5").kind, "meta");
    assert.throws(() => l.locate("arr/0.hdf5"), InvalidKeyError);
  });
});

// ---------------------------------------------------------------------------
// keyOf / rawFolderOf / datasetOfRawSegments / keyOfFile.

describe("inverse mappings", () => {
  test("keyOf(shard.path, shard.dataset) is the inverse of locate for every shard case", () => {
    let checked = 0;
    for (const c of SHARD_CASES) {
      if (c.key.includes(".")) continue; // dotted segments are never written to shards
      for (const ext of ["h5", ".h5", "hdf5"]) {
        const l = layout(c.depth, ext);
        const location = chunk(l.locate(c.key));
        if (!location.shard) continue;
        assert.equal(l.keyOf(location.shard.path, location.shard.dataset), c.key, `D=${c.depth} ${ext} ${c.key}`);
        checked += 1;
      }
    }
    assert.ok(checked >= 80, `only ${checked} cases checked`);
  });

  test("keyOf round-trips every key of 1 to 8 segments for D = 2..5", () => {
    for (const depth of [2, 3, 4, 5]) {
      const l = layout(depth);
      for (let n = depth - 1; n <= 8; n++) {
        const key = Array.from({ length: n }, (_, i) => (i % 2 ? String(i * 3) : `g${i}`)).join("/");
        const shard = chunk(l.locate(key)).shard!;
        assert.equal(l.keyOf(shard.path, shard.dataset), key, `D=${depth} ${key}`);
      }
    }
  });

  test("keyOf of the docs/format.md examples", () => {
    const l = layout(3);
    assert.equal(l.keyOf(inRoot("arr/0/0/4") + ".h5", "3.7"), "arr/0/0/4/3/7");
    assert.equal(l.keyOf(inRoot("grp/img/c/2") + ".h5", "5.9"), "grp/img/c/2/5/9");
    assert.equal(l.keyOf(inRoot("grp/arr") + ".h5", "0.1"), "grp/arr/0/1");
    assert.equal(l.keyOf(inRoot("grp") + ".h5", "line.3"), "grp/line/3");
    assert.equal(l.keyOf(`${ROOT}.h5`, "line.3"), "line/3");
    assert.equal(l.keyOf(`${ROOT}.h5`, "0.1"), "0/1");
  });

  test("rawFolderOf: the shard path without its extension", () => {
    for (const ext of ["h5", ".hdf5"]) {
      const l = layout(3, ext);
      const e = normalizeExt(ext);
      assert.equal(l.rawFolderOf(inRoot("arr/0/0/4") + e), inRoot("arr/0/0/4"));
      assert.equal(l.rawFolderOf(inRoot("grp") + e), inRoot("grp"));
      assert.equal(l.rawFolderOf(ROOT + e), ROOT);
    }
  });

  test("a chunk's raw file lies in its shard's raw folder, and datasetOfRawSegments names its dataset", () => {
    for (const c of SHARD_CASES) {
      if (c.key.includes(".")) continue;
      const l = layout(c.depth);
      const location = chunk(l.locate(c.key));
      if (!location.shard) continue;
      const folder = l.rawFolderOf(location.shard.path);
      const below = path.relative(folder, location.rawPath).split(path.sep);
      assert.ok(!below.includes(".."), `${c.key}: ${location.rawPath} is not below ${folder}`);
      assert.equal(below.length, c.depth - 1, c.key);
      assert.equal(l.datasetOfRawSegments(below), location.shard.dataset, c.key);
    }
  });

  test("datasetOfRawSegments: exactly D-1 dot-free segments", () => {
    const l3 = layout(3);
    assert.equal(l3.datasetOfRawSegments(["3", "7"]), "3.7");
    assert.equal(l3.datasetOfRawSegments(["line", "3"]), "line.3");
    assert.equal(l3.datasetOfRawSegments(["3"]), null);
    assert.equal(l3.datasetOfRawSegments(["1", "3", "7"]), null);
    assert.equal(l3.datasetOfRawSegments([]), null);
    assert.equal(l3.datasetOfRawSegments(["3", ".zarray"]), null);
    assert.equal(l3.datasetOfRawSegments(["v1.2", "3"]), null);
    assert.equal(l3.datasetOfRawSegments(["3", `7.${HEX32}.partial`]), null);
    const l2 = layout(2);
    assert.equal(l2.datasetOfRawSegments(["7"]), "7");
    assert.equal(l2.datasetOfRawSegments(["3", "7"]), null);
    const l4 = layout(4);
    assert.equal(l4.datasetOfRawSegments(["4", "3", "7"]), "4.3.7");
    assert.equal(l4.datasetOfRawSegments(["3", "7"]), null);
  });

  test("keyOfFile: '/'-separated path relative to the root", () => {
    const l = layout(3);
    assert.equal(l.keyOfFile(inRoot("raw/vol3d/1/0/0")), "raw/vol3d/1/0/0");
    assert.equal(l.keyOfFile(inRoot(".zgroup")), ".zgroup");
    for (const key of ["arr/0/0/4/3/7", "grp/.zattrs", "v1.2/img/0/0/0"]) {
      assert.equal(l.keyOfFile(l.locate(key).rawPath), key);
    }
  });
});

// ---------------------------------------------------------------------------
// Section 7: canWriteToShard.

function v2(prefix: string, ndim: number, nested = true): ArrayInfo {
  return { prefix, zarrFormat: 2, ndim, chunkKeyPrefix: [], nested };
}

function v3(prefix: string, ndim: number, nested = true): ArrayInfo {
  return { prefix, zarrFormat: 3, ndim, chunkKeyPrefix: ["c"], nested };
}

interface WriteCase {
  depth: number;
  key: string;
  array: ArrayInfo | null;
  expected: boolean;
  note: string;
}

const WRITE_CASES: WriteCase[] = [
  // v2: at least D dimensions.
  { depth: 3, key: "arr/0/0/4/3/7", array: v2("arr", 5), expected: true, note: "5-D v2" },
  { depth: 3, key: "arr/0/1/2/3/4/5", array: v2("arr", 6), expected: true, note: "6-D v2" },
  { depth: 3, key: "arr/0/1/2/3", array: v2("arr", 4), expected: true, note: "4-D v2" },
  { depth: 3, key: "raw/vol3d/1/0/2", array: v2("raw/vol3d", 3), expected: true, note: "3-D v2 = D: shard raw/vol3d/1.h5" },
  { depth: 3, key: "grp/arr/0/1", array: v2("grp/arr", 2), expected: false, note: "2-D v2: shard beside the array folder" },
  { depth: 3, key: "grp/line/3", array: v2("grp/line", 1), expected: false, note: "1-D v2: shard in the parent group" },
  { depth: 2, key: "arr/0/5", array: v2("arr", 2), expected: true, note: "2-D v2, D=2" },
  { depth: 2, key: "grp/line/3", array: v2("grp/line", 1), expected: false, note: "1-D v2, D=2" },
  { depth: 4, key: "arr/0/1/2/3", array: v2("arr", 4), expected: true, note: "4-D v2, D=4" },
  { depth: 4, key: "arr/0/1/2", array: v2("arr", 3), expected: false, note: "3-D v2, D=4" },
  { depth: 4, key: "arr/0/0/4/3/7", array: v2("arr", 5), expected: true, note: "5-D v2, D=4" },
  // v3 (chunk key prefix "c"): at least D-1 dimensions.
  { depth: 3, key: "grp/img/c/2/5/9", array: v3("grp/img", 3), expected: true, note: "3-D v3" },
  { depth: 3, key: "grp/img/c/5/9", array: v3("grp/img", 2), expected: true, note: "2-D v3 = D-1: shard grp/img/c.h5" },
  { depth: 3, key: "grp/img/c/5", array: v3("grp/img", 1), expected: false, note: "1-D v3: shard grp/img.h5 beside" },
  { depth: 2, key: "grp/img/c/5", array: v3("grp/img", 1), expected: true, note: "1-D v3, D=2" },
  { depth: 4, key: "grp/img/c/2/5/9", array: v3("grp/img", 3), expected: true, note: "3-D v3, D=4" },
  { depth: 4, key: "grp/img/c/5/9", array: v3("grp/img", 2), expected: false, note: "2-D v3, D=4" },
  { depth: 3, key: "c/1/2", array: v3("", 2), expected: true, note: "2-D v3 root array: shard <root>/c.h5" },
  // Root arrays (prefix "").
  { depth: 3, key: "0/1/2", array: v2("", 3), expected: true, note: "3-D root array: <root>/0.h5" },
  { depth: 3, key: "0/1", array: v2("", 2), expected: false, note: "2-D root array: legacy-root shard is read-only" },
  { depth: 2, key: "7", array: v2("", 1), expected: false, note: "1-D root array, D=2: legacy-root shard" },
  { depth: 3, key: "3", array: v2("", 1), expected: false, note: "no shard at all" },
  // Only nested arrays.
  { depth: 3, key: "arr/0/0/4/3/7", array: v2("arr", 5, false), expected: false, note: "dimension_separator '.'" },
  { depth: 3, key: "grp/img/c/2/5/9", array: v3("grp/img", 3, false), expected: false, note: "v3 separator '.'" },
  // The tail must be exactly the chunk indices.
  { depth: 3, key: "arr/0/0/4/3", array: v2("arr", 5), expected: false, note: "one index short" },
  { depth: 3, key: "arr/0/0/4/3/7/1", array: v2("arr", 5), expected: false, note: "one index too many" },
  { depth: 3, key: "arr/0/x/4/3/7", array: v2("arr", 5), expected: false, note: "non-digit index" },
  { depth: 3, key: "arr/0/0/4/3/-7", array: v2("arr", 5), expected: false, note: "negative index" },
  { depth: 3, key: "grp/img/d/2/5/9", array: v3("grp/img", 3), expected: false, note: "v3 key without the 'c' segment" },
  { depth: 3, key: "grp/img/2/5/9", array: v3("grp/img", 3), expected: false, note: "v3 array, v2-style key" },
  { depth: 3, key: "grp/img/c/2/5/9", array: v2("grp/img", 4), expected: false, note: "v2 array, v3-style key" },
  { depth: 3, key: "grp/img/c/2/5/9", array: null, expected: false, note: "no array known" },
  // No dotted segment anywhere.
  { depth: 3, key: "v1.2/img/0/0/0", array: v2("v1.2/img", 3), expected: false, note: "group name with a dot" },
  { depth: 3, key: "grp/arr.v2/0/0/0", array: v2("grp/arr.v2", 3), expected: false, note: "array name with a dot" },
  { depth: 3, key: "v1.2/img/c/2/5/9", array: v3("v1.2/img", 3), expected: false, note: "v3, group name with a dot" },
];

describe("canWriteToShard", () => {
  for (const c of WRITE_CASES) {
    test(`D=${c.depth} ${c.key} -> ${c.expected} (${c.note})`, () => {
      const location = layout(c.depth).locate(c.key);
      assert.equal(canWriteToShard(location, c.array, c.depth), c.expected);
    });
  }

  test("v2 needs ndim >= D and v3 needs ndim >= D-1, for D = 2..6 and ndim = 1..8", () => {
    for (let depth = 2; depth <= 6; depth++) {
      const l = layout(depth);
      for (let ndim = 1; ndim <= 8; ndim++) {
        const indices = Array.from({ length: ndim }, (_, i) => String(i));
        const key2 = ["grp", "arr", ...indices].join("/");
        assert.equal(canWriteToShard(l.locate(key2), v2("grp/arr", ndim), depth), ndim >= depth, `v2 D=${depth} ndim=${ndim}`);
        const key3 = ["grp", "arr", "c", ...indices].join("/");
        assert.equal(canWriteToShard(l.locate(key3), v3("grp/arr", ndim), depth), ndim >= depth - 1, `v3 D=${depth} ndim=${ndim}`);
        // Whenever writing is allowed, the shard lies inside the array's own folder.
        for (const [key, array] of [[key2, v2("grp/arr", ndim)], [key3, v3("grp/arr", ndim)]] as const) {
          const location = chunk(l.locate(key));
          if (canWriteToShard(location, array, depth)) {
            assert.ok(location.shard!.path.startsWith(inRoot("grp/arr") + path.sep), `${key} D=${depth}`);
          }
        }
      }
    }
  });

  test("a 3-D v3 array whose chunk keys use the v2 encoding with '/' follows the v2 rule", () => {
    const info: ArrayInfo = { prefix: "grp/img", zarrFormat: 3, ndim: 3, chunkKeyPrefix: [], nested: true };
    assert.equal(canWriteToShard(layout(3).locate("grp/img/2/5/9"), info, 3), true);
    assert.equal(canWriteToShard(layout(4).locate("grp/img/2/5/9"), info, 4), false);
  });

  test("metadata locations are never written to a shard", () => {
    const l = layout(3);
    for (const key of ["arr/.zarray", "arr/zarr.json", "arr/0.0", "arr/0/0/4/3/7.1"]) {
      assert.equal(canWriteToShard(l.locate(key), v2("arr", 5), 3), false, key);
    }
  });

  test("a legacy-root location is refused even if the array info would allow it", () => {
    // A (wrong) info claiming the 2-segment key is a 3-D chunk key of the root array.
    const location = chunk(layout(3).locate("0/1"));
    assert.equal(location.shard!.placement, "legacy-root");
    assert.equal(canWriteToShard(location, v2("", 2), 3), false);
    assert.equal(canWriteToShard(location, v2("", 2), 2), false);
  });

  test(
    "a key outside the array's folder is not a chunk key of that array",

    () => {
      const location = layout(3).locate("other/xyz/0/1/2");
      assert.equal(canWriteToShard(location, v2("grp/arr", 3), 3), false);
    },
  );
});

// ---------------------------------------------------------------------------
// Section 7: hostile keys.

interface HostileCase {
  key: string;
  reason: RegExp;
  ext?: string;
}

const HOSTILE: HostileCase[] = [
  { key: "", reason: /empty/ },
  { key: "/", reason: /empty/ },
  { key: "..", reason: /'\.\.' segment/ },
  { key: ".", reason: /'\.' segment/ },
  { key: "../escape", reason: /'\.\.' segment/ },
  { key: "/../escape", reason: /'\.\.' segment/ },
  { key: "a/../../escape", reason: /'\.\.' segment/ },
  { key: "arr/0/../1", reason: /'\.\.' segment/ },
  { key: "arr/..", reason: /'\.\.' segment/ },
  { key: "./a", reason: /'\.' segment/ },
  { key: "a/./b", reason: /'\.' segment/ },
  { key: "a/.", reason: /'\.' segment/ },
  { key: "a//b", reason: /empty segment/ },
  { key: "a/b/", reason: /empty segment/ },
  { key: "arr/0//0", reason: /empty segment/ },
  { key: "//etc/passwd", reason: /absolute/ },
  { key: "///x", reason: /absolute/ },
  { key: "a\\b", reason: /backslash/ },
  { key: "..\\escape", reason: /backslash/ },
  { key: "arr\\0\\0", reason: /backslash/ },
  { key: "a\0b", reason: /NUL/ },
  { key: "arr/0\0", reason: /NUL/ },
  { key: "\0", reason: /NUL/ },
  { key: `arr/0.${HEX32}.partial`, reason: /partial/ },
  { key: `arr/.zarray.${HEX32}.partial`, reason: /partial/ },
  { key: `/arr/0/1/2.${HEX32}.partial`, reason: /partial/ },
  { key: "arr/0/0/4.h5", reason: /shard files/ },
  { key: "arr.h5", reason: /shard files/ },
  { key: ".h5", reason: /shard files/ },
  { key: "/labels.h5", reason: /shard files/ },
  { key: "arr/0/0/4.hdf5", reason: /shard files/, ext: "hdf5" },
  { key: "arr/0/0/4.hdf5", reason: /shard files/, ext: ".hdf5" },
];

describe("hostile keys are refused with InvalidKeyError naming the key", () => {
  for (const c of HOSTILE) {
    for (const depth of [2, 3, 4]) {
      test(`D=${depth} ext=${c.ext ?? ".h5"} ${JSON.stringify(c.key)}`, () => {
        const l = layout(depth, c.ext ?? ".h5");
        let caught: unknown;
        assert.throws(
          () => l.locate(c.key),
          (error: unknown) => {
            caught = error;
            return true;
          },
        );
        assert.ok(caught instanceof InvalidKeyError, `not an InvalidKeyError: ${String(caught)}`);
        assert.ok(caught instanceof Error);
        assert.equal(caught.name, "InvalidKeyError");
        assert.equal(caught.code, "H5NEST_INVALID_KEY");
        assert.equal(caught.key, c.key);
        assert.match(caught.reason, c.reason);
        assert.equal(caught.message, `invalid key ${JSON.stringify(c.key)}: ${caught.reason}`);
        // keySegments, the checker itself, agrees.
        assert.throws(() => keySegments(c.key, normalizeExt(c.ext ?? ".h5")), InvalidKeyError);
      });
    }
  }

  test("a single leading '/' is zarrita's form, not an absolute path: the key stays in the store", () => {
    const location = layout(3).locate("/etc/passwd");
    assert.equal(location.key, "etc/passwd");
    assert.equal(location.rawPath, inRoot("etc/passwd"));
  });

  test("keySegments splits clean keys", () => {
    assert.deepEqual(keySegments("/arr/0/0/4/3/7", ".h5"), ["arr", "0", "0", "4", "3", "7"]);
    assert.deepEqual(keySegments("grp/.zattrs", ".h5"), ["grp", ".zattrs"]);
    assert.deepEqual(keySegments("...", ".h5"), ["..."]);
    assert.deepEqual(keySegments("a/..b/c..", ".h5"), ["a", "..b", "c.."]);
  });

  test("non-string keys are refused", () => {
    for (const key of [undefined, null, 42, ["a"]] as unknown[]) {
      assert.throws(() => layout(3).locate(key as string), InvalidKeyError, String(key));
    }
  });

  test("every accepted key maps inside the store (random keys over a hostile alphabet)", () => {
    const alphabet = ["a", "0", "7", ".", "/", "\\", "\0", "h5", ".h5", "..", "c", "_", "-", " "];
    let state = 12345;
    const next = (n: number): number => {
      state = (state * 1103515245 + 12345) % 2147483648;
      return state % n;
    };
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < 5000; i++) {
      const key = Array.from({ length: 1 + next(10) }, () => alphabet[next(alphabet.length)]!).join("");
      const depth = 2 + next(3);
      const l = layout(depth);
      let location: Location;
      try {
        location = l.locate(key);
      } catch (error) {
        assert.ok(error instanceof InvalidKeyError, `${JSON.stringify(key)}: ${String(error)}`);
        assert.equal(error.key, key);
        refused += 1;
        continue;
      }
      accepted += 1;
      const where = JSON.stringify(key);
      assert.ok(location.rawPath.startsWith(ROOT + path.sep), `${where} -> ${location.rawPath}`);
      assert.equal(path.relative(ROOT, location.rawPath).split(path.sep).join("/"), location.key, where);
      assert.ok(!location.key.includes("\\") && !location.key.includes("\0"), where);
      assert.ok(!location.key.endsWith(".h5"), where);
      if (location.kind === "chunk" && location.shard) {
        const s = location.shard;
        if (s.placement === "legacy-root") assert.equal(s.path, `${ROOT}.h5`, where);
        else assert.ok(s.path.startsWith(ROOT + path.sep), `${where} -> ${s.path}`);
      }
    }
    assert.ok(accepted > 500 && refused > 500, `accepted ${accepted}, refused ${refused}`);
  });

  test(
    "a middle segment ending in the container extension is refused (it would make a folder where a shard goes)",

    () => {
      for (const key of ["arr/0.h5/1/2", "arr.h5/0/0/0", `arr/0.${HEX32}.partial/1`]) {
        assert.throws(() => layout(3).locate(key), InvalidKeyError, key);
      }
    },
  );
});

describe("isTempName", () => {
  test("<name>.<32 lowercase hex>.partial only", () => {
    assert.equal(isTempName(`0.${HEX32}.partial`), true);
    assert.equal(isTempName(`.zarray.${HEX32}.partial`), true);
    assert.equal(isTempName(`0.h5.${HEX32}.partial`), true);
    assert.equal(isTempName(`0.${HEX32.slice(1)}.partial`), false);
    assert.equal(isTempName(`0.${HEX32}0.partial`), false); // 33 hex digits
    assert.equal(isTempName(`0.${HEX32}.partial.x`), false);
    assert.equal(isTempName(`0.${"g".repeat(32)}.partial`), false);
    assert.equal(isTempName("0.partial"), false);
    assert.equal(isTempName("0"), false);
  });
});
