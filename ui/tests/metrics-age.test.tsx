// The age of an instance's last metrics on its card ("Last metrics 10 s
// ago", "Last known: …, 10 s ago"), and whether its figures count as live,
// measured on the monitor's clock as the heartbeat age is: a browser whose
// clock runs a minute ahead read every fresh snapshot as a minute old.
import * as React from "react";
import { act, screen } from "@testing-library/react";

import { ServiceInstanceCard } from "@/components/dashboard/service-instance-card";
import { InstanceStoreContext } from "@/hooks/use-instance-store";
import type { MetricsSnapshot, ServiceInstance } from "@/lib/api/schemas";
import { InstanceStore } from "@/lib/instance-store";
import { instance, renderUi } from "./render";

// The monitor's clock (and the instance's, synced with it).
const MONITOR_NOW = Date.parse("2026-12-05T06:00:00.000Z");
// The browser's clock runs a minute ahead.
const BROWSER_AHEAD = 60_000;
const iso = (ms: number) => new Date(ms).toISOString();

const risk1 = (over: Partial<ServiceInstance> = {}) =>
  instance({
    serviceName: "risk-service",
    instanceId: "risk-1",
    stickyActiveGroup: null,
    epoch: null,
    startedAt: iso(MONITOR_NOW - 600_000),
    statusSince: iso(MONITOR_NOW - 600_000),
    lastHeartbeat: iso(MONITOR_NOW - 500),
    metadata: { heartbeatMs: 1000 },
    ...over,
  }) as ServiceInstance;

const snapshotAt = (at: number): MetricsSnapshot => ({
  serviceName: "risk-service",
  instanceId: "risk-1",
  timestamp: iso(at),
  uptimeSecs: 590,
  intervalSecs: 2,
  endpoints: [{ name: "check", requests: 900, successes: 900, errors: 0, requestRate: 9.5, errorRate: 0, latencyMs: { p50: 2, p90: 3, p99: 4.5, max: 6, mean: 2.2 } }],
  queueDepth: 0,
  inFlight: 0,
  custom: {},
});

function Card({ store }: { store: InstanceStore }) {
  const snapshot = React.useSyncExternalStore(store.subscribe, store.getSnapshot);
  return snapshot.entries[0] ? <ServiceInstanceCard entry={snapshot.entries[0]} /> : null;
}

/** A card whose store has seen a digest: it knows the monitor's clock. */
function renderCard(record: ServiceInstance, snapshot: MetricsSnapshot) {
  const store = new InstanceStore({ schedule: (flush) => flush() });
  store.replaceAll([record], [{ serviceName: "risk-service", instanceId: "risk-1", snapshot }]);
  store.applyDigest({
    type: "digest",
    asOf: iso(MONITOR_NOW),
    version: 1,
    summary: { total: 1, active: 1, unhealthy: 0, standby: 0 },
    lateAfterIntervals: 1.5,
    late: [],
  });
  renderUi(
    <InstanceStoreContext.Provider value={store}>
      <Card store={store} />
    </InstanceStoreContext.Provider>,
  );
  return store;
}

describe("the age of an instance's last metrics", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] });
    vi.setSystemTime(MONITOR_NOW + BROWSER_AHEAD);
  });
  afterEach(() => vi.useRealTimers());

  it("shows a fresh snapshot's figures as live when the browser's clock is ahead", () => {
    renderCard(risk1(), snapshotAt(MONITOR_NOW - 1000));
    act(() => vi.advanceTimersByTime(1000));
    expect(screen.queryByTestId("figures-stale")).toBeNull();
    expect(screen.getByTestId("live-figures")).toHaveTextContent("9.5 calls/s · p99 4.5 ms");
  });

  it("says how old stopped figures are on the monitor's clock", () => {
    renderCard(risk1(), snapshotAt(MONITOR_NOW - 10_000));
    act(() => vi.advanceTimersByTime(1000));
    expect(screen.getByTestId("figures-stale")).toHaveTextContent(/^Last metrics 11 s ago$/);
  });

  it("says how old a down instance's last-known figures are on the monitor's clock", () => {
    renderCard(risk1({ status: "UNHEALTHY", statusReason: "disconnected", statusSince: iso(MONITOR_NOW - 9000) }), snapshotAt(MONITOR_NOW - 10_000));
    expect(screen.getByTestId("figures-last-known")).toHaveTextContent(/, 10 s ago$/);
  });
});

// The trial: order-1 killed and restarted by the showcase; its card read
// "No metrics yet", then for a moment "Last known: 0 calls/s · p99 —, just
// now" in the amber of stale figures — on a fresh, healthy instance — then
// its figures. The new process's first snapshot came while the card still
// showed the dead one (no live figures for a process that is gone); the
// record of the new process then kept none either, and the card read the
// snapshot as a down instance's last known figures. "Last known" is for a
// process that is down; a new one shows its first figures, or "No metrics
// yet" until they come.
describe("a restarted instance's first figures", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] });
    vi.setSystemTime(MONITOR_NOW);
  });
  afterEach(() => vi.useRealTimers());

  const restartedAt = MONITOR_NOW - 3000;
  const dead = () => risk1({ status: "UNHEALTHY", reportedStatus: "ACTIVE", statusReason: "disconnected", statusSince: iso(MONITOR_NOW - 8000) });
  const fresh = () => risk1({ startedAt: iso(restartedAt), statusSince: iso(restartedAt), lastHeartbeat: iso(MONITOR_NOW - 200) });
  const idle = (at: number): MetricsSnapshot => ({ ...snapshotAt(at), uptimeSecs: 2, endpoints: [] });

  function show(store: InstanceStore) {
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <Card store={store} />
      </InstanceStoreContext.Provider>,
    );
  }

  it("are its figures when its first snapshot came before its new record, never 'Last known'", () => {
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([dead()]);
    store.setMetrics(snapshotAt(MONITOR_NOW - 9000));
    show(store);
    expect(screen.getByTestId("figures-last-known")).toHaveTextContent(/^Last known: 9\.5 calls\/s/);
    // The new process's first snapshot, then its record.
    act(() => store.setMetrics(idle(MONITOR_NOW - 500)));
    act(() => store.apply({ type: "instanceUpserted", instance: fresh() }));
    expect(screen.queryByTestId("figures-last-known")).toBeNull();
    expect(screen.getByTestId("live-figures")).toHaveTextContent(/^0 calls\/s · p99 —$/);
  });

  it("reads 'No metrics yet' on a live card with no figures of its own, even if the store holds a snapshot of its process", () => {
    // As the card is given it: no live figures, a snapshot of the new
    // process in the store.
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([fresh()]);
    store.setMetrics(idle(MONITOR_NOW - 500));
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <ServiceInstanceCard entry={{ instance: fresh(), metrics: null, goneAt: null, goneReason: null }} />
      </InstanceStoreContext.Provider>,
    );
    expect(screen.queryByTestId("figures-last-known")).toBeNull();
    expect(screen.getByTestId("live-figures")).toHaveTextContent(/^No metrics yet$/);
  });
});
