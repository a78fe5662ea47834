// What an instance's own failed health check said. The order leader that
// could not store orders showed ACTIVE and healthy; its record now says why
// (`statusDetail`), and the card and the page show it under the reason: for
// a plain instance UNHEALTHY by its health check, and for a leader kept
// ACTIVE, degraded, by one.
import * as React from "react";
import { screen, within } from "@testing-library/react";

import { ServiceInstanceCard } from "@/components/dashboard/service-instance-card";
import { InstanceDetail } from "@/components/instance/instance-detail";
import type { LiveInstances } from "@/hooks/use-live-instances";
import { api } from "@/lib/api/client";
import { ServiceInstance } from "@/lib/api/schemas";
import { InstanceStore } from "@/lib/instance-store";
import { instance, renderUi } from "./render";

vi.mock("next/navigation", () => ({ usePathname: () => "/services/order-1", useSearchParams: () => new URLSearchParams("service=order-service") }));
vi.mock("@/components/instance/performance-panel", () => ({ PerformancePanel: () => null }));
vi.mock("@/components/instance/failover-timeline", () => ({ FailoverTimeline: () => null }));
let live: LiveInstances;
vi.mock("@/hooks/use-live-instances", () => ({ useLiveInstances: () => live }));

const FULL = "the order store is full: 1.0 MiB of 1.0 MiB used; orders are refused until settled ones expire (kept 6h)";

const unhealthy = (over: Record<string, unknown> = {}) =>
  ServiceInstance.parse(
    instance({
      serviceName: "pricing-service",
      instanceId: "pricing-1",
      status: "UNHEALTHY",
      reportedStatus: "UNHEALTHY",
      stickyActiveGroup: null,
      epoch: null,
      statusReason: "health_check",
      statusDetail: FULL,
      ...over,
    }),
  );

const degradedLeader = (over: Record<string, unknown> = {}) =>
  unhealthy({
    serviceName: "order-service",
    instanceId: "order-1",
    status: "ACTIVE",
    stickyActiveGroup: "default",
    epoch: 4,
    statusReason: "degraded",
    ...over,
  });

const card = (i: ServiceInstance) => <ServiceInstanceCard entry={{ instance: i, metrics: null, goneAt: null, goneReason: null }} />;

function page(i: ServiceInstance) {
  vi.spyOn(api, "instanceEvents").mockResolvedValue([]);
  vi.spyOn(api, "instanceConfig").mockResolvedValue({} as never);
  const store = new InstanceStore({ schedule: (flush) => flush() });
  store.replaceAll([i]);
  live = { store, snapshot: store.getSnapshot(), feed: "live", error: null, retry: () => {} };
  renderUi(<InstanceDetail />);
}

