// ServiceInstanceCard: what a card says, the heartbeat age ticking every
// second, the role from the API's truth, and the "gone" state.
import { act, screen, within } from "@testing-library/react";

import { ServiceInstanceCard } from "@/components/dashboard/service-instance-card";
import type { MetricsSnapshot, ServiceInstance } from "@/lib/api/schemas";
import { InstanceStoreContext } from "@/hooks/use-instance-store";
import { InstanceStore, figuresOf, type InstanceEntry } from "@/lib/instance-store";
import { instance, renderUi } from "./render";

const T0 = new Date("2026-11-30T12:00:00.000Z").getTime();

const SNAPSHOT: MetricsSnapshot = {
  serviceName: "order-service",
  instanceId: "order-1",
  timestamp: new Date(T0).toISOString(),
  uptimeSecs: 60,
  intervalSecs: 2,
  endpoints: [
    { name: "create_order", requests: 100, successes: 99, errors: 1, requestRate: 12.5, errorRate: 0.5, latencyMs: { p50: 1.2, p90: 2, p99: 4.25, max: 9, mean: 1.5 } },
    { name: "get_order", requests: 10, successes: 10, errors: 0, requestRate: 2.5, errorRate: 0, latencyMs: { p50: 0.5, p90: 1, p99: 7.5, max: 8, mean: 0.6 } },
  ],
  queueDepth: 0,
  inFlight: 1,
  custom: {},
};

function entry(over: Partial<InstanceEntry> = {}, inst: Partial<ServiceInstance> = {}): InstanceEntry {
  return {
    instance: instance({ lastHeartbeat: new Date(T0).toISOString(), ...inst }) as ServiceInstance,
    metrics: figuresOf(SNAPSHOT),
    goneAt: null,
    goneReason: null,
    ...over,
  };
}

