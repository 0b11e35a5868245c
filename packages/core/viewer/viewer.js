// @ts-check
// The viewer of `h5nest serve`: lists the store's arrays and shows a 2-D slice
// (the last two axes) of one as a gray image, read by zarrita from this same
// server. One slider per other axis, a low/high contrast control. The page's
// state is mirrored in <body data-state data-view> for tests and scripts.
import * as zarr from "zarrita";

/** Largest image side drawn; larger slices are read with a step (every n-th row and column). */
const MAX_SIDE = 1024;

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const status = $("status");
const select = /** @type {HTMLSelectElement} */ ($("array"));
const axes = $("axes");
const low = /** @type {HTMLInputElement} */ ($("low"));
const high = /** @type {HTMLInputElement} */ ($("high"));
const canvas = /** @type {HTMLCanvasElement} */ ($("canvas"));

const store = new zarr.FetchStore(new URL("/", location.href).href);
const root = zarr.root(store);

/** @type {Map<string, zarr.Array<zarr.DataType, zarr.Readable>>} */
const arrays = new Map();
/** What is on screen: the slice read, its values as numbers, the contrast window. */
let view = { path: "", index: /** @type {number[]} */ ([]), width: 0, height: 0, values: new Float64Array(0), lo: 0, hi: 0 };
let generation = 0;

function setState(/** @type {string} */ state, /** @type {string} */ message = "") {
  document.body.dataset.state = state;
  status.textContent = message;
  status.className = state === "error" ? "error" : "";
}

/** Gray level of a value in the window [lo, hi]: 0 at or below lo, 255 at or above hi (tests compute the same). */
export function gray(/** @type {number} */ v, /** @type {number} */ lo, /** @type {number} */ hi) {
  if (!(v > lo)) return 0; // NaN too
  if (v >= hi) return 255;
  return Math.round(((v - lo) / (hi - lo)) * 255);
}

