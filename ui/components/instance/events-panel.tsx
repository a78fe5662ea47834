// EventsPanel: the instance's lifecycle events and WARN/ERROR records,
// newest first, re-read every few seconds and when its status changes. On
// a phone the level and kind fold under the time, so the message is the
// second column, on screen. A labelled list narrows them to warnings and
// errors or to lifecycle events (a burst of WARN records during a NATS
// outage buried the elections), and a line says how many are shown of how
// many read: it reads the newest EVENTS_LIMIT, and says so when it got as
// many, so a reader knows older ones exist. A record's text is the
// service's, untrusted: its kind, message and fields are shown with every
// bidirectional, zero-width or tag character as a visible mark naming it
// (lib/hidden-chars), never as it would act.
"use client";

import * as React from "react";

import { Badge } from "@/components/ui/badge";
import { Select } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { Skeleton } from "@/components/ui/skeleton";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import { api } from "@/lib/api/client";
import type { LogRecord } from "@/lib/api/schemas";
import { timeMs } from "@/lib/format";
import { splitHidden } from "@/lib/hidden-chars";
import { useI18n } from "@/lib/i18n";

export const EVENTS_REFRESH_MS = 3000;
/** How many of the newest records the panel reads. */
export const EVENTS_LIMIT = 200;

/** Which records the panel shows. */
export type EventsFilter = "all" | "problems" | "lifecycle";
const FILTERS: readonly EventsFilter[] = ["all", "problems", "lifecycle"];

/**
 * Whether a record passes the filter: `problems` are WARN and ERROR
 * records, `lifecycle` every kind but plain log lines and heartbeat
 * failures (registered, elected, status changes, leadership lost, …).
 */
export function passes(filter: EventsFilter, e: LogRecord): boolean {
  if (filter === "problems") return e.level === "WARN" || e.level === "ERROR";
  if (filter === "lifecycle") return e.kind !== "log" && e.kind !== "heartbeat_failed";
  return true;
}

export interface EventsPanelProps {
  serviceName: string;
  instanceId: string;
  /** Changes when the instance's record changes status: re-read at once. */
  statusKey: string;
}

function levelVariant(level: string) {
  if (level === "ERROR") return "danger" as const;
  if (level === "WARN") return "warning" as const;
  return "neutral" as const;
}

export function EventsPanel({ serviceName, instanceId, statusKey }: EventsPanelProps) {
  const { t } = useI18n();
  const [events, setEvents] = React.useState<LogRecord[] | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const [filter, setFilter] = React.useState<EventsFilter>("all");
  const filterId = React.useId();

  React.useEffect(() => {
    let cancelled = false;
    const read = () =>
      api
        .instanceEvents(serviceName, instanceId, EVENTS_LIMIT)
        .then((list) => {
          if (cancelled) return;
          setEvents([...list].reverse());
          setError(null);
        })
        .catch((e: Error) => !cancelled && setError(e.message));
    void read();
    const timer = setInterval(() => void read(), EVENTS_REFRESH_MS);
    return () => {
      cancelled = true;
      clearInterval(timer);
    };
  }, [serviceName, instanceId, statusKey]);

  const shown = events?.filter((e) => passes(filter, e)) ?? null;
  // As many as asked for: older ones may exist and are not read.
  const capped = (events?.length ?? 0) >= EVENTS_LIMIT;
  const count = !events
    ? null
    : filter === "all"
      ? capped
        ? t("events.count.allCapped", { limit: EVENTS_LIMIT })
        : t("events.count.all", { total: events.length })
      : capped
        ? t("events.count.filteredCapped", { shown: shown!.length, limit: EVENTS_LIMIT })
        : t("events.count.filtered", { shown: shown!.length, total: events.length });

  return (
    <section aria-labelledby="events-title" className="flex flex-col gap-3">
      <div>
        <h2 id="events-title" className="text-lg font-semibold">
          {t("events.title")}
        </h2>
        <p className="text-sm text-muted-foreground">{t("events.help")}</p>
      </div>
      {error && !events ? (
        <p role="alert" className="text-sm text-danger-strong">
          {t("events.error", { message: error })}
        </p>
      ) : !events ? (
        <div aria-busy="true">
          <span className="sr-only">{t("events.loading")}</span>
          <Skeleton className="h-40" />
        </div>
      ) : events.length === 0 ? (
        <p className="rounded-md border border-dashed border-border p-6 text-center text-sm text-muted-foreground">{t("events.empty")}</p>
      ) : (
        <>
          <div className="flex flex-wrap items-center gap-x-4 gap-y-2">
            <div className="flex items-center gap-2">
              <Label htmlFor={filterId}>{t("events.filter")}</Label>
              <Select
                id={filterId}
                value={filter}
                onChange={(e) => setFilter(e.target.value as EventsFilter)}
                className="w-auto"
              >
                {FILTERS.map((f) => (
                  <option key={f} value={f}>
                    {t(`events.filter.${f}`)}
                  </option>
                ))}
              </Select>
            </div>
            <p className="text-sm text-muted-foreground" data-testid="events-count">
              {count}
            </p>
          </div>
          {shown!.length === 0 ? (
            <p className="rounded-md border border-dashed border-border p-6 text-center text-sm text-muted-foreground">{t("events.emptyFiltered")}</p>
          ) : (
            <EventsTable events={shown!} />
          )}
        </>
      )}
    </section>
  );
}

