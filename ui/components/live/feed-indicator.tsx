// FeedIndicator: the state of the live feed in words and a dot — Live,
// Connecting, Stalled (nothing came for three digest intervals),
// Reconnecting, Polling every 5 s — announced politely to
// screen readers when it changes. "Live" says the feed from the monitor is
// open; while NATS itself is degraded or not known it says that too, and
// its dot is no longer the pulsing green of all being well — on every page
// that shows the feed, from the app's one NATS poller.
"use client";

import { cn } from "@/lib/utils";
import { useNatsHealth } from "@/hooks/use-nats-health";
import type { FeedState } from "@/lib/api/live-feed";
import { useI18n, type MessageKey } from "@/lib/i18n";
import { summarize, type NatsSummary } from "@/lib/nats-health";

const look: Record<FeedState, { label: MessageKey; help: MessageKey; dot: string }> = {
  connecting: { label: "feed.connecting", help: "feed.help.reconnecting", dot: "bg-muted-foreground" },
  live: { label: "feed.live", help: "feed.help.live", dot: "bg-success animate-pulse" },
  stalled: { label: "feed.stalled", help: "feed.help.stalled", dot: "bg-danger" },
  reconnecting: { label: "feed.reconnecting", help: "feed.help.reconnecting", dot: "bg-danger" },
  polling: { label: "feed.polling", help: "feed.help.polling", dot: "bg-warning" },
};

/** A live feed while NATS has a problem, or its state is not known. */
const liveButNats: Record<"problem" | "unknown", { label: MessageKey; help: MessageKey; dot: string }> = {
  problem: { label: "feed.liveNatsProblem", help: "feed.help.liveNatsProblem", dot: "bg-warning" },
  unknown: { label: "feed.liveNatsUnknown", help: "feed.help.liveNatsUnknown", dot: "bg-muted-foreground" },
};

export interface FeedIndicatorProps {
  state: FeedState;
  /** What is known of NATS itself; by default the app's poller's (null: nothing to add). */
  nats?: NatsSummary;
  className?: string;
}

export function FeedIndicator({ state, nats: given, className }: FeedIndicatorProps) {
  const { t } = useI18n();
  const polled = summarize(useNatsHealth());
  const nats = given === undefined ? polled : given;
  const { label, help, dot } = state === "live" && (nats === "problem" || nats === "unknown") ? liveButNats[nats] : look[state];
  return (
    <div
      role="status"
      aria-live="polite"
      data-testid="feed-indicator"
      data-state={state}
      data-nats={nats ?? undefined}
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
