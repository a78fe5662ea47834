// A dead instance's heartbeat age, replayed from the operator's trial:
// `aegis chaos kill pricing-2`, the card read every 400 ms. It read
// "2 s ago", then "1 s ago", then "2 s ago" at +2859 ms: backwards, and
// fresher than the time since the instance's last beat. The age must only
// grow once the API says the process is gone, and never be fewer whole
// seconds than have passed since its last beat.
import * as React from "react";
import { act, screen } from "@testing-library/react";

import { ServiceInstanceCard } from "@/components/dashboard/service-instance-card";
import { InstanceStoreContext } from "@/hooks/use-instance-store";
import type { DigestEvent, ServiceInstance } from "@/lib/api/schemas";
import { FLUSH_MS, InstanceStore } from "@/lib/instance-store";
import { instance, renderUi } from "./render";

const KILL = Date.parse("2026-12-05T00:00:10.000Z");
const iso = (offset: number) => new Date(KILL + offset).toISOString();
// It beat every second; its last beat came 300 ms before the kill. It
// rewrites its registry record only every few beats.
const LAST_BEAT = -300;

const pricing2 = (over: Partial<ServiceInstance> = {}) =>
  instance({
    serviceName: "pricing-service",
    instanceId: "pricing-2",
    status: "STANDBY",
    reportedStatus: "STANDBY",
    stickyActiveGroup: "default",
    epoch: null,
    metadata: { heartbeatMs: 1000 },
    startedAt: iso(-60_000),
    statusSince: iso(-60_000),
    ...over,
  }) as ServiceInstance;

const digest = (asOf: number, late: boolean): DigestEvent => ({
  type: "digest",
  asOf: iso(asOf),
  version: 1,
  summary: { total: 1, active: 0, unhealthy: late ? 1 : 0, standby: late ? 0 : 1 },
  lateAfterIntervals: 1.5,
  late: late ? [{ serviceName: "pricing-service", instanceId: "pricing-2", lastBeat: iso(LAST_BEAT) }] : [],
});

function Live({ store }: { store: InstanceStore }) {
  const snapshot = React.useSyncExternalStore(store.subscribe, store.getSnapshot);
  const entry = snapshot.entries[0];
  return entry ? <ServiceInstanceCard entry={entry} /> : null;
}

/**
 * Whole seconds the card says, and whether it says them as only a bound:
 * "3 s ago" → 3, "at most 3 s ago" → 3 (a bound), "just now" → 0; null
 * for "on time" (no age shown); "stopped" (a down instance, its age only
 * in its title: a bound, or the monitor's record) → the age in the title.
 */
function shownAge(): { secs: number; atMost: boolean } | null {
  const el = screen.getByTestId("heartbeat-age");
  let text = el.textContent ?? "";
  if (text === "on time") return null;
  if (text === "stopped") text = /(at most )?\d+ s ago/.exec(el.querySelector("time")?.title ?? "")?.[0] ?? text;
  if (text === "just now") return { secs: 0, atMost: false };
  const m = /^(at most )?(\d+) s ago$/.exec(text);
  if (!m) throw new Error(`unexpected heartbeat text: ${text}`);
  return { secs: Number(m[2]), atMost: m[1] !== undefined };
}

/**
 * The trial's kill, replayed on fake timers from 4 s before it: the card
 * rendered over a store whose record was first written `firstWritten` ms
 * from the kill; digests every 2 s, on time while it beat; the disconnect
 * seen at +428 ms with the record as last written (`recordWritten`); then
 * digests that list it late with its last beat. Returns the store and
 * `advanceTo(ms)`, which moves the clock there, applying what the monitor
 * sent meanwhile.
 */
