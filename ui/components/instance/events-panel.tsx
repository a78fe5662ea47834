// EventsPanel: the instance's lifecycle events and WARN/ERROR records,
// newest first, re-read every few seconds and when its status changes. On
// a phone the level and kind fold under the time, so the message is the
// second column, on screen.
"use client";

import * as React from "react";

import { Badge } from "@/components/ui/badge";
import { Skeleton } from "@/components/ui/skeleton";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import { api } from "@/lib/api/client";
import type { LogRecord } from "@/lib/api/schemas";
import { timeMs } from "@/lib/format";
import { useI18n } from "@/lib/i18n";

export const EVENTS_REFRESH_MS = 3000;

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
  const { t, locale } = useI18n();
  const [events, setEvents] = React.useState<LogRecord[] | null>(null);
  const [error, setError] = React.useState<string | null>(null);

  React.useEffect(() => {
    let cancelled = false;
    const read = () =>
      api
        .instanceEvents(serviceName, instanceId, 200)
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
              <TableRow key={`${e.timestamp}-${i}`} data-testid="event-row" data-kind={e.kind}>
                <TableCell className="align-top font-mono text-xs sm:whitespace-nowrap sm:align-middle">
                  <time dateTime={e.timestamp}>{timeMs(e.timestamp, locale)}</time>
                  {/* On a phone the level and kind columns fold in here, so the message stays on screen. */}
                  <span className="mt-1 flex flex-col items-start gap-1 sm:hidden" data-testid="event-row-meta">
                    <Badge variant={levelVariant(e.level)}>{e.level}</Badge>
                    <span className="break-all">{e.kind}</span>
                  </span>
                </TableCell>
                <TableCell className="hidden sm:table-cell">
                  <Badge variant={levelVariant(e.level)}>{e.level}</Badge>
                </TableCell>
                <TableCell className="hidden font-mono text-xs sm:table-cell">{e.kind}</TableCell>
                <TableCell className="align-top sm:min-w-64 sm:align-middle">
                  {e.message}
                  {Object.keys(e.fields).length > 0 ? (
                    <span className="mt-1 block break-all font-mono text-xs text-muted-foreground">{JSON.stringify(e.fields)}</span>
                  ) : null}
                </TableCell>
              </TableRow>
            ))}
          </TableBody>
        </Table>
      )}
    </section>
  );
}
