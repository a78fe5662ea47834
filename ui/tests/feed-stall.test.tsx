// A live stream that goes silent, from the operator's trial: the monitor
// frozen (SIGSTOP) for 25 s. The stream stayed open, so nothing called it
// down: the chip read "Live · NATS unknown" all along, every card counted
// its heartbeat up to "28 s ago" as if every instance had stopped beating,
// and the one warning sat under "NATS status unknown". The monitor sends a
// digest every 2 s; three missed mean the feed is stalled.
import * as React from "react";
import { act, screen } from "@testing-library/react";

import { ServiceInstanceCard } from "@/components/dashboard/service-instance-card";
import { FeedIndicator } from "@/components/live/feed-indicator";
import { NatsStatus } from "@/components/nats/nats-status";
import { InstanceStoreContext } from "@/hooks/use-instance-store";
import { LiveFeed, STALL_AFTER_MS, type EventSourceLike, type FeedState } from "@/lib/api/live-feed";
import type { ServiceInstance } from "@/lib/api/schemas";
import { InstanceStore } from "@/lib/instance-store";
import { instance, renderUi } from "./render";

class FakeSource implements EventSourceLike {
  listeners = new Map<string, ((e: MessageEvent) => void)[]>();
  onerror: ((e: Event) => void) | null = null;
  closed = false;
  addEventListener(type: string, l: (e: MessageEvent) => void) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), l]);
  }
  emit(type: string, data: unknown = {}) {
    this.listeners.get(type)?.forEach((l) => l(new MessageEvent(type, { data: JSON.stringify(data) })));
  }
  close() {
    this.closed = true;
  }
}

const T0 = Date.parse("2026-12-05T08:59:30.000Z");
const iso = (offset: number) => new Date(T0 + offset).toISOString();

const digestAt = (asOf: number, total = 1) => ({
  type: "digest",
  asOf: iso(asOf),
  version: 1,
  summary: { total, active: total, unhealthy: 0, standby: 0 },
  lateAfterIntervals: 1.5,
  late: [],
});

