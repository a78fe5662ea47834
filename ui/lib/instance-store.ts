// The dashboard's view of the instances: the API's records as they arrive
// (REST reads and SSE events), each instance's latest metrics snapshot,
// and the instances that left — kept as "gone" for GONE_KEEP_MS so a
// disappearing card is seen leaving rather than silently dropped.
//
// Status and leadership are the API's truth, copied as they are; nothing
// here infers who leads. Changes are published to React at most every
// FLUSH_MS, so a thousand heartbeats a second cost a few renders, not a
// thousand.
//
// Heartbeat ages: the API sends no event for a record refresh that changes
// nothing but `lastHeartbeat`; its `digest` (every 2 s) says instead that
// every instance not listed as late had a sign of life within 1.5 of its
// beat intervals, and gives the late ones' last beat. An on-time instance's
// heartbeat is then taken as `asOf` minus those 1.5 intervals — the oldest
// it can be, so the age is an upper bound, never fresher than true. Such an
// instance is shown "on time" (`heartbeatOnTime`), the bound only in a
// title: read as an age, it made every healthy 1 s beat look 3–4 s late.
// A late instance shows its age: the digest's record of its last beat.
//
// Three clocks meet here: the record's `lastHeartbeat` is the instance's
// (the time of its last record write, every few beats), the digest's times
// are the monitor's, and the page runs on the browser's. Ages are measured
// on the monitor's clock (`heartbeatAge`): the browser's, corrected by the
// offset the digests show, so a browser clock behind the monitor's cannot
// make an age fresher.
//
// An instance the API reports down (`disconnected`, `unresponsive`) beats
// no more. What arrives after that — a digest's on-time bound, the record's
// write time in the event that says it went down, the digest's exact last
// beat — describes beats before it went down, seen less pessimistically
// than the bound held so far. Its heartbeat takes them (the digest's last
// beat is the truth it ends on), but its age must not read younger than it
// was shown, as if it had beaten again (the trial: "2 s ago", then "1 s
// ago" after `aegis chaos kill`): the age shown when the heartbeat moved
// forward is held until the true age reaches it, and grows from there.
//
// Of a down instance, only the digest's record of its last beat (`late`)
// says when that was. Until one lists it, its heartbeat is a bound — the
// last on-time digest's, or a record write, each a sign of life not known
// to be its last — and so is a held age above the true one: such an age is
// shown as at most that old (`atMost`). The trial read "Heartbeat 4 s ago"
// 150 ms after a kill, as if it had gone silent 4 s before it died; it had
// beaten 0.2 s before. No tighter bound is known then: the connection's
// close (its `statusSince`) is no sign of life — it comes after the death,
// by as long as the server takes to notice (a frozen process is closed
// only when its pings time out), and the last beat comes before it.
// Either way its heartbeat reads "stopped", the age only in its title
// (components/dashboard/heartbeat-age): read as text, it flipped from
// "stopped" to "5 s ago" when a digest listed its last beat.
//
// While the feed is stalled or reconnecting (no stream and no REST read
// answering), nothing says whether an instance still beats: counting its
// age on would read as every instance going silent. Its heartbeat is then
// shown as unknown, with how long the page has had no news (a digest or a
// REST read), until news comes again. A down instance keeps its age: the
// last news said it stopped beating.
//
// The same holds for an instance that is not down: with no digest to say
// it beats on time — the feed polls (after a drop, or behind a proxy that
// passes no SSE), or it announces no beat interval — its heartbeat is its
// record's write time, every few beats, or an old digest's bound. Read as
// its age, every healthy 1 s beat looked 2–9 s late for as long as the page
// polled. It is shown as at most that old too, never as late. So is a
// late instance's last beat from a digest before the feed left live: it
// was the truth when it came, but no digest renews it now, and the
// instance may have recovered and beaten since. Its last beat is that one
// or a later one, so the time since that beat is still an upper bound
// ("at least" would be false the moment it beats again). A down one keeps
// its exact age: the last news said it stopped beating.
//
// Whether an instance is down or gone, for its heartbeat, is read from
// what the store last published, the entries the cards and badges show:
// the heartbeat repaints on the page's one-second clock, and read from the
// newest event it said "down" beside an ACTIVE badge until the next
// publication, up to FLUSH_MS later (seen after `aegis chaos kill`).
//
// Before the first digest the page has only the records' write times,
// every few beats: read as ages, a healthy 1 s beat looked 2–6 s late for
// the first 2 s of every page. An instance that announces its beat
// interval and is not down is shown as being checked until the first
// digest says (or, with no stream to bring one, until the feed polls);
// the same after the feed dropped or stalled and came back.
//
// A card's figures (calls/s, p99) come from one of two feeds. The
// dashboard's is the API's `figures` (`applyFigures`): what cards show,
// sent only when it changes, with a bound on the latest snapshot's time
// instead of every snapshot's: as of each message's `asOf`, an instance not
// `late` had a snapshot within its late bound (`lateAfterMs`), so its
// latest snapshot is taken as `asOf` less that bound — the oldest it can
// be, so figures never read fresher than true — and a late one's time is
// exact. An instance's page reads full snapshots (`setMetrics`), whose
// times are exact. Each message says how things stood at its `asOf`: an
// instance's figures are replaced only by a message as new, whichever of
// the stream and a REST read comes first.
import type { FeedState } from "@/lib/api/live-feed";
import type { DigestEvent, FiguresView, InstanceEvent, MetricsSnapshot, ServiceInstance } from "@/lib/api/schemas";
import { drillDelay } from "@/lib/drill";

