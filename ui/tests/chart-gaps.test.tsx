// The instance page's charts break their lines where no snapshot came.
// The trial: pricing-2 was SIGKILLed and restarted 7 s later; its
// "Calls and errors per second" line ran on at 5 calls/s straight across
// the time it was dead, and order-3's fell in a slope from 10 to 0 over
// the 6 s it had none, as if its calls had tapered off.
import { screen, waitFor } from "@testing-library/react";
import type uPlot from "uplot";

import { PerformancePanel } from "@/components/instance/performance-panel";
import { api } from "@/lib/api/client";
import type { MetricsSnapshot } from "@/lib/api/schemas";
import { renderUi } from "./render";

// uPlot draws on a canvas jsdom does not have: keep the data each chart is given.
const data: uPlot.AlignedData[][] = vi.hoisted(() => []);
vi.mock("uplot", () => ({
  default: class {
    private readonly mine: uPlot.AlignedData[] = [];
    constructor() {
      data.push(this.mine);
    }
    setData(d: uPlot.AlignedData) {
      this.mine.push(d);
    }
    setSize() {}
    destroy() {}
  },
}));

const T0 = Date.parse("2026-12-05T15:01:00.000Z");

/** A snapshot `at` seconds after T0 from a process started `started` seconds after T0. */
function snap(at: number, started = -60): MetricsSnapshot {
  return {
    serviceName: "pricing-service",
    instanceId: "pricing-2",
    timestamp: new Date(T0 + at * 1000).toISOString(),
    uptimeSecs: at - started,
    intervalSecs: 2,
    endpoints: [{ name: "quote", requests: 100, successes: 100, errors: 0, requestRate: 5, errorRate: 0, latencyMs: { p50: 0.03, p90: 0.05, p99: 0.06, max: 0.1, mean: 0.03 } }],
    queueDepth: 0,
    inFlight: 0,
    custom: {},
  };
}

beforeEach(() => {
  data.length = 0;
});
afterEach(() => vi.restoreAllMocks());

/**
 * The pairs of snapshot times (seconds after T0) the calls/s line joins:
 * consecutive points that both have a value (uPlot breaks a line at a null).
 */
async function joined(snapshots: MetricsSnapshot[]): Promise<string[]> {
  vi.spyOn(api, "instanceMetrics").mockResolvedValue({ serviceName: "pricing-service", instanceId: "pricing-2", windowSecs: 900, snapshots });
  renderUi(<PerformancePanel serviceName="pricing-service" instanceId="pricing-2" latest={null} />);
  // The throughput chart is the second; wait for its data with points.
  await waitFor(() => expect(data[1]?.some((d) => d[0].length > 0)).toBe(true));
  const last = data[1]!.at(-1)!;
  const times = last[0] as number[];
  const calls = last[1] as (number | null)[];
  const since = (t: number) => Math.round((t - T0 / 1000) * 10) / 10;
  const pairs: string[] = [];
  for (let i = 1; i < times.length; i += 1) {
    if (calls[i - 1] != null && calls[i] != null) pairs.push(`${since(times[i - 1]!)}-${since(times[i]!)}`);
  }
  return pairs;
}

describe("a metrics chart's line", () => {
  it("does not join the snapshots on either side of a time none came", async () => {
    // Every 2 s, then none for 8 s (killed), then a new process's.
    expect(await joined([snap(0), snap(2), snap(4), snap(12, 9), snap(14, 9)])).toEqual(["0-2", "2-4", "12-14"]);
  });

  it("does not join the last snapshot of one process and the first of the next", async () => {
    // Restarted at once: no gap in time, but the uptime starts again.
    expect(await joined([snap(0), snap(2), snap(4, 3), snap(6, 3)])).toEqual(["0-2", "4-6"]);
  });

  it("joins snapshots a little late, and still counts only the snapshots as points", async () => {
    expect(await joined([snap(0), snap(2.3), snap(4), snap(12, 9)])).toEqual(["0-2.3", "2.3-4"]);
    expect(screen.getAllByTestId("metrics-chart")[1]).toHaveAttribute("data-points", "4");
    expect(screen.getAllByTestId("chart-summary")[1]).toHaveTextContent(/: 4 points;/);
  });
});
