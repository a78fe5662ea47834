// LiveFeed and FeedIndicator: live on hello; when the stream drops the
// state says so, REST is polled every 5 s, reconnects back off; `lagged`
// and reconnects re-read the REST endpoints.
import { act, screen } from "@testing-library/react";

import { FeedIndicator } from "@/components/live/feed-indicator";
import { LiveFeed, backoffDelay, type EventSourceLike, type FeedState } from "@/lib/api/live-feed";
import { renderUi } from "./render";

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
  fail() {
    this.onerror?.(new Event("error"));
  }
  close() {
    this.closed = true;
  }
}

describe("LiveFeed", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  function setup(resyncOk: () => boolean, onExpired?: () => void) {
    const sources: FakeSource[] = [];
    const states: FeedState[] = [];
    const resync = vi.fn(() => (resyncOk() ? Promise.resolve() : Promise.reject(new Error("down"))));
    const onInstance = vi.fn();
    const feed = new LiveFeed({
      topics: ["instance"],
      resync,
      onInstance,
      onState: (s) => states.push(s),
      onExpired,
      // A silent stream's stall: tests/feed-stall.test.tsx.
      stallAfterMs: null,
      initialBackoffMs: 1000,
      maxBackoffMs: 8000,
      open: () => {
        const s = new FakeSource();
        sources.push(s);
        return s;
      },
    });
    feed.start();
    return { feed, sources, states, resync, onInstance };
  }

  it("goes live on hello and passes events on, ignoring malformed ones", () => {
    const { feed, sources, states, onInstance } = setup(() => true);
    sources[0]!.emit("hello", { topics: ["instance"] });
    expect(states).toEqual(["live"]);
    sources[0]!.emit("instance", { type: "instanceRemoved", serviceName: "s-1", instanceId: "i" });
    sources[0]!.emit("instance", { type: "nonsense" });
    expect(onInstance).toHaveBeenCalledTimes(1);
    feed.stop();
  });

  it("stops on `expired` and says so, without reconnecting or polling", async () => {
    const onExpired = vi.fn();
    const { sources, resync } = setup(() => true, onExpired);
    sources[0]!.emit("hello");
    sources[0]!.emit("expired");
    expect(onExpired).toHaveBeenCalledTimes(1);
    expect(sources[0]!.closed).toBe(true);
    // The stream's end that follows changes nothing.
    sources[0]!.fail();
    await act(async () => vi.advanceTimersByTime(20_000));
    expect(sources).toHaveLength(1);
    expect(resync).not.toHaveBeenCalled();
  });

  it("polls while the stream is down, reconnects with backoff and re-reads on return", async () => {
    let apiUp = true;
    const { feed, sources, states, resync } = setup(() => apiUp);
    sources[0]!.emit("hello");
    apiUp = false;
    sources[0]!.fail();
    expect(sources[0]!.closed).toBe(true);
    expect(states.at(-1)).toBe("reconnecting");
    await act(async () => {}); // the first poll fails
    expect(states.at(-1)).toBe("reconnecting");
    apiUp = true;
    // The stream is still refused: the reconnect fails, polling continues.
    await act(async () => vi.advanceTimersByTime(1300));
    expect(sources).toHaveLength(2);
    sources[1]!.fail();
    await act(async () => vi.advanceTimersByTime(5000));
    expect(states.at(-1)).toBe("polling");
    const polls = resync.mock.calls.length;
    await act(async () => vi.advanceTimersByTime(5000));
    expect(resync.mock.calls.length).toBeGreaterThan(polls);
    // The second retry waits about twice as long as the first.
    expect(sources).toHaveLength(3);
    const before = resync.mock.calls.length;
    sources[2]!.emit("hello");
    expect(states.at(-1)).toBe("live");
    await act(async () => {});
    expect(resync.mock.calls.length).toBe(before + 1);
    // Polling stopped.
    await act(async () => vi.advanceTimersByTime(20000));
    expect(resync.mock.calls.length).toBe(before + 1);
    feed.stop();
  });

  it("re-reads the REST endpoints on lagged", () => {
    const { feed, sources, resync } = setup(() => true);
    sources[0]!.emit("hello");
    resync.mockClear();
    sources[0]!.emit("lagged", { skipped: 12 });
    expect(resync).toHaveBeenCalledTimes(1);
    feed.stop();
  });

  // The monitor also sends `lagged` to every client of topic instance when
  // its own feed fell behind the fleet view: changes were lost for
  // everyone, whatever this client's state.
  it.each([
    ["connecting, before the hello", (_: FakeSource[]) => 0],
    ["live", (sources: FakeSource[]) => (sources[0]!.emit("hello"), 0)],
    [
      "live again after a drop, polling stopped",
      async (sources: FakeSource[]) => {
        sources[0]!.emit("hello");
        sources[0]!.fail();
        await act(async () => vi.advanceTimersByTime(1300));
        sources[1]!.emit("hello");
        return 1;
      },
    ],
    [
      "polling, on the new stream before its hello",
      async (sources: FakeSource[]) => {
        sources[0]!.emit("hello");
        sources[0]!.fail();
        await act(async () => vi.advanceTimersByTime(1300));
        return 1;
      },
    ],
  ])("re-reads on lagged when %s", async (_state, reach) => {
    const { feed, sources, resync } = setup(() => true);
    const at = await reach(sources);
    await act(async () => {});
    resync.mockClear();
    sources[at]!.emit("lagged", { skipped: 3 });
    expect(resync).toHaveBeenCalledTimes(1);
    feed.stop();
  });

  // During a resync burst in a large fleet (when the monitor's feed lags)
  // a REST read may fail too. The changes stay lost until one succeeds:
  // a failed re-read after lagged is tried again, not dropped.
  it("tries a failed re-read after lagged again until one succeeds, while the stream stays live", async () => {
    let apiUp = true;
    const { feed, sources, states, resync } = setup(() => apiUp);
    sources[0]!.emit("hello");
    await act(async () => {});
    resync.mockClear();
    apiUp = false;
    sources[0]!.emit("lagged", { skipped: 3 });
    await act(async () => {});
    expect(resync).toHaveBeenCalledTimes(1);
    await act(async () => vi.advanceTimersByTime(5000));
    expect(resync).toHaveBeenCalledTimes(2);
    apiUp = true;
    await act(async () => vi.advanceTimersByTime(5000));
    expect(resync).toHaveBeenCalledTimes(3);
    // Read: no more.
    await act(async () => vi.advanceTimersByTime(30_000));
    expect(resync).toHaveBeenCalledTimes(3);
    expect(states.at(-1)).toBe("live");
    expect(sources).toHaveLength(1);
    feed.stop();
  });

  it("does not try a re-read again once stopped", async () => {
    const { feed, sources, resync } = setup(() => false);
    sources[0]!.emit("hello");
    sources[0]!.emit("lagged", { skipped: 3 });
    await act(async () => {});
    feed.stop();
    resync.mockClear();
    await act(async () => vi.advanceTimersByTime(30_000));
    expect(resync).not.toHaveBeenCalled();
  });

  it("passes digests on and re-reads after two disagreeing in a row", () => {
    const sources: FakeSource[] = [];
    const resync = vi.fn(() => Promise.resolve());
    const answers = [false, true, false, false];
    const onDigest = vi.fn(() => answers.shift() ?? true);
    const feed = new LiveFeed({
      topics: ["instance"],
      resync,
      onDigest,
      open: () => {
        const s = new FakeSource();
        sources.push(s);
        return s;
      },
    });
    feed.start();
    sources[0]!.emit("hello");
    const digest = {
      type: "digest",
      asOf: "2026-01-01T00:00:10.000Z",
      version: 3,
      summary: { total: 1, active: 1, unhealthy: 0, standby: 0 },
      lateAfterIntervals: 1.5,
      late: [],
    };
    sources[0]!.emit("digest", digest);
    sources[0]!.emit("digest", digest);
    expect(onDigest).toHaveBeenCalledTimes(2);
    expect(resync).not.toHaveBeenCalled();
    sources[0]!.emit("digest", digest);
    sources[0]!.emit("digest", digest);
    expect(resync).toHaveBeenCalledTimes(1);
    sources[0]!.emit("digest", { ...digest, late: "nonsense" });
    expect(onDigest).toHaveBeenCalledTimes(4);
    feed.stop();
  });

  it("backs off exponentially up to a cap", () => {
    const mid = () => 0.5;
    expect([0, 1, 2, 3, 10].map((a) => backoffDelay(a, 1000, 30000, mid))).toEqual([1000, 2000, 4000, 8000, 30000]);
  });
});

describe("FeedIndicator", () => {
  it.each([
    ["live", "Live"],
    ["connecting", "Connecting…"],
    ["reconnecting", "Reconnecting…"],
    ["polling", "Polling every 5 s"],
  ] as const)("says %s as %s", (state, text) => {
    renderUi(<FeedIndicator state={state} />);
    const el = screen.getByRole("status");
    expect(el).toHaveAttribute("data-state", state);
    expect(el).toHaveTextContent(text);
  });
});
