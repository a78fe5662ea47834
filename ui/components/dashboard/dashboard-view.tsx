// DashboardView (user flow 1): counts by status (each chooses its status)
// and the feed's state in the header; the state of NATS itself under it; filters by service and status and a search by instance id; the
// instances as cards grouped by service. Loading, empty, no-match and error
// states each say what to do next.
"use client";

import * as React from "react";
import { AlertTriangle, Search, ServerOff } from "lucide-react";

import { Button } from "@/components/ui/button";
import { Input, Select } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { Skeleton } from "@/components/ui/skeleton";
import { FeedIndicator } from "@/components/live/feed-indicator";
import { NatsStatus } from "@/components/nats/nats-status";
import { useDashboardFilters } from "@/hooks/use-dashboard-filters";
import { InstanceStoreContext } from "@/hooks/use-instance-store";
import { useLiveInstances } from "@/hooks/use-live-instances";
import { useNatsHealth } from "@/hooks/use-nats-health";
import { FILTER_STATUSES, NO_FILTERS, type StatusFilter } from "@/lib/dashboard-filters";
import type { InstanceEntry } from "@/lib/instance-store";
import { Message, useI18n, type Translate } from "@/lib/i18n";
import { summarize } from "@/lib/nats-health";
import { ServiceInstanceCard } from "./service-instance-card";
import type { DisplayStatus } from "./service-status-badge";

function statusOf(e: InstanceEntry): DisplayStatus {
  return e.goneAt !== null ? "GONE" : e.instance.status;
}

