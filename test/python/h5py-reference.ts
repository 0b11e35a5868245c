/**
 * h5py as the reference for the shard index (packages/workers/src/hdf5):
 * runs make_flavours.py and h5_view.py with Debian's /usr/bin/python3 and
 * compares an index outcome with what h5py reads, link by link.
 */
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import type { IndexOutcome } from "@h5nest/workers";
import { sha256 } from "../helpers/arrays.ts";
import { PYTHON } from "../helpers/python.ts";

const run = promisify(execFile);
const MAKE_FLAVOURS = path.join(import.meta.dirname, "make_flavours.py");
const H5_VIEW = path.join(import.meta.dirname, "h5_view.py");

async function runScript(script: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await run(PYTHON, [script, ...args], { maxBuffer: 512 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    throw new Error(`${path.basename(script)} failed: ${e.stderr || e.message}`);
  }
}

/** Writes the flavour files (all, or the named ones) into `dir`; returns file → dataset → sha256 as h5py reads it. */
export async function makeFlavours(dir: string, names: string[] = []): Promise<Record<string, Record<string, string>>> {
  return JSON.parse(await runScript(MAKE_FLAVOURS, [dir, ...names])) as Record<string, Record<string, string>>;
}

/** How h5py stores and reads one dataset (h5_view.py describe). */
export interface DatasetView {
  kind: "hard";
  object: "dataset";
  /** sha256 of what h5py reads; null when it fails (then `error`). */
  sha256: string | null;
  error?: string;
  layout: string;
  filters: number;
  external: number;
  /** Absolute file offset of contiguous storage; null when unallocated, chunked or compact. */
  offset: number | null;
  storage: number;
  typeClass: number;
  typeSize: number;
  committedType: boolean;
  /** null for a null dataspace. */
  shape: number[] | null;
}

export type LinkView = { kind: "soft" | "external" } | { kind: "hard"; object: "group" | "datatype" } | DatasetView;

/** file → root link name → what h5py sees there. */
export async function describeFiles(files: string[]): Promise<Record<string, Record<string, LinkView>>> {
  const out: Record<string, Record<string, LinkView>> = {};
  // Bounded argument lists: a store may hold many shards.
  for (let i = 0; i < files.length; i += 200) {
    Object.assign(out, JSON.parse(await runScript(H5_VIEW, ["describe", ...files.slice(i, i + 200)])));
  }
  return out;
}

// HDF5 datatype classes (H5T_class_t).
const INTEGER = 0;
const OPAQUE = 5;

/**
 * Why h5py's view justifies an unplaced dataset with `reason`, or null when
 * it does not: a dataset the index could place (contiguous or compact,
 * allocated, unfiltered, OPAQUE scalar or 1-D 8-bit integer) must be placed.
 */
function justified(reason: string, view: LinkView): boolean {
  if (view.kind !== "hard") return reason === "soft or external link";
  if (view.object !== "dataset") return false;
  const chunkShaped = (view.typeClass === OPAQUE && view.shape?.length === 0) || (view.typeClass === INTEGER && view.typeSize === 1 && view.shape?.length === 1);
  switch (reason) {
    case "chunked":
      return view.layout === "chunked" && view.filters === 0;
    case "filtered":
      return view.filters > 0;
    case "storage not allocated (reads as fill value)":
      return view.layout === "contiguous" && view.offset === null && view.storage === 0;
    case "compact (old layout message)":
      return view.layout === "compact";
    case "external storage":
      return view.external > 0;
    case "virtual":
      return view.layout === "virtual";
    case "null dataspace":
      return view.shape === null;
    case "neither OPAQUE nor 1-D uint8":
      return !chunkShaped;
    case "8-bit integer with padding":
      return view.typeClass === INTEGER && view.typeSize === 1;
    case "empty opaque type":
      return view.typeClass === OPAQUE && view.typeSize === 0;
    default:
      return false;
  }
}

/**
 * Every way the index outcome for `file` differs from h5py's `view` of it
 * (empty when they agree): the names listed are exactly h5py's datasets and
 * soft or external links; each placed dataset's file bytes are what h5py
 * reads, at h5py's own address; each unplaced one has a reason h5py's view
 * bears out.
 */
export function compareWithH5py(file: string, outcome: IndexOutcome, view: Record<string, LinkView>): string[] {
  if (!outcome.ok) return [`${file}: not indexed (${outcome.reason})`];
  const problems: string[] = [];
  const bytes = fs.readFileSync(file);
  const datasets = outcome.index.datasets;
  for (const [name, link] of Object.entries(view)) {
    const listed = link.kind !== "hard" || link.object === "dataset";
    const place = datasets.get(name);
    if (!listed) {
      if (place) problems.push(`${file} "${name}": listed, but h5py sees a ${(link as { object: string }).object}`);
      continue;
    }
    if (!place) {
      problems.push(`${file} "${name}": missing from the index`);
      continue;
    }
    if ("unplaced" in place) {
      if (!justified(place.unplaced, link)) {
        problems.push(`${file} "${name}": unplaced (${place.unplaced}) but h5py sees ${JSON.stringify({ ...link, sha256: undefined })}`);
      }
      continue;
    }
    if (link.kind !== "hard" || link.object !== "dataset") {
      problems.push(`${file} "${name}": placed, but h5py sees a ${link.kind} link`);
      continue;
    }
    if (link.sha256 === null) {
      problems.push(`${file} "${name}": placed, but h5py cannot read it (${link.error})`);
      continue;
    }
    if (place.offset < 0 || place.offset + place.length > bytes.length) {
      problems.push(`${file} "${name}": placed at ${place.offset}+${place.length}, outside the file`);
      continue;
    }
    if (sha256(bytes.subarray(place.offset, place.offset + place.length)) !== link.sha256) {
      problems.push(`${file} "${name}": bytes at ${place.offset}+${place.length} are not what h5py reads`);
    }
    if (link.layout === "contiguous" && place.length > 0 && (place.offset !== link.offset || place.length !== link.storage)) {
      problems.push(`${file} "${name}": placed at ${place.offset}+${place.length}, h5py stores it at ${link.offset}+${link.storage}`);
    }
  }
  for (const name of datasets.keys()) if (!(name in view)) problems.push(`${file} "${name}": listed, but h5py has no such link`);
  return problems;
}

/** h5py's answer for one damaged file (h5_view.py read), or how the reader died on it. */
export type DamagedRead =
  | { path: string; open: string | null; keys: string[] | null; keysError: string | null; reads: Record<string, string>; classes: Record<string, string> }
  | { path: string; died: "crashed" | "hung"; detail: string };

/**
 * Reads many (damaged) files with as few Python processes as possible: one
 * `h5_view.py read` process takes the whole batch, one file a line. A file
 * on which HDF5 crashes the process, or hangs past `timeoutMs`, is answered
 * with `died`, and a fresh process takes the rest of the batch (as it does
 * after a file HDF5 could not close).
 */
export async function readWithH5py(requests: { path: string; names: string[] }[], timeoutMs = 5000): Promise<DamagedRead[]> {
  const answers: DamagedRead[] = [];
  let next = 0;
  while (next < requests.length) {
    const start = next;
    const child = spawn(PYTHON, [H5_VIEW, "read"], { stdio: ["pipe", "pipe", "pipe"] });
    let buffered = "";
    let stderr = "";
    let timer: NodeJS.Timeout | undefined;
    let hung = false;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        hung = true;
        child.kill("SIGKILL");
      }, timeoutMs);
    };
    arm();
    child.stderr.setEncoding("utf8").on("data", (text: string) => (stderr = (stderr + text).slice(-4000)));
    child.stdout.setEncoding("utf8").on("data", (text: string) => {
      buffered += text;
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        answers.push(JSON.parse(line) as DamagedRead);
        next++;
        arm();
      }
    });
    // The child may die before reading all its input: a write error then is expected, not a failure.
    child.stdin.on("error", () => {});
    child.stdin.end(requests.slice(start).map((r) => JSON.stringify(r)).join("\n") + "\n");
    const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
    clearTimeout(timer);
    // Status 3: the last file answered left HDF5 unclean; carry on in a fresh process.
    if (code === 3 && !hung) continue;
    if (next < requests.length) {
      // A Python exception is a fault of the script, not of HDF5 (which h5_view.py catches per file).
      if (!hung && stderr.includes("Traceback")) throw new Error(`h5_view.py read failed: ${stderr}`);
      // The file being read when the process died is the culprit; go on after it.
      answers.push({ path: requests[next]!.path, died: hung ? "hung" : "crashed", detail: hung ? `no answer in ${timeoutMs} ms` : `exit ${code}: ${stderr.slice(-500)}` });
      next++;
    }
  }
  return answers;
}