export const GONE_KEEP_MS = 60_000;
export const FLUSH_MS = 200;

/** Why an instance left: the API's removal reason, or "missing" when a full read no longer lists it. */
export type GoneReason = "deregistered" | "expired" | "deleted" | "vanished" | "missing";

const GONE_REASONS: readonly string[] = ["deregistered", "expired", "deleted", "vanished"];

/**
 * What a card shows of an instance's latest snapshot (`figuresOf` a full
 * snapshot, or the API's `figures`).
 */
export interface CardFigures {
  serviceName: string;
  instanceId: string;
  /** The latest snapshot's time when `exact`; else a time at or before it (`InstanceStore.figuresTime`). */
  timestamp: string;
  intervalSecs: number;
  /** Calls per second over all endpoints. */
  rate: number;
  /** The highest p99 (ms) of the endpoints called in the interval; null when none was. */
  p99: number | null;
  /** `timestamp` is the latest snapshot's own: a full snapshot, or an instance the API says is late. */
  exact: boolean;
  /** The `asOf` (ms, monitor's clock) of the message that said this; -Infinity for a full snapshot. */
  asOf: number;
}

/** A card's figures of a full snapshot. */
export function figuresOf(s: MetricsSnapshot): CardFigures {
  const h = headline(s)!;
  return { serviceName: s.serviceName, instanceId: s.instanceId, timestamp: s.timestamp, intervalSecs: s.intervalSecs, rate: h.rate, p99: h.p99, exact: true, asOf: -Infinity };
}

