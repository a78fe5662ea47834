// A killed instance's figures. The trial: its card switched to "No
// metrics yet", losing its last-known load, and its page kept counting
// Uptime after it died (14 min 10 s → 14 min 13 s).
import * as React from "react";
import { act, screen, within } from "@testing-library/react";

import { ServiceInstanceCard } from "@/components/dashboard/service-instance-card";
import { InstanceDetail } from "@/components/instance/instance-detail";
import { InstanceStoreContext } from "@/hooks/use-instance-store";
import type { LiveInstances } from "@/hooks/use-live-instances";
import { api } from "@/lib/api/client";
import type { MetricsSnapshot, ServiceInstance } from "@/lib/api/schemas";
import { InstanceStore } from "@/lib/instance-store";
import { instance, renderUi } from "./render";

vi.mock("next/navigation", () => ({ usePathname: () => "/services/risk-1", useSearchParams: () => new URLSearchParams("service=risk-service") }));
vi.mock("@/components/instance/performance-panel", () => ({ PerformancePanel: () => null }));
vi.mock("@/components/instance/failover-timeline", () => ({ FailoverTimeline: () => null }));
let live: LiveInstances;
vi.mock("@/hooks/use-live-instances", () => ({ useLiveInstances: () => live }));

const STARTED = Date.parse("2026-12-05T05:40:00.000Z");
const KILL = STARTED + 850_000; // 14 min 10 s after it started
const iso = (ms: number) => new Date(ms).toISOString();

const risk1 = (over: Partial<ServiceInstance> = {}) =>
  instance({
    serviceName: "risk-service",
    instanceId: "risk-1",
    status: "ACTIVE",
    reportedStatus: "ACTIVE",
    stickyActiveGroup: null,
    epoch: null,
    startedAt: iso(STARTED),
    statusSince: iso(STARTED),
    lastHeartbeat: iso(KILL - 500),
    metadata: { heartbeatMs: 1000 },
    ...over,
  }) as ServiceInstance;

const dead = () => risk1({ status: "UNHEALTHY", statusReason: "disconnected", statusSince: iso(KILL + 300) });

const lastSnapshot: MetricsSnapshot = {
  serviceName: "risk-service",
  instanceId: "risk-1",
  timestamp: iso(KILL - 1000),
  uptimeSecs: 849,
  intervalSecs: 2,
  endpoints: [{ name: "check", requests: 900, successes: 900, errors: 0, requestRate: 9.5, errorRate: 0, latencyMs: { p50: 2, p90: 3, p99: 4.5, max: 6, mean: 2.2 } }],
  queueDepth: 0,
  inFlight: 0,
  custom: {},
};

