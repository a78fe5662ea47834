// FeedIndicator: the state of the live feed in words and a dot — Live,
// Connecting, Reconnecting, Polling every 5 s — announced politely to
// screen readers when it changes.
"use client";

import { cn } from "@/lib/utils";
import type { FeedState } from "@/lib/api/live-feed";
import { useI18n, type MessageKey } from "@/lib/i18n";

const look: Record<FeedState, { label: MessageKey; help: MessageKey; dot: string }> = {
  connecting: { label: "feed.connecting", help: "feed.help.reconnecting", dot: "bg-muted-foreground" },
  live: { label: "feed.live", help: "feed.help.live", dot: "bg-success animate-pulse" },
  reconnecting: { label: "feed.reconnecting", help: "feed.help.reconnecting", dot: "bg-danger" },
  polling: { label: "feed.polling", help: "feed.help.polling", dot: "bg-warning" },
};

export interface FeedIndicatorProps {
  state: FeedState;
  className?: string;
}

export function FeedIndicator({ state, className }: FeedIndicatorProps) {
  const { t } = useI18n();
  const { label, help, dot } = look[state];
  return (
    <div
      role="status"
      aria-live="polite"
      data-testid="feed-indicator"
      data-state={state}
      title={t(help)}
      className={cn(
        "inline-flex items-center gap-2 rounded-full border border-border bg-background px-3 py-1 text-xs font-medium",
        className,
      )}
    >
      <span className={cn("size-2 rounded-full", dot)} aria-hidden="true" />
      <span className="sr-only">{t("feed.label")}</span>
      {t(label)}
    </div>
  );
}
