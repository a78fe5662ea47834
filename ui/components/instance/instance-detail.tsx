// InstanceDetail (`/services/{instanceId}`): the header (service, id,
// status, version, host, pid, uptime, group, epoch), the failover timeline
// of its sticky group, and tabs for performance, configuration, events and
// what its service takes (methods and commands, with their schemas).
// The id (and the service, from the query) come from the address, so a
// reload of any instance's page works from the one pre-rendered shell.
"use client";

import * as React from "react";
import Link from "next/link";
import { usePathname, useSearchParams } from "next/navigation";
import { ArrowLeft } from "lucide-react";

import { Skeleton } from "@/components/ui/skeleton";
import { Tabs, TabsContent, TabsList, TabsTrigger } from "@/components/ui/tabs";
import { FeedIndicator } from "@/components/live/feed-indicator";
import { HeartbeatAge } from "@/components/dashboard/heartbeat-age";
import { shownAsFormerLeader } from "@/components/dashboard/service-instance-card";
import { isDegraded, ServiceStatusBadge } from "@/components/dashboard/service-status-badge";
import { StatusDetail } from "@/components/dashboard/status-detail";
import { StatusSince } from "@/components/dashboard/status-since";
import { DrillDelayLine } from "@/components/dashboard/drill-delay-line";
import { PageTitle } from "@/components/shell/page-title";
import { InstanceStoreContext, useLatestMetrics } from "@/hooks/use-instance-store";
import { useLiveInstances } from "@/hooks/use-live-instances";
import { useNow } from "@/hooks/use-now";
import { dashboardHref } from "@/lib/dashboard-filters";
import { duration } from "@/lib/format";
import { instanceIdFromPath, serviceFromQuery } from "@/lib/instance-address";
import { ownSnapshot, processDown } from "@/lib/instance-store";
import { useI18n } from "@/lib/i18n";
import { instanceReasonKey } from "@/lib/status-reason";
import { ConfigPanel, type NotAsked } from "./config-panel";
import { EventsPanel } from "./events-panel";
import { FailoverTimeline } from "./failover-timeline";
import { MethodsPanel } from "./methods-panel";
import { MissingInstance } from "./missing-instance";
import { PerformancePanel } from "./performance-panel";

