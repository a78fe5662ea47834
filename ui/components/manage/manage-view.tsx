// ManageView (user flow 2): the table of service definitions, live; create
// and edit in the DefinitionForm modal, delete behind the
// ConfirmDeleteDialog, each definition's history — a deleted one's opened
// by name; a toast for every outcome. Viewers see the table and the
// history, without write controls. A definition deleted (by this delete,
// or by another admin's first, even one whose row left while the dialog
// was open), the focus goes to the row that took its place (or to New),
// not to <body>.
"use client";

import * as React from "react";
import { History, Pencil, Trash2 } from "lucide-react";

import { Button } from "@/components/ui/button";
import { Skeleton } from "@/components/ui/skeleton";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import { FeedIndicator } from "@/components/live/feed-indicator";
import { useSession } from "@/hooks/use-session";
import { toast } from "@/hooks/use-toast";
import { api, ApiError, notifyUnauthorized } from "@/lib/api/client";
import { LiveFeed, type FeedState } from "@/lib/api/live-feed";
import type { ServiceDefinition } from "@/lib/api/schemas";
import { dateTime } from "@/lib/format";
import { useI18n } from "@/lib/i18n";
import { ConfirmDeleteDialog } from "./confirm-delete-dialog";
import { DefinitionForm } from "./definition-form";
import { DefinitionHistory } from "./definition-history";
import { HistoryByName } from "./history-by-name";

