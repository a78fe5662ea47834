// ServiceStatusBadge: an instance's status as text, icon and colour —
// ACTIVE green, UNHEALTHY red, STANDBY gray, GONE outlined — so colour is
// never the only signal. A degraded leader (ACTIVE although unhealthy: no
// healthy instance could take over) is amber and says "degraded".
"use client";

import { CircleCheck, CircleOff, CirclePause, CircleX, TriangleAlert } from "lucide-react";

import { Badge, type BadgeProps } from "@/components/ui/badge";
import type { InstanceStatus } from "@/lib/api/schemas";
import { useI18n } from "@/lib/i18n";

export type DisplayStatus = InstanceStatus | "GONE";

const look: Record<DisplayStatus, { variant: BadgeProps["variant"]; Icon: typeof CircleCheck }> = {
  ACTIVE: { variant: "success", Icon: CircleCheck },
  UNHEALTHY: { variant: "danger", Icon: CircleX },
  STANDBY: { variant: "neutral", Icon: CirclePause },
  GONE: { variant: "outline", Icon: CircleOff },
};

export interface ServiceStatusBadgeProps {
  status: DisplayStatus;
  className?: string;
  /** An ACTIVE instance leading although unhealthy (`statusReason` "degraded"). */
  degraded?: boolean;
}

export function ServiceStatusBadge({ status, className, degraded = false }: ServiceStatusBadgeProps) {
  const { t } = useI18n();
  const warn = degraded && status === "ACTIVE";
  const { variant, Icon } = warn ? { variant: "warning" as const, Icon: TriangleAlert } : look[status];
  return (
    <Badge variant={variant} className={className} data-status={status} data-degraded={warn || undefined}>
      <Icon className="size-3.5" aria-hidden="true" />
      {warn ? t("status.ACTIVE.degraded") : t(`status.${status}`)}
    </Badge>
  );
}

/** Whether an instance leads although unhealthy, as the API says. */
export function isDegraded(i: { status: string; statusReason?: string | null }): boolean {
  return i.status === "ACTIVE" && i.statusReason === "degraded";
}