export function InstanceDetail() {
  const { t } = useI18n();
  const pathname = usePathname();
  const id = instanceIdFromPath(pathname);
  // Links to an instance name its service: two services may use the same
  // id, and the page of one that is gone needs it to read its events.
  const service = serviceFromQuery(useSearchParams());
  // Full snapshots of this instance only: its charts and figures; the
  // dashboard's cards need far less of every instance.
  const { store, snapshot, feed } = useLiveInstances({ metricsOf: { service, instance: id } });
  const now = useNow();
  const entry = snapshot.entries.find((e) => e.instance.instanceId === id && (service === null || e.instance.serviceName === service));

  if (!snapshot.loaded) {
    return (
      <div className="flex flex-col gap-4" aria-busy="true">
        <span className="sr-only">{t("detail.loading")}</span>
        <Skeleton className="h-8 w-72" />
        <Skeleton className="h-24" />
        <Skeleton className="h-64" />
      </div>
    );
  }
  // Back to the dashboard as it was filtered when the user left it.
  const back = (
    <Link href={dashboardHref()} className="inline-flex items-center gap-1 text-sm text-primary underline-offset-4 hover:underline">
      <ArrowLeft className="size-4" aria-hidden="true" />
      {t("detail.back")}
    </Link>
  );
  if (!entry) {
    return (
      <div className="flex flex-col gap-4">
        <PageTitle messageKey="detail.notFound.title" vars={{ id }} />
        {back}
        <MissingInstance instanceId={id} serviceName={service} />
      </div>
    );
  }
  const i = entry.instance;
  const gone = entry.goneAt !== null;
  const meta = i.metadata;
  const host = typeof meta.host === "string" ? meta.host : null;
  const pid = typeof meta.pid === "number" || typeof meta.pid === "string" ? String(meta.pid) : null;
  // A process that is gone or hung counts no more: its uptime stops at its
  // last snapshot (none without one).
  const lastSnapshot = processDown(i) ? ownSnapshot(i, store.latestMetrics(i.serviceName, i.instanceId)) : null;
  const uptime = gone
    ? null
    : processDown(i)
      ? lastSnapshot
        ? t("detail.uptimeStopped", { duration: duration(t, lastSnapshot.uptimeSecs) })
        : null
      : i.startedAt
        ? duration(t, (now - Date.parse(i.startedAt)) / 1000)
        : null;
  const none = t("detail.none");
  const facts: [string, React.ReactNode][] = [
    [t("detail.service"), i.serviceName],
    [t("detail.version"), <span key="v" className="font-mono">{i.version}</span>],
    [t("detail.host"), host ?? none],
    [t("detail.pid"), pid ?? none],
    // Wraps rather than truncates: "14 min 9 s, at its last snapshot" on a phone.
    [t("detail.uptime"), <span key="up" className="whitespace-normal">{uptime ?? none}</span>],
    [t("detail.group"), i.stickyActiveGroup ?? none],
    // A former leader's epoch too, as its card says "Former leader of
    // default (epoch 4187)": "—" beside that read as if it never led.
    [
      t("detail.epoch"),
      i.epoch == null
        ? none
        : !gone && i.status === "ACTIVE"
          ? String(i.epoch)
          : shownAsFormerLeader(entry)
            ? t("detail.epochFormer", { epoch: i.epoch })
            : none,
    ],
    [t("detail.heartbeat"), <HeartbeatAge key="hb" at={i.lastHeartbeat} service={i.serviceName} id={i.instanceId} />],
  ];
  // A degraded leader's words say what made it unhealthy, as on its card.
  const reasonKey = instanceReasonKey(i);
  const statusKey = `${i.status}:${i.epoch ?? ""}:${gone}`;
  // An instance that cannot answer is not asked for its configuration.
  // A hung one whose record expired would not answer either.
  const notAsked: NotAsked | null = gone
    ? "gone"
    : processDown(i)
      ? i.statusReason === "disconnected"
        ? "disconnected"
        : "unresponsive"
      : null;
  const groupKey = snapshot.entries
    .filter((e) => e.instance.serviceName === i.serviceName && e.instance.stickyActiveGroup === i.stickyActiveGroup)
    .map((e) => `${e.instance.instanceId}:${e.instance.status}:${e.goneAt !== null}`)
    .join(",");

  return (
    <InstanceStoreContext.Provider value={store}>
    <div className="flex flex-col gap-6" data-testid="instance-detail" data-instance={i.instanceId}>
      <PageTitle messageKey="card.details" vars={{ id: i.instanceId }} />
      {back}
      <header className="flex flex-col gap-4 rounded-lg border border-border p-4 sm:p-6">
        <div className="flex flex-wrap items-center gap-3">
          <h1 className="break-all text-2xl font-bold tracking-tight">{i.instanceId}</h1>
          <ServiceStatusBadge status={gone ? "GONE" : i.status} degraded={!gone && isDegraded(i)} />
          <FeedIndicator state={feed} className="ml-auto" />
        </div>
        {i.statusReason && !gone ? (
          <p className="text-sm font-medium text-danger-strong" data-testid="status-reason">
            {reasonKey ? t(reasonKey) : i.statusReason}
            <StatusSince since={i.statusSince} />
          </p>
        ) : null}
        {!gone ? <StatusDetail detail={i.statusDetail} className="-mt-2 text-sm" /> : null}
        {!gone ? <DrillDelayLine instance={i} className="text-sm" /> : null}
        <dl className="grid grid-cols-2 gap-x-6 gap-y-3 text-sm sm:grid-cols-4">
          {facts.map(([label, value]) => (
            <div key={label} className="flex min-w-0 flex-col">
              <dt className="text-muted-foreground">{label}</dt>
              <dd className="truncate font-medium">{value}</dd>
            </div>
          ))}
        </dl>
      </header>

      {i.stickyActiveGroup ? (
        <FailoverTimeline serviceName={i.serviceName} group={i.stickyActiveGroup} changeKey={groupKey} />
      ) : null}

      <Tabs defaultValue="performance">
        <TabsList aria-label={t("detail.tabs")}>
          <TabsTrigger value="performance">{t("detail.tab.performance")}</TabsTrigger>
          <TabsTrigger value="config">{t("detail.tab.config")}</TabsTrigger>
          <TabsTrigger value="events">{t("detail.tab.events")}</TabsTrigger>
          <TabsTrigger value="api">{t("detail.tab.api")}</TabsTrigger>
        </TabsList>
        <TabsContent value="performance">
          <LivePerformance serviceName={i.serviceName} instanceId={i.instanceId} />
        </TabsContent>
        <TabsContent value="config">
          {/* Remounted when it goes down or comes back: asked again then. */}
          <ConfigPanel key={notAsked ?? "up"} serviceName={i.serviceName} instanceId={i.instanceId} down={notAsked} />
        </TabsContent>
        <TabsContent value="events">
          <EventsPanel serviceName={i.serviceName} instanceId={i.instanceId} statusKey={statusKey} />
        </TabsContent>
        <TabsContent value="api">
          <MethodsPanel serviceName={i.serviceName} />
        </TabsContent>
      </Tabs>
    </div>
    </InstanceStoreContext.Provider>
  );
}

/** The performance tab, following every snapshot of its instance. */
function LivePerformance({ serviceName, instanceId }: { serviceName: string; instanceId: string }) {
  const latest = useLatestMetrics(serviceName, instanceId);
  return <PerformancePanel serviceName={serviceName} instanceId={instanceId} latest={latest} />;
}
