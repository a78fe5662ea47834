// InstanceStore: records from REST and SSE, removals kept as "gone" for a
// while, metrics attached, changes published in batches.
import type { ServiceInstance } from "@/lib/api/schemas";
import { GONE_KEEP_MS, InstanceStore } from "@/lib/instance-store";
import { instance } from "./render";

function make() {
  let now = 1_000_000;
  const flushes: (() => void)[] = [];
  const store = new InstanceStore({ now: () => now, schedule: (f) => flushes.push(f) });
  return {
    store,
    advance: (ms: number) => (now += ms),
    flush: () => flushes.splice(0).forEach((f) => f()),
    pending: () => flushes.length,
  };
}

const inst = (over: Partial<ServiceInstance>) => instance(over) as ServiceInstance;

describe("InstanceStore", () => {
  it("batches many changes into one publication", () => {
    const { store, flush, pending } = make();
    for (let i = 0; i < 100; i++) store.apply({ type: "instanceUpserted", instance: inst({ instanceId: `o-${i}` }) });
    expect(pending()).toBe(1);
    flush();
    expect(store.getSnapshot().entries).toHaveLength(100);
  });

  it("keeps a removed instance as gone with its reason, then drops it", () => {
    const { store, advance, flush } = make();
    store.replaceAll([inst({ instanceId: "a" }), inst({ instanceId: "b" })]);
    store.apply({ type: "instanceRemoved", serviceName: "order-service", instanceId: "a", reason: "expired" });
    flush();
    const a = store.getSnapshot().entries.find((e) => e.instance.instanceId === "a");
    expect(a?.goneAt).not.toBeNull();
    expect(a?.goneReason).toBe("expired");
    advance(GONE_KEEP_MS - 1);
    store.expire();
    flush();
    expect(store.getSnapshot().entries).toHaveLength(2);
    advance(2);
    store.expire();
    flush();
    expect(store.getSnapshot().entries.map((e) => e.instance.instanceId)).toEqual(["b"]);
  });

  it("marks instances a full read no longer lists as gone, and revives one that returns", () => {
    const { store, flush } = make();
    store.replaceAll([inst({ instanceId: "a" }), inst({ instanceId: "b" })]);
    store.replaceAll([inst({ instanceId: "b" })]);
    flush();
    expect(store.getSnapshot().entries.find((e) => e.instance.instanceId === "a")?.goneReason).toBe("missing");
    store.apply({ type: "instanceUpserted", instance: inst({ instanceId: "a" }) });
    flush();
    expect(store.getSnapshot().entries.every((e) => e.goneAt === null)).toBe(true);
  });

  it("copies the API's status as it is: two records, one leader", () => {
    const { store, flush } = make();
    store.replaceAll([
      inst({ instanceId: "a", status: "UNHEALTHY", statusReason: "deposed" }),
      inst({ instanceId: "b", status: "ACTIVE", epoch: 9 }),
    ]);
    flush();
    expect(store.getSnapshot().entries.filter((e) => e.instance.status === "ACTIVE")).toHaveLength(1);
  });

  const snap = (ts: string, rate: number) => ({
    serviceName: "order-service", instanceId: "order-1", timestamp: ts, uptimeSecs: 1, intervalSecs: 2,
    endpoints: [{ name: "m", requests: 1, successes: 1, errors: 0, requestRate: rate, errorRate: 0, latencyMs: { p50: 1, p90: 1, p99: 2, max: 3, mean: 1 } }],
    queueDepth: 0, inFlight: 0, custom: {},
  });

  it("keeps the newest metrics snapshot", () => {
    const { store, flush } = make();
    store.replaceAll([inst({ instanceId: "order-1", startedAt: "2026-01-01T00:00:00Z" })]);
    store.setMetrics(snap("2026-01-01T00:00:02Z", 5));
    store.setMetrics(snap("2026-01-01T00:00:01Z", 1));
    flush();
    const m = store.getSnapshot().entries[0]!.metrics;
    expect({ rate: m?.rate, p99: m?.p99 }).toEqual({ rate: 5, p99: 2 });
  });

  it("shows no live figures for a killed process, nor the old process's after a restart", () => {
    const { store, flush } = make();
    const figures = () => {
      const m = store.getSnapshot().entries[0]!.metrics;
      return m && { rate: m.rate, p99: m.p99 };
    };
    store.replaceAll([inst({ instanceId: "order-1", startedAt: "2026-01-01T00:00:00Z" })]);
    store.setMetrics(snap("2026-01-01T00:00:10Z", 10));
    flush();
    expect(figures()).toEqual({ rate: 10, p99: 2 });
    // Killed: the API says its connection closed.
    const down = { status: "UNHEALTHY" as const, statusReason: "disconnected", startedAt: "2026-01-01T00:00:00Z" };
    store.apply({ type: "instanceUpserted", instance: inst({ instanceId: "order-1", ...down }) });
    flush();
    expect(figures()).toBeNull();
    // Restarted as a STANDBY under the same id: a new process, which has
    // published nothing yet; a late snapshot of the old one changes nothing.
    const restarted = { status: "STANDBY" as const, statusReason: null, startedAt: "2026-01-01T00:00:20Z", epoch: undefined };
    store.apply({ type: "instanceUpserted", instance: inst({ instanceId: "order-1", ...restarted }) });
    store.setMetrics(snap("2026-01-01T00:00:12Z", 10));
    flush();
    expect(figures()).toBeNull();
    // Its own first snapshot is shown.
    store.setMetrics(snap("2026-01-01T00:00:22Z", 0));
    flush();
    expect(figures()).toEqual({ rate: 0, p99: null });
  });

  it("takes heartbeat ages from the digest: on time within 1.5 intervals, late ones exactly", () => {
    const { store } = make();
    const beat = "2026-01-01T00:00:00.000Z";
    store.replaceAll([
      inst({ instanceId: "a", lastHeartbeat: beat, metadata: { heartbeatMs: 1000 } }),
      inst({ instanceId: "b", lastHeartbeat: beat, metadata: { heartbeatMs: 1000 } }),
      inst({ instanceId: "c", lastHeartbeat: beat, metadata: {} }),
    ]);
    const agrees = store.applyDigest({
      type: "digest",
      asOf: "2026-01-01T00:00:10.000Z",
      version: 7,
      summary: { total: 3, active: 3, unhealthy: 0, standby: 0 },
      lateAfterIntervals: 1.5,
      late: [{ serviceName: "order-service", instanceId: "b", lastBeat: "2026-01-01T00:00:04.000Z" }],
    });
    expect(agrees).toBe(true);
    // On time: at least as fresh as asOf minus 1.5 s, and shown no fresher.
    expect(store.heartbeat("order-service", "a")).toBe("2026-01-01T00:00:08.500Z");
    expect(store.heartbeat("order-service", "b")).toBe("2026-01-01T00:00:04.000Z");
    // No beat interval announced: the record's own time stays.
    expect(store.heartbeat("order-service", "c")).toBe(beat);
    // A REST read with the older record time does not move it back.
    store.replaceAll([inst({ instanceId: "a", lastHeartbeat: beat, metadata: { heartbeatMs: 1000 } })]);
    expect(store.heartbeat("order-service", "a")).toBe("2026-01-01T00:00:08.500Z");
  });

  it("says when its count disagrees with the digest's", () => {
    const { store } = make();
    store.replaceAll([inst({ instanceId: "a" }), inst({ instanceId: "b" })]);
    store.apply({ type: "instanceRemoved", serviceName: "order-service", instanceId: "b", reason: "expired" });
    const digest = (total: number) => ({
      type: "digest" as const,
      asOf: new Date().toISOString(),
      version: 1,
      summary: { total, active: total, unhealthy: 0, standby: 0 },
      lateAfterIntervals: 1.5,
      late: [],
    });
    expect(store.applyDigest(digest(1))).toBe(true);
    expect(store.applyDigest(digest(2))).toBe(false);
  });
});
