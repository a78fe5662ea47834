// ServiceStatusBadge: an instance's status as text, icon and colour —
// ACTIVE green, UNHEALTHY red, STANDBY gray, GONE outlined — so colour is
// never the only signal.
"use client";

import { CircleCheck, CircleOff, CirclePause, CircleX } from "lucide-react";

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
}

export function ServiceStatusBadge({ status, className }: ServiceStatusBadgeProps) {
  const { t } = useI18n();
  const { variant, Icon } = look[status];
  return (
    <Badge variant={variant} className={className} data-status={status}>
      <Icon className="size-3.5" aria-hidden="true" />
      {t(`status.${status}`)}
    </Badge>
  );
}