function Card({ store }: { store: InstanceStore }) {
  const snapshot = React.useSyncExternalStore(store.subscribe, store.getSnapshot);
  return snapshot.entries[0] ? <ServiceInstanceCard entry={snapshot.entries[0]} /> : null;
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] });
  vi.setSystemTime(KILL - 500);
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe("a killed instance", () => {
  it("keeps its last-known figures on its card, marked as not live", () => {
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([risk1()]);
    store.setMetrics(lastSnapshot);
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <Card store={store} />
      </InstanceStoreContext.Provider>,
    );
    expect(screen.getByTestId("live-figures")).toHaveTextContent("9.5 calls/s · p99 4.5 ms");
    act(() => vi.advanceTimersByTime(1300));
    act(() => store.apply({ type: "instanceUpserted", instance: dead() }));
    const figures = screen.getByTestId("live-figures");
    expect(figures).not.toHaveTextContent("No metrics yet");
    const lastKnown = within(figures).getByTestId("figures-last-known");
    expect(lastKnown).toHaveTextContent("Last known: 9.5 calls/s · p99 4.5 ms, 1 s ago");
  });

  it("still says no metrics when none came from this process", () => {
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([dead()]);
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <Card store={store} />
      </InstanceStoreContext.Provider>,
    );
    expect(screen.getByTestId("live-figures")).toHaveTextContent("No metrics yet");
  });

  it("stops its page's uptime at the last snapshot", () => {
    vi.spyOn(api, "instanceEvents").mockResolvedValue([]);
    vi.spyOn(api, "instanceConfig").mockResolvedValue({} as never);
    vi.setSystemTime(KILL + 3000);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([dead()], [{ serviceName: "risk-service", instanceId: "risk-1", snapshot: lastSnapshot }]);
    live = { store, snapshot: store.getSnapshot(), feed: "live", error: null, retry: () => {} };
    renderUi(<InstanceDetail />);
    const uptime = () => screen.getByText("Uptime").nextElementSibling!;
    expect(uptime()).toHaveTextContent("14 min 9 s, at its last snapshot");
    act(() => vi.advanceTimersByTime(3000));
    expect(uptime()).toHaveTextContent("14 min 9 s, at its last snapshot");
  });

  it("counts a live instance's uptime on", () => {
    vi.spyOn(api, "instanceEvents").mockResolvedValue([]);
    vi.spyOn(api, "instanceConfig").mockResolvedValue({} as never);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([risk1()]);
    live = { store, snapshot: store.getSnapshot(), feed: "live", error: null, retry: () => {} };
    renderUi(<InstanceDetail />);
    const uptime = () => screen.getByText("Uptime").nextElementSibling!;
    expect(uptime()).toHaveTextContent(/^14 min 9 s$/);
    act(() => vi.advanceTimersByTime(3000));
    expect(uptime()).toHaveTextContent(/^14 min 12 s$/);
  });
});

// The trial: a killed former leader's page read "Epoch —" while its card
// said "Former leader of default (epoch 4187)", and its "Last heartbeat"
// flipped between "stopped" and "5 s ago" as digests came.
describe("a killed former leader's page", () => {
  const leader = (over: Partial<ServiceInstance> = {}) =>
    risk1({ stickyActiveGroup: "default", epoch: 4187, lastHeartbeat: iso(KILL - 2300), ...over });
  const digest = (asOf: number, late: boolean) => ({
    type: "digest" as const,
    asOf: iso(asOf),
    version: 1,
    summary: { total: 1, active: late ? 0 : 1, unhealthy: late ? 1 : 0, standby: 0 },
    lateAfterIntervals: 1.5,
    late: late ? [{ serviceName: "risk-service", instanceId: "risk-1", lastBeat: iso(KILL - 300) }] : [],
  });
  const fact = (label: string) => screen.getByText(label).nextElementSibling!;

  function killed() {
    vi.spyOn(api, "instanceEvents").mockResolvedValue([]);
    vi.spyOn(api, "instanceConfig").mockResolvedValue({} as never);
    vi.setSystemTime(KILL - 1000);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([leader()]);
    store.applyDigest(digest(KILL - 1000, false));
    vi.setSystemTime(KILL + 300);
    store.apply({ type: "instanceUpserted", instance: leader({ status: "UNHEALTHY", statusReason: "disconnected", statusSince: iso(KILL + 300) }) });
    live = { store, snapshot: store.getSnapshot(), feed: "live", error: null, retry: () => {} };
    renderUi(<InstanceDetail />);
    return store;
  }

  it("shows the epoch it led with, as its card does", () => {
    killed();
    expect(fact("Epoch")).toHaveTextContent(/^4187 \(former leader\)$/);
  });

  it("says its heartbeat stopped at every reading, as digests list its last beat", () => {
    const store = killed();
    const texts: string[] = [];
    for (let step = 0; step < 40; step += 1) {
      if (step % 10 === 5) act(() => store.applyDigest(digest(Date.now(), true)));
      act(() => vi.advanceTimersByTime(250));
      texts.push(fact("Last heartbeat").textContent ?? "");
    }
    expect(new Set(texts)).toEqual(new Set(["stopped"]));
  });
});
