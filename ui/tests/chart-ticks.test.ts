// The value axes of the metrics charts: steps of 1, 2 or 5 × 10ⁿ, a round
// top that is a tick, and the same decimals on every tick. The trial's idle
// calls/s axis read "0 0.3 0.5 0.8 1" (uPlot's default 0.25 step, rounded
// to one decimal).
import { COUNT_STEPS, niceTop, stepDecimals, VALUE_SPACE, VALUE_STEPS, valueTickLabels } from "@/lib/chart-ticks";
import { ms, num } from "@/lib/format";

/** uPlot's rule: the smallest step whose ticks are at least VALUE_SPACE px apart. */
function pick(steps: number[], top: number, px: number): number {
  const step = steps.find((s) => (s * px) / top >= VALUE_SPACE);
  if (step === undefined) throw new Error("no step fits");
  return step;
}

/** The ticks uPlot draws from 0 to `top` with `step` (float error and all). */
function ticks(top: number, step: number): number[] {
  const out: number[] = [];
  for (let i = 0; i * step <= top * (1 + 1e-9); i++) out.push(i * step);
  return out;
}

/**
 * The labels of an axis whose data reach `max`, on a plot `px` tall (the
 * charts' is about 133 px), as MetricsChart makes them.
 */
function axis(steps: number[], max: number, format: (v: number, decimals: number) => string, px = 133): string[] {
  const top = niceTop(max);
  const step = pick(steps, top, px);
  return valueTickLabels(ticks(top, step), step, format);
}

const rate = (locale: string) => (v: number, d: number) => num(v, locale, d, true);

describe("a rate axis", () => {
  it("reads 0.0 0.5 1.0 when idle", () => {
    expect(axis(VALUE_STEPS, 0, rate("en"))).toEqual(["0.0", "0.5", "1.0"]);
    expect(axis(VALUE_STEPS, 0, rate("zh-CN"))).toEqual(["0.0", "0.5", "1.0"]);
  });

  it("steps by a tenth for a small rate, with one decimal on every tick", () => {
    // One call every three seconds.
    expect(axis(VALUE_STEPS, 0.33, rate("en"))).toEqual(["0.0", "0.1", "0.2", "0.3", "0.4"]);
  });

  it("shows whole numbers in the locale's format for a busy one", () => {
    expect(axis(VALUE_STEPS, 8.8, rate("en"))).toEqual(["0", "5", "10"]);
    expect(axis(VALUE_STEPS, 1234, rate("en"))).toEqual(["0", "500", "1,000", "1,500", "2,000"]);
  });

  it("never steps by a quarter", () => {
    // One significant digit, 1, 2 or 5: no 0.25, no 2.5.
    expect(VALUE_STEPS.filter((s) => !/^[125]e/.test(s.toExponential()))).toEqual([]);
    expect(VALUE_STEPS.filter((s) => Number(s.toPrecision(1)) !== s)).toEqual([]);
  });
});

describe("niceTop()", () => {
  it("is round, above the data, at most twice as high", () => {
    expect([0, 0.33, 0.95, 1, 2.5, 4.7, 6.8, 9.7, 1234].map(niceTop)).toEqual([1, 0.4, 1, 2, 3, 6, 8, 20, 2000]);
    for (let max = 0.001; max < 1e6; max *= 1.07) {
      expect(niceTop(max)).toBeGreaterThan(max);
      expect(niceTop(max)).toBeLessThanOrEqual(max * 1.05 * 2 * (1 + 1e-9));
    }
  });

  it("is always a tick, so the axis says where it ends", () => {
    for (const steps of [VALUE_STEPS, COUNT_STEPS]) {
      for (let max = steps === COUNT_STEPS ? 1 : 0.001; max < 1e6; max *= 1.07) {
        for (let px = 120; px <= 400; px += 7) {
          const top = niceTop(max);
          const drawn = ticks(top, pick(steps, top, px));
          expect(drawn.at(-1)! / top, `max ${max}, ${px} px`).toBeCloseTo(1, 9);
        }
      }
    }
  });
});

describe("a latency axis", () => {
  it("keeps its decimals the same on every tick", () => {
    expect(axis(VALUE_STEPS, 0, (v, d) => ms(v, "en", d))).toEqual(["0.0 ms", "0.5 ms", "1.0 ms"]);
    expect(axis(VALUE_STEPS, 0.05, (v, d) => ms(v, "en", d))).toEqual(["0.00 ms", "0.02 ms", "0.04 ms", "0.06 ms"]);
  });
});

describe("a count axis", () => {
  it("has whole-number ticks", () => {
    expect(axis(COUNT_STEPS, 0, rate("en"))).toEqual(["0", "1"]);
    expect(axis(COUNT_STEPS, 12, rate("en"))).toEqual(["0", "5", "10", "15", "20"]);
  });
});

describe("stepDecimals()", () => {
  it("gives the decimals a step needs", () => {
    expect([0.001, 0.05, 0.1, 0.2, 0.5, 1, 2, 500].map(stepDecimals)).toEqual([3, 2, 1, 1, 1, 0, 0, 0]);
  });
});