function replayKill(firstWritten: number, recordWritten: number): { store: InstanceStore; advanceTo: (to: number) => void } {
  vi.setSystemTime(KILL - 4000);
  const store = new InstanceStore({ schedule: (flush) => flush() });
  store.replaceAll([pricing2({ lastHeartbeat: iso(firstWritten) })]);
  renderUi(
    <InstanceStoreContext.Provider value={store}>
      <Live store={store} />
    </InstanceStoreContext.Provider>,
  );
  const events: [number, () => void][] = [
    [-3000, () => store.applyDigest(digest(-3000, false))],
    [-1000, () => store.applyDigest(digest(-1000, false))],
    [428, () => store.apply({ type: "instanceUpserted", instance: pricing2({ status: "UNHEALTHY", statusReason: "disconnected", statusSince: iso(428), lastHeartbeat: iso(recordWritten) }) })],
    // 1.3 s after its last beat: not late yet.
    [1000, () => store.applyDigest(digest(1000, false))],
    [3000, () => store.applyDigest(digest(3000, true))],
    [5000, () => store.applyDigest(digest(5000, true))],
    [7000, () => store.applyDigest(digest(7000, true))],
  ];
  let t = -4000;
  const advanceTo = (to: number) => {
    for (const [at, apply] of events) {
      if (at > t && at <= to) {
        act(() => vi.advanceTimersByTime(at - t));
        t = at;
        act(apply);
      }
    }
    act(() => vi.advanceTimersByTime(to - t));
    t = to;
  };
  return { store, advanceTo };
}

describe("a killed instance's heartbeat age", () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] }));
  afterEach(() => vi.useRealTimers());

  // The trial: the record last written 2.3 s before the kill. And the
  // record written with the last beat.
  it.each([[-2300], [LAST_BEAT]])("only grows after the kill and is never fewer seconds than since its last beat (record written at %i ms)", (recordWritten) => {
    const { store, advanceTo } = replayKill(-4300, recordWritten);
    const readings: string[] = [];
    const problems: string[] = [];
    let previous = -1;
    // From just before the disconnect is seen, as the trial read it.
    for (let at = 28; at <= 8000; at += 400) {
      advanceTo(at);
      const age = shownAge();
      if (age === null) {
        // Before the API says it is down, the digests said it beat on time.
        if (at >= 428) problems.push(`+${at} ms: on time after the disconnect`);
        continue;
      }
      const shown = age.secs;
      const sinceBeat = Math.floor((at - LAST_BEAT) / 1000);
      readings.push(`+${at} ms: ${age.atMost ? "at most " : ""}${shown} s (since its last beat ${(at - LAST_BEAT) / 1000} s)`);
      if (shown < previous) problems.push(`+${at} ms: ${shown} s after ${previous} s`);
      if (shown < sinceBeat) problems.push(`+${at} ms: ${shown} s, fresher than ${sinceBeat} s`);
      // Said as the age, not as a bound: no older than the time since its
      // last beat, rounded up (the trial: "4 s ago" 0.2 s after a beat).
      if (!age.atMost && shown > Math.ceil((at - LAST_BEAT) / 1000)) problems.push(`+${at} ms: ${shown} s ago, older than its last beat`);
      previous = shown;
    }
    expect(problems, readings.join("\n")).toEqual([]);
    // And it ends on the monitor's record of its last beat, not a bound.
    expect(store.heartbeat("pricing-service", "pricing-2")).toBe(iso(LAST_BEAT));
  });

  it("is measured on the monitor's clock: a browser clock 5 s behind does not make it fresher", () => {
    const SKEW = 5000;
    // The browser's clock reads 5 s earlier than the monitor's.
    vi.setSystemTime(KILL + 4000 - SKEW);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([pricing2({ status: "UNHEALTHY", statusReason: "disconnected", statusSince: iso(428), lastHeartbeat: iso(LAST_BEAT) })]);
    // The monitor, at +4 s on its clock: last beat 4.3 s ago.
    store.applyDigest(digest(4000, true));
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <Live store={store} />
      </InstanceStoreContext.Provider>,
    );
    const title = () => screen.getByTestId("heartbeat-age").querySelector("time")?.title;
    expect(screen.getByTestId("heartbeat-age")).toHaveTextContent(/^stopped$/);
    expect(title()).toBe("Its last sign of life was 5 s ago, as the monitor recorded it.");
    act(() => vi.advanceTimersByTime(1000));
    expect(title()).toBe("Its last sign of life was 6 s ago, as the monitor recorded it.");
  });

  it("starts again from a new beat once the instance is back", () => {
    vi.setSystemTime(KILL + 4000);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([pricing2({ status: "UNHEALTHY", statusReason: "unresponsive", lastHeartbeat: iso(LAST_BEAT) })]);
    store.applyDigest(digest(4000, true));
    expect(store.heartbeatAge("pricing-service", "pricing-2")).toBe(4300);
    // It beats again: the monitor clears the reason, its record is rewritten.
    vi.setSystemTime(KILL + 5000);
    store.apply({ type: "instanceUpserted", instance: pricing2({ lastHeartbeat: iso(4900) }) });
    expect(store.heartbeatAge("pricing-service", "pricing-2")).toBe(100);
  });
});

