// Since when an instance is UNHEALTHY. docs/demo.md (Flow 3) promises that
// the monitor shows the old leader UNHEALTHY "with reason `operator` and
// since when"; the trial found the reason alone on its card and its page,
// though the API sends `statusSince`.
import * as React from "react";
import { act, screen } from "@testing-library/react";

import { ServiceInstanceCard } from "@/components/dashboard/service-instance-card";
import { InstanceDetail } from "@/components/instance/instance-detail";
import { InstanceStoreContext } from "@/hooks/use-instance-store";
import type { LiveInstances } from "@/hooks/use-live-instances";
import { api } from "@/lib/api/client";
import type { DigestEvent, ServiceInstance } from "@/lib/api/schemas";
import { clock } from "@/lib/format";
import { InstanceStore } from "@/lib/instance-store";
import { instance, renderUi } from "./render";

vi.mock("next/navigation", () => ({ usePathname: () => "/services/order-1", useSearchParams: () => new URLSearchParams("service=order-service") }));
vi.mock("@/components/instance/performance-panel", () => ({ PerformancePanel: () => null }));
vi.mock("@/components/instance/failover-timeline", () => ({ FailoverTimeline: () => null }));
let live: LiveInstances;
vi.mock("@/hooks/use-live-instances", () => ({ useLiveInstances: () => live }));

const NOW = Date.parse("2026-12-05T08:49:03.000Z");
const SINCE = NOW - 30_000;

const unhealthy = (over: Partial<ServiceInstance> = {}) =>
  instance({
    instanceId: "order-1",
    status: "UNHEALTHY",
    reportedStatus: "UNHEALTHY",
    statusReason: "operator",
    statusSince: new Date(SINCE).toISOString(),
    epoch: null,
    ...over,
  }) as ServiceInstance;

describe("since when an instance is unhealthy", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] });
    vi.setSystemTime(NOW);
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  it.each([
    ["en", "made unhealthy by an operator", `for 30 s, since ${clock(SINCE, "en")}`, `for 35 s, since ${clock(SINCE, "en")}`],
    ["zh-CN", "被运维人员设为不健康", `已持续 30 秒（自 ${clock(SINCE, "zh-CN")} 起）`, `已持续 35 秒（自 ${clock(SINCE, "zh-CN")} 起）`],
  ] as const)("is on its card with the reason, counting on (%s)", (locale, reason, first, later) => {
    renderUi(<ServiceInstanceCard entry={{ instance: unhealthy(), metrics: null, goneAt: null, goneReason: null }} />, { locale });
    expect(screen.getByTestId("status-reason")).toHaveTextContent(reason);
    const since = screen.getByTestId("status-since");
    expect(since).toHaveTextContent(first);
    expect(since.querySelector("time")).toHaveAttribute("dateTime", new Date(SINCE).toISOString());
    act(() => vi.advanceTimersByTime(5000));
    expect(screen.getByTestId("status-since")).toHaveTextContent(later);
  });

  it("is not on a healthy card", () => {
    renderUi(<ServiceInstanceCard entry={{ instance: instance() as ServiceInstance, metrics: null, goneAt: null, goneReason: null }} />);
    expect(screen.queryByTestId("status-since")).toBeNull();
  });

  it("is on its page", () => {
    vi.spyOn(api, "instanceEvents").mockResolvedValue([]);
    vi.spyOn(api, "instanceConfig").mockResolvedValue({} as never);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([unhealthy()]);
    live = { store, snapshot: store.getSnapshot(), feed: "live", error: null, retry: () => {} };
    renderUi(<InstanceDetail />);
    expect(screen.getByTestId("status-reason")).toHaveTextContent("made unhealthy by an operator");
    expect(screen.getByTestId("status-since")).toHaveTextContent(`for 30 s, since ${clock(SINCE, "en")}`);
  });
});

// The monitor stamps `statusSince` on its own clock; the page runs on the
// browser's. A browser a minute off read "for 1 min 30 s" (or "for 0 s")
// for an instance unhealthy 30 s. The heartbeat age already measures on
// the monitor's clock, corrected by the offset the digests show; the
// duration must too.
describe("since when an instance is unhealthy, with the browser's clock off", () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] }));
  afterEach(() => {
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  // The monitor, at NOW on its clock: everything beats on time.
  const digest: DigestEvent = {
    type: "digest",
    asOf: new Date(NOW).toISOString(),
    version: 1,
    summary: { total: 1, active: 0, unhealthy: 1, standby: 0 },
    lateAfterIntervals: 1.5,
    late: [],
  };

  function Live({ store }: { store: InstanceStore }) {
    const snapshot = React.useSyncExternalStore(store.subscribe, store.getSnapshot);
    const entry = snapshot.entries[0];
    return entry ? <ServiceInstanceCard entry={entry} /> : null;
  }

  it.each([
    ["a minute behind", -60_000],
    ["a minute ahead", 60_000],
  ])("counts on the monitor's clock on its card, the browser's %s", (_, skew) => {
    vi.setSystemTime(NOW + skew);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([unhealthy()]);
    store.applyDigest(digest);
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <Live store={store} />
      </InstanceStoreContext.Provider>,
    );
    expect(screen.getByTestId("status-since")).toHaveTextContent(`for 30 s, since ${clock(SINCE, "en")}`);
    act(() => vi.advanceTimersByTime(5000));
    expect(screen.getByTestId("status-since")).toHaveTextContent(`for 35 s, since ${clock(SINCE, "en")}`);
  });

  it("counts on the monitor's clock on its page", () => {
    vi.setSystemTime(NOW - 60_000);
    vi.spyOn(api, "instanceEvents").mockResolvedValue([]);
    vi.spyOn(api, "instanceConfig").mockResolvedValue({} as never);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([unhealthy()]);
    store.applyDigest(digest);
    live = { store, snapshot: store.getSnapshot(), feed: "live", error: null, retry: () => {} };
    renderUi(<InstanceDetail />);
    expect(screen.getByTestId("status-since")).toHaveTextContent(`for 30 s, since ${clock(SINCE, "en")}`);
  });
});
