// The value axes of the instance page's charts show their tick labels
// whole. The trial's latency axis read ",000 ms" four times after a 3 s
// p99: "1,000 ms" … "4,000 ms" were wider than the fixed 64 px axis.
import { waitFor } from "@testing-library/react";
import type uPlot from "uplot";

import { isolatedPoints, MetricsChart } from "@/components/instance/metrics-chart";
import { PerformancePanel } from "@/components/instance/performance-panel";
import { api } from "@/lib/api/client";
import type { MetricsSnapshot } from "@/lib/api/schemas";
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

const T0 = Date.parse("2026-12-05T05:52:40.000Z");

function snap(offsetSecs: number, p99: number): MetricsSnapshot {
  return {
    serviceName: "order-service",
    instanceId: "order-3",
    timestamp: new Date(T0 + offsetSecs * 1000).toISOString(),
    uptimeSecs: 60 + offsetSecs,
    intervalSecs: 2,
    endpoints: [{ name: "create_order", requests: 100, successes: 100, errors: 0, requestRate: 5, errorRate: 0, latencyMs: { p50: p99 / 2, p90: p99, p99, max: p99, mean: p99 / 2 } }],
    queueDepth: 0,
    inFlight: 0,
    custom: {},
  };
}

/** A generous width of a label in the axes' 12 px font: no glyph there is wider than 8 px. */
const widest = (labels: string[]) => Math.max(...labels.map((l) => l.length * 8));

beforeEach(() => {
  made.length = 0;
  vi.spyOn(api, "instanceMetrics").mockResolvedValue({
    serviceName: "order-service",
    instanceId: "order-3",
    windowSecs: 900,
    snapshots: [snap(0, 20), snap(2, 3200), snap(4, 25)],
  });
});
afterEach(() => vi.restoreAllMocks());

async function valueAxis(chart: number) {
  renderUi(<PerformancePanel serviceName="order-service" instanceId="order-3" latest={null} />);
  await waitFor(() => expect(made).toHaveLength(3));
  return made[chart]!.axes![1]!;
}

const self = {} as uPlot;

describe("the latency axis", () => {
  it("labels thousands of milliseconds whole, in seconds", async () => {
    const axis = await valueAxis(0);
    const values = axis.values as (u: uPlot, ticks: number[], i: number, space: number, step: number) => string[];
    expect(values(self, [0, 1000, 2000, 3000, 4000], 1, 30, 1000)).toEqual(["0 s", "1 s", "2 s", "3 s", "4 s"]);
    expect(values(self, [0, 500, 1000, 1500], 1, 30, 500)).toEqual(["0.0 s", "0.5 s", "1.0 s", "1.5 s"]);
    expect(values(self, [0, 200, 400, 600], 1, 30, 200)).toEqual(["0 ms", "200 ms", "400 ms", "600 ms"]);
  });
});

describe("a value axis", () => {
  it("is wide enough for its widest label", async () => {
    for (const chart of [0, 1, 2]) {
      made.length = 0;
      const axis = await valueAxis(chart);
      expect(typeof axis.size).toBe("function");
      const size = axis.size as (u: uPlot, values: string[], i: number, cycle: number) => number;
      for (const labels of [["0", "5", "10"], ["0 ms", "1,000 ms", "2,000 ms"], ["0", "500,000", "1,000,000"]]) {
        // Tick marks (10 px) and the gap (5 px) come before the text.
        expect(size(self, labels, 1, 1)).toBeGreaterThanOrEqual(15 + widest(labels));
      }
    }
  });
});

// The showcase's instances report a queue depth equal to their in-flight
// count: on "In flight and queue depth" the queue depth's line lay exactly
// on the in-flight one, and a reader saw one line under a legend of two.
describe("the in-flight and queue depth chart", () => {
  it("draws its two lines so that one lying on the other still shows", async () => {
    await valueAxis(2);
    const [, inFlight, queue] = made[2]!.series;
    expect(inFlight!.dash ?? []).toEqual([]);
    expect(queue!.dash?.length).toBeGreaterThan(0);
    // Drawn over the solid line, the dashes leave gaps it shows through.
    expect(queue!.width).toBeLessThanOrEqual(inFlight!.width!);
  });
});

// A value with no value on either side (one interval with calls between
// intervals without, or the one snapshot before a gap) is a point a line
// cannot draw: uPlot draws a line between two values and nothing for one.
// Tried as a new user would: five calls to a new service, and its Latency
// chart stayed empty while its caption said "last p50 0.02 ms". Such a
// value gets a dot; values that a line joins do not.
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
