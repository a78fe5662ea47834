// NatsBadge: NATS in a word in the top bar of every page — OK, degraded or
// unknown — linking to the dashboard's notice, which names what is wrong,
// and announced politely to screen readers when it changes (not the state
// found on page load: that is no news, and would be read on every page).
// Nothing before the first answer or with a monitor without the route.
"use client";

import Link from "next/link";
import * as React from "react";

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
  const shown = summary === null ? null : look[summary];
  // What the live region says: nothing until the summary changes from the
  // first one known, then the latest change. Worked out while rendering
  // from the previous render's summary, so a change is said in the same
  // commit that shows it. A poll, or a gap (null), that leaves the summary
  // as it was changes nothing, and nothing is read again.
  const [known, setKnown] = React.useState<NatsSummary>(null);
  const [said, setSaid] = React.useState<MessageKey | null>(null);
  if (summary !== null && summary !== known) {
    setKnown(summary);
    if (known !== null) setSaid(look[summary].label);
  }
  return (
    <span className="inline-flex">
      {shown === null ? null : (
        <Link
          href="/#nats-status"
          title={t("nats.badge.help")}
          data-testid="nats-badge"
          data-state={summary}
          className={cn(
            badgeVariants({ variant: shown.variant }),
            "font-medium hover:underline focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring",
            className,
          )}
        >
          <span className={cn("size-2 rounded-full", shown.dot)} aria-hidden="true" />
          {t(shown.label)}
        </Link>
      )}
      {/* A polite live region that stays in the page whatever NATS's state
          (one added together with its words is often not read), apart
          from the badge, whose first words must not be read. */}
      <span role="status" aria-live="polite" aria-atomic="true" data-testid="nats-badge-region" className="sr-only">
        {said === null ? null : t(said)}
      </span>
    </span>
  );
}
