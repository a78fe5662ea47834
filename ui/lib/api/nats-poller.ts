// The poller of `GET /api/nats`: asks again half `checkEveryMs` (the
// monitor's own check interval) after each answer, never more often than
// every MIN_INTERVAL_MS. The monitor remakes its picture as each round of
// pings ends (twice a second with the system account), so asking only once
// per check would add up to a whole check to a NATS node down. Whatever keeps
// it from knowing — no answer in time, an error, an answer whose `asOf`
// stopped moving — makes the view `unknown`, never the last good one: a
// page that cannot see NATS must not keep showing it green. A 404 means an
// older monitor without the route: the view is `absent` and the poller
// looks again now and then (the monitor may be upgraded under the page).
// A 401 stops it; the session's listeners take the user to sign in.
import { ApiError } from "./client";
import type { NatsPicture } from "./schemas";

/** Why the NATS status is not known now. */
export type UnknownCause =
  | { kind: "timeout"; afterMs: number }
  | { kind: "stale"; asOf: string }
  | { kind: "failed"; status: number; code: string; message: string };

export type NatsView =
  | { kind: "checking" }
  | { kind: "absent" }
  | { kind: "known"; health: NatsPicture }
  /** `since`: ms since the epoch, when it stopped being known. */
  | { kind: "unknown"; since: number; cause: UnknownCause };

export interface NatsPollerOptions {
  fetch: (signal: AbortSignal) => Promise<NatsPicture>;
  onView: (view: NatsView) => void;
  /** Until the first answer says how often the monitor checks. */
  defaultIntervalMs?: number;
  /** An answer later than this is no answer. */
  timeoutMs?: number;
  /** How long an `asOf` may stay the same before the answer is stale. */
  staleAfterMs?: number;
  /** How often an older monitor (404) is asked again. */
  absentRecheckMs?: number;
  now?: () => number;
}

export const MIN_INTERVAL_MS = 500;
export const MAX_INTERVAL_MS = 10_000;

/** The monitor's check interval, within bounds a page can live with. */
export function checkInterval(checkEveryMs: number): number {
  return Math.min(MAX_INTERVAL_MS, Math.max(MIN_INTERVAL_MS, checkEveryMs));
}

/**
 * How long after an answer the page asks again: half the monitor's check
 * interval (a picture remade within a check is seen within half of one),
 * within the same bounds.
 */
export function pollInterval(checkEveryMs: number): number {
  return Math.min(MAX_INTERVAL_MS, Math.max(MIN_INTERVAL_MS, checkEveryMs / 2));
}

export class NatsPoller {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private inFlight: AbortController | null = null;
  private stopped = true;
  private view: NatsView = { kind: "checking" };
  /** How long after an answer to ask again. */
  private interval: number;
  /** The monitor's check interval (bounded): what staleness is counted in. */
  private checkEvery: number;
  private readonly timeoutMs: number;
  private readonly staleAfterMs: number;
  private readonly absentRecheckMs: number;
  private readonly now: () => number;
  /** The last `asOf` and when this page first saw it (its own clock: no skew). */
  private lastAsOf: { asOf: string; seenAt: number } | null = null;

  constructor(private readonly opts: NatsPollerOptions) {
    this.interval = opts.defaultIntervalMs ?? 1000;
    this.checkEvery = checkInterval(this.interval);
    this.timeoutMs = opts.timeoutMs ?? 3000;
    this.staleAfterMs = opts.staleAfterMs ?? 5000;
    this.absentRecheckMs = opts.absentRecheckMs ?? 30_000;
    this.now = opts.now ?? Date.now;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    void this.poll();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.inFlight?.abort();
    this.inFlight = null;
  }

  private set(view: NatsView): void {
    // Unknown since the first moment, not the latest failure.
    if (view.kind === "unknown" && this.view.kind === "unknown") view = { ...view, since: this.view.since };
    this.view = view;
    this.opts.onView(view);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.poll(), ms);
  }

  private async poll(): Promise<void> {
    this.timer = null;
    const controller = new AbortController();
    this.inFlight = controller;
    let timedOut = false;
    const timeout = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.timeoutMs);
    try {
      const health = await this.opts.fetch(controller.signal);
      if (this.stopped) return;
      this.interval = pollInterval(health.checkEveryMs);
      this.checkEvery = checkInterval(health.checkEveryMs);
      this.set(this.fresh(health) ? { kind: "known", health } : this.unknown({ kind: "stale", asOf: health.asOf }));
      this.schedule(this.interval);
    } catch (e) {
      if (this.stopped) return;
      if (e instanceof ApiError && e.status === 401) {
        // The session is gone: its listeners send the user to sign in.
        this.stop();
        return;
      }
      if (e instanceof ApiError && e.status === 404 && e.code === "NOT_FOUND") {
        this.lastAsOf = null;
        this.set({ kind: "absent" });
        this.schedule(this.absentRecheckMs);
        return;
      }
      const cause: UnknownCause = timedOut
        ? { kind: "timeout", afterMs: this.timeoutMs }
        : e instanceof ApiError
          ? { kind: "failed", status: e.status, code: e.code, message: e.message }
          : { kind: "failed", status: 0, code: "NETWORK", message: String(e) };
      this.set(this.unknown(cause));
      this.schedule(this.interval);
    } finally {
      clearTimeout(timeout);
      if (this.inFlight === controller) this.inFlight = null;
    }
  }

  private unknown(cause: UnknownCause): NatsView {
    return { kind: "unknown", since: this.now(), cause };
  }

  /**
   * False when the monitor keeps sending the same check: its checker is
   * stuck. Counted in the monitor's checks, not this page's polls: asked
   * twice per check, the same `asOf` seen twice is no sign of anything.
   */
  private fresh(health: NatsPicture): boolean {
    const now = this.now();
    if (!this.lastAsOf || this.lastAsOf.asOf !== health.asOf) {
      this.lastAsOf = { asOf: health.asOf, seenAt: now };
      return true;
    }
    return now - this.lastAsOf.seenAt <= Math.max(this.staleAfterMs, 3 * this.checkEvery);
  }
}