// The trial: `chaos kill pricing-2`; 150 ms later its card read "UNHEALTHY
// … disconnected … Heartbeat 4 s ago", though it had beaten 0.2 s before
// it died. All the page knew of its last beat was a bound: the last digest
// said it had shown life within 1.5 beats of its time, and its record was
// written 2.3 s before. The connection's close is no sign of life (it
// comes after the death, by as long as the server takes to notice), so
// the bound cannot shrink; it must be said as a bound, until a digest
// lists the monitor's record of its last beat.
describe("a killed instance's heartbeat before the monitor says its last beat", () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] }));
  afterEach(() => vi.useRealTimers());

  function killedAt150(locale: "en" | "zh-CN" = "en") {
    vi.setSystemTime(KILL - 1800);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([pricing2({ lastHeartbeat: iso(-2300) })]);
    store.applyDigest(digest(-1800, false));
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <Live store={store} />
      </InstanceStoreContext.Provider>,
      { locale },
    );
    act(() => vi.advanceTimersByTime(1950));
    act(() => store.apply({ type: "instanceUpserted", instance: pricing2({ status: "UNHEALTHY", statusReason: "disconnected", statusSince: iso(100), lastHeartbeat: iso(-2300) }) }));
    return store;
  }

  // The next trial: "Heartbeat: at most 3 s ago" on a card dead for
  // 0.3 s, beside "Gone just now" and "since 00:12:42": true, but a vague
  // bound that reads as news about a process shown dead. Until the
  // monitor says its last beat, a down instance's heartbeat says that it
  // stopped; the bound stays in the title.
  it("says it stopped, the bound only in its title, until the monitor says its last beat", () => {
    const store = killedAt150();
    const age = screen.getByTestId("heartbeat-age");
    expect(age).toHaveTextContent(/^stopped$/);
    expect(age.querySelector("time")).toHaveAttribute("title", "Its last sign of life was at most 3 s ago; the monitor has not said exactly when.");
    // +1250 ms; painted on the clock's tick at +1200 ms.
    act(() => vi.advanceTimersByTime(1100));
    expect(age).toHaveTextContent(/^stopped$/);
    expect(age.querySelector("time")).toHaveAttribute("title", "Its last sign of life was at most 4 s ago; the monitor has not said exactly when.");
    // The monitor lists it late with its last beat: 3.3 s ago. The age
    // in the title holds (still a bound) until that reaches it, then is
    // the monitor's record; the text still says it stopped.
    act(() => vi.advanceTimersByTime(1750));
    act(() => store.applyDigest(digest(3000, true)));
    act(() => vi.advanceTimersByTime(400));
    expect(age).toHaveTextContent(/^stopped$/);
    act(() => vi.advanceTimersByTime(2100));
    expect(age).toHaveTextContent(/^stopped$/);
    expect(age.querySelector("time")).toHaveAttribute("title", "Its last sign of life was 6 s ago, as the monitor recorded it.");
  });

  it("says it in Chinese too", () => {
    killedAt150("zh-CN");
    expect(screen.getByTestId("heartbeat-age")).toHaveTextContent(/^已停止$/);
    expect(screen.getByTestId("heartbeat-age").querySelector("time")?.title).toMatch(/最多 3 秒前/);
  });

  it("says it stopped on a gone instance's card too, never a bound beside 'Gone just now'", () => {
    vi.setSystemTime(KILL - 1800);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([pricing2({ lastHeartbeat: iso(-2300) })]);
    store.applyDigest(digest(-1800, false));
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <Live store={store} />
      </InstanceStoreContext.Provider>,
    );
    act(() => vi.advanceTimersByTime(2100));
    act(() => store.apply({ type: "instanceRemoved", serviceName: "pricing-service", instanceId: "pricing-2", reason: "deregistered" }));
    expect(screen.getByTestId("gone")).toHaveTextContent(/^Gone just now · stopped$/);
    expect(screen.getByTestId("heartbeat-age")).toHaveTextContent(/^stopped$/);
  });
});

