// The dashboard's view of the instances: the API's records as they arrive
// (REST reads and SSE events), each instance's latest metrics snapshot,
// and the instances that left — kept as "gone" for GONE_KEEP_MS so a
// disappearing card is seen leaving rather than silently dropped.
//
// Status and leadership are the API's truth, copied as they are; nothing
// here infers who leads. Changes are published to React at most every
// FLUSH_MS, so a thousand heartbeats a second cost a few renders, not a
// thousand.
import type { InstanceEvent, MetricsSnapshot, ServiceInstance } from "@/lib/api/schemas";

export const GONE_KEEP_MS = 60_000;
export const FLUSH_MS = 200;

/** Why an instance left: the API's removal reason, or "missing" when a full read no longer lists it. */
export type GoneReason = "deregistered" | "expired" | "deleted" | "vanished" | "missing";

const GONE_REASONS: readonly string[] = ["deregistered", "expired", "deleted", "vanished"];

export interface InstanceEntry {
  instance: ServiceInstance;
  metrics: MetricsSnapshot | null;
  /** When it left (ms since epoch), or null while registered. */
  goneAt: number | null;
  goneReason: GoneReason | null;
}

export interface StoreSnapshot {
  /** Sorted by service, then instance id. */
  entries: InstanceEntry[];
  loaded: boolean;
}

export interface StoreOptions {
  now?: () => number;
  /** Called to publish changes; defaults to a FLUSH_MS timer. */
  schedule?: (flush: () => void) => void;
}

const key = (service: string, id: string) => `${service}\u0000${id}`;

export class InstanceStore {
  private map = new Map<string, InstanceEntry>();
  private snapshot: StoreSnapshot = { entries: [], loaded: false };
  private listeners = new Set<() => void>();
  private pending = false;
  private loaded = false;
  private readonly now: () => number;
  private readonly schedule: (flush: () => void) => void;

  constructor(opts: StoreOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.schedule = opts.schedule ?? ((flush) => setTimeout(flush, FLUSH_MS));
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): StoreSnapshot => this.snapshot;

  /** A full REST read: upserts every listed instance; unlisted ones leave. */
  replaceAll(instances: ServiceInstance[], metrics?: { serviceName: string; instanceId: string; snapshot?: MetricsSnapshot | null }[]): void {
    const seen = new Set<string>();
    for (const i of instances) {
      const k = key(i.serviceName, i.instanceId);
      seen.add(k);
      this.upsert(i);
    }
    const now = this.now();
    for (const [k, e] of this.map) {
      if (!seen.has(k) && e.goneAt === null) {
        this.map.set(k, { ...e, goneAt: now, goneReason: "missing" });
      }
    }
    for (const m of metrics ?? []) {
      if (m.snapshot) this.setMetrics(m.snapshot);
    }
    this.loaded = true;
    this.changed();
  }

  apply(event: InstanceEvent): void {
    if (event.type === "instanceUpserted") {
      this.upsert(event.instance);
    } else {
      const k = key(event.serviceName, event.instanceId);
      const e = this.map.get(k);
      if (e && e.goneAt === null) {
        const reason = (GONE_REASONS.includes(event.reason ?? "") ? event.reason : "missing") as GoneReason;
        this.map.set(k, { ...e, goneAt: this.now(), goneReason: reason });
      }
    }
    this.changed();
  }

  setMetrics(snapshot: MetricsSnapshot): void {
    const k = key(snapshot.serviceName, snapshot.instanceId);
    const e = this.map.get(k);
    if (!e) return;
    if (e.metrics && e.metrics.timestamp > snapshot.timestamp) return;
    this.map.set(k, { ...e, metrics: snapshot });
    this.changed();
  }

  /** Drops gone entries older than GONE_KEEP_MS. */
  expire(): void {
    const cutoff = this.now() - GONE_KEEP_MS;
    let removed = false;
    for (const [k, e] of this.map) {
      if (e.goneAt !== null && e.goneAt < cutoff) {
        this.map.delete(k);
        removed = true;
      }
    }
    if (removed) this.changed();
  }

  /** Publishes pending changes now (tests; the timer does it otherwise). */
  flush = (): void => {
    this.pending = false;
    const entries = [...this.map.values()].sort(
      (a, b) =>
        a.instance.serviceName.localeCompare(b.instance.serviceName) ||
        a.instance.instanceId.localeCompare(b.instance.instanceId),
    );
    this.snapshot = { entries, loaded: this.loaded };
    this.listeners.forEach((l) => l());
  };

  private upsert(instance: ServiceInstance) {
    const k = key(instance.serviceName, instance.instanceId);
    const e = this.map.get(k);
    if (e && e.goneAt === null && e.instance === instance) return;
    this.map.set(k, { instance, metrics: e?.metrics ?? null, goneAt: null, goneReason: null });
  }

  private changed() {
    if (this.pending) return;
    this.pending = true;
    this.schedule(this.flush);
  }
}

/** Calls per second over all endpoints and the highest p99, from a snapshot. */
export function headline(snapshot: MetricsSnapshot | null): { rate: number; p99: number | null } | null {
  if (!snapshot) return null;
  let rate = 0;
  let p99: number | null = null;
  for (const e of snapshot.endpoints) {
    rate += e.requestRate;
    // Percentiles cover the interval; an endpoint idle in it has none.
    if (e.requestRate > 0) p99 = Math.max(p99 ?? 0, e.latencyMs.p99);
  }
  return { rate, p99 };
}
