// NatsPoller: asks `GET /api/nats` at half `checkEveryMs` after each answer;
// anything that keeps it from knowing is `unknown` (never the last good
// view), a 404 is an older monitor (`absent`), a 401 stops it.
import { ApiError } from "@/lib/api/client";
import { NatsPoller, pollInterval, type NatsView } from "@/lib/api/nats-poller";
import type { NatsPicture } from "@/lib/api/schemas";

let tick = 0;
/** A healthy answer whose `asOf` moves on with every call. */
function health(over: Partial<NatsPicture> = {}): NatsPicture {
  tick += 1;
  return {
    asOf: new Date(Date.UTC(2026, 11, 4, 19, 30, 0) + tick * 1000).toISOString(),
    checkEveryMs: 1000,
    jetstream: "ok",
    servers: [{ name: "n1", up: true, since: null }],
    streams: [{ name: "KV_orders", replicas: 3, leader: "n1", offline: [], since: null }],
    ...over,
  };
}

function setup(answer: (call: number, signal: AbortSignal) => Promise<NatsPicture>, opts: { timeoutMs?: number; staleAfterMs?: number } = {}) {
  const views: NatsView[] = [];
  let calls = 0;
  const fetch = vi.fn((signal: AbortSignal) => answer(++calls, signal));
  const poller = new NatsPoller({ fetch, onView: (v) => views.push(v), ...opts });
  poller.start();
  const last = () => views[views.length - 1];
  return { poller, fetch, views, last };
}

/** Lets the pending answer settle, then moves the clock on. */
async function advance(ms: number) {
  await vi.advanceTimersByTimeAsync(ms);
}

