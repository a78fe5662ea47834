// DrillDelayLine: "slowed by an operator: +500 ms per call — for 2 min,
// since 08:48:33", on an instance's card and page while an operator's
// `slow` drill holds (its record's `drillDelayMs`), as the reason line says
// an operator's UNHEALTHY verdict. Nothing for an instance without one, or
// whose process is gone (it delays nothing any more).
"use client";

import { drillDelay } from "@/lib/drill";
import { ms } from "@/lib/format";
import { useI18n } from "@/lib/i18n";
import { processDown } from "@/lib/instance-store";
import type { ServiceInstance } from "@/lib/api/schemas";
import { cn } from "@/lib/utils";
import { StatusSince } from "./status-since";

export interface DrillDelayLineProps {
  instance: ServiceInstance;
  className?: string;
}

/** Whether a card should say `i` is slowed by a drill: the delay, or null. */
export function shownDrillDelay(i: ServiceInstance): number | null {
  if (processDown(i)) return null;
  return drillDelay(i)?.delayMs ?? null;
}

export function DrillDelayLine({ instance, className }: DrillDelayLineProps) {
  const { t, locale } = useI18n();
  const drill = processDown(instance) ? null : drillDelay(instance);
  if (!drill) return null;
  return (
    <p className={cn("font-medium text-warning-strong", className)} data-testid="drill-delay">
      {t("drill.slowed", { delay: ms(drill.delayMs, locale) })}
      {drill.since ? <StatusSince since={drill.since} /> : null}
    </p>
  );
}
