// FailoverTimeline: who led the instance's sticky group, from when, with
// which epoch, how each term ended, and how long each hand-over took —
// what an operator asks after a crash. Built by the API from the
// instances' `elected` / `leadership_lost` / `deregistered` records.
// An open term is called current only when the page's live view agrees
// (that instance leads the group now, with that epoch); one the live view
// contradicts ended at a time the records read do not say. In a truncated
// window nothing is known of the unread middle: a term open where it
// begins ended in it (`unread`, some time after its `endedAt`), and the
// first term after it has no hand-over, without being the first leader.
// It asks for the group's terms (`?group=`): the API then leaves out
// instances registered now in another group, but keeps those gone from the
// registry, whose group it no longer knows. A lapsed term's "no successor
// yet" is decided within the group: a later term of an instance the live
// view shows in another group is no successor.
"use client";

import * as React from "react";
import Link from "next/link";
import { Crown } from "lucide-react";

import { Skeleton } from "@/components/ui/skeleton";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import { useInstanceStore } from "@/hooks/use-instance-store";
import { api } from "@/lib/api/client";
import type { LeadershipTerm, LeadershipTimeline } from "@/lib/api/schemas";
import type { InstanceStore } from "@/lib/instance-store";
import { timeMs, num } from "@/lib/format";
import { instanceHref } from "@/lib/instance-address";
import { useI18n, type MessageKey } from "@/lib/i18n";
import { cn } from "@/lib/utils";

export const TIMELINE_REFRESH_MS = 5000;

export interface FailoverTimelineProps {
  serviceName: string;
  group: string;
  /** Changes when a member's status changes: re-read at once. */
  changeKey: string;
}

const endKey: Record<string, MessageKey> = {
  resigned: "timeline.end.resigned",
  stopped: "timeline.end.stopped",
  superseded: "timeline.end.superseded",
  lapsed: "timeline.end.lapsed",
  unread: "timeline.end.unread",
};

/** The columns, in order. */
const columns: MessageKey[] = ["timeline.leader", "timeline.epoch", "timeline.from", "timeline.until", "timeline.end", "timeline.handover"];

/**
 * A cell below the small breakpoint: a line of its own, its column's name
 * (`data-label`) before the figure, wrapping rather than widening the page.
 */
const STACKED =
  "max-sm:flex max-sm:gap-3 max-sm:px-3 max-sm:py-0.5 max-sm:whitespace-normal max-sm:before:w-24 max-sm:before:shrink-0 max-sm:before:font-sans max-sm:before:text-xs max-sm:before:font-medium max-sm:before:text-muted-foreground max-sm:before:content-[attr(data-label)]";

/** How a hand-over was measured (`handoverBasis`); a goodbye's is the default. */
const handoverKey: Record<string, MessageKey> = {
  lastSeen: "timeline.handoverLastSeen",
  disconnect: "timeline.handoverDisconnect",
  restart: "timeline.handoverRestart",
  resumed: "timeline.handoverResumed",
};

/** A leader of the group as the live view shows it: ACTIVE, not gone. */
export interface LiveLeader {
  instanceId: string;
  epoch: number | null;
}

const NO_STORE = (): (() => void) => () => undefined;

/**
 * The group's leaders in the page's live view (normally one), kept as a
 * string so that the timeline re-renders only when they change.
 */
function useLiveLeaders(store: InstanceStore | null, serviceName: string, group: string): LiveLeader[] {
  const get = () =>
    JSON.stringify(
      (store?.getSnapshot().entries ?? [])
        .filter(
          (e) =>
            e.goneAt === null &&
            e.instance.serviceName === serviceName &&
            e.instance.stickyActiveGroup === group &&
            e.instance.status === "ACTIVE",
        )
        .map((e): LiveLeader => ({ instanceId: e.instance.instanceId, epoch: e.instance.epoch ?? null })),
    );
  const leaders = React.useSyncExternalStore(store?.subscribe ?? NO_STORE, get, get);
  return React.useMemo(() => JSON.parse(leaders) as LiveLeader[], [leaders]);
}