function draw() {
  const { width, height, values, lo, hi } = view;
  canvas.width = Math.max(1, width);
  canvas.height = Math.max(1, height);
  canvas.style.width = `${Math.min(Math.max(width, 256), width * 4)}px`;
  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
  const image = ctx.createImageData(canvas.width, canvas.height);
  for (let i = 0; i < values.length; i++) {
    const g = gray(values[i], lo, hi);
    image.data[4 * i] = image.data[4 * i + 1] = image.data[4 * i + 2] = g;
    image.data[4 * i + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
  $("low-value").textContent = String(lo);
  $("high-value").textContent = String(hi);
  document.body.dataset.view = JSON.stringify({ array: view.path, index: view.index, width, height, lo, hi });
  setState("rendered", `${view.path || "/"} [${view.index.join(", ")}${view.index.length ? ", " : ""}:, :]`);
}

/** Sets the contrast sliders to span the slice's values and the window to all of them. */
function autoContrast() {
  let min = Infinity;
  let max = -Infinity;
  for (const v of view.values) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (!Number.isFinite(min)) [min, max] = [0, 1];
  const arr = arrays.get(view.path);
  const integer = arr && /int|bool/.test(String(arr.dtype));
  for (const input of [low, high]) {
    input.min = String(min);
    input.max = String(max);
    input.step = integer ? "1" : String((max - min) / 1000 || 1);
  }
  low.value = String(min);
  high.value = String(max);
  view.lo = min;
  view.hi = max;
}

async function render(/** @type {boolean} */ resetContrast) {
  const arr = arrays.get(select.value);
  if (!arr) return;
  const mine = ++generation;
  const index = [...axes.querySelectorAll("input")].map((input) => Number(/** @type {HTMLInputElement} */ (input).value));
  setState("loading", "reading…");
  const [h, w] = arr.shape.slice(-2);
  const stepY = Math.ceil(h / MAX_SIDE);
  const stepX = Math.ceil(w / MAX_SIDE);
  try {
    const chunk = await zarr.get(arr, [...index, zarr.slice(0, h, stepY), zarr.slice(0, w, stepX)]);
    if (mine !== generation) return; // a newer request took over
    const [height, width] = chunk.shape;
    const data = /** @type {ArrayLike<number | bigint | boolean>} */ (/** @type {unknown} */ (chunk.data));
    const values = new Float64Array(data.length);
    for (let i = 0; i < data.length; i++) values[i] = Number(data[i]);
    view = { ...view, path: select.value, index, width, height, values };
    $("size").textContent = `${width} x ${height}${stepX > 1 || stepY > 1 ? ` (every ${stepY}th row, ${stepX}th column)` : ""}`;
    if (resetContrast) autoContrast();
    draw();
  } catch (error) {
    if (mine === generation) setState("error", `cannot read ${select.value}: ${describe(error)}`);
  }
}

/** An error's message with its causes (zarrita wraps codec errors). */
function describe(/** @type {unknown} */ error) {
  const parts = [];
  for (let e = error; e && parts.length < 4; e = e instanceof Error ? e.cause : undefined) parts.push(e instanceof Error ? e.message : String(e));
  return parts.join(": ");
}

function chooseArray(/** @type {string} */ path) {
  select.value = path;
  for (const row of document.querySelectorAll("tr[data-path]")) row.classList.toggle("selected", /** @type {HTMLElement} */ (row).dataset.path === path);
  const arr = arrays.get(path);
  axes.replaceChildren();
  if (!arr) return;
  arr.shape.slice(0, -2).forEach((size, axis) => {
    const label = document.createElement("label");
    const input = document.createElement("input");
    const output = document.createElement("output");
    input.type = "range";
    input.min = "0";
    input.max = String(size - 1);
    input.value = "0";
    input.dataset.axis = String(axis);
    output.textContent = `0 / ${size - 1}`;
    input.addEventListener("input", () => {
      output.textContent = `${input.value} / ${size - 1}`;
      void render(false);
    });
    label.append(`axis ${axis}`, input, output);
    axes.append(label);
  });
  history.replaceState(null, "", `#array=${encodeURIComponent(path)}`);
  void render(true);
}

async function main() {
  setState("loading", "listing arrays…");
  const listing = await (await fetch("/__h5nest/arrays.json")).json();
  const body = /** @type {HTMLTableSectionElement} */ (document.querySelector("#arrays tbody"));
  for (const entry of listing.arrays) {
    const row = body.insertRow();
    row.insertCell().textContent = entry.path || "/";
    try {
      const arr = await zarr.open(root.resolve(entry.path), { kind: "array" });
      for (const text of [JSON.stringify(arr.shape), JSON.stringify(arr.chunks), String(arr.dtype)]) row.insertCell().textContent = text;
      if (arr.shape.length < 2) continue; // a line has no 2-D slice
      arrays.set(entry.path, arr);
      row.dataset.path = entry.path;
      row.addEventListener("click", () => chooseArray(entry.path));
      select.add(new Option(entry.path || "/", entry.path));
    } catch (error) {
      row.insertCell().textContent = `cannot open: ${describe(error)}`;
    }
  }
  if (listing.truncated) setState("ready", "only the first arrays are listed");
  select.addEventListener("change", () => chooseArray(select.value));
  for (const input of [low, high]) {
    input.addEventListener("input", () => {
      view.lo = Number(low.value);
      view.hi = Number(high.value);
      draw();
    });
  }
  $("auto").addEventListener("click", () => {
    autoContrast();
    draw();
  });
  const wanted = new URLSearchParams(location.hash.slice(1)).get("array");
  const first = wanted !== null && arrays.has(wanted) ? wanted : [...arrays.keys()][0];
  if (first === undefined) setState("ready", listing.problem ?? "no array with two or more dimensions");
  else chooseArray(first);
}

main().catch((error) => setState("error", describe(error)));