// The trial: every card read "3 s ago" / "4 s ago" for a 1 s heartbeat
// while `aegis status` showed 0.0–0.1 s. The digest only says an instance
// not listed late showed life within 1.5 beat intervals; the card said
// that bound as if it were the age, and an operator read lateness that
// was not there.
describe("an instance's heartbeat between digests", () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] }));
  afterEach(() => vi.useRealTimers());

  const order = (id: string) =>
    instance({ serviceName: "order-service", instanceId: id, status: "STANDBY", reportedStatus: "STANDBY", stickyActiveGroup: "default", metadata: { heartbeatMs: 1000 }, lastHeartbeat: iso(-4000) }) as ServiceInstance;

  function Cards({ store }: { store: InstanceStore }) {
    const snapshot = React.useSyncExternalStore(store.subscribe, store.getSnapshot);
    return (
      <>
        {snapshot.entries.map((e) => (
          <ServiceInstanceCard key={e.instance.instanceId} entry={e} />
        ))}
      </>
    );
  }

  const ageOf = (id: string) => screen.getAllByTestId("instance-card").find((c) => c.dataset.instance === id)!.querySelector("[data-testid=heartbeat-age] time")!;

  it("reads on time, with the digest's bound as its title, and a late one its real age", () => {
    vi.setSystemTime(KILL);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([order("order-1"), order("order-2")]);
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <Cards store={store} />
      </InstanceStoreContext.Provider>,
      { locale: "en" },
    );
    act(() => {
      store.applyDigest({
        type: "digest",
        asOf: iso(0),
        version: 1,
        summary: { total: 2, active: 0, unhealthy: 0, standby: 2 },
        lateAfterIntervals: 1.5,
        late: [{ serviceName: "order-service", instanceId: "order-2", lastBeat: iso(-4200) }],
      });
    });
    act(() => vi.advanceTimersByTime(1500));
    // 1.5 s after the digest: a sign of life within the last 3 s, not "3 s ago".
    expect(ageOf("order-1")).toHaveTextContent(/^on time$/);
    expect(ageOf("order-1")).toHaveAttribute("title", "A sign of life within the last 3 s");
    expect(ageOf("order-2")).toHaveTextContent(/^6 s ago$/);
    expect(ageOf("order-2")).not.toHaveAttribute("title");
  });
});

// The trial: for ~2 s after any page load every healthy card read
// "Heartbeat 2 s ago" … "6 s ago", then "on time". The first REST read
// carries only each record's write time (every few beats); the first
// digest, up to 2 s later, is what says who beats on time.
describe("an instance's heartbeat before the first digest", () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] }));
  afterEach(() => vi.useRealTimers());

  const order1 = (over: Partial<ServiceInstance> = {}) =>
    instance({ instanceId: "order-1", metadata: { heartbeatMs: 1000 }, lastHeartbeat: iso(-4000), ...over }) as ServiceInstance;

  function Card({ store }: { store: InstanceStore }) {
    const snapshot = React.useSyncExternalStore(store.subscribe, store.getSnapshot);
    const entry = snapshot.entries[0];
    return entry ? <ServiceInstanceCard entry={entry} /> : null;
  }

  function show(store: InstanceStore, locale: "en" | "zh-CN" = "en") {
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <Card store={store} />
      </InstanceStoreContext.Provider>,
      { locale },
    );
    return () => screen.getByTestId("heartbeat-age");
  }

  it.each([
    ["connecting", "en", "checking…"],
    ["live", "en", "checking…"],
    ["live", "zh-CN", "检查中…"],
  ] as const)("reads as being checked, not as the record's age, while the feed is %s (%s)", (feed, locale, text) => {
    vi.setSystemTime(KILL);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.setFeed(feed);
    store.replaceAll([order1()]);
    const age = show(store, locale);
    expect(age()).toHaveTextContent(new RegExp(`^${text}$`));
    act(() => vi.advanceTimersByTime(1900));
    expect(age()).toHaveTextContent(new RegExp(`^${text}$`));
    // The first digest: on time.
    act(() => {
      store.setFeed("live");
      store.applyDigest({
        type: "digest",
        asOf: iso(1900),
        version: 1,
        summary: { total: 1, active: 1, unhealthy: 0, standby: 0 },
        lateAfterIntervals: 1.5,
        late: [],
      });
    });
    act(() => vi.advanceTimersByTime(1000));
    expect(age()).toHaveTextContent(locale === "en" ? /^on time$/ : /^按时$/);
  });

  it("shows the record's age as a bound when no digest can come (polling) and a down instance's at once", () => {
    vi.setSystemTime(KILL);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.setFeed("polling");
    store.replaceAll([order1()]);
    const age = show(store);
    expect(age()).toHaveTextContent(/^at most 4 s ago$/);
    act(() => {
      store.setFeed("live");
      store.replaceAll([order1({ status: "UNHEALTHY", statusReason: "disconnected" })]);
    });
    act(() => vi.advanceTimersByTime(1000));
    // Its record's write time: a sign of life, not known to be its last;
    // the bound is in the title, the text says it stopped.
    expect(age()).toHaveTextContent(/^stopped$/);
    expect(age().querySelector("time")).toHaveAttribute("title", "Its last sign of life was at most 5 s ago; the monitor has not said exactly when.");
  });
});

