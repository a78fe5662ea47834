// NatsBadge: NATS in a word in the top bar of every page — OK, degraded or
// unknown — linking to the dashboard's notice, which names what is wrong.
// Nothing before the first answer or with a monitor without the route.
"use client";

import Link from "next/link";

import { badgeVariants } from "@/components/ui/badge";
import { useNatsHealth } from "@/hooks/use-nats-health";
import type { MessageKey } from "@/lib/i18n";
import { useI18n } from "@/lib/i18n";
import { summarize, type NatsSummary } from "@/lib/nats-health";
import { cn } from "@/lib/utils";

const look: Record<Exclude<NatsSummary, null>, { label: MessageKey; variant: "success" | "warning" | "neutral"; dot: string }> = {
  ok: { label: "nats.badge.ok", variant: "success", dot: "bg-success" },
  problem: { label: "nats.badge.problem", variant: "warning", dot: "bg-warning" },
  unknown: { label: "nats.badge.unknown", variant: "neutral", dot: "bg-muted-foreground" },
};

export interface NatsBadgeProps {
  className?: string;
}

export function NatsBadge({ className }: NatsBadgeProps) {
  const { t } = useI18n();
  const summary = summarize(useNatsHealth());
  if (summary === null) return null;
  const { label, variant, dot } = look[summary];
  return (
    <Link
      href="/#nats-status"
      title={t("nats.badge.help")}
      data-testid="nats-badge"
      data-state={summary}
      className={cn(
        badgeVariants({ variant }),
        "font-medium hover:underline focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring",
        className,
      )}
    >
      <span className={cn("size-2 rounded-full", dot)} aria-hidden="true" />
      {t(label)}
    </Link>
  );
}
