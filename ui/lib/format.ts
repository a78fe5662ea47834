// Formatting of ages, durations and figures through the message catalogue.
import type { Translate } from "@/lib/i18n";

/** "3 s ago" for an RFC 3339 time relative to `now` (ms since epoch). */
export function ago(t: Translate, iso: string | null | undefined, now: number): string {
  if (!iso) return t("detail.none");
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return t("detail.none");
  return agoSecs(t, Math.floor((now - then) / 1000));
}

/**
 * "4 s ago" for an age in milliseconds that must never read younger than
 * it is (a heartbeat's): whole seconds rounded up, so the text stays true
 * until the next repaint a second later.
 */
export function agoAtLeast(t: Translate, ageMs: number): string {
  return agoSecs(t, Math.ceil(ageMs / 1000));
}

/**
 * "at most 4 s ago" for an age in milliseconds known only as a bound (a
 * down instance's heartbeat before the monitor says its last beat): every
 * unit rounded up, so it stays true until the next repaint a second later.
 */
export function agoAtMost(t: Translate, ageMs: number): string {
  const secs = Math.ceil(ageMs / 1000);
  if (secs < 1) return agoSecs(t, secs);
  let ago: string;
  if (secs < 60) ago = t("time.secondsAgo", { n: secs });
  else if (secs < 3600) ago = t("time.minutesAgo", { n: Math.ceil(secs / 60) });
  else ago = t("time.hoursAgo", { n: Math.ceil(secs / 3600) });
  return t("time.atMost", { ago });
}

function agoSecs(t: Translate, secs: number): string {
  // Clocks of the browser and the instances differ a little.
  if (secs < -2) return t("time.inFuture", { n: -secs });
  if (secs < 1) return t("time.justNow");
  if (secs < 60) return t("time.secondsAgo", { n: secs });
  if (secs < 3600) return t("time.minutesAgo", { n: Math.floor(secs / 60) });
  return t("time.hoursAgo", { n: Math.floor(secs / 3600) });
}

/** "4 min 12 s" for a length in seconds. */
export function duration(t: Translate, totalSecs: number): string {
  const s = Math.max(0, Math.floor(totalSecs));
  if (s < 60) return t("time.duration.s", { n: s });
  if (s < 3600) return t("time.duration.m", { m: Math.floor(s / 60), s: s % 60 });
  if (s < 86400) return t("time.duration.h", { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
  return t("time.duration.d", { d: Math.floor(s / 86400), h: Math.floor((s % 86400) / 3600) });
}

/**
 * A figure with at most `digits` decimals, in the locale's format; with
 * `exact`, always `digits` decimals (the ticks of one axis: 0.0, 0.5, 1.0).
 */
export function num(value: number, locale: string, digits = 1, exact = false): string {
  return new Intl.NumberFormat(locale, { maximumFractionDigits: digits, minimumFractionDigits: exact ? digits : 0 }).format(value);
}

/** Milliseconds, adaptive (0.42 ms, 12.3 ms, 1,250 ms), or with exactly `digits` decimals. */
export function ms(value: number, locale: string, digits?: number): string {
  if (digits !== undefined) return `${num(value, locale, digits, true)} ms`;
  const adaptive = value < 1 ? 2 : value < 100 ? 1 : 0;
  return `${num(value, locale, adaptive)} ms`;
}

// Times of day. Every absolute time in the UI goes through `clock`: local
// time on the 24-hour clock (what operators read logs in), the date — when
// one is shown — in one format per language ("Dec 4, 2026" / "2026年12月4日").
// `hourCycle: "h23"`, not `hour12: false`: the latter shows midnight as
// "24:05" in English.

export interface ClockOptions {
  /** Show seconds (default true). */
  seconds?: boolean;
  /** Show milliseconds (default false). */
  ms?: boolean;
  /** Put the date before the time (default false). */
  date?: boolean;
}

const clocks = new Map<string, Intl.DateTimeFormat>();

function clockFormat(locale: string, { seconds = true, ms = false, date = false }: ClockOptions): Intl.DateTimeFormat {
  const key = `${locale}|${seconds}|${ms}|${date}`;
  let f = clocks.get(key);
  if (!f) {
    f = new Intl.DateTimeFormat(locale, {
      ...(date ? { year: "numeric", month: "short", day: "numeric" } : {}),
      hour: "2-digit",
      minute: "2-digit",
      ...(seconds || ms ? { second: "2-digit" } : {}),
      ...(ms ? { fractionalSecondDigits: 3 } : {}),
      hourCycle: "h23",
    });
    // Charts format every tick on every redraw: build each format once.
    clocks.set(key, f);
  }
  return f;
}

function toDate(value: string | number | Date): Date | null {
  const d = value instanceof Date ? value : new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/**
 * "18:39:07" for an RFC 3339 time, milliseconds since the epoch or a Date:
 * the UI's one time format (see `ClockOptions`). An unreadable time is
 * returned as it came.
 */
export function clock(value: string | number | Date, locale: string, options: ClockOptions = {}): string {
  const d = toDate(value);
  return d ? clockFormat(locale, options).format(d) : String(value);
}

/** "Dec 4, 2026, 18:40:58": a date and time, for records that may be old. */
export function dateTime(iso: string, locale: string): string {
  return clock(iso, locale, { date: true });
}

/**
 * "19:29:58" for a moment of today (local time), with the date before it
 * for one of another day ("Dec 3, 2026, 19:29:58"): for times that are
 * usually recent but may not be. `options` as for `clock`, but the date
 * is decided here.
 */
export function clockOrDate(value: string | number | Date, locale: string, now: number = Date.now(), options: Omit<ClockOptions, "date"> = {}): string {
  const d = toDate(value);
  if (!d) return String(value);
  return clock(d, locale, { ...options, date: d.toDateString() !== new Date(now).toDateString() });
}

/**
 * "18:39:07.337" for an event of today (local time), with the date before
 * it for one of another day: for lists of recent events.
 */
export function timeMs(iso: string, locale: string, now: number = Date.now()): string {
  return clockOrDate(iso, locale, now, { ms: true });
}
