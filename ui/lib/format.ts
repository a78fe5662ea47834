// Formatting of ages, durations and figures through the message catalogue.
import type { Translate } from "@/lib/i18n";

/** "3 s ago" for an RFC 3339 time relative to `now` (ms since epoch). */
export function ago(t: Translate, iso: string | null | undefined, now: number): string {
  if (!iso) return t("detail.none");
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return t("detail.none");
  const secs = Math.floor((now - then) / 1000);
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

/** A figure with at most `digits` decimals, in the locale's format. */
export function num(value: number, locale: string, digits = 1): string {
  return new Intl.NumberFormat(locale, { maximumFractionDigits: digits }).format(value);
}

/** Milliseconds, adaptive: 0.42 ms, 12.3 ms, 1,250 ms. */
export function ms(value: number, locale: string): string {
  const digits = value < 1 ? 2 : value < 100 ? 1 : 0;
  return `${num(value, locale, digits)} ms`;
}

/** A local date and time with seconds. */
export function dateTime(iso: string, locale: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeStyle: "medium" }).format(d);
}

/** A local time with milliseconds, for event lists. */
export function timeMs(iso: string, locale: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return new Intl.DateTimeFormat(locale, {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    fractionalSecondDigits: 3,
    hour12: false,
  }).format(d);
}
