/** Medians and spreads over rounds, and per-round ratios between variants. */

export interface Stat {
  median: number;
  min: number;
  max: number;
  /** One value per round (in round order), for the JSON output. */
  values: number[];
}

export function stat(values: number[]): Stat | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]!, values };
}

/**
 * Ratio a/b per round (only rounds where both ran), then their median and
 * spread. Pairing by round cancels most of the machine's minute-to-minute
 * drift, which a ratio of two medians would not.
 */
export function pairedRatio(a: (number | null)[], b: (number | null)[]): Stat | null {
  const ratios: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x != null && y != null && y > 0) ratios.push(x / y);
  }
  return stat(ratios);
}

/** `items` rotated left by `by`: rounds rotate the order of the variants. */
export function rotate<T>(items: T[], by: number): T[] {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

/**
 * Runs every variant once a round, the order rotated each round (so no
 * variant always runs first on a cold or busy machine). A failed run is
 * kept as its message; each round ends with one log line.
 */
export async function interleavedRounds<V extends { id: string }, R>(
  name: string,
  variants: V[],
  rounds: number,
  run: (variant: V, round: number) => Promise<R>,
  describe: (result: R) => string,
  log: (line: string) => void,
): Promise<Map<string, (R | string)[]>> {
  const results = new Map<string, (R | string)[]>(variants.map((v) => [v.id, []]));
  for (let round = 0; round < rounds; round++) {
    const parts: string[] = [];
    for (const v of rotate(variants, round)) {
      try {
        const result = await run(v, round);
        results.get(v.id)![round] = result;
        parts.push(`${v.id} ${describe(result)}`);
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        results.get(v.id)![round] = message;
        parts.push(`${v.id} FAILED`);
        log(`*** ${name} ${v.id} failed in round ${round + 1}: ${message}`);
      }
    }
    log(`${name} round ${round + 1}/${rounds}: ${parts.join("; ")}`);
  }
  return results;
}
