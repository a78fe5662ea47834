// StatusSince: since when an instance has had the status its reason
// explains — "for 2 min 5 s, since 08:48:33" — from the API's
// `statusSince`, on the page's shared one-second clock. Shown beside the
// reason (as `aegis status` says "for Ns (since …)").
//
// The duration is measured on the monitor's clock, through the page's store
// (the browser's clock corrected by the offset the digests show, as the
// heartbeat age is), so a browser whose clock is a minute off still says
// "for 30 s". Without a store (component tests), against the browser's
// clock.
//
// `statusSince` is the monitor's time (or the NATS server's, for a closed
// connection) for most reasons, but for `operator`, `health_check` and
// `degraded` it is the instance's own report, on the instance's clock:
// truer than when the monitor noticed, but not corrected for that
// instance's skew against the monitor, which nothing measures. An instance
// 30 s ahead reads "for 0 s" for 30 s (`duration` clamps a negative length
// to 0). Where clocks are synced (one host, NTP on the nodes) this is
// nothing.
"use client";

import { useInstanceStore } from "@/hooks/use-instance-store";
import { useNow } from "@/hooks/use-now";
import { clockOrDate, duration } from "@/lib/format";
import { useI18n } from "@/lib/i18n";
import { cn } from "@/lib/utils";

export interface StatusSinceProps {
  /** The instance's `statusSince` (RFC 3339). */
  since: string;
  className?: string;
}

export function StatusSince({ since, className }: StatusSinceProps) {
  const { t, locale } = useI18n();
  const store = useInstanceStore();
  // Re-rendered on the shared clock's tick; read on the monitor's clock.
  const browserNow = useNow();
  const now = store ? store.monitorNow() : browserNow;
  const at = Date.parse(since);
  if (Number.isNaN(at)) return null;
  return (
    <span data-testid="status-since" className={cn("block font-normal text-muted-foreground", className)}>
      <time dateTime={since}>{t("card.statusSince", { duration: duration(t, (now - at) / 1000), time: clockOrDate(at, locale, now) })}</time>
    </span>
  );
}
