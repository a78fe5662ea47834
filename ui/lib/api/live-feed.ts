// The live feed: one `EventSource` on `/api/stream`, and what to do when it
// drops. While the stream is down the page re-reads the REST endpoints
// every 5 s (polling) and reconnects with exponential backoff; a `lagged`
// event (this client, or the monitor's own feed, fell behind) and every
// reconnect re-read them too, so nothing missed while away stays missed:
// such a re-read that fails is tried again every 5 s until one succeeds. An `expired` event (the session
// lapsed or was revoked) stops the feed and says so, instead of a retry.
// A `digest` (every 2 s with topic `instance`) goes to `onDigest`; when the
// page's count disagrees with it twice in a row, the page re-reads too.
// A stream with topic `instance` that brings nothing for three digest
// intervals is stalled — a frozen monitor, a proxy that buffers, a path
// that drops without closing: the socket stays open and no error comes —
// and is treated as dropped: closed, REST polled, reconnected.
//
// While the monitor does not answer at all (a REST read failed), the page
// asks every second instead of every 5 s, and its first answer ends the
// wait: that read has re-read the lists, and the stream is reconnected at
// once, whatever the backoff had grown to during the outage. From the
// operator's trial: `aegis up` restarted, the monitor down for 16 s — the
// page showed every instance GONE for 4.5 s after the monitor answered
// (the next 5 s poll had not come), then "Polling every 5 s" for 12 s more
// (the reconnect had backed off to 16 s).
//
// A reconnect of the stream that fails while the reads answer asks again
// at once instead of at the next 5 s poll: a monitor that is shutting down
// answers the read right after its stream ends and nothing after, and the
// page went on saying "Polling every 5 s" for up to 5 s while its NATS
// notice said "The monitor is not answering". A read that answers then
// (the stream is refused, the reads are not: a proxy that passes no SSE)
// is enough: further failed reconnects leave the polling to its pace until
// the stream is live again or a read fails.
import {
  DefinitionEvent,
  DigestEvent,
  FiguresEvent,
  type FiguresEvent as FiguresEventT,
  type DigestEvent as DigestEventT,
  InstanceEvent,
  MetricsEvent,
  type DefinitionEvent as DefinitionEventT,
  type InstanceEvent as InstanceEventT,
  type MetricsEvent as MetricsEventT,
} from "./schemas";

/**
 * - `connecting`: the first connection is being made.
 * - `live`: the stream is open; changes arrive as they happen.
 * - `stalled`: the stream brought nothing for `STALL_AFTER_MS` although
 *   digests are due; it is being reconnected and no REST read has answered.
 * - `reconnecting`: the stream dropped and the last REST read failed too;
 *   the monitor is asked again every `PROBE_INTERVAL_MS`.
 * - `polling`: the stream dropped; REST reads every 5 s keep the page current.
 */
export type FeedState = "connecting" | "live" | "stalled" | "reconnecting" | "polling";

export type Topic = "instance" | "definition" | "metrics" | "figures";

export interface LiveFeedOptions {
  topics: Topic[];
  onInstance?: (e: InstanceEventT) => void;
  onDefinition?: (e: DefinitionEventT) => void;
  onMetrics?: (e: MetricsEventT) => void;
  /**
   * Only this instance's `metrics` events (an instance's page; the
   * service too when known).
   */
  metricsOf?: { service?: string | null; instance: string };
  /** What dashboard cards show: every instance first, then the changes, once a second. */
  onFigures?: (e: FiguresEventT) => void;
  /**
   * The fleet's digest; returns whether the page agrees with its counts.
   * Two disagreements in a row re-read the REST endpoints (one may be an
   * answer still on its way).
   */
  onDigest?: (e: DigestEventT) => boolean;
  /** Re-reads the REST endpoints; rejects when the API is unreachable. */
  resync: () => Promise<void>;
  onState?: (s: FeedState) => void;
  /**
   * The API ended the stream because the session expired or was revoked
   * (its `expired` event); the feed stops instead of reconnecting.
   */
  onExpired?: () => void;
  pollIntervalMs?: number;
  /**
   * While the stream is down and the last REST read failed: how soon the
   * next read asks whether the monitor is back (`PROBE_INTERVAL_MS`).
   */
  probeIntervalMs?: number;
  /**
   * How long a stream may bring nothing before it is stalled (null: never);
   * by default `STALL_AFTER_MS` with topic `instance` (its digests are due
   * every 2 s), never without it (definitions change rarely).
   */
  stallAfterMs?: number | null;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** For tests: how to open the stream. */
  open?: (url: string) => EventSourceLike;
}

/** The part of `EventSource` the feed uses. */
export interface EventSourceLike {
  addEventListener(type: string, listener: (e: MessageEvent) => void): void;
  onerror: ((e: Event) => void) | null;
  close(): void;
}

