// StatusDetail: what an instance's own failed health check said, in its
// own words ("the order store is full: 1.0 MiB of 1.0 MiB used; …"), from
// the API's `statusDetail`: shown under the status reason for
// `health_check`, and for a leader shown `degraded` whose record's reason
// is `health_check`. The monitor has cut it to 200 characters and removed
// control characters; it is text from a record all the same, so it is only
// ever rendered as text.
//
// Long words (a path, a key) break anywhere rather than widen a card. On a
// card (`clamp`) it is cut to three lines; the full text is its title and
// the instance page, which shows it whole. The card's link covers the card
// (its `::after`), so under a mouse the line is raised above it, or the
// title would never show; a touch on it still opens the page, where the
// whole text is.
"use client";

import { useI18n } from "@/lib/i18n";
import { cn } from "@/lib/utils";

export interface StatusDetailProps {
  /** The instance's `statusDetail`, if any. */
  detail: string | null | undefined;
  /** Cut to three lines (a card), the full text in the title. */
  clamp?: boolean;
  className?: string;
}

export function StatusDetail({ detail, clamp = false, className }: StatusDetailProps) {
  const { t } = useI18n();
  if (!detail) return null;
  return (
    <p
      data-testid="status-detail"
      title={detail}
      className={cn("min-w-0 font-normal text-foreground [overflow-wrap:anywhere]", clamp && "line-clamp-3 pointer-fine:relative", className)}
    >
      <span className="text-muted-foreground">{t("reason.detail")} </span>
      {detail}
    </p>
  );
}
