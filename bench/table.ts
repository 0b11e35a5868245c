/** Plain-text, aligned tables. */

export type Align = "left" | "right";

export function formatTable(headers: string[], rows: string[][], align?: Align[]): string {
  const widths = headers.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? "").length)));
  const line = (cells: string[]): string =>
    cells
      .map((cell, c) => ((align?.[c] ?? (c === 0 ? "left" : "right")) === "left" ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
      .join("  ")
      .trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [line(headers), rule, ...rows.map(line)].join("\n");
}

/** A number with about 3 significant digits, thousands kept whole. */
export function num(value: number | null | undefined, digits = 3): string {
  if (value == null || !Number.isFinite(value)) return "-";
  const abs = Math.abs(value);
  if (abs >= 1000) return Math.round(value).toString();
  if (abs === 0) return "0";
  const decimals = Math.max(0, digits - 1 - Math.floor(Math.log10(abs)));
  return value.toFixed(Math.min(decimals, 3));
}

export function mib(bytes: number | null | undefined): string {
  return bytes == null ? "-" : (bytes / 2 ** 20).toFixed(0);
}

export function ratio(value: number | null | undefined): string {
  return value == null ? "-" : `${value.toFixed(2)}x`;
}

export function range(min: number | null | undefined, max: number | null | undefined, format: (v: number) => string = (v) => num(v)): string {
  return min == null || max == null ? "-" : `${format(min)}..${format(max)}`;
}