describe("NatsPoller", () => {
  beforeEach(() => vi.useFakeTimers({ now: new Date(2026, 11, 4, 19, 30, 0) }));
  afterEach(() => vi.useRealTimers());

  it("asks at once, then within 500 ms of each answer when the monitor checks every second", async () => {
    // The monitor remakes its picture as each ping round ends (twice a
    // second): asking only every checkEveryMs adds up to a second to a
    // NATS node down.
    const { poller, fetch, last } = setup(() => Promise.resolve(health()));
    await advance(0);
    expect(fetch).toHaveBeenCalledTimes(1);
    expect(last()?.kind).toBe("known");
    await advance(499);
    expect(fetch).toHaveBeenCalledTimes(1);
    await advance(1);
    expect(fetch).toHaveBeenCalledTimes(2);
    await advance(1500);
    expect(fetch).toHaveBeenCalledTimes(5);
    poller.stop();
    await advance(10_000);
    expect(fetch).toHaveBeenCalledTimes(5);
  });

  it("asks at half the monitor's interval, within bounds", async () => {
    expect(pollInterval(0)).toBe(500);
    expect(pollInterval(1000)).toBe(500);
    expect(pollInterval(2000)).toBe(1000);
    expect(pollInterval(600_000)).toBe(10_000);
    const { poller, fetch } = setup(() => Promise.resolve(health({ checkEveryMs: 2000 })));
    await advance(0);
    await advance(999);
    expect(fetch).toHaveBeenCalledTimes(1);
    await advance(1);
    expect(fetch).toHaveBeenCalledTimes(2);
    poller.stop();
  });

  it("is not stale when asked twice within one of the monitor's checks", async () => {
    // The picture is remade at least every checkEveryMs; asked twice as
    // often, the page sees the same asOf again and again, which is no sign
    // of a stuck checker until three of the monitor's checks have passed.
    // No floor (staleAfterMs 0): the bound is the checks alone. Counted in
    // polls (3 × 500 ms) the same asOf would turn stale after 1.5 s.
    const same = health({ checkEveryMs: 1000 });
    const { poller, views, last } = setup(() => Promise.resolve(same), { staleAfterMs: 0 });
    await advance(0);
    for (let t = 500; t <= 2500; t += 500) {
      await advance(500);
      expect(last()).toMatchObject({ kind: "known" });
    }
    expect(views).toHaveLength(6);
    expect(views.every((v) => v.kind === "known")).toBe(true);
    // Past three checks the stuck picture is stale.
    await advance(1000);
    expect(last()).toMatchObject({ kind: "unknown", cause: { kind: "stale", asOf: same.asOf } });
    poller.stop();
  });

  it("counts a slow monitor's stuck picture stale only after three of its checks", async () => {
    // A monitor that checks every 4 s keeps its asOf for 4 s between
    // pictures: stale is 3 checks (12 s), not 3 polls.
    const stuck = health({ checkEveryMs: 4000 });
    const { poller, last } = setup(() => Promise.resolve(stuck));
    await advance(12_000);
    expect(last()?.kind).toBe("known");
    await advance(2000);
    expect(last()).toMatchObject({ kind: "unknown", cause: { kind: "stale", asOf: stuck.asOf } });
    poller.stop();
  });

  it("is unknown, not the last good view, while the route fails; since the first failure", async () => {
    let failing = false;
    const { poller, views, last } = setup(() =>
      failing ? Promise.reject(new ApiError(503, "SERVICE_UNAVAILABLE", "down")) : Promise.resolve(health()),
    );
    await advance(0);
    expect(last()?.kind).toBe("known");
    failing = true;
    await advance(500);
    const first = last();
    expect(first).toMatchObject({ kind: "unknown", cause: { kind: "failed", status: 503, code: "SERVICE_UNAVAILABLE" } });
    await advance(1000);
    expect(views.length).toBe(4);
    expect(last()).toMatchObject({ kind: "unknown", since: first?.kind === "unknown" ? first.since : -1 });
    failing = false;
    await advance(500);
    expect(last()?.kind).toBe("known");
    poller.stop();
  });

  it("names a network failure as status 0", async () => {
    const { poller, last } = setup(() => Promise.reject(new ApiError(0, "NETWORK", "Failed to fetch")));
    await advance(0);
    expect(last()).toMatchObject({ kind: "unknown", cause: { kind: "failed", status: 0, code: "NETWORK", message: "Failed to fetch" } });
    poller.stop();
  });

  it("gives up on an answer that takes too long, and says so", async () => {
    const { poller, fetch, last } = setup(
      (_call, signal) =>
        new Promise((_resolve, reject) => signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")))),
      { timeoutMs: 3000 },
    );
    await advance(2999);
    expect(last()).toBeUndefined();
    await advance(1);
    expect(last()).toMatchObject({ kind: "unknown", cause: { kind: "timeout", afterMs: 3000 } });
    await advance(1000);
    expect(fetch).toHaveBeenCalledTimes(2);
    poller.stop();
  });

  it("is unknown when the monitor's check stops moving (the same asOf for over 5 s)", async () => {
    const stuck = health();
    const { poller, last } = setup(() => Promise.resolve(stuck));
    await advance(5000);
    expect(last()?.kind).toBe("known");
    await advance(1000);
    expect(last()).toMatchObject({ kind: "unknown", cause: { kind: "stale", asOf: stuck.asOf } });
    poller.stop();
  });

  it("is absent with an older monitor (404 NOT_FOUND), and asks again later", async () => {
    let older = true;
    const { poller, fetch, last } = setup(() =>
      older ? Promise.reject(new ApiError(404, "NOT_FOUND", "no route for GET /api/nats")) : Promise.resolve(health()),
    );
    await advance(0);
    expect(last()).toEqual({ kind: "absent" });
    await advance(29_999);
    expect(fetch).toHaveBeenCalledTimes(1);
    older = false;
    await advance(1);
    expect(last()?.kind).toBe("known");
    poller.stop();
  });

  it("stops on 401: the session is gone", async () => {
    const { fetch, views } = setup(() => Promise.reject(new ApiError(401, "UNAUTHORIZED", "sign in")));
    await advance(0);
    await advance(10_000);
    expect(fetch).toHaveBeenCalledTimes(1);
    expect(views).toEqual([]);
  });

  it("aborts the request in flight on stop and reports nothing after", async () => {
    let seen: AbortSignal | null = null;
    const { poller, views } = setup((_c, signal) => {
      seen = signal;
      return new Promise(() => undefined);
    });
    await advance(0);
    poller.stop();
    expect(seen!.aborted).toBe(true);
    await advance(10_000);
    expect(views).toEqual([]);
  });
});