// The review: with the stream down (after a drop, or behind a proxy that
// passes no SSE) the page polls, and no digest says who beats on time.
// Every healthy 1 s-beat card then read "Heartbeat 2 s … 9 s ago", its
// record's write time (every ~4 s, re-read every 5 s) said as its age: the
// false lateness of a page load, for as long as the page polls. A record
// write is a sign of life, not known to be the last: a bound, said as one.
describe("a live instance's heartbeat while the feed polls", () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] }));
  afterEach(() => vi.useRealTimers());

  const order1 = (over: Partial<ServiceInstance> = {}) =>
    instance({ instanceId: "order-1", status: "ACTIVE", metadata: { heartbeatMs: 1000 }, lastHeartbeat: iso(-4000), ...over }) as ServiceInstance;

  function Card({ store }: { store: InstanceStore }) {
    const snapshot = React.useSyncExternalStore(store.subscribe, store.getSnapshot);
    const entry = snapshot.entries[0];
    return entry ? <ServiceInstanceCard entry={entry} /> : null;
  }

  function show(store: InstanceStore, locale: "en" | "zh-CN" = "en") {
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <Card store={store} />
      </InstanceStoreContext.Provider>,
      { locale },
    );
    return () => screen.getByTestId("heartbeat-age").querySelector("time")!;
  }

  it.each([
    ["en", /^at most 8 s ago$/, "Its last sign of life was at most 8 s ago: its record is rewritten every few beats, and the monitor has not said whether it beats on time."],
    ["zh-CN", /^最多 8 秒前$/, "最后一次存活信号：最多 8 秒前；其注册记录每隔几次心跳才写入一次，监控服务尚未说明其心跳是否按时。"],
  ] as const)("reads its record's write time as at most that old, not as its age (%s)", (locale, text, title) => {
    vi.setSystemTime(KILL);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.setFeed("polling");
    store.replaceAll([order1()]);
    const age = show(store, locale);
    act(() => vi.advanceTimersByTime(4000));
    expect(age()).toHaveTextContent(text);
    expect(age()).toHaveAttribute("title", title);
    expect(age().dataset.kind).toBe("atMost");
  });

  it("reads at most once the feed drops from live to polling, and on time again at the next digest", () => {
    vi.setSystemTime(KILL);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([order1()]);
    const onTimeDigest = (asOf: number): DigestEvent => ({
      type: "digest",
      asOf: iso(asOf),
      version: 1,
      summary: { total: 1, active: 1, unhealthy: 0, standby: 0 },
      lateAfterIntervals: 1.5,
      late: [],
    });
    store.applyDigest(onTimeDigest(0));
    const age = show(store);
    expect(age()).toHaveTextContent(/^on time$/);
    // The stream drops; the REST reads go on, its record rewritten 3 s ago.
    act(() => {
      store.setFeed("polling");
      vi.advanceTimersByTime(5000);
      store.replaceAll([order1({ lastHeartbeat: iso(2000) })]);
    });
    act(() => vi.advanceTimersByTime(1000));
    expect(age()).toHaveTextContent(/^at most 4 s ago$/);
    act(() => {
      store.setFeed("live");
      store.applyDigest(onTimeDigest(6500));
    });
    act(() => vi.advanceTimersByTime(1000));
    expect(age()).toHaveTextContent(/^on time$/);
  });

  // The review: a digest's record of a late instance's last beat is the
  // truth when it comes, and the next digest renews it. While polling none
  // comes: the instance may have recovered and beaten since. Its last beat
  // is that one or a later one, so the time since it is at most the time
  // since that beat: a bound, said as one ("at least" would be false the
  // moment it beats again).
  const lateDigest = (lastBeat: number, summary = { total: 1, active: 0, unhealthy: 1, standby: 0 }): DigestEvent => ({
    type: "digest",
    asOf: iso(0),
    version: 1,
    summary,
    lateAfterIntervals: 1.5,
    late: [{ serviceName: "order-service", instanceId: "order-1", lastBeat: iso(lastBeat) }],
  });

  it("reads a late instance's last beat from a digest as at most its age once the feed polls", () => {
    vi.setSystemTime(KILL);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([order1({ lastHeartbeat: iso(-12_000) })]);
    store.applyDigest(lateDigest(-10_000));
    const age = show(store);
    expect(age()).toHaveTextContent(/^10 s ago$/);
    act(() => store.setFeed("polling"));
    // It recovers and beats again; no record write has reached the page yet.
    act(() => vi.advanceTimersByTime(5000));
    expect(age()).toHaveTextContent(/^at most 15 s ago$/);
    expect(age().dataset.kind).toBe("atMost");
    expect(age()).toHaveAttribute("title", "Its last sign of life was at most 15 s ago: its record is rewritten every few beats, and the monitor has not said whether it beats on time.");
    // Back live, the next digest says it again.
    act(() => {
      store.setFeed("live");
      store.applyDigest({ ...lateDigest(4000), asOf: iso(5000) });
    });
    act(() => vi.advanceTimersByTime(1000));
    expect(age()).toHaveTextContent(/^2 s ago$/);
  });

  it("keeps a down instance's last beat from a digest as its age while polling: it beats no more", () => {
    vi.setSystemTime(KILL);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([order1({ status: "UNHEALTHY", statusReason: "disconnected", lastHeartbeat: iso(-12_000) })]);
    store.applyDigest(lateDigest(-10_000));
    const age = show(store);
    act(() => store.setFeed("polling"));
    act(() => vi.advanceTimersByTime(5000));
    expect(age()).toHaveTextContent(/^stopped$/);
    expect(age()).toHaveAttribute("title", "Its last sign of life was 15 s ago, as the monitor recorded it.");
  });
});

