/** Milliseconds on one clock shared by the main thread and workers (epoch-based, sub-ms). */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Nearest-rank percentile of `values` (sorted in place); null when empty. */
export function percentile(values: number[] | Float64Array, p: number, sorted = false): number | null {
  if (values.length === 0) return null;
  if (!sorted) values.sort((a, b) => a - b);
  const rank = Math.min(values.length - 1, Math.max(0, Math.ceil((p / 100) * values.length) - 1));
  return values[rank]!;
}

export function ratio(numerator: number | null | undefined, denominator: number | null | undefined): number | null {
  if (
    numerator == null ||
    denominator == null ||
    !Number.isFinite(numerator) ||
    !Number.isFinite(denominator) ||
    denominator === 0
  )
    return null;
  return numerator / denominator;
}

export function round(value: number | null | undefined, digits = 2): number | null {
  if (value == null || !Number.isFinite(value)) return null;
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
