// DefinitionHistory: a definition's audit trail from the API — every
// change newest first, who made it, when, and which fields changed. A
// deleted definition's too (its newest entry is the delete); a name that
// never held one says so.
"use client";

import * as React from "react";

import { Dialog, DialogContent, DialogDescription, DialogHeader, DialogTitle } from "@/components/ui/dialog";
import { Skeleton } from "@/components/ui/skeleton";
import { api, ApiError } from "@/lib/api/client";
import type { HistoryEntry } from "@/lib/api/schemas";
import { dateTime } from "@/lib/format";
import { useI18n, type MessageKey } from "@/lib/i18n";

export interface DefinitionHistoryProps {
  name: string | null;
  onClose: () => void;
}

const FIELDS = ["owner", "description", "version"] as const;

export function DefinitionHistory({ name, onClose }: DefinitionHistoryProps) {
  const { t, locale } = useI18n();
  const [entries, setEntries] = React.useState<HistoryEntry[] | null>(null);
  const [error, setError] = React.useState<{ notFound: boolean; message: string } | null>(null);

  React.useEffect(() => {
    if (!name) return;
    let cancelled = false;
    /* eslint-disable react-hooks/set-state-in-effect -- reset when another definition is shown */
    setEntries(null);
    setError(null);
    /* eslint-enable react-hooks/set-state-in-effect */
    api
      .definitionHistory(name)
      .then((h) => !cancelled && setEntries(h))
      .catch((e: Error) => !cancelled && setError({ notFound: e instanceof ApiError && e.code === "SERVICE_NOT_FOUND", message: e.message }));
    return () => {
      cancelled = true;
    };
  }, [name]);

  const rows = React.useMemo(() => {
    if (!entries) return [];
    return entries
      .map((entry, i) => {
        const before = i > 0 ? entries[i - 1]?.definition : null;
        const after = entry.definition;
        const changes =
          before && after
            ? FIELDS.filter((f) => before[f] !== after[f]).map((f) => ({ field: f, from: before[f], to: after[f] }))
            : [];
        return { entry, changes, created: !before && !!after };
      })
      .reverse();
  }, [entries]);

  return (
    <Dialog open={name !== null} onOpenChange={(open) => !open && onClose()}>
      <DialogContent closeLabel={t("form.close")} className="max-w-2xl" data-testid="definition-history">
        <DialogHeader>
          <DialogTitle>{t("history.title", { name: name ?? "" })}</DialogTitle>
          <DialogDescription>{t("history.description")}</DialogDescription>
        </DialogHeader>
        {error ? (
          <p role="alert" className="text-sm text-danger-strong" data-testid="history-error">
            {error.notFound ? t("history.notFound", { name: name ?? "" }) : t("history.error", { message: error.message })}
          </p>
        ) : !entries ? (
          <div className="flex flex-col gap-2" aria-busy="true">
            <span className="sr-only">{t("history.loading")}</span>
            <Skeleton className="h-12" />
            <Skeleton className="h-12" />
          </div>
        ) : (
          <ol className="flex flex-col gap-3">
            {rows.map(({ entry, changes, created }) => (
              <li key={entry.revision} className="rounded-md border border-border p-3 text-sm" data-testid="history-entry">
                <p className="flex flex-wrap items-baseline gap-x-2">
                  <span className="font-semibold">
                    {created ? t("history.created") : t(`history.op.${entry.operation}` as MessageKey)}
                  </span>
                  <span className="text-muted-foreground">
                    {entry.who ? t("history.by", { who: entry.who }) : t("history.byUnknown")}
                  </span>
                  <time dateTime={entry.time} className="text-muted-foreground">
                    {dateTime(entry.time, locale)}
                  </time>
                  <span className="ml-auto font-mono text-xs text-muted-foreground">#{entry.revision}</span>
                </p>
                {changes.length > 0 ? (
                  <ul className="mt-2 flex flex-col gap-1">
                    {changes.map((c) => (
                      <li key={c.field} className="break-words font-mono text-xs">
                        {t("history.change", { field: c.field, from: c.from, to: c.to })}
                      </li>
                    ))}
                  </ul>
                ) : !created && entry.operation === "PUT" ? (
                  <p className="mt-1 text-xs text-muted-foreground">{t("history.noChange")}</p>
                ) : null}
              </li>
            ))}
          </ol>
        )}
      </DialogContent>
    </Dialog>
  );
}