export function DashboardView() {
  const { t } = useI18n();
  const { store, snapshot, feed, error, retry } = useLiveInstances();
  const nats = useNatsHealth();
  // In the address: a reload, a shared link and back/forward keep them.
  const { filters, setFilters } = useDashboardFilters();
  const { service, status, q: query } = filters;

  const entries = snapshot.entries;
  const services = React.useMemo(() => {
    const names = new Set(entries.map((e) => e.instance.serviceName));
    // A link may name a service with no instance now: keep it choosable.
    if (service) names.add(service);
    return [...names];
  }, [entries, service]);
  const counts = React.useMemo(() => {
    const c: Record<DisplayStatus, number> = { ACTIVE: 0, UNHEALTHY: 0, STANDBY: 0, GONE: 0 };
    for (const e of entries) c[statusOf(e)] += 1;
    return c;
  }, [entries]);
  // Typing stays responsive with a thousand cards: the filtered list
  // follows the search box at a lower priority.
  const q = React.useDeferredValue(query).trim().toLowerCase();
  const groups = React.useMemo(() => {
    const byService = new Map<string, InstanceEntry[]>();
    for (const e of entries) {
      if (service && e.instance.serviceName !== service) continue;
      if (status && statusOf(e) !== status) continue;
      if (q && !e.instance.instanceId.toLowerCase().includes(q)) continue;
      const list = byService.get(e.instance.serviceName) ?? [];
      list.push(e);
      byService.set(e.instance.serviceName, list);
    }
    return [...byService.entries()];
  }, [entries, service, status, q]);
  // A status filter asks "which instances are UNHEALTHY?": one grid of
  // them (each card names its service), ordered by service, instead of a
  // group per service (a hundred groups of one card at fleet size).
  const shown: [string, InstanceEntry[]][] =
    status && groups.length > 1
      ? [[
          t("dashboard.byStatus", {
            count: groups.reduce((n, [, list]) => n + list.length, 0),
            status: t(`status.${status}`).toLowerCase(),
            services: groups.length,
          }),
          [...groups].sort(([a], [b]) => a.localeCompare(b)).flatMap(([, list]) => list),
        ]]
      : groups;
  const flat = shown !== groups;
  // A count in the header chooses its status; the chosen one, or Total,
  // chooses all again.
  const choose = (next: StatusFilter | "") => setFilters({ status: next === status ? "" : next }, "choose");
  const live = counts.ACTIVE + counts.UNHEALTHY + counts.STANDBY;
  const filtered = service !== "" || status !== "" || q !== "";

  return (
    <InstanceStoreContext.Provider value={store}>
    <div className="flex flex-col gap-6">
      <div className="flex flex-col gap-4 lg:flex-row lg:items-end lg:justify-between">
        <div>
          <h1 className="text-2xl font-bold tracking-tight">{t("dashboard.title")}</h1>
          <p className="text-sm text-muted-foreground">{t("dashboard.subtitle")}</p>
        </div>
        <div className="flex flex-wrap items-center gap-2">
          <ul aria-label={t("dashboard.counts")} className="flex flex-wrap gap-2" data-testid="status-counts">
            <Count label={t("dashboard.total")} value={live} tone="border-border" testId="count-total" pressed={status === ""} onChoose={() => choose("")} />
            <Count label={t("status.ACTIVE")} value={counts.ACTIVE} tone="border-success/40 bg-success-muted text-success-strong" testId="count-ACTIVE" pressed={status === "ACTIVE"} onChoose={() => choose("ACTIVE")} />
            <Count label={t("status.UNHEALTHY")} value={counts.UNHEALTHY} tone="border-danger/40 bg-danger-muted text-danger-strong" testId="count-UNHEALTHY" pressed={status === "UNHEALTHY"} onChoose={() => choose("UNHEALTHY")} />
            <Count label={t("status.STANDBY")} value={counts.STANDBY} tone="border-border bg-muted text-muted-foreground" testId="count-STANDBY" pressed={status === "STANDBY"} onChoose={() => choose("STANDBY")} />
            {/* Gone cards stay a minute; Total counts the registered only. */}
            {counts.GONE > 0 || status === "GONE" ? (
              <Count label={t("status.GONE")} value={counts.GONE} tone="border-dashed border-border text-muted-foreground" testId="count-GONE" pressed={status === "GONE"} onChoose={() => choose("GONE")} />
            ) : null}
          </ul>
          <FeedIndicator state={feed} nats={summarize(nats)} />
        </div>
      </div>

      <NatsStatus view={nats} />

      <div className="grid grid-cols-1 gap-3 sm:grid-cols-3 lg:max-w-3xl">
        <div className="flex flex-col gap-2">
          <Label htmlFor="filter-service">{t("dashboard.filter.service")}</Label>
          <Select id="filter-service" value={service} onChange={(e) => setFilters({ service: e.target.value }, "choose")}>
            <option value="">{t("dashboard.filter.all")}</option>
            {services.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </Select>
        </div>
        <div className="flex flex-col gap-2">
          <Label htmlFor="filter-status">{t("dashboard.filter.status")}</Label>
          <Select id="filter-status" value={status} onChange={(e) => setFilters({ status: e.target.value as StatusFilter | "" }, "choose")}>
            <option value="">{t("dashboard.filter.all")}</option>
            {FILTER_STATUSES.map((s) => (
              <option key={s} value={s}>
                {t(`status.${s}`)}
              </option>
            ))}
          </Select>
        </div>
        <div className="flex flex-col gap-2">
          <Label htmlFor="filter-search">{t("dashboard.filter.search")}</Label>
          <div className="relative">
            <Search className="pointer-events-none absolute left-3 top-3 size-4 text-muted-foreground" aria-hidden="true" />
            <Input
              id="filter-search"
              type="search"
              value={query}
              placeholder={t("dashboard.filter.searchPlaceholder")}
              onChange={(e) => setFilters({ q: e.target.value }, "type")}
              className="pl-9"
            />
          </div>
        </div>
      </div>

      {error && entries.length === 0 ? (
        <Notice
          icon={<AlertTriangle className="size-6 text-danger-strong" aria-hidden="true" />}
          title={t("dashboard.error.title")}
          body={<Message messageKey="dashboard.error.body" vars={{ message: error.message }} />}
          action={<Button onClick={retry}>{t("dashboard.retry")}</Button>}
          role="alert"
        />
      ) : !snapshot.loaded ? (
        <div aria-busy="true" className="flex flex-col gap-3">
          <p className="text-sm text-muted-foreground">{t("dashboard.loading")}</p>
          <div className="grid grid-cols-1 gap-4 sm:grid-cols-2 lg:grid-cols-3 xl:grid-cols-4">
            {Array.from({ length: 8 }, (_, i) => (
              <Skeleton key={i} className="h-40" />
            ))}
          </div>
        </div>
      ) : entries.length === 0 ? (
        <Notice
          icon={<ServerOff className="size-6 text-muted-foreground" aria-hidden="true" />}
          title={t("dashboard.empty.title")}
          body={<Message messageKey="dashboard.empty.body" />}
        />
      ) : groups.length === 0 ? (
        <Notice
          icon={<Search className="size-6 text-muted-foreground" aria-hidden="true" />}
          title={t("dashboard.noMatch.title")}
          body={t("dashboard.noMatch.body")}
          action={
            filtered ? (
              <Button
                variant="outline"
                onClick={() => setFilters(NO_FILTERS, "choose")}
              >
                {t("dashboard.noMatch.clear")}
              </Button>
            ) : null
          }
        />
      ) : (
        shown.map(([name, list]) => (
          <section key={name} aria-labelledby={flat ? "svc-by-status" : `svc-${name}`} className="flex flex-col gap-3" data-testid="service-group">
            <h2 id={flat ? "svc-by-status" : `svc-${name}`} className="flex items-baseline gap-2 text-lg font-semibold">
              {name}
              {flat ? null : <span className="text-sm font-normal text-muted-foreground">{groupCount(t, list)}</span>}
            </h2>
            <div className="grid grid-cols-1 gap-4 sm:grid-cols-2 lg:grid-cols-3 xl:grid-cols-4">
              {list.map((e) => (
                <ServiceInstanceCard key={e.instance.instanceId} entry={e} />
              ))}
            </div>
          </section>
        ))
      )}
    </div>
    </InstanceStoreContext.Provider>
  );
}

/**
 * "2 instances", or "1 instance, 1 gone" while a card that left is still
 * shown: the groups' counts add up to the header's Total, gone ones apart.
 */
function groupCount(t: Translate, list: InstanceEntry[]): string {
  const gone = list.filter((e) => e.goneAt !== null).length;
  const count = list.length - gone;
  return gone ? t("dashboard.instancesGone", { count, gone }) : t("dashboard.instances", { count });
}

function Count({
  label,
  value,
  tone,
  testId,
  pressed,
  onChoose,
}: {
  label: string;
  value: number;
  tone: string;
  testId: string;
  pressed: boolean;
  onChoose: () => void;
}) {
  return (
    <li data-testid={testId}>
      <button
        type="button"
        aria-pressed={pressed}
        onClick={onChoose}
        className={`inline-flex items-center gap-2 rounded-md border px-3 py-1 text-sm hover:underline focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring aria-pressed:ring-2 aria-pressed:ring-ring/60 ${tone}`}
      >
        <span>{label}</span>
        <span className="font-semibold tabular-nums" data-testid="count-value">
          {value}
        </span>
      </button>
    </li>
  );
}

function Notice({
  icon,
  title,
  body,
  action,
  role,
}: {
  icon: React.ReactNode;
  title: string;
  body: React.ReactNode;
  action?: React.ReactNode;
  role?: "alert";
}) {
  return (
    <div role={role} className="flex flex-col items-center gap-3 rounded-lg border border-dashed border-border p-8 text-center">
      {icon}
      <h2 className="text-lg font-semibold">{title}</h2>
      <p className="max-w-xl text-sm text-muted-foreground">{body}</p>
      {action}
    </div>
  );
}
