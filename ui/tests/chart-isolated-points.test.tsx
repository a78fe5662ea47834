// A value with no value on either side (one interval with calls between
// intervals without, or the one snapshot before a gap) is a point a line
// cannot draw: uPlot draws a line between two values and nothing for one.
// Tried as a new user would: five calls to a new service, and its Latency
// chart stayed empty while its caption said "last p50 0.02 ms". Such a
// value gets a dot; values that a line joins do not.
import type uPlot from "uplot";

import { isolatedPoints, MetricsChart } from "@/components/instance/metrics-chart";
import { renderUi } from "./render";

// uPlot draws on a canvas jsdom does not have: keep the options each chart is made with.
const made: uPlot.Options[] = vi.hoisted(() => []);
vi.mock("uplot", () => ({
  default: class {
    constructor(opts: uPlot.Options) {
      made.push(opts);
    }
    setData() {}
    setSize() {}
    destroy() {}
  },
}));

describe("isolatedPoints", () => {
  it("marks a value with no value beside it", () => {
    expect(isolatedPoints([null, 0.02, null, null])).toEqual([1]);
    expect(isolatedPoints([0.02])).toEqual([0]);
    expect(isolatedPoints([0.02, null, 3])).toEqual([0, 2]);
  });

  it("leaves values a line joins, and gaps, alone", () => {
    expect(isolatedPoints([1, 2, null, null, 3, 4])).toEqual([]);
    expect(isolatedPoints([null, null])).toEqual([]);
    expect(isolatedPoints([])).toEqual([]);
  });

  it("counts a zero as a value", () => {
    expect(isolatedPoints([null, 0, null])).toEqual([1]);
    expect(isolatedPoints([0, 0])).toEqual([]);
  });
});

describe("a metrics chart", () => {
  it("asks uPlot for a dot at each value alone, and none on its lines", () => {
    made.length = 0;
    renderUi(
      <MetricsChart
        title="Latency"
        times={[1, 2, 3, 4, 5]}
        series={[{ label: "p99", color: "#c2410c", values: [null, 0.02, null, 1, 2] }]}
        format={(v) => `${v} ms`}
      />,
    );
    const points = made.at(-1)!.series[1]!.points!;
    expect(points.show).toBe(false);
    const filter = points.filter as (u: uPlot, seriesIdx: number, show: boolean) => number[] | null;
    const u = { data: [[1, 2, 3, 4, 5], [null, 0.02, null, 1, 2]] } as unknown as uPlot;
    expect(filter(u, 1, false)).toEqual([1]);
    // Where uPlot shows every point anyway (a sparse chart), it needs no list.
    expect(filter(u, 1, true)).toBeNull();
  });
});