export function ManageView() {
  const { t, locale } = useI18n();
  const { canWrite } = useSession();
  const [definitions, setDefinitions] = React.useState<ServiceDefinition[] | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const [feed, setFeed] = React.useState<FeedState>("connecting");
  const [formOpen, setFormOpen] = React.useState(false);
  const [editing, setEditing] = React.useState<string | null>(null);
  const [deleting, setDeleting] = React.useState<string | null>(null);
  const [history, setHistory] = React.useState<string | null>(null);
  /** A definition just deleted and its row's place: where the focus goes once the row left. */
  const deleted = React.useRef<{ name: string; index: number } | null>(null);
  /**
   * The row under the open delete dialog and its last known place. Another
   * admin's delete, arriving over the live feed, can drop the row before
   * the confirm: its place must be known from before that.
   */
  const deletingAt = React.useRef<{ name: string; index: number } | null>(null);
  const newButton = React.useRef<HTMLButtonElement>(null);

  const reload = React.useCallback(async () => {
    try {
      setDefinitions(await api.definitions());
      setError(null);
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
      throw e;
    }
  }, []);

  React.useEffect(() => {
    // eslint-disable-next-line react-hooks/set-state-in-effect -- state is set after the request answers
    void reload().catch(() => undefined);
    // Another user's change shows up here within a moment.
    const live = new LiveFeed({
      topics: ["definition"],
      onDefinition: () => void reload().catch(() => undefined),
      resync: reload,
      onState: setFeed,
      onExpired: notifyUnauthorized,
    });
    live.start();
    return () => live.stop();
  }, [reload]);

  const openCreate = () => {
    setEditing(null);
    setFormOpen(true);
  };
  const openEdit = (name: string) => {
    setEditing(name);
    setFormOpen(true);
  };

  const onSaved = (d: ServiceDefinition, created: boolean) => {
    toast({ variant: "success", title: t(created ? "manage.created" : "manage.updated", { name: d.service_name }) });
    void reload().catch(() => undefined);
  };

  // The row of `name` is leaving: the focus is to follow it once the
  // re-read drops it. If that re-read fails, nothing says when the row
  // leaves; a later re-read (minutes later, from a live event) must not
  // pull the focus from wherever the user left it.
  const reloadAfterDelete = (name: string) => {
    const listed = definitions?.findIndex((d) => d.service_name === name) ?? -1;
    const known = deletingAt.current?.name === name ? deletingAt.current.index : 0;
    const target = { name, index: listed >= 0 ? listed : known };
    deleted.current = target;
    setDeleting(null);
    void reload().catch(() => {
      if (deleted.current === target) deleted.current = null;
    });
  };

  const confirmDelete = async (name: string) => {
    try {
      await api.deleteDefinition(name);
      toast({ variant: "success", title: t("manage.deleted", { name }) });
      reloadAfterDelete(name);
    } catch (e) {
      const message = e instanceof ApiError ? e.message : String(e);
      toast({ variant: "error", title: t("manage.failed", { action: t("manage.delete"), message }) });
      // Another admin deleted it first: its row leaves all the same.
      if (e instanceof ApiError && e.code === "SERVICE_NOT_FOUND") reloadAfterDelete(name);
    }
  };

  // While the dialog is open, its row's place as of the last re-read that
  // still listed it (set when the dialog opens, kept up to date if rows
  // before it come or go).
  React.useEffect(() => {
    if (deleting === null) {
      deletingAt.current = null;
      return;
    }
    const index = definitions?.findIndex((d) => d.service_name === deleting) ?? -1;
    if (index >= 0) deletingAt.current = { name: deleting, index };
  }, [definitions, deleting]);

  // The confirmation gives the focus back to the row's Delete button; when
  // that row leaves the table, the focus would fall to <body>. Checked
  // after the dialog's own focus return (a task later), and only when
  // nothing else has the focus.
  React.useEffect(() => {
    const gone = deleted.current;
    if (!gone || deleting !== null || !definitions || definitions.some((d) => d.service_name === gone.name)) return;
    const timer = setTimeout(() => {
      deleted.current = null;
      if (document.activeElement && document.activeElement !== document.body) return;
      const next = definitions[Math.min(gone.index, definitions.length - 1)];
      const row = next ? document.querySelector<HTMLElement>(`[data-testid="definition-row"][data-name="${CSS.escape(next.service_name)}"] button`) : null;
      (row ?? newButton.current)?.focus();
    }, 0);
    return () => clearTimeout(timer);
  }, [definitions, deleting]);

  return (
    <div className="flex flex-col gap-6">
      <div className="flex flex-col gap-4 sm:flex-row sm:items-end sm:justify-between">
        <div>
          <h1 className="text-2xl font-bold tracking-tight">{t("manage.title")}</h1>
          <p className="text-sm text-muted-foreground">{t("manage.subtitle")}</p>
        </div>
        <div className="flex flex-wrap items-center gap-2">
          <FeedIndicator state={feed} />
          {canWrite ? (
            <Button ref={newButton} onClick={openCreate} data-testid="new-definition">
              {t("manage.new")}
            </Button>
          ) : null}
        </div>
      </div>
      {!canWrite ? (
        <p className="rounded-md border border-border bg-muted p-3 text-sm text-muted-foreground" data-testid="viewer-note">
          {t("manage.viewerNote")}
        </p>
      ) : null}

      {error && !definitions ? (
        <p role="alert" className="rounded-md border border-danger/40 bg-danger-muted p-4 text-sm text-danger-strong">
          {t("manage.error", { message: error })}
        </p>
      ) : !definitions ? (
        <div className="flex flex-col gap-2" aria-busy="true">
          <span className="sr-only">{t("manage.loading")}</span>
          {Array.from({ length: 4 }, (_, i) => (
            <Skeleton key={i} className="h-12" />
          ))}
        </div>
      ) : definitions.length === 0 ? (
        <div className="flex flex-col items-center gap-2 rounded-lg border border-dashed border-border p-8 text-center">
          <h2 className="text-lg font-semibold">{t("manage.empty.title")}</h2>
          <p className="text-sm text-muted-foreground">{canWrite ? t("manage.empty.body") : t("manage.empty.viewer")}</p>
        </div>
      ) : (
        <Table data-testid="definitions-table">
          <TableHeader>
            <TableRow>
              <TableHead scope="col">{t("manage.col.name")}</TableHead>
              <TableHead scope="col" className="hidden sm:table-cell">
                {t("manage.col.owner")}
              </TableHead>
              <TableHead scope="col" className="hidden sm:table-cell">
                {t("manage.col.version")}
              </TableHead>
              <TableHead scope="col" className="hidden md:table-cell">
                {t("manage.col.updated")}
              </TableHead>
              <TableHead scope="col" className="text-right">
                {t("manage.col.actions")}
              </TableHead>
            </TableRow>
          </TableHeader>
          <TableBody>
            {definitions.map((d) => (
              <TableRow key={d.service_name} data-testid="definition-row" data-name={d.service_name}>
                <TableCell className="font-medium">
                  <span className="block">{d.service_name}</span>
                  <span className="block max-w-xs text-xs text-muted-foreground sm:truncate" title={d.description}>
                    {d.description}
                  </span>
                  {/* On a phone the owner and version columns fold in here, so the actions stay on screen. */}
                  <span className="mt-1 block text-xs text-muted-foreground sm:hidden" data-testid="definition-row-meta">
                    {d.owner} · <span className="font-mono">{d.version}</span>
                  </span>
                </TableCell>
                <TableCell className="hidden sm:table-cell">{d.owner}</TableCell>
                <TableCell className="hidden font-mono text-xs sm:table-cell">{d.version}</TableCell>
                <TableCell className="hidden text-muted-foreground md:table-cell">
                  <time dateTime={d.updated_at}>{dateTime(d.updated_at, locale)}</time>
                </TableCell>
                <TableCell>
                  <div className="flex justify-end gap-1">
                    <Button variant="ghost" size="sm" onClick={() => setHistory(d.service_name)} aria-label={t("manage.historyNamed", { name: d.service_name })}>
                      <History aria-hidden="true" />
                      <span className="hidden lg:inline">{t("manage.history")}</span>
                    </Button>
                    {canWrite ? (
                      <>
                        <Button variant="ghost" size="sm" onClick={() => openEdit(d.service_name)} aria-label={t("manage.editNamed", { name: d.service_name })}>
                          <Pencil aria-hidden="true" />
                          <span className="hidden lg:inline">{t("manage.edit")}</span>
                        </Button>
                        <Button
                          variant="ghost"
                          size="sm"
                          className="text-danger-strong hover:bg-danger-muted"
                          onClick={() => setDeleting(d.service_name)}
                          aria-label={t("manage.deleteNamed", { name: d.service_name })}
                        >
                          <Trash2 aria-hidden="true" />
                          <span className="hidden lg:inline">{t("manage.delete")}</span>
                        </Button>
                      </>
                    ) : null}
                  </div>
                </TableCell>
              </TableRow>
            ))}
          </TableBody>
        </Table>
      )}

      {/* A deleted definition has no row, but its history stays. */}
      {definitions ? <HistoryByName onOpen={setHistory} /> : null}

      <DefinitionForm open={formOpen} onOpenChange={setFormOpen} editing={editing} onSaved={onSaved} />
      <ConfirmDeleteDialog name={deleting} onCancel={() => setDeleting(null)} onConfirm={confirmDelete} />
      <DefinitionHistory name={history} onClose={() => setHistory(null)} />
    </div>
  );
}