export const POLL_INTERVAL_MS = 5000;

/** While the monitor does not answer, how often the page asks whether it is back. */
export const PROBE_INTERVAL_MS = 1000;

/** How often the monitor sends a digest on a stream with topic `instance` (its `DIGEST_EVERY`). */
export const DIGEST_EVERY_MS = 2000;

/** Three digests missed: the stream is stalled. */
export const STALL_AFTER_MS = 3 * DIGEST_EVERY_MS;

/** Delay before reconnect attempt `attempt` (0-based): doubling, capped, ±20 % jitter. */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number, random = Math.random): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 20));
  return Math.round(base * (0.8 + 0.4 * random()));
}

export class LiveFeed {
  private source: EventSourceLike | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  /** The next REST read of the polling. */
  private pollTimer: ReturnType<typeof setTimeout> | null = null;
  /** The stream is down: REST reads keep the page current. */
  private pollingOn = false;
  /** The last REST read of the polling failed: the monitor does not answer. */
  private readFailed = false;
  private stallTimer: ReturnType<typeof setTimeout> | null = null;
  /** A re-read owed after lost changes failed: the next try. */
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  /** A REST read of the polling is on its way: the next waits for it. */
  private polling = false;
  /** A read is owed as soon as the one on its way ends (a reconnect failed). */
  private readOwed = false;
  /**
   * A read answered right after a reconnect of the stream failed: the
   * monitor answers but refuses the stream. Failed reconnects ask no more
   * early reads until the stream is live or a read fails.
   */
  private streamRefused = false;
  private attempt = 0;
  private stopped = false;
  private state: FeedState = "connecting";
  private everLive = false;
  /** The stream dropped (or failed to open) at least once. */
  private everDropped = false;
  private disagreements = 0;

  constructor(private readonly opts: LiveFeedOptions) {}

  get current(): FeedState {
    return this.state;
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.source?.close();
    this.source = null;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.stopPolling();
    this.clearStall();
    this.reconnectTimer = null;
    this.retryTimer = null;
  }

  private get stallAfterMs(): number | null {
    if (this.opts.stallAfterMs !== undefined) return this.opts.stallAfterMs;
    return this.opts.topics.includes("instance") ? STALL_AFTER_MS : null;
  }

  /** (Re)starts the wait for the next event of `source`. */
  private armStall(source: EventSourceLike) {
    const after = this.stallAfterMs;
    if (after === null || this.source !== source) return;
    this.clearStall();
    this.stallTimer = setTimeout(() => {
      this.stallTimer = null;
      if (this.source !== source) return;
      source.close();
      this.source = null;
      this.dropped(true);
    }, after);
  }

  private clearStall() {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = null;
  }

  private setState(s: FeedState) {
    if (this.state === s) return;
    this.state = s;
    this.opts.onState?.(s);
  }

  private connect() {
    if (this.stopped) return;
    const query = new URLSearchParams({ topics: this.opts.topics.join(",") });
    const of = this.opts.metricsOf;
    if (of?.service) query.set("service", of.service);
    if (of) query.set("instance", of.instance);
    const url = `/api/stream?${query.toString().replaceAll("%2C", ",")}`;
    const open = this.opts.open ?? ((u: string) => new EventSource(u));
    const source = open(url);
    this.source = source;
    // Whatever comes is a sign the stream is alive; the hello is due first.
    this.armStall(source);
    const alive = () => this.armStall(source);
    for (const type of ["hello", "instance", "definition", "metrics", "figures", "digest", "lagged"]) source.addEventListener(type, alive);
    source.addEventListener("hello", () => {
      if (this.source !== source) return;
      const reconnected = this.everLive || this.everDropped;
      this.everLive = true;
      this.attempt = 0;
      this.streamRefused = false;
      this.stopPolling();
      this.setState("live");
      // Changes made while the stream was down reached nobody: re-read.
      if (reconnected) this.resyncOwed();
    });
    source.addEventListener("instance", (e) => this.dispatch(e, InstanceEvent, this.opts.onInstance));
    source.addEventListener("definition", (e) => this.dispatch(e, DefinitionEvent, this.opts.onDefinition));
    source.addEventListener("metrics", (e) => this.dispatch(e, MetricsEvent, this.opts.onMetrics));
    source.addEventListener("figures", (e) => this.dispatch(e, FiguresEvent, this.opts.onFigures));
    source.addEventListener("digest", (e) => this.dispatch(e, DigestEvent, (d) => this.digest(d)));
    // Changes were lost (this client, or the monitor's feed for everyone,
    // fell behind): re-read, in whatever state.
    source.addEventListener("lagged", () => this.resyncOwed());
    source.addEventListener("expired", () => {
      if (this.source !== source) return;
      this.stop();
      this.opts.onExpired?.();
    });
    source.onerror = () => {
      if (this.source !== source) return;
      // EventSource would retry on its own at a fixed pace; take over so
      // the backoff and the polling are ours.
      source.close();
      this.source = null;
      this.clearStall();
      this.dropped();
    };
  }