// The trial: order-1 killed, its card red UNHEALTHY "disconnected from
// NATS: the process is gone" and still "Heartbeat on time" across polls
// 400 ms apart; pricing-9 stopped, "GONE … stopped" and "on time". The
// status changed, the heartbeat did not, and its text waited for the
// clock's next tick.
describe("an instance's heartbeat when its status changes", () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] }));
  afterEach(() => vi.useRealTimers());

  const order1 = (over: Partial<ServiceInstance> = {}) =>
    instance({ instanceId: "order-1", metadata: { heartbeatMs: 1000 }, lastHeartbeat: iso(-500), ...over }) as ServiceInstance;

  function Card({ store }: { store: InstanceStore }) {
    const snapshot = React.useSyncExternalStore(store.subscribe, store.getSnapshot);
    const entry = snapshot.entries[0];
    return entry ? <ServiceInstanceCard entry={entry} /> : null;
  }

  it.each([
    ["down", (store: InstanceStore) => store.apply({ type: "instanceUpserted", instance: order1({ status: "UNHEALTHY", statusReason: "disconnected" }) })],
    ["gone", (store: InstanceStore) => store.apply({ type: "instanceRemoved", serviceName: "order-service", instanceId: "order-1", reason: "deregistered" })],
  ] as const)("no longer reads on time in the same paint as the card shows it %s", (_, change) => {
    vi.setSystemTime(KILL + 300);
    const store = new InstanceStore({ schedule: (flush) => flush() });
    store.replaceAll([order1()]);
    store.applyDigest({
      type: "digest",
      asOf: iso(0),
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
    expect(screen.getByTestId("heartbeat-age")).toHaveTextContent(/^on time$/);
    // No clock tick: the change alone.
    act(() => change(store));
    expect(screen.getByTestId("instance-card")).not.toHaveAttribute("data-status", "ACTIVE");
    expect(screen.getByTestId("heartbeat-age")).not.toHaveTextContent(/on time/);
    // Its record's write time, 0.8 s before: not known to be its last
    // beat; said as stopped, the bound in the title.
    expect(screen.getByTestId("heartbeat-age")).toHaveTextContent(/^stopped$/);
  });

  // The trial: after a kill, the heartbeat said the instance was down up
  // to 200 ms before the badge did. The badge follows the store's
  // publications (every FLUSH_MS); the heartbeat was read on the clock's
  // tick from the store's newest state, ahead of what the card shows.
  const digestOf = (asOf: string): DigestEvent => ({
    type: "digest",
    asOf,
    version: 1,
    summary: { total: 1, active: 1, unhealthy: 0, standby: 0 },
    lateAfterIntervals: 1.5,
    late: [],
  });

  it.each([
    ["down", (store: InstanceStore) => store.apply({ type: "instanceUpserted", instance: order1({ status: "UNHEALTHY", statusReason: "disconnected" }) })],
    ["gone", (store: InstanceStore) => store.apply({ type: "instanceRemoved", serviceName: "order-service", instanceId: "order-1", reason: "expired" })],
  ] as const)("changes with the badge when the instance is %s just before the clock ticks", (_, change) => {
    vi.setSystemTime(KILL);
    // The store publishes on its own FLUSH_MS timer, as on the page.
    const store = new InstanceStore();
    store.replaceAll([order1()]);
    store.applyDigest(digestOf(iso(0)));
    act(() => vi.advanceTimersByTime(FLUSH_MS));
    renderUi(
      <InstanceStoreContext.Provider value={store}>
        <Card store={store} />
      </InstanceStoreContext.Provider>,
    );
    const alive = () => screen.getByTestId("instance-card").getAttribute("data-status") === "ACTIVE";
    const onTime = () => screen.getByTestId("heartbeat-age").textContent === "on time";
    expect(alive() && onTime()).toBe(true);
    // The clock ticks 1 s after the render: the change lands 100 ms before.
    act(() => vi.advanceTimersByTime(900));
    act(() => change(store));
    const disagreements: string[] = [];
    for (let step = 0; step < 60; step += 1) {
      // A digest in between, still not listing it late (its last beat is recent).
      if (step === 2) act(() => void store.applyDigest(digestOf(iso(940))));
      act(() => vi.advanceTimersByTime(20));
      if (alive() !== onTime()) {
        disagreements.push(`+${(step + 1) * 20} ms: badge ${alive() ? "alive" : "down"}, heartbeat "${screen.getByTestId("heartbeat-age").textContent}"`);
      }
    }
    expect(disagreements).toEqual([]);
    expect(alive()).toBe(false);
  });
});

// The trial: a dead instance's heartbeat read "stopped", then "4 s ago",
// "5 s ago" on its card once the monitor listed its last beat, and its
// page flipped between "stopped" and "5 s ago". Whether the age is a bound
// or the monitor's record of its last beat, the instance is down: its
// heartbeat says "stopped" the whole time, the age only in the title.
describe("a killed instance's heartbeat reads one way", () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "setTimeout", "clearTimeout", "Date"] }));
  afterEach(() => vi.useRealTimers());

  it("says stopped at every reading after the disconnect, the age in its title", () => {
    const { advanceTo } = replayKill(-2300, -2300);
    const texts: string[] = [];
    for (let at = 428; at <= 9000; at += 200) {
      advanceTo(at);
      texts.push(screen.getByTestId("heartbeat-age").textContent ?? "");
    }
    expect(new Set(texts)).toEqual(new Set(["stopped"]));
    // Its last beat, as the monitor recorded it, 9.3 s before: in the title.
    expect(screen.getByTestId("heartbeat-age").querySelector("time")).toHaveAttribute("title", "Its last sign of life was 9 s ago, as the monitor recorded it.");
  });
});