/**
 * The instances of the service the live view shows in a sticky group other
 * than `group` (gone ones included, with their last record's group), kept
 * as a string so that the timeline re-renders only when they change.
 */
function useElsewhere(store: InstanceStore | null, serviceName: string, group: string): Set<string> {
  const get = () =>
    JSON.stringify(
      (store?.getSnapshot().entries ?? [])
        .filter((e) => e.instance.serviceName === serviceName && !!e.instance.stickyActiveGroup && e.instance.stickyActiveGroup !== group)
        .map((e) => e.instance.instanceId)
        .sort(),
    );
  const ids = React.useSyncExternalStore(store?.subscribe ?? NO_STORE, get, get);
  return React.useMemo(() => new Set(JSON.parse(ids) as string[]), [ids]);
}

/**
 * Whether a term newer than `terms[i]` (newest first) is of the group: not
 * of an instance the live view shows in another group (`elsewhere`). One
 * the live view does not know is taken as the group's, as the API does.
 */
export function followedInGroup(terms: LeadershipTerm[], i: number, elsewhere: Set<string>): boolean {
  return terms.slice(0, i).some((later) => !elsewhere.has(later.instanceId));
}

/** Whether an open term is the one the live view shows leading (epochs compared when both are known). */
export function agreesWithLive(term: LeadershipTerm, leaders: LiveLeader[]): boolean {
  return leaders.some((l) => l.instanceId === term.instanceId && (l.epoch == null || term.epoch == null || l.epoch === term.epoch));
}

/** The Until of a term that ended in the unread middle: after `endedAt`, not at it. */
function UnreadEnd({ endedAt }: { endedAt: string }) {
  const { t, locale } = useI18n();
  const at = timeMs(endedAt, locale);
  const help = t("timeline.untilUnreadHelp", { time: at });
  return (
    <span title={help} className="cursor-help">
      <time dateTime={endedAt}>{t("timeline.untilUnread", { time: at })}</time>
      <span className="sr-only">{help}</span>
    </span>
  );
}