  /**
   * Re-reads after changes were lost (`lagged`, a reconnect). Nothing else
   * brings them back, so a read that fails is tried again every poll
   * interval until one succeeds; while polling, the polls do that.
   */
  private resyncOwed() {
    if (this.stopped) return;
    this.opts.resync().catch(() => {
      if (this.stopped || this.pollingOn || this.retryTimer) return;
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        this.resyncOwed();
      }, this.opts.pollIntervalMs ?? POLL_INTERVAL_MS);
    });
  }

  private digest(d: DigestEventT) {
    const agrees = this.opts.onDigest?.(d) ?? true;
    this.disagreements = agrees ? 0 : this.disagreements + 1;
    if (this.disagreements >= 2) {
      this.disagreements = 0;
      void this.opts.resync().catch(() => undefined);
    }
  }

  private dispatch<T>(
    e: MessageEvent,
    schema: { safeParse(v: unknown): { success: true; data: T } | { success: false } },
    handler?: (v: T) => void,
  ) {
    if (!handler) return;
    let json: unknown;
    try {
      json = JSON.parse(String(e.data));
    } catch {
      return;
    }
    const parsed = schema.safeParse(json);
    if (parsed.success) handler(parsed.data);
  }

  /** The stream ended, or (`stalled`) brought nothing for too long. */
  private dropped(stalled = false) {
    if (this.stopped) return;
    this.everDropped = true;
    this.setState(this.state === "polling" ? "polling" : stalled ? "stalled" : "reconnecting");
    // Already polling: a reconnect failed. Whether the monitor still
    // answers is asked now, not at the next poll.
    if (this.pollingOn) this.readEarly();
    this.startPolling();
    const delay = backoffDelay(this.attempt, this.opts.initialBackoffMs ?? 1000, this.opts.maxBackoffMs ?? 30000);
    this.attempt += 1;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }

  /**
   * The monitor answered after a read that failed: it is back. The read
   * re-read the lists; the stream is reconnected now, not when the backoff
   * grown during the outage says, and the backoff starts over.
   */
  private monitorBack() {
    if (this.stopped) return;
    this.attempt = 0;
    // An attempt already on its way answers soon enough.
    if (this.source) return;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.connect();
  }

  /**
   * A reconnect of the stream failed while the last read answered: the
   * monitor may be gone since. Reads now, or (one read at a time) as soon
   * as the one on its way ends. Not while the reads fail (they ask every
   * `probeIntervalMs` already), nor when an early read has shown the
   * monitor answers with the stream refused.
   */
  private readEarly() {
    if (this.readFailed || this.streamRefused || this.stopped) return;
    if (this.polling) {
      this.readOwed = true;
      return;
    }
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.pollTimer = null;
    this.poll(true);
  }

  private startPolling() {
    if (this.pollingOn) return;
    this.pollingOn = true;
    this.poll();
  }

  /**
   * One REST read of the polling; the next follows `pollIntervalMs` after
   * this one began, or `probeIntervalMs` while the monitor does not answer.
   */
  private poll(early = false) {
    this.pollTimer = null;
    // A monitor that does not answer must not collect a read per poll
    // (the browser has few connections per host): the read on its way
    // schedules the next when it ends.
    if (!this.pollingOn || this.stopped || this.polling) return;
    this.polling = true;
    const began = Date.now();
    this.opts
      .resync()
      .then(
        () => {
          if (!this.pollingOn) return;
          const back = this.readFailed;
          this.readFailed = false;
          if (early) this.streamRefused = true;
          this.setState("polling");
          if (back) this.monitorBack();
        },
        () => {
          if (!this.pollingOn) return;
          this.readFailed = true;
          this.streamRefused = false;
          this.setState("reconnecting");
        },
      )
      .finally(() => {
        this.polling = false;
        const owed = this.readOwed;
        this.readOwed = false;
        if (!this.pollingOn || this.stopped || this.pollTimer) return;
        // Owed by a failed reconnect, unless this read has just said what
        // the early one would (it failed, or the stream is refused).
        if (owed && !this.readFailed && !this.streamRefused) {
          this.poll(true);
          return;
        }
        const every = this.readFailed
          ? (this.opts.probeIntervalMs ?? PROBE_INTERVAL_MS)
          : (this.opts.pollIntervalMs ?? POLL_INTERVAL_MS);
        this.pollTimer = setTimeout(() => this.poll(), Math.max(0, every - (Date.now() - began)));
      });
  }

  private stopPolling() {
    this.pollingOn = false;
    this.readFailed = false;
    this.readOwed = false;
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }
}
