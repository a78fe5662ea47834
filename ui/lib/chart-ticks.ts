// Tick steps, ranges and labels of the metrics charts' axes (uPlot asks
// for the range and the steps it may use, picks the smallest step whose
// ticks are `VALUE_SPACE` px apart, and formats the ticks). Value axes step
// by 1, 2 or 5 times a power of ten, end on a round value that is itself a
// tick, and every tick of an axis shows the same number of decimals:
// "0.0 0.5 1.0", never "0 0.3 0.5 0.8 1". Time axes read on the 24-hour
// clock like every other time in the UI.
import { clock, num } from "@/lib/format";

function steps(minExp: number, maxExp: number): number[] {
  const out: number[] = [];
  for (let e = minExp; e <= maxExp; e++) {
    for (const m of [1, 2, 5]) out.push(Number(`${m}e${e}`));
  }
  return out;
}

/** Steps of an axis of measured values (rates, milliseconds). */
export const VALUE_STEPS = steps(-3, 9);

/** Steps of an axis of counts (in flight, queue depth): whole numbers. */
export const COUNT_STEPS = steps(0, 9);

/** Least distance between two value ticks, in CSS pixels (uPlot's default). */
export const VALUE_SPACE = 30;

/**
 * The top of a value axis whose highest value is `max`: 1, 2, 3, 4, 6 or 8
 * times a power of ten, 5 % above it. With the steps above and a plot 120 px
 * tall or more, it is always a tick, so the axis says where it ends.
 */
export function niceTop(max: number): number {
  if (!(max > 0)) return 1;
  const x = max * 1.05;
  const exp = Math.floor(Math.log10(x));
  const f = x / 10 ** exp;
  const m = [1, 2, 3, 4, 6, 8, 10].find((t) => t >= f - 1e-9) ?? 10;
  return Number(`${m}e${exp}`);
}

/** Steps of a time axis, in seconds: whole seconds, minutes, hours. */
export const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

/** Decimals every tick of a `step` needs, the same on each: 0.5 → 1, 0.05 → 2, 2 → 0. */
export function stepDecimals(step: number): number {
  if (!(step > 0)) return 0;
  // The epsilon keeps log10(0.1) ≈ -0.9999999 from asking for 2.
  return Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
}

/** Labels of a value axis's ticks, all with the decimals its step needs. */
export function valueTickLabels(ticks: number[], step: number, format: (v: number, decimals: number) => string): string[] {
  const decimals = stepDecimals(step);
  return ticks.map((v) => format(v, decimals));
}

/**
 * Labels of a time axis's ticks (seconds since the epoch): "18:39:10"
 * while they are seconds apart, "18:39" from a minute up.
 */
export function timeTickLabels(ticks: number[], step: number, locale: string): string[] {
  const seconds = step < 60 || ticks.some((s) => s % 60 !== 0);
  return ticks.map((s) => clock(s * 1000, locale, { seconds }));
}

/**
 * Labels of a latency axis's ticks (milliseconds): "0 ms 200 ms 400 ms"
 * while the axis stays under a second, "0 s 1 s 2 s" or "0.0 s 0.5 s 1.0 s"
 * once it reaches one — short enough to read whole, and one unit per axis.
 */
export function msTickLabels(ticks: number[], step: number, locale: string): string[] {
  if (Math.max(0, ...ticks) < 1000) return valueTickLabels(ticks, step, (v, d) => `${num(v, locale, d, true)} ms`);
  return valueTickLabels(
    ticks.map((v) => v / 1000),
    step / 1000,
    (v, d) => `${num(v, locale, d, true)} s`,
  );
}

/** Width in CSS px of a glyph of the axes' 12 px font, rounded up: no digit, letter or sign there is wider. */
const GLYPH_PX = 8;
/** Tick marks (10 px) and the gap before the labels (5 px), plus a margin at the edge. */
const AXIS_CHROME_PX = 19;

/**
 * Width of a value axis showing `labels` (uPlot asks as it lays out; null
 * before it has any): wide enough for the widest label, so none is cut at
 * the chart's edge ("1,000 ms" read ",000 ms" on a fixed 64 px axis).
 */
export function valueAxisSize(labels: readonly (string | null)[] | null): number {
  const chars = Math.max(3, ...(labels ?? []).map((l) => (l ?? "").length));
  return AXIS_CHROME_PX + chars * GLYPH_PX;
}