describe("a live stream that goes silent", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] });
    vi.setSystemTime(T0);
  });
  afterEach(() => vi.useRealTimers());

  function setup(topics: ("instance" | "metrics" | "definition")[], resync = vi.fn(() => new Promise<void>(() => undefined))) {
    const sources: FakeSource[] = [];
    const states: FeedState[] = [];
    const feed = new LiveFeed({
      topics,
      resync,
      onState: (s) => states.push(s),
      initialBackoffMs: 1000,
      maxBackoffMs: 8000,
      open: () => {
        const s = new FakeSource();
        sources.push(s);
        return s;
      },
    });
    feed.start();
    return { feed, sources, states, resync };
  }

  it("waits three digest intervals (6 s)", () => {
    expect(STALL_AFTER_MS).toBe(6000);
  });

  it("is called stalled after three missed digests, re-read over REST and reconnected", async () => {
    const { feed, sources, states, resync } = setup(["instance", "metrics"]);
    sources[0]!.emit("hello", { topics: ["instance", "metrics"] });
    sources[0]!.emit("digest", digestAt(0));
    expect(states).toEqual(["live"]);
    // Digests every 2 s keep it live.
    for (let i = 1; i <= 5; i++) {
      await act(async () => vi.advanceTimersByTime(2000));
      sources[0]!.emit("digest", digestAt(i * 2000));
    }
    expect(states).toEqual(["live"]);
    // Then nothing (the monitor frozen; the socket stays open, no error).
    await act(async () => vi.advanceTimersByTime(5900));
    expect(states).toEqual(["live"]);
    await act(async () => vi.advanceTimersByTime(200));
    expect(states).toEqual(["live", "stalled"]);
    expect(sources[0]!.closed).toBe(true);
    // What the page does when the stream drops: REST reads, a reconnect.
    expect(resync).toHaveBeenCalled();
    await act(async () => vi.advanceTimersByTime(1300));
    expect(sources).toHaveLength(2);
    // The new stream is silent too (the monitor still frozen): no hello
    // within the same time is the same stall, and the chip stays on it.
    await act(async () => vi.advanceTimersByTime(6100));
    expect(sources[1]!.closed).toBe(true);
    expect(states.at(-1)).toBe("stalled");
    // The monitor answers again.
    await act(async () => vi.advanceTimersByTime(3000));
    sources.at(-1)!.emit("hello");
    expect(states.at(-1)).toBe("live");
    feed.stop();
  });

  it("any event keeps it live, and a stream without digests is never called stalled", async () => {
    const a = setup(["instance", "metrics"]);
    a.sources[0]!.emit("hello");
    for (let i = 0; i < 10; i++) {
      await act(async () => vi.advanceTimersByTime(4000));
      a.sources[0]!.emit("metrics", { type: "metrics" });
    }
    expect(a.states).toEqual(["live"]);
    a.feed.stop();
    // /manage follows definitions only: they change rarely, and no digest comes.
    const b = setup(["definition"]);
    b.sources[0]!.emit("hello");
    await act(async () => vi.advanceTimersByTime(60_000));
    expect(b.states).toEqual(["live"]);
    expect(b.sources).toHaveLength(1);
    b.feed.stop();
  });

  it("does not pile up REST reads that do not answer", async () => {
    const { feed, sources, resync } = setup(["instance"]);
    sources[0]!.emit("hello");
    await act(async () => vi.advanceTimersByTime(6100));
    expect(resync).toHaveBeenCalledTimes(1);
    // Polling every 5 s: the first read still hangs, no second is sent.
    await act(async () => vi.advanceTimersByTime(20_000));
    expect(resync).toHaveBeenCalledTimes(1);
    feed.stop();
  });

  it.each([
    ["en", "Stalled · reconnecting…"],
    ["zh-CN", "数据流停滞 · 正在重连…"],
  ] as const)("the chip says so in %s, never Live", (locale, text) => {
    renderUi(<FeedIndicator state="stalled" nats="unknown" />, { locale });
    const chip = screen.getByTestId("feed-indicator");
    expect(chip).toHaveAttribute("data-state", "stalled");
    expect(chip).toHaveTextContent(text);
  });

  it("a card stops counting a heartbeat age it cannot know, and says for how long there has been no news", () => {
    const store = new InstanceStore({ schedule: (flush) => flush() });
    const order3 = instance({ instanceId: "order-3", metadata: { heartbeatMs: 1000 }, lastHeartbeat: iso(-1000) }) as ServiceInstance;
    store.replaceAll([order3]);
    store.setFeed("live");
    store.applyDigest(digestAt(0) as never);
    function Card() {
      const snapshot = React.useSyncExternalStore(store.subscribe, store.getSnapshot);
      return <ServiceInstanceCard entry={snapshot.entries[0]!} />;
    }
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <Card />
      </InstanceStoreContext.Provider>,
    );
    const age = () => screen.getByTestId("heartbeat-age");
    expect(age()).toHaveTextContent(/^on time$/);
    act(() => vi.advanceTimersByTime(6000));
    act(() => store.setFeed("stalled"));
    act(() => vi.advanceTimersByTime(1000));
    expect(age()).toHaveTextContent(/^unknown: no news for 7 s$/);
    act(() => vi.advanceTimersByTime(20_000));
    expect(age()).toHaveTextContent(/^unknown: no news for 27 s$/);
    // Polling reads the records again: their write times are news, each a
    // sign of life not known to be the last.
    act(() => {
      store.setFeed("polling");
      store.replaceAll([{ ...order3, lastHeartbeat: iso(26_500) }]);
    });
    act(() => vi.advanceTimersByTime(1000));
    expect(age()).toHaveTextContent(/^at most \d s ago$/);
  });

  // Seen with the fix above: the monitor back, the stream's hello made the
  // feed live again and, until the next digest, every card read "18 s ago"
  // from the last digest's bound — the false lateness of a page load.
  it("after a stall, a card reads checking until the next digest, not the age of the last one", () => {
    const store = new InstanceStore({ schedule: (flush) => flush() });
    const order3 = instance({ instanceId: "order-3", metadata: { heartbeatMs: 1000 }, lastHeartbeat: iso(-1000) }) as ServiceInstance;
    store.replaceAll([order3]);
    store.setFeed("live");
    store.applyDigest(digestAt(0) as never);
    function Card() {
      const snapshot = React.useSyncExternalStore(store.subscribe, store.getSnapshot);
      return <ServiceInstanceCard entry={snapshot.entries[0]!} />;
    }
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <Card />
      </InstanceStoreContext.Provider>,
    );
    const age = () => screen.getByTestId("heartbeat-age");
    act(() => vi.advanceTimersByTime(6000));
    act(() => store.setFeed("stalled"));
    act(() => vi.advanceTimersByTime(12_000));
    expect(age()).toHaveTextContent(/^unknown: no news for 18 s$/);
    // The monitor answers again: hello first, the digest up to 2 s later.
    act(() => store.setFeed("live"));
    act(() => vi.advanceTimersByTime(1000));
    expect(age()).toHaveTextContent(/^checking…$/);
    act(() => store.applyDigest(digestAt(19_500) as never));
    act(() => vi.advanceTimersByTime(1000));
    expect(age()).toHaveTextContent(/^on time$/);
  });

  it.each([
    ["en", "The monitor is not answering", "NATS status unknown"],
    ["zh-CN", "监控服务没有响应", "NATS 状态未知"],
  ] as const)("a monitor that does not answer is not called a NATS problem (%s)", (locale, heading, natsHeading) => {
    const since = T0;
    const { rerender } = renderUi(<NatsStatus view={{ kind: "unknown", since, cause: { kind: "timeout", afterMs: 3000 } }} />, { locale });
    expect(screen.getByRole("heading", { name: heading })).toBeInTheDocument();
    expect(screen.queryByRole("heading", { name: natsHeading })).toBeNull();
    rerender(<NatsStatus view={{ kind: "unknown", since, cause: { kind: "failed", status: 0, code: "NETWORK", message: "Failed to fetch" } }} />);
    expect(screen.getByRole("heading", { name: heading })).toBeInTheDocument();
    // The monitor answers, but its own check of NATS stopped: that is NATS's status unknown.
    rerender(<NatsStatus view={{ kind: "unknown", since, cause: { kind: "stale", asOf: iso(-5000) } }} />);
    expect(screen.getByRole("heading", { name: natsHeading })).toBeInTheDocument();
  });
});