describe("ServiceInstanceCard", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] });
    vi.setSystemTime(T0 + 3000);
  });
  afterEach(() => vi.useRealTimers());

  it("shows id, service, status, version, leader role with epoch and live figures", () => {
    renderUi(<ServiceInstanceCard entry={entry()} />);
    const card = screen.getByTestId("instance-card");
    expect(within(card).getByRole("link", { name: "Details of order-1" })).toHaveAttribute("href", "/services/order-1?service=order-service");
    expect(card).toHaveTextContent("order-service");
    expect(within(card).getByText("ACTIVE")).toHaveAttribute("data-status", "ACTIVE");
    expect(card).toHaveTextContent("1.2.3");
    expect(within(card).getByTestId("role")).toHaveTextContent("Leader · epoch 17");
    expect(card).toHaveAttribute("data-role", "leader");
    // calls/s is the sum over endpoints; p99 the worst endpoint's.
    expect(within(card).getByTestId("live-figures")).toHaveTextContent("15 calls/s · p99 7.5 ms");
  });

  it("ticks the heartbeat age every second", () => {
    renderUi(<ServiceInstanceCard entry={entry()} />);
    const age = screen.getByTestId("heartbeat-age");
    expect(age).toHaveTextContent("3 s ago");
    act(() => vi.advanceTimersByTime(1000));
    expect(age).toHaveTextContent("4 s ago");
    act(() => vi.advanceTimersByTime(2000));
    expect(age).toHaveTextContent("6 s ago");
  });

  it("shows a standby as standby and a load-balanced instance without a group", () => {
    const { rerender } = renderUi(<ServiceInstanceCard entry={entry({}, { status: "STANDBY", epoch: null })} />);
    expect(screen.getByTestId("role")).toHaveTextContent("Standby");
    expect(screen.getByTestId("instance-card")).toHaveAttribute("data-role", "standby");
    rerender(<ServiceInstanceCard entry={entry({}, { stickyActiveGroup: null, epoch: null })} />);
    expect(screen.getByTestId("role")).toHaveTextContent("Load-balanced");
  });

  it("never calls a record that claims ACTIVE without the election a leader when the API says UNHEALTHY", () => {
    renderUi(<ServiceInstanceCard entry={entry({}, { status: "UNHEALTHY", statusReason: "deposed" })} />);
    const card = screen.getByTestId("instance-card");
    expect(card).toHaveAttribute("data-role", "unhealthy");
    // Not the leader: the one it was, as `aegis status` says.
    expect(screen.getByTestId("role")).toHaveTextContent(/^Former leader of main \(epoch 17\)$/);
    expect(card).toHaveTextContent("deposed: another instance holds the election");
    expect(within(card).getByText("UNHEALTHY")).toBeInTheDocument();
  });

  // The trial: a SIGSTOPped instance went GONE "expired" and then vanished
  // while its process lived and NATS held its connection. The API now keeps
  // it, UNHEALTHY `unresponsive_expired`; the card says what that means.
  it("says a hung instance whose record expired is still connected, not gone, in English and Chinese", () => {
    const hung = { status: "UNHEALTHY" as const, reportedStatus: "ACTIVE" as const, statusReason: "unresponsive_expired", stickyActiveGroup: null, epoch: null };
    const { unmount } = renderUi(<ServiceInstanceCard entry={entry({ metrics: null }, hung)} />);
    const card = screen.getByTestId("instance-card");
    expect(card).toHaveAttribute("data-status", "UNHEALTHY");
    expect(within(card).getByTestId("status-reason")).toHaveTextContent(
      "unresponsive and its registry record expired, but NATS still holds its connection: hung or cut off, not gone",
    );
    unmount();
    renderUi(<ServiceInstanceCard entry={entry({ metrics: null }, hung)} />, { locale: "zh-CN" });
    expect(screen.getByTestId("status-reason")).toHaveTextContent("无响应且注册记录已过期，但 NATS 仍保持其连接");
  });

  it("turns into a gone card that says when and why", () => {
    renderUi(<ServiceInstanceCard entry={entry({ goneAt: T0 + 1000, goneReason: "expired" })} />);
    const card = screen.getByTestId("instance-card");
    expect(card).toHaveAttribute("data-status", "GONE");
    expect(card).toHaveAttribute("data-role", "gone");
    expect(within(card).getByText("GONE")).toBeInTheDocument();
    expect(within(card).getByTestId("gone")).toHaveTextContent("Gone 2 s ago · expired");
    act(() => vi.advanceTimersByTime(5000));
    expect(within(card).getByTestId("gone")).toHaveTextContent("Gone 7 s ago · expired");
    expect(card).not.toHaveTextContent("calls/s");
  });

  it("says so when no metrics arrived yet", () => {
    renderUi(<ServiceInstanceCard entry={entry({ metrics: null })} />);
    expect(screen.getByTestId("live-figures")).toHaveTextContent("No metrics yet");
  });

  it("says the figures are old once no snapshot came for three intervals, instead of showing them as live", () => {
    // A snapshot every 2 s: at 3 s old the figures still read as live.
    renderUi(<ServiceInstanceCard entry={entry()} />);
    const figures = screen.getByTestId("live-figures");
    expect(figures).toHaveTextContent("15 calls/s · p99 7.5 ms");
    // No new snapshot (a NATS node lost under the metrics stream): from
    // three intervals on (and at least 5 s) the card says how old they are.
    act(() => vi.advanceTimersByTime(3000));
    expect(figures).not.toHaveTextContent("calls/s");
    expect(figures).toHaveTextContent("Last metrics 6 s ago");
    act(() => vi.advanceTimersByTime(4000));
    expect(figures).toHaveTextContent("Last metrics 10 s ago");
  });

  it("keeps an idle instance's figures live while its snapshots keep coming", () => {
    // The store keeps the card's snapshot while newer ones read the same
    // ("0 calls/s"); the card must look at the newest, not the one it shows.
    const store = new InstanceStore({ schedule: () => undefined });
    const shown = entry();
    store.replaceAll([shown.instance]);
    const idle = (at: number) => ({ ...SNAPSHOT, timestamp: new Date(at).toISOString() });
    store.setMetrics(idle(T0));
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <ServiceInstanceCard entry={{ ...shown, metrics: figuresOf(idle(T0)) }} />
      </InstanceStoreContext.Provider>,
    );
    const figures = screen.getByTestId("live-figures");
    for (let at = T0 + 2000; at <= T0 + 12000; at += 2000) {
      store.setMetrics(idle(at));
      act(() => vi.advanceTimersByTime(2000));
      expect(figures).toHaveTextContent("calls/s");
    }
    // They stop: the card says so, counting from the newest.
    act(() => vi.advanceTimersByTime(6000));
    expect(figures).toHaveTextContent("Last metrics 9 s ago");
  });
});