export interface InstanceEntry {
  instance: ServiceInstance;
  /** Its live figures: null while its process is down, or none came from its current one. */
  metrics: CardFigures | null;
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

/** Whether the API says the instance's process is gone or hung: it beats no more. */
export function processDown(i: ServiceInstance): boolean {
  return (
    i.statusReason === "disconnected" ||
    i.statusReason === "unresponsive" ||
    i.statusReason === "unresponsive_expired"
  );
}

/**
 * How long a digest's "on time" holds (ms, on the monitor's clock): digests
 * come every 2 s, so one older than this means they stopped coming (the feed
 * is called stalled a little before: `STALL_AFTER_MS`), and the bound is
 * shown as an age again.
 */
export const ON_TIME_FOR_MS = 7000;

/** What a heartbeat reads as now (`InstanceStore.heartbeatView`). */
export type HeartbeatView =
  /** The last digest did not list it late: its age is only a bound. */
  | { kind: "onTime"; iso: string; age: number }
  /** Its age (ms): the monitor's record of its last beat. `down` when the API says it is. */
  | { kind: "age"; iso: string; age: number; down: boolean }
  /**
   * Its age (ms) only a bound (a record write, or a digest's bound): the
   * monitor has not said its last beat. `down` when the API says it is.
   */
  | { kind: "atMost"; iso: string; age: number; down: boolean }
  /** The page has had no news for `since` ms: its heartbeat is not known now. */
  | { kind: "noNews"; iso: string; since: number }
  /** No digest yet: only its record's write time is known, not whether it beats on time. */
  | { kind: "checking"; iso: string };

/** How many digests' clock offsets are kept; the largest (the least delayed) is used. */
const CLOCK_SAMPLES = 8;

/** What a card shows of a record, apart from the heartbeat age. */
function visible(i: ServiceInstance): string {
  const drill = drillDelay(i);
  return [i.status, i.reportedStatus, i.statusReason, i.statusDetail, i.statusSince, i.epoch, i.version, i.stickyActiveGroup, i.startedAt, drill?.delayMs, drill?.since].join("|");
}

/**
 * `snapshot` if it came from the instance's current process (taken after
 * it last started), else null: a down instance's last-known figures.
 */
export function ownSnapshot(i: ServiceInstance, snapshot: MetricsSnapshot | null): MetricsSnapshot | null {
  if (!snapshot) return null;
  const started = Date.parse(i.startedAt ?? "");
  return Date.parse(snapshot.timestamp) < started ? null : snapshot;
}

/** A card's figures at the precision it shows them. */
function shown(f: CardFigures | null): string {
  return f ? `${f.rate.toFixed(1)}|${f.p99?.toFixed(2) ?? "-"}` : "";
}

/**
 * How long after the newest `figures` message an instance it vouched for
 * may go on showing live figures, past that message's bound: the messages
 * come every second, and one may come a little late.
 */
const VOUCH_ROOM_MS = 2000;

/** The API's default late bound, until a message says it. */
const DEFAULT_LATE_AFTER = { intervals: 1.5, minMs: 2500 };

export class InstanceStore {
  private map = new Map<string, InstanceEntry>();
  /** The newest heartbeat and snapshot of each instance. A heartbeat alone
   *  changes nothing a card shows but its age, which the age component
   *  reads from here on the clock's tick: a thousand heartbeats a second
   *  then cost no card renders. */
  private heartbeats = new Map<string, number>();
  /** Of instances that are down and whose heartbeat moved forward: the
   *  age shown when it did (ms), held until the true age reaches it. */
  private heldAges = new Map<string, number>();
  /** Instances whose heartbeat is a digest's record of their last beat (`late`), not a bound. */
  private exact = new Set<string>();
  /** Of instances the last digest did not list late: that digest's `asOf`. */
  private onTime = new Map<string, number>();
  /** The monitor's clock less the browser's, as the last digests showed it (ms). */
  private clockOffsets: number[] = [];
  private latest = new Map<string, MetricsSnapshot>();
  /** The newest figures of each instance, registered or not yet (a message may come before its record). */
  private figures = new Map<string, CardFigures>();
  /** The newest `asOf` of the API's figures (ms, monitor's clock): it vouches for every instance not late. */
  private vouchedAt: number | null = null;
  private lateAfter = DEFAULT_LATE_AFTER;
  private metricsListeners = new Map<string, Set<() => void>>();
  private snapshot: StoreSnapshot = { entries: [], loaded: false };
  /** The entries of `snapshot` (what the cards show) by key: heartbeats are read against these. */
  private published = new Map<string, InstanceEntry>();
  private listeners = new Set<() => void>();
  private pending = false;
  private loaded = false;
  private feed: FeedState = "live";
  /** When (browser clock) the last digest or REST read came. */
  private newsAt: number | null = null;
  /** Whether a digest has come. */
  private digested = false;
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
      seen.add(key(i.serviceName, i.instanceId));
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
    this.newsAt = now;
    this.loaded = true;
    this.changed();
  }

