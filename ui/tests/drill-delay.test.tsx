// An operator's `slow` drill (`aegis chaos slow`) on the card and the page.
// The trial: the added latency showed in p99 and on the instance's charts,
// but nothing said it was put there on purpose (unlike `chaos unhealthy`'s
// "made unhealthy by an operator"), so a forgotten drill read as a real
// latency problem. The instance's record says it (metadata `drillDelayMs`,
// `drillDelaySince`); the card and the page must too.
import * as React from "react";
import { act, screen, within } from "@testing-library/react";

import { ServiceInstanceCard } from "@/components/dashboard/service-instance-card";
import { InstanceDetail } from "@/components/instance/instance-detail";
import type { LiveInstances } from "@/hooks/use-live-instances";
import { api } from "@/lib/api/client";
import type { ServiceInstance } from "@/lib/api/schemas";
import { clock } from "@/lib/format";
import { InstanceStore } from "@/lib/instance-store";
import { instance, renderUi } from "./render";

vi.mock("next/navigation", () => ({ usePathname: () => "/services/order-1", useSearchParams: () => new URLSearchParams("service=order-service") }));
vi.mock("@/components/instance/performance-panel", () => ({ PerformancePanel: () => null }));
vi.mock("@/components/instance/failover-timeline", () => ({ FailoverTimeline: () => null }));
let live: LiveInstances;
vi.mock("@/hooks/use-live-instances", () => ({ useLiveInstances: () => live }));

const NOW = Date.parse("2026-12-05T08:49:03.000Z");
const SINCE = NOW - 90_000;

const slowed = (delayMs: unknown = 500, over: Partial<ServiceInstance> = {}) =>
  instance({
    metadata: { host: "h1", pid: 42, drillDelayMs: delayMs, drillDelaySince: new Date(SINCE).toISOString() },
    ...over,
  }) as ServiceInstance;

const card = (i: ServiceInstance, goneAt: number | null = null) => (
  <ServiceInstanceCard entry={{ instance: i, metrics: null, goneAt, goneReason: goneAt ? "expired" : null }} />
);

describe("an operator's slow drill", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] });
    vi.setSystemTime(NOW);
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  it.each([
    ["en", "slowed by an operator: +500 ms per call", `for 1 min 30 s, since ${clock(SINCE, "en")}`],
    ["zh-CN", "被运维人员放慢：每次调用 +500 ms", `已持续 1 分 30 秒（自 ${clock(SINCE, "zh-CN")} 起）`],
  ] as const)("is on its card, an ACTIVE instance still (%s)", (locale, text, since) => {
    renderUi(card(slowed()), { locale });
    const c = screen.getByTestId("instance-card");
    expect(c).toHaveAttribute("data-status", "ACTIVE");
    expect(c).toHaveAttribute("data-slowed", "500");
    const line = within(c).getByTestId("drill-delay");
    expect(line).toHaveTextContent(text);
    expect(within(line).getByTestId("status-since")).toHaveTextContent(since);
    // Not an unhealthy verdict.
    expect(within(c).queryByTestId("status-reason")).toBeNull();
  });

  it("is beside an unhealthy verdict when both hold", () => {
    renderUi(card(slowed(1500, { status: "UNHEALTHY", reportedStatus: "UNHEALTHY", statusReason: "operator", statusSince: new Date(SINCE).toISOString() })));
    expect(screen.getByTestId("status-reason")).toHaveTextContent("made unhealthy by an operator");
    expect(screen.getByTestId("drill-delay")).toHaveTextContent("slowed by an operator: +1,500 ms per call");
  });

  it.each([
    ["no drill", instance() as ServiceInstance, null],
    ["a lifted drill (0)", slowed(0), null],
    ["a value that is no delay", slowed("fast"), null],
    ["a gone instance", slowed(), NOW - 1000],
    ["a process that is gone", slowed(500, { status: "UNHEALTHY", statusReason: "disconnected" }), null],
  ])("is not on the card for %s", (_, i, goneAt) => {
    renderUi(card(i, goneAt));
    expect(screen.queryByTestId("drill-delay")).toBeNull();
    expect(screen.getByTestId("instance-card")).not.toHaveAttribute("data-slowed");
  });

  it("appears and goes on the live card as the record changes", () => {
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([instance() as ServiceInstance]);
    function Live() {
      const snapshot = React.useSyncExternalStore(store.subscribe, store.getSnapshot);
      const entry = snapshot.entries[0];
      return entry ? card(entry.instance) : null;
    }
    renderUi(<Live />);
    expect(screen.queryByTestId("drill-delay")).toBeNull();
    act(() => store.apply({ type: "instanceUpserted", instance: slowed(500) }));
    expect(screen.getByTestId("drill-delay")).toHaveTextContent("+500 ms per call");
    act(() => store.apply({ type: "instanceUpserted", instance: slowed(800) }));
    expect(screen.getByTestId("drill-delay")).toHaveTextContent("+800 ms per call");
    act(() => store.apply({ type: "instanceUpserted", instance: instance() as ServiceInstance }));
    expect(screen.queryByTestId("drill-delay")).toBeNull();
  });

  it("is on its page", () => {
    vi.spyOn(api, "instanceEvents").mockResolvedValue([]);
    vi.spyOn(api, "instanceConfig").mockResolvedValue({} as never);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([slowed()]);
    live = { store, snapshot: store.getSnapshot(), feed: "live", error: null, retry: () => {} };
    renderUi(<InstanceDetail />);
    const line = screen.getByTestId("drill-delay");
    expect(line).toHaveTextContent("slowed by an operator: +500 ms per call");
    expect(line).toHaveTextContent(`for 1 min 30 s, since ${clock(SINCE, "en")}`);
  });
});