/**
 * A record's text with each hidden character shown as a mark naming it
 * ("U+202E"), set apart from the text so it cannot pass for it.
 */
function Revealed({ text }: { text: string }) {
  const { t } = useI18n();
  return (
    <>
      {splitHidden(text).map((part, i) =>
        part.hidden ? (
          <span
            key={i}
            data-testid="hidden-char"
            title={t("events.hiddenChar", { code: part.code })}
            className="mx-px rounded-sm bg-warning-muted px-0.5 font-mono text-[0.7rem] text-warning-strong"
          >
            {part.code}
          </span>
        ) : (
          <React.Fragment key={i}>{part.text}</React.Fragment>
        ),
      )}
    </>
  );
}

/** The records, newest first; on a phone the level and kind fold under the time. */
function EventsTable({ events }: { events: LogRecord[] }) {
  const { t, locale } = useI18n();
  return (
    <Table data-testid="events-table" scrollLabel={t("events.table")}>
      <TableHeader>
        <TableRow>
          <TableHead scope="col">{t("events.time")}</TableHead>
          <TableHead scope="col" className="hidden sm:table-cell">
            {t("events.level")}
          </TableHead>
          <TableHead scope="col" className="hidden sm:table-cell">
            {t("events.kind")}
          </TableHead>
          <TableHead scope="col">{t("events.message")}</TableHead>
        </TableRow>
      </TableHeader>
      <TableBody>
        {events.map((e, i) => (
          <TableRow key={`${e.timestamp}-${i}`} data-testid="event-row" data-kind={e.kind} data-level={e.level}>
            <TableCell className="align-top font-mono text-xs sm:whitespace-nowrap sm:align-middle">
              <time dateTime={e.timestamp}>{timeMs(e.timestamp, locale)}</time>
              {/* On a phone the level and kind columns fold in here, so the message stays on screen. */}
              <span className="mt-1 flex flex-col items-start gap-1 sm:hidden" data-testid="event-row-meta">
                <Badge variant={levelVariant(e.level)}>{e.level}</Badge>
                <span className="break-all">
                  <Revealed text={e.kind} />
                </span>
              </span>
            </TableCell>
            <TableCell className="hidden sm:table-cell">
              <Badge variant={levelVariant(e.level)}>{e.level}</Badge>
            </TableCell>
            <TableCell className="hidden font-mono text-xs sm:table-cell">
              <Revealed text={e.kind} />
            </TableCell>
            <TableCell className="align-top sm:min-w-64 sm:align-middle">
              <Revealed text={e.message} />
              {Object.keys(e.fields).length > 0 ? (
                <span className="mt-1 block break-all font-mono text-xs text-muted-foreground">
                  <Revealed text={JSON.stringify(e.fields)} />
                </span>
              ) : null}
            </TableCell>
          </TableRow>
        ))}
      </TableBody>
    </Table>
  );
}
