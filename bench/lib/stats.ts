// Summaries of benchmark samples: every raw sample is kept, with the median and the 90th percentile
// (nearest-rank: the smallest sample with at least 90% of the samples at or below it).

export interface Summary {
  unit: string;
  samples: number[];
  median: number;
  p90: number;
  min: number;
  max: number;
}

/** The q-quantile (0..1) by the nearest-rank method; the median of an even count is the mean of the middle two. */
export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  if (q === 0.5 && s.length % 2 === 0) return (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

export function summarize(samples: number[], unit: string): Summary {
  return {
    unit,
    samples: samples.map((x) => round(x)),
    median: round(quantile(samples, 0.5)),
    p90: round(quantile(samples, 0.9)),
    min: round(Math.min(...samples)),
    max: round(Math.max(...samples)),
  };
}

/** Four significant digits is more than any of these measurements resolve. */
export function round(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const digits = Math.max(0, 3 - Math.floor(Math.log10(Math.abs(x))));
  return Number(x.toFixed(Math.min(digits, 6)));
}

/** Least-squares line through (x, y): the slope is the marginal cost per unit of x. */
export function linearFit(points: { x: number; y: number }[]): { slope: number; intercept: number } {
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  const sxy = points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0);
  const slope = sxx === 0 ? NaN : sxy / sxx;
  return { slope, intercept: my - slope * mx };
}