  apply(event: InstanceEvent): void {
    if (event.type === "instanceUpserted") {
      if (!this.upsert(event.instance)) return;
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

  /** A full snapshot (an instance's page): kept as it is, and as its card's figures. */
  setMetrics(snapshot: MetricsSnapshot): void {
    const k = key(snapshot.serviceName, snapshot.instanceId);
    const e = this.map.get(k);
    if (!e) return;
    const previous = this.latest.get(k);
    if (previous && previous.timestamp > snapshot.timestamp) return;
    this.latest.set(k, snapshot);
    this.setFigures(k, figuresOf(snapshot));
  }

  /**
   * The API's figures (the dashboard): a REST read or a `figures` event.
   * Each instance listed replaces what is held unless that is newer; a
   * `full` one also drops the figures of instances it does not list.
   */
  applyFigures(view: FiguresView): void {
    const asOf = Date.parse(view.asOf);
    if (Number.isNaN(asOf)) return;
    this.lateAfter = { intervals: view.lateAfterIntervals, minMs: view.lateAfterMinSecs * 1000 };
    if (this.vouchedAt === null || asOf > this.vouchedAt) this.vouchedAt = asOf;
    const listed = new Set<string>();
    for (const f of view.instances) {
      const k = key(f.serviceName, f.instanceId);
      listed.add(k);
      this.setFigures(k, {
        serviceName: f.serviceName,
        instanceId: f.instanceId,
        timestamp: f.timestamp,
        intervalSecs: f.intervalSecs,
        rate: f.callsPerSec,
        p99: f.p99Ms,
        exact: f.late,
        asOf,
      });
    }
    const dropped = view.forgotten.map((f) => key(f.serviceName, f.instanceId));
    if (view.full) dropped.push(...[...this.figures.keys()].filter((k) => !listed.has(k)));
    for (const k of dropped) {
      const held = this.figures.get(k);
      if (held && held.asOf <= asOf) {
        this.figures.delete(k);
        this.refreshCard(k);
      }
    }
    // The bound moved on: a (re)started instance whose first figures read
    // the same as its old process's last is known to show its own now.
    for (const [k, e] of this.map) {
      if (e.metrics === null && e.goneAt === null && this.figures.has(k)) this.refreshCard(k);
    }
  }

  /** Keeps `f` as an instance's newest figures unless a newer message said otherwise. */
  private setFigures(k: string, f: CardFigures): void {
    const held = this.figures.get(k);
    if (held && held.asOf > f.asOf) return;
    this.figures.set(k, f);
    this.metricsListeners.get(k)?.forEach((l) => l());
    this.refreshCard(k);
  }

  /** Gives a card the figures it should show; re-renders it only when they would read differently. */
  private refreshCard(k: string): void {
    const e = this.map.get(k);
    if (!e) return;
    const figures = this.liveFigures(e.instance, this.figures.get(k) ?? null);
    if (shown(e.metrics) !== shown(figures) || (e.metrics === null) !== (figures === null)) {
      this.map.set(k, { ...e, metrics: figures });
      this.changed();
    }
  }

  /** How long without a snapshot before the API calls an instance publishing every `intervalSecs` late (ms). */
  lateAfterMs(intervalSecs: number): number {
    return Math.max(Math.max(intervalSecs, 0) * 1000 * this.lateAfter.intervals, this.lateAfter.minMs);
  }

  /**
   * When the latest snapshot behind `f` was taken, at the earliest (ms): its
   * own time when exact, else the later of the time sent and the newest
   * `asOf` less the late bound.
   */
  figuresTime(f: CardFigures): number {
    const sent = Date.parse(f.timestamp);
    if (f.exact || this.vouchedAt === null) return sent;
    const bound = this.vouchedAt - this.lateAfterMs(f.intervalSecs);
    return Number.isNaN(sent) ? bound : Math.max(sent, bound);
  }

  /**
   * Whether `f` is too old to show as live at `now` (monitor's clock).
   * Its time is the earliest its latest snapshot can be (`figuresTime`).
   * When exact, old past `staleAfterMs`. When the API's messages vouch for
   * it (not late), that time is only their bound, `lateAfterMs` before the
   * newest `asOf`, and a healthy instance's reads that old plus up to a
   * second between messages: it is old only once no message has vouched
   * for it for VOUCH_ROOM_MS more (the stream stopped; were it late, a
   * message would say so, exactly). A 1 s instance's bound of 3 s read
   * every healthy card as old for half of each second.
   */
  figuresStale(f: CardFigures, now: number): boolean {
    const bound = staleAfterMs(f.intervalSecs);
    const vouched = !f.exact && this.vouchedAt !== null;
    return figuresStale(f, now, this.figuresTime(f), vouched ? Math.max(bound, this.lateAfterMs(f.intervalSecs) + VOUCH_ROOM_MS) : bound);
  }

  /**
   * Whether `f` may show as `i`'s live figures (as in the API's
   * `/api/metrics`): not when its process is gone (connection closed) or
   * hung (beats stopped), which serves nothing, nor when its snapshot was
   * taken before the instance last started (the same id restarted: the old
   * process's figures).
   */
  private liveFigures(i: ServiceInstance, f: CardFigures | null): CardFigures | null {
    return processDown(i) ? null : this.ownFigures(i, f);
  }

  /** `f` if it came from the instance's current process (taken after it last started), else null. */
  ownFigures(i: ServiceInstance, f: CardFigures | null): CardFigures | null {
    if (!f) return null;
    const started = Date.parse(i.startedAt ?? "");
    return this.figuresTime(f) < started ? null : f;
  }

  /** The newest figures of an instance (followed with `subscribeMetrics`). */
  latestFigures(service: string, id: string): CardFigures | null {
    return this.figures.get(key(service, id)) ?? null;
  }

  /**
   * Applies a digest: heartbeats of on-time instances move to the oldest
   * time the digest allows, late ones to their last beat. Returns whether
   * this page lists as many instances as the digest counts.
   */
  applyDigest(digest: DigestEvent): boolean {
    this.newsAt = this.now();
    this.digested = true;
    const asOf = Date.parse(digest.asOf);
    if (!Number.isNaN(asOf)) {
      // The digest left the monitor at `asOf` and arrived now: its delay
      // makes the offset smaller than the truth, so the largest of the
      // last few (the least delayed) is the one used.
      this.clockOffsets = [...this.clockOffsets, asOf - this.now()].slice(-CLOCK_SAMPLES);
    }
    const late = new Map(digest.late.map((l) => [key(l.serviceName, l.instanceId), Date.parse(l.lastBeat)]));
    let listed = 0;
    for (const [k, e] of this.map) {
      if (e.goneAt !== null) continue;
      listed += 1;
      const down = processDown(e.instance);
      const known = this.heartbeats.get(k);
      const lastBeat = late.get(k);
      this.onTime.delete(k);
      if (lastBeat !== undefined && !Number.isNaN(lastBeat)) {
        // The monitor's own record of its last sign of life: the truth.
        this.setHeartbeat(k, lastBeat, down, true);
        continue;
      }
      const interval = Number(e.instance.metadata?.heartbeatMs);
      if (!(interval > 0) || Number.isNaN(asOf)) continue;
      const bound = asOf - digest.lateAfterIntervals * interval;
      if (known === undefined || bound > known) this.setHeartbeat(k, bound, down);
      // Kept for a down one too: `heartbeatOnTime` says it is not on time
      // once the card shows it down, and not before (see `heartbeatView`).
      this.onTime.set(k, asOf);
    }
    return listed === digest.summary.total;
  }

  /** The newest heartbeat of an instance (RFC 3339) on the monitor's clock, or undefined. */
  heartbeat(service: string, id: string): string | undefined {
    const at = this.heartbeats.get(key(service, id));
    return at === undefined ? undefined : new Date(at).toISOString();
  }

  /**
   * Whether the last digest, recent enough, did not list the instance late
   * and the API does not say its process is down: it beats on time, and its
   * `heartbeatAge` is only a bound.
   */
  heartbeatOnTime(service: string, id: string): boolean {
    const k = key(service, id);
    const asOf = this.onTime.get(k);
    const e = this.published.get(k);
    if (asOf === undefined || !e || e.goneAt !== null || processDown(e.instance)) return false;
    return this.monitorNow() - asOf < ON_TIME_FOR_MS;
  }

  /** The live feed's state: while it is `stalled` or `reconnecting`, heartbeats are not known. */
  setFeed(state: FeedState): void {
    this.feed = state;
    // Back from a drop the last digest is old news: as at a page load,
    // checking until the next one, not its bound read as an age. While
    // polling no digest comes: its "on time" no longer holds either, nor
    // its record of a late instance's last beat, which no digest renews
    // now: one not down may beat again (see the top). A down one keeps it.
    if (state !== "live" && state !== "connecting") {
      this.digested = false;
      this.onTime.clear();
      for (const k of this.exact) {
        const e = this.map.get(k);
        if (e && e.goneAt === null && !processDown(e.instance)) this.exact.delete(k);
      }
    }
  }

  /**
   * What an instance's heartbeat reads as now: on time, an age, or not
   * known while the page has no news (see the top); undefined when none is
   * known.
   */
  heartbeatView(service: string, id: string): HeartbeatView | undefined {
    const k = key(service, id);
    const at = this.heartbeats.get(k);
    // Down or gone as the card shows it, not as the newest event says: the
    // badge changes only when the store publishes (every FLUSH_MS), and a
    // clock tick in between made the heartbeat say "down" beside an
    // ACTIVE badge for up to 200 ms after a kill.
    const e = this.published.get(k);
    if (at === undefined || !e) return undefined;
    const iso = new Date(at).toISOString();
    const down = e.goneAt !== null || processDown(e.instance);
    if (!down && (this.feed === "stalled" || this.feed === "reconnecting") && this.newsAt !== null) {
      return { kind: "noNews", iso, since: this.now() - this.newsAt };
    }
    const interval = Number(e.instance.metadata?.heartbeatMs);
    if (!down && !this.digested && interval > 0 && (this.feed === "connecting" || this.feed === "live")) return { kind: "checking", iso };
    const age = this.heartbeatAge(service, id)!;
    if (this.heartbeatOnTime(service, id)) return { kind: "onTime", iso, age };
    // An age is exact only from the monitor's record of its last beat, and
    // not while held above it (see the top); a record write is a bound.
    if (!this.exact.has(k) || age > this.monitorNow() - at) return { kind: "atMost", iso, age, down };
    return { kind: "age", iso, age, down };
  }

  /** Now on the monitor's clock (ms since the epoch): the browser's, corrected by the digests' offset. */
  monitorNow(): number {
    return this.now() + (this.clockOffsets.length ? Math.max(...this.clockOffsets) : 0);
  }

  /**
   * Milliseconds since an instance's heartbeat, on the monitor's clock, and
   * never less than a down instance's age was already shown (see the top);
   * undefined when none is known.
   */
  heartbeatAge(service: string, id: string): number | undefined {
    const k = key(service, id);
    const at = this.heartbeats.get(k);
    if (at === undefined) return undefined;
    return Math.max(this.monitorNow() - at, this.heldAges.get(k) ?? -Infinity);
  }

  /**
   * Moves an instance's heartbeat, `exact` when it is the monitor's record
   * of its last beat rather than a bound; a down one's age holds where it
   * was shown when it moves forward.
   */
  private setHeartbeat(k: string, at: number, down: boolean, exact = false): void {
    const known = this.heartbeats.get(k);
    if (!down) this.heldAges.delete(k);
    else if (known !== undefined && at > known) this.heldAges.set(k, Math.max(this.monitorNow() - known, this.heldAges.get(k) ?? -Infinity));
    this.heartbeats.set(k, at);
    if (exact) this.exact.add(k);
    else this.exact.delete(k);
  }

  /** The newest full snapshot of an instance (an instance's page), and a way to follow it and its figures. */
  latestMetrics(service: string, id: string): MetricsSnapshot | null {
    return this.latest.get(key(service, id)) ?? null;
  }

  subscribeMetrics(service: string, id: string, listener: () => void): () => void {
    const k = key(service, id);
    const set = this.metricsListeners.get(k) ?? new Set();
    set.add(listener);
    this.metricsListeners.set(k, set);
    return () => set.delete(listener);
  }

  /** Drops gone entries older than GONE_KEEP_MS. */
  expire(): void {
    const cutoff = this.now() - GONE_KEEP_MS;
    let removed = false;
    for (const [k, e] of this.map) {
      if (e.goneAt !== null && e.goneAt < cutoff) {
        this.map.delete(k);
        this.heartbeats.delete(k);
        this.heldAges.delete(k);
        this.exact.delete(k);
        this.onTime.delete(k);
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
    this.published = new Map(entries.map((e) => [key(e.instance.serviceName, e.instance.instanceId), e]));
    this.listeners.forEach((l) => l());
  };

  /** Upserts; true when a card would show something new. */
  private upsert(instance: ServiceInstance): boolean {
    const k = key(instance.serviceName, instance.instanceId);
    // A record write is a sign of life, but a digest may know a newer one.
    const known = this.heartbeats.get(k);
    const written = Date.parse(instance.lastHeartbeat);
    const down = processDown(instance);
    if (!down) this.heldAges.delete(k);
    if (!Number.isNaN(written) && (known === undefined || written > known)) this.setHeartbeat(k, written, down);
    const e = this.map.get(k);
    if (e && e.goneAt === null && visible(e.instance) === visible(instance)) return false;
    // Down or restarted: the figures kept so far are no longer live. The
    // newest snapshot is read, not the card's: a restarted process's first
    // one may have come while the card still showed the dead one (and kept
    // no figures); it is its live figures now.
    this.map.set(k, { instance, metrics: this.liveFigures(instance, this.figures.get(k) ?? null), goneAt: null, goneReason: null });
    return true;
  }

  private changed() {
    if (this.pending) return;
    this.pending = true;
    this.schedule(this.flush);
  }
}

/**
 * How old a snapshot may be before its figures are shown as old (ms): two
 * of its intervals — one due, one missed — and a second of room for the
 * instance's clock against the monitor's (nothing measures that skew; it is
 * nothing where they share a host or NTP), at least 2 s. With the
 * showcase's 1 s interval, 3 s: a NATS node lost under the metrics stream
 * stops snapshots while the instance still beats, and its card went on
 * showing calls/s for 5 s, max(3 intervals, 5 s), the bound before.
 */
export function staleAfterMs(intervalSecs: number): number {
  return Math.max(2 * Math.max(intervalSecs, 0) * 1000 + 1000, 2000);
}

/**
 * Whether a snapshot is too old to show as live figures at `now`: older
 * than `bound` (by default `staleAfterMs`). `now` is on the monitor's
 * clock (`InstanceStore.monitorNow`); the snapshot's time (`at`, by
 * default its own) is the instance's.
 */
export function figuresStale(
  snapshot: { timestamp: string; intervalSecs: number },
  now: number,
  at = Date.parse(snapshot.timestamp),
  bound = staleAfterMs(snapshot.intervalSecs),
): boolean {
  if (Number.isNaN(at)) return false;
  return now - at >= bound;
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
