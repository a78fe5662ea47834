// The instance page's charts: their summaries (the caption, and what a
// screen reader hears) say what the latest point shows. The trial read
// "latest p50 6.8 ms, p99 13.5 ms" while calls/s was 0: latency of the
// last snapshot that had calls, presented as the latest.
import { screen, waitFor } from "@testing-library/react";

import { PerformancePanel } from "@/components/instance/performance-panel";
import { api } from "@/lib/api/client";
import type { MetricsSnapshot } from "@/lib/api/schemas";
import { clockOrDate } from "@/lib/format";
import { renderUi } from "./render";

// uPlot draws on a canvas jsdom does not have; the summaries are the point here.
vi.mock("uplot", () => ({
  default: class {
    setData() {}
    setSize() {}
    destroy() {}
  },
}));

const T0 = Date.parse("2026-12-05T00:10:00.000Z");

function snap(offsetSecs: number, rate: number): MetricsSnapshot {
  return {
    serviceName: "pricing-service",
    instanceId: "pricing-1",
    timestamp: new Date(T0 + offsetSecs * 1000).toISOString(),
    uptimeSecs: 60 + offsetSecs,
    intervalSecs: 2,
    // An idle interval still carries the percentiles of the last calls.
    endpoints: [{ name: "quote", requests: 100, successes: 100, errors: 0, requestRate: rate, errorRate: 0, latencyMs: { p50: 6.8, p90: 10, p99: 13.5, max: 20, mean: 7 } }],
    queueDepth: 0,
    inFlight: 0,
    custom: {},
  };
}

function history(snapshots: MetricsSnapshot[]) {
  vi.spyOn(api, "instanceMetrics").mockResolvedValue({ serviceName: "pricing-service", instanceId: "pricing-1", windowSecs: 900, snapshots });
}

const summary = async (title: RegExp) => {
  await waitFor(() => expect(screen.getAllByTestId("chart-summary")).toHaveLength(3));
  return screen.getAllByTestId("chart-summary").find((s) => title.test(s.textContent ?? ""))!.textContent ?? "";
};

afterEach(() => vi.restoreAllMocks());

describe("PerformancePanel's chart summaries", () => {
  it("give the latest point's latency while it had calls", async () => {
    history([snap(0, 4), snap(2, 5)]);
    renderUi(<PerformancePanel serviceName="pricing-service" instanceId="pricing-1" latest={null} />);
    expect(await summary(/^Latency/)).toBe("Latency: 2 points; latest p50 6.8 ms, p99 13.5 ms");
  });

  it("say an idle latest point had no calls, and when the last latency was, not that it is the latest", async () => {
    history([snap(0, 4), snap(2, 0), snap(4, 0)]);
    renderUi(<PerformancePanel serviceName="pricing-service" instanceId="pricing-1" latest={null} />);
    const latency = await summary(/^Latency/);
    expect(latency).not.toMatch(/latest p50/);
    expect(latency).toBe(`Latency: 3 points; latest: no calls; last p50 6.8 ms, p99 13.5 ms at ${clockOrDate(T0, "en")}`);
    expect(await summary(/^Calls/)).toBe("Calls and errors per second: 3 points; latest calls/s 0, errors/s 0");
  });

  it("say a window without any calls has no latency", async () => {
    history([snap(0, 0), snap(2, 0)]);
    renderUi(<PerformancePanel serviceName="pricing-service" instanceId="pricing-1" latest={null} />);
    expect(await summary(/^Latency/)).toBe("Latency: 2 points; latest: no calls");
  });
});