describe("what a failed health check said", () => {
  afterEach(() => vi.restoreAllMocks());

  it("is on the card of an instance unhealthy by its health check, under the reason", () => {
    renderUi(card(unhealthy()));
    const c = screen.getByTestId("instance-card");
    expect(within(c).getByTestId("status-reason")).toHaveTextContent("its health check fails");
    const detail = within(c).getByTestId("status-detail");
    expect(detail).toHaveTextContent(`Its health check says: ${FULL}`);
    // Cut to three lines on a card, long words broken, the whole text in the title.
    expect(detail).toHaveAttribute("title", FULL);
    expect(detail).toHaveClass("line-clamp-3");
    // Above the card's link under a mouse, so the title shows on hover.
    expect(detail).toHaveClass("pointer-fine:relative");
    expect(detail.className).toContain("[overflow-wrap:anywhere]");
    // After the reason line, as `aegis status` puts it after the reason.
    expect(within(c).getByTestId("status-reason").compareDocumentPosition(detail) & Node.DOCUMENT_POSITION_FOLLOWING).toBeTruthy();
  });

  it("is on the card of a degraded leader, which stays ACTIVE", () => {
    renderUi(card(degradedLeader()));
    const c = screen.getByTestId("instance-card");
    expect(within(c).getByText("ACTIVE · degraded")).toBeInTheDocument();
    expect(within(c).getByTestId("status-reason")).toHaveTextContent("leads although unhealthy");
    expect(within(c).getByTestId("status-detail")).toHaveTextContent(FULL);
  });

  it("is in the reader's language around the instance's own words", () => {
    renderUi(card(degradedLeader()), { locale: "zh-CN" });
    expect(screen.getByTestId("status-detail")).toHaveTextContent(`健康检查结果： ${FULL}`);
  });

  it("is absent without a detail, and on a gone instance's card", () => {
    renderUi(
      <>
        {card(unhealthy({ statusReason: "operator", statusDetail: undefined }))}
        <ServiceInstanceCard entry={{ instance: unhealthy({ instanceId: "pricing-2" }), metrics: null, goneAt: Date.now(), goneReason: "expired" }} />
      </>,
    );
    expect(screen.getAllByTestId("instance-card")).toHaveLength(2);
    expect(screen.queryByTestId("status-detail")).toBeNull();
  });

  it("is text, never markup", () => {
    renderUi(card(unhealthy({ statusDetail: "<img src=x onerror=alert(1)> full" })));
    const detail = screen.getByTestId("status-detail");
    expect(detail.querySelector("img")).toBeNull();
    expect(detail).toHaveTextContent("<img src=x onerror=alert(1)> full");
  });

  it.each([
    ["an unhealthy instance", unhealthy, "its health check fails"],
    ["a degraded leader", degradedLeader, "leads although unhealthy"],
  ] as const)("is on the page of %s, whole", (_, make, reason) => {
    page(make({ instanceId: "order-1", serviceName: "order-service" }));
    expect(screen.getByTestId("status-reason")).toHaveTextContent(reason);
    const detail = screen.getByTestId("status-detail");
    expect(detail).toHaveTextContent(`Its health check says: ${FULL}`);
    expect(detail).not.toHaveClass("line-clamp-3");
    expect(detail).toHaveAttribute("title", FULL);
  });

  it("changes on the card when only the words change", () => {
    // The reason and since stay while the store fills further: the card
    // must not keep the first sentence.
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([unhealthy()]);
    const later = "the order store is full: 1.0 MiB of 1.0 MiB used; 12 orders refused";
    store.apply({ type: "instanceUpserted", instance: unhealthy({ statusDetail: later }) });
    expect(store.getSnapshot().entries[0]!.instance.statusDetail).toBe(later);
  });

  it("is read from the API as an optional string", () => {
    expect(unhealthy().statusDetail).toBe(FULL);
    expect(unhealthy({ statusDetail: undefined }).statusDetail).toBeUndefined();
    // The monitor's bound is 200 characters, not UTF-16 units: 200 emoji
    // are 400 units, and must not make the whole instance unreadable.
    const emoji = "📦".repeat(200);
    expect(unhealthy({ statusDetail: emoji }).statusDetail).toBe(emoji);
  });
});

// The trial: a degraded leader's card read "leads although unhealthy: no
// healthy instance could take over" and never said why it was unhealthy,
// while `aegis status` said "degraded: forced by an operator" and the
// standbys' cards "made unhealthy by an operator". The record's own reason
// (`metadata.statusReason`) says it; the card and the page say it too.
describe("why a degraded leader is unhealthy", () => {
  afterEach(() => vi.restoreAllMocks());

  const byOperator = () =>
    degradedLeader({ statusDetail: undefined, metadata: { host: "h1", pid: 42, statusReason: "operator", statusSince: new Date().toISOString() } });
  const byCheck = () => degradedLeader({ metadata: { host: "h1", pid: 42, statusReason: "health_check", statusDetail: FULL } });

  it.each([
    ["an operator", byOperator, "leads although made unhealthy by an operator: no healthy instance could take over", null],
    ["its health check", byCheck, "leads although its health check fails: no healthy instance could take over", FULL],
  ] as const)("says on its card that %s made it unhealthy, and what the check said", (_, make, reason, detail) => {
    renderUi(card(make()));
    const c = screen.getByTestId("instance-card");
    expect(within(c).getByTestId("status-reason")).toHaveTextContent(reason);
    if (detail) expect(within(c).getByTestId("status-detail")).toHaveTextContent(`Its health check says: ${detail}`);
    else expect(within(c).queryByTestId("status-detail")).toBeNull();
  });

  it.each([
    ["an operator", byOperator, "虽被运维人员设为不健康仍为主节点：没有健康实例可以接替"],
    ["its health check", byCheck, "虽健康检查失败仍为主节点：没有健康实例可以接替"],
  ] as const)("says in Chinese that %s made it unhealthy", (_, make, reason) => {
    renderUi(card(make()), { locale: "zh-CN" });
    expect(screen.getByTestId("status-reason")).toHaveTextContent(reason);
  });

  it.each([
    ["an operator", byOperator, "made unhealthy by an operator"],
    ["its health check", byCheck, "its health check fails"],
  ] as const)("says on its page that %s made it unhealthy", (_, make, reason) => {
    page(make());
    expect(screen.getByTestId("status-reason")).toHaveTextContent(reason);
  });

  it("keeps the plain words when its record does not say a reason this UI knows", () => {
    renderUi(card(degradedLeader({ statusDetail: undefined, metadata: { statusReason: "\u202Esomething new" } })));
    expect(screen.getByTestId("status-reason")).toHaveTextContent(/^leads although unhealthy: no healthy instance could take over/);
  });
});