export function FailoverTimeline({ serviceName, group, changeKey }: FailoverTimelineProps) {
  const { t, locale } = useI18n();
  const store = useInstanceStore();
  const leaders = useLiveLeaders(store, serviceName, group);
  const elsewhere = useElsewhere(store, serviceName, group);
  const [timeline, setTimeline] = React.useState<LeadershipTimeline | null>(null);
  const [error, setError] = React.useState<string | null>(null);

  React.useEffect(() => {
    let cancelled = false;
    const read = () =>
      api
        .leadership(serviceName, { group })
        .then((tl) => {
          if (cancelled) return;
          setTimeline(tl);
          setError(null);
        })
        .catch((e: Error) => !cancelled && setError(e.message));
    void read();
    const timer = setInterval(() => void read(), TIMELINE_REFRESH_MS);
    return () => {
      cancelled = true;
      clearInterval(timer);
    };
  }, [serviceName, group, changeKey]);

  const terms = timeline ? [...timeline.terms].reverse() : [];
  // At most one term is current: the newest open one the live view agrees with.
  const current = terms.find((term) => !term.endedAt && agreesWithLive(term, leaders));
  const unknownEnd =
    leaders.length > 0
      ? t("timeline.endUnknown", { leader: leaders.map((l) => l.instanceId).join(", ") })
      : t("timeline.endUnknownNoLeader");
  return (
    <section aria-labelledby="timeline-title" className="flex flex-col gap-3" data-testid="failover-timeline">
      <div>
        <h2 id="timeline-title" className="text-lg font-semibold">
          {t("timeline.title")}
        </h2>
        <p className="text-sm text-muted-foreground">{t("timeline.help", { service: serviceName, group })}</p>
        {/* Epochs 1, then 1019 read as a thousand elections without it. */}
        <p className="text-xs text-muted-foreground" data-testid="timeline-epoch-help">
          {t("timeline.epochHelp")}
        </p>
      </div>
      {error && !timeline ? (
        <p role="alert" className="text-sm text-danger-strong">
          {t("timeline.error", { message: error })}
        </p>
      ) : !timeline ? (
        <div aria-busy="true">
          <span className="sr-only">{t("timeline.loading")}</span>
          <Skeleton className="h-24" />
        </div>
      ) : null}
      {timeline?.truncated ? (
        <p data-testid="timeline-truncated" className="rounded-md border border-warning/60 bg-warning-muted p-3 text-sm text-warning-strong">
          {t("timeline.truncated")}
        </p>
      ) : null}
      {!timeline ? null : terms.length === 0 ? (
        <p className="rounded-md border border-dashed border-border p-4 text-sm text-muted-foreground">
          {t(timeline.truncated ? "timeline.emptyTruncated" : "timeline.empty")}
        </p>
      ) : (
        // Six columns are 556 px wide: on a phone each term is stacked
        // instead, every figure under its column's name (`data-label`).
        <Table className="max-sm:block max-sm:[&_tbody]:block max-sm:[&_thead]:hidden">
          <TableHeader>
            <TableRow>
              {columns.map((c) => (
                <TableHead key={c} scope="col">
                  {t(c)}
                </TableHead>
              ))}
            </TableRow>
          </TableHeader>
          <TableBody>
            {terms.map((term, i) => (
              <TableRow
                key={`${term.instanceId}-${term.electedAt}`}
                data-testid="timeline-term"
                data-current={term === current}
                className="max-sm:block max-sm:py-2"
              >
                <TableCell data-label={t("timeline.leader")} className={cn(STACKED, "whitespace-nowrap font-medium")}>
                  <span className="inline-flex items-center gap-1">
                    {term === current ? <Crown className="size-3.5 text-warning-strong" aria-hidden="true" /> : null}
                    <Link href={instanceHref(serviceName, term.instanceId)} className="text-primary underline-offset-4 hover:underline">
                      {term.instanceId}
                    </Link>
                  </span>
                </TableCell>
                <TableCell data-label={t("timeline.epoch")} className={cn(STACKED, "font-mono text-xs")}>
                  {term.epoch ?? t("detail.none")}
                </TableCell>
                <TableCell data-label={t("timeline.from")} className={cn(STACKED, "whitespace-nowrap font-mono text-xs")}>
                  <time dateTime={term.electedAt}>{timeMs(term.electedAt, locale)}</time>
                </TableCell>
                <TableCell data-label={t("timeline.until")} className={cn(STACKED, "whitespace-nowrap font-mono text-xs")}>
                  {term.endedAt && term.endReason === "unread" ? (
                    <UnreadEnd endedAt={term.endedAt} />
                  ) : term.endedAt ? (
                    <time dateTime={term.endedAt}>{timeMs(term.endedAt, locale)}</time>
                  ) : term === current ? (
                    t("timeline.current")
                  ) : (
                    <span title={unknownEnd} className="cursor-help">
                      {t("detail.none")}
                      <span className="sr-only">{unknownEnd}</span>
                    </span>
                  )}
                </TableCell>
                <TableCell data-label={t("timeline.end")} className={cn(STACKED, "text-xs")}>
                  {term.endReason === "lapsed" && followedInGroup(terms, i, elsewhere)
                    ? // Newest first: a later term of the group followed this lapse.
                      t("timeline.end.lapsedThen")
                    : term.endReason
                      ? t(endKey[term.endReason] ?? "timeline.end.superseded")
                      : t("detail.none")}
                </TableCell>
                <TableCell data-label={t("timeline.handover")} className={cn(STACKED, "text-xs")} data-testid="handover">
                  {term.handoverMs != null && term.handoverFrom
                    ? t(handoverKey[term.handoverBasis ?? ""] ?? "timeline.handoverValue", {
                        ms: num(term.handoverMs, locale, 0),
                        from: term.handoverFrom,
                      })
                    : // Newest first: the last row is the oldest term read.
                      t(i === terms.length - 1 ? "timeline.first" : "timeline.afterUnread")}
                </TableCell>
              </TableRow>
            ))}
          </TableBody>
        </Table>
      )}
    </section>
  );
}