// The trial: a SIGKILLed leader's card read only "Group default" where
// `aegis status` said "former leader of default (epoch 1), down: connection
// closed"; and a degraded leader kept a plain green ACTIVE badge.
describe("ServiceInstanceCard of a leader in trouble", () => {
  it.each(["disconnected", "unresponsive", "unresponsive_expired", "deposed"])("names a leader that is down (%s) the former leader of its group, with its epoch", (reason) => {
    renderUi(
      <ServiceInstanceCard
        entry={entry({ metrics: null }, { status: "UNHEALTHY", reportedStatus: "ACTIVE", statusReason: reason, stickyActiveGroup: "default", epoch: 1 })}
      />,
    );
    expect(screen.getByTestId("role")).toHaveTextContent(/^Former leader of default \(epoch 1\)$/);
  });

  it("names it without an epoch when none is known, and names an unhealthy standby a standby in its group", () => {
    renderUi(
      <>
        <ServiceInstanceCard entry={entry({ metrics: null }, { status: "UNHEALTHY", reportedStatus: "ACTIVE", statusReason: "disconnected", stickyActiveGroup: "default", epoch: null })} />
        <ServiceInstanceCard
          entry={entry({ metrics: null }, { instanceId: "order-2", status: "UNHEALTHY", reportedStatus: "STANDBY", statusReason: "disconnected", stickyActiveGroup: "default", epoch: null })}
        />
      </>,
    );
    const [former, standby] = screen.getAllByTestId("role");
    expect(former).toHaveTextContent(/^Former leader of default$/);
    expect(standby).toHaveTextContent(/^Standby in default$/);
  });

  // A degraded leader's record says UNHEALTHY, with its epoch (a standby's
  // has none): killed, deposed or gone, it read "Standby in default".
  it("names a degraded leader that died, lost the key or went the former leader of its group", () => {
    const degraded = { status: "UNHEALTHY" as const, reportedStatus: "UNHEALTHY" as const, stickyActiveGroup: "default", epoch: 5 };
    renderUi(
      <>
        <ServiceInstanceCard entry={entry({ metrics: null }, { ...degraded, statusReason: "disconnected" })} />
        <ServiceInstanceCard entry={entry({ metrics: null }, { ...degraded, instanceId: "order-2", statusReason: "deposed" })} />
        <ServiceInstanceCard entry={entry({ goneAt: T0, goneReason: "expired", metrics: null }, { ...degraded, instanceId: "order-3", statusReason: "disconnected" })} />
        <ServiceInstanceCard entry={entry({ metrics: null }, { ...degraded, instanceId: "order-4", statusReason: "disconnected", epoch: null })} />
      </>,
    );
    const [killed, deposed, gone, standby] = screen.getAllByTestId("role");
    expect(killed).toHaveTextContent(/^Former leader of default \(epoch 5\)$/);
    expect(deposed).toHaveTextContent(/^Former leader of default \(epoch 5\)$/);
    expect(gone).toHaveTextContent(/^Former leader of default \(epoch 5\)$/);
    expect(standby).toHaveTextContent(/^Standby in default$/);
  });

  // The trial: an operator-unhealthy standby read just "Group default";
  // `aegis status` says "standby in default".
  it("names an unhealthy standby a standby in its group, in English and Chinese", () => {
    const standby = entry({}, { instanceId: "order-3", status: "UNHEALTHY", reportedStatus: "STANDBY", statusReason: "operator", stickyActiveGroup: "default", epoch: null });
    const { unmount } = renderUi(<ServiceInstanceCard entry={standby} />);
    expect(screen.getByTestId("role")).toHaveTextContent(/^Standby in default$/);
    unmount();
    renderUi(<ServiceInstanceCard entry={standby} />, { locale: "zh-CN" });
    expect(screen.getByTestId("role")).toHaveTextContent(/^组 default 的备用$/);
  });

  // The review: since the standby wording, every gone card of a sticky group
  // read "Standby in default", a leader that stopped or crashed included.
  it("says what a gone instance was: a former leader when it last reported ACTIVE, else just its group", () => {
    const gone = { goneAt: T0, goneReason: "deregistered" as const, metrics: null };
    renderUi(
      <>
        <ServiceInstanceCard entry={entry(gone, { status: "ACTIVE", reportedStatus: "ACTIVE", stickyActiveGroup: "default", epoch: 3 })} />
        <ServiceInstanceCard
          entry={entry(gone, { instanceId: "order-2", status: "UNHEALTHY", reportedStatus: "ACTIVE", statusReason: "disconnected", stickyActiveGroup: "default", epoch: null })}
        />
        <ServiceInstanceCard entry={entry(gone, { instanceId: "order-3", status: "STANDBY", reportedStatus: "STANDBY", stickyActiveGroup: "default", epoch: null })} />
        <ServiceInstanceCard entry={entry(gone, { instanceId: "order-4", status: "ACTIVE", reportedStatus: "ACTIVE", stickyActiveGroup: null, epoch: null })} />
      </>,
    );
    const [stopped, crashed, standby, member] = screen.getAllByTestId("role");
    expect(stopped).toHaveTextContent(/^Former leader of default \(epoch 3\)$/);
    expect(crashed).toHaveTextContent(/^Former leader of default$/);
    expect(standby).toHaveTextContent(/^Group default$/);
    expect(member).toHaveTextContent(/^Load-balanced$/);
    for (const role of [stopped, crashed, standby]) expect(role).not.toHaveTextContent(/Standby/);
  });

  it("says the same of a gone instance in Chinese", () => {
    const gone = { goneAt: T0, goneReason: "deregistered" as const, metrics: null };
    renderUi(
      <>
        <ServiceInstanceCard entry={entry(gone, { status: "ACTIVE", reportedStatus: "ACTIVE", stickyActiveGroup: "default", epoch: null })} />
        <ServiceInstanceCard entry={entry(gone, { instanceId: "order-3", status: "STANDBY", reportedStatus: "STANDBY", stickyActiveGroup: "default", epoch: null })} />
      </>,
      { locale: "zh-CN" },
    );
    const [leader, standby] = screen.getAllByTestId("role");
    expect(leader).toHaveTextContent(/^组 default 的前主节点$/);
    expect(standby).toHaveTextContent(/^组 default$/);
  });

  it("marks a degraded leader: a warning badge that says so, and a warning border", () => {
    renderUi(<ServiceInstanceCard entry={entry({}, { status: "ACTIVE", statusReason: "degraded" })} />);
    const card = screen.getByTestId("instance-card");
    const badge = within(card).getByText(/ACTIVE/);
    expect(badge).toHaveTextContent("ACTIVE · degraded");
    expect(badge).toHaveClass("bg-warning-muted", "text-warning-strong");
    expect(badge).not.toHaveClass("bg-success-muted");
    expect(card).toHaveClass("border-warning/60");
    expect(within(card).getByTestId("role")).toHaveTextContent("Leader · epoch 17");
  });
});
