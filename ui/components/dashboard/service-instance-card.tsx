// ServiceInstanceCard: one instance on the dashboard — id, service, status,
// version, a ticking heartbeat age, why it is unhealthy and since when, an
// operator's slow drill and since when, its role in its sticky group (the API's
// truth: leader with epoch, or standby), calls/s and p99 from the metrics
// feed. An instance that left stays as "gone" for a while. The whole card
// is one link (one tab stop) to the instance's detail page.
"use client";

import * as React from "react";
import Link from "next/link";
import { Activity, Crown } from "lucide-react";

import { Card } from "@/components/ui/card";
import { cn } from "@/lib/utils";
import { figuresStale, processDown, type CardFigures, type InstanceEntry } from "@/lib/instance-store";
import type { ServiceInstance } from "@/lib/api/schemas";
import { useInstanceStore, useLatestFigures } from "@/hooks/use-instance-store";
import { subscribeClock } from "@/hooks/use-now";
import { ms, num } from "@/lib/format";
import { instanceHref } from "@/lib/instance-address";
import { useI18n } from "@/lib/i18n";
import { instanceReasonKey } from "@/lib/status-reason";
import { HeartbeatAge, Since } from "./heartbeat-age";
import { isDegraded, ServiceStatusBadge } from "./service-status-badge";
import { StatusDetail } from "./status-detail";
import { StatusSince } from "./status-since";
import { DrillDelayLine, shownDrillDelay } from "./drill-delay-line";

export interface ServiceInstanceCardProps {
  entry: InstanceEntry;
}

/**
 * The card's role, also a test hook: "leader" (ACTIVE in a sticky group —
 * the API's truth, never inferred here), "standby", "unhealthy" (in a
 * group but neither), "member" (load-balanced) or "gone".
 */
export function roleOf(entry: InstanceEntry): "leader" | "standby" | "unhealthy" | "member" | "gone" {
  if (entry.goneAt !== null) return "gone";
  const i = entry.instance;
  if (!i.stickyActiveGroup) return "member";
  if (i.status === "ACTIVE") return "leader";
  return i.status === "STANDBY" ? "standby" : "unhealthy";
}

/** The API's reasons that an instance is down or no longer holds the election. */
const DOWN_REASONS: readonly string[] = ["disconnected", "unresponsive", "unresponsive_expired", "deposed"];

/**
 * Whether an instance's own last report said it led its sticky group:
 * ACTIVE, or UNHEALTHY with a fencing epoch (a degraded leader writes its
 * record UNHEALTHY and keeps its epoch; a standby's record has none).
 */
function reportedLeading(i: ServiceInstance): boolean {
  return i.reportedStatus === "ACTIVE" || (i.reportedStatus === "UNHEALTHY" && i.epoch != null);
}

/**
 * Whether an instance is a sticky group's former leader: UNHEALTHY because
 * it is down or deposed, while its own last report said it led (as
 * `aegis status` says "former leader of default (epoch 1)").
 */
export function isFormerLeader(entry: InstanceEntry): boolean {
  const i = entry.instance;
  return (
    entry.goneAt === null &&
    !!i.stickyActiveGroup &&
    i.status === "UNHEALTHY" &&
    reportedLeading(i) &&
    DOWN_REASONS.includes(i.statusReason ?? "")
  );
}

/**
 * Whether the card calls an instance the former leader of its group: one
 * down or deposed that said it led (`isFormerLeader`), or one gone whose
 * last record said it led or was last seen ACTIVE (`GoneRole`). The
 * instance page shows its epoch as a former leader's by the same rule.
 */
export function shownAsFormerLeader(entry: InstanceEntry): boolean {
  const i = entry.instance;
  if (entry.goneAt !== null) return !!i.stickyActiveGroup && (i.status === "ACTIVE" || reportedLeading(i));
  return isFormerLeader(entry);
}

function ServiceInstanceCardImpl({ entry }: ServiceInstanceCardProps) {
  const { t } = useI18n();
  const i = entry.instance;
  const role = roleOf(entry);
  const gone = entry.goneAt !== null;
  const degraded = !gone && isDegraded(i);
  // A degraded leader's words say what made it unhealthy, as its record does.
  const key = instanceReasonKey(i);
  const reasonText = i.statusReason ? (key ? t(key) : i.statusReason) : null;
  const href = instanceHref(i.serviceName, i.instanceId);
  const slowed = gone ? null : shownDrillDelay(i);
  return (
    <Card
      data-testid="instance-card"
      data-instance={i.instanceId}
      data-service={i.serviceName}
      data-status={gone ? "GONE" : i.status}
      data-role={role}
      data-slowed={slowed ?? undefined}
      className={cn(
        "relative flex flex-col gap-3 p-4 transition-colors focus-within:ring-2 focus-within:ring-ring hover:border-primary/60 [content-visibility:auto] [contain-intrinsic-size:auto_168px]",
        gone && "border-dashed bg-muted/40",
        !gone && i.status === "UNHEALTHY" && "border-danger/50",
        degraded && "border-2 border-warning/60",
      )}
    >
      <div className="flex items-start justify-between gap-2">
        <div className="min-w-0">
          <h3 className="truncate text-base font-semibold">
            <Link
              href={href}
              prefetch={false}
              className="after:absolute after:inset-0 after:content-[''] focus-visible:outline-none"
              aria-label={t("card.details", { id: i.instanceId })}
            >
              {i.instanceId}
            </Link>
          </h3>
          <p className="truncate text-xs text-muted-foreground">{i.serviceName}</p>
        </div>
        <ServiceStatusBadge status={gone ? "GONE" : i.status} degraded={degraded} />
      </div>
      <dl className="grid grid-cols-[auto_1fr] gap-x-3 gap-y-1 text-sm">
        <dt className="text-muted-foreground">{t("card.version")}</dt>
        <dd className="truncate font-mono text-xs leading-5">{i.version}</dd>
        <dt className="text-muted-foreground">{t("card.heartbeat")}</dt>
        <dd data-testid="heartbeat-age">
          <HeartbeatAge at={i.lastHeartbeat} service={i.serviceName} id={i.instanceId} />
        </dd>
        <dt className="text-muted-foreground">{t("card.role")}</dt>
        <dd data-testid="role" className="flex items-center gap-1">
          {role === "leader" ? (
            <>
              <Crown className="size-3.5 text-warning-strong" aria-hidden="true" />
              <span className="font-medium">
                {i.epoch != null ? t("card.leader", { epoch: i.epoch }) : t("card.leaderNoEpoch")}
              </span>
            </>
          ) : role === "standby" ? (
            t("card.standby")
          ) : role === "member" ? (
            t("card.noGroup")
          ) : role === "gone" ? (
            <GoneRole instance={i} />
          ) : isFormerLeader(entry) ? (
            i.epoch != null ? (
              t("card.formerLeader", { group: i.stickyActiveGroup!, epoch: i.epoch })
            ) : (
              t("card.formerLeaderNoEpoch", { group: i.stickyActiveGroup! })
            )
          ) : i.stickyActiveGroup ? (
            // Unhealthy but not a former leader: a standby that cannot take
            // over now (as `aegis status` says "standby in default").
            t("card.standbyIn", { group: i.stickyActiveGroup })
          ) : (
            t("card.noGroup")
          )}
        </dd>
      </dl>
      {reasonText && !gone ? (
        <p className="text-xs font-medium text-danger-strong" data-testid="status-reason">
          {reasonText}
          <StatusSince since={i.statusSince} />
        </p>
      ) : null}
      {!gone ? <StatusDetail detail={i.statusDetail} clamp className="-mt-2 text-xs" /> : null}
      {slowed !== null ? <DrillDelayLine instance={i} className="text-xs" /> : null}
      <div className="mt-auto flex items-center gap-2 border-t border-border pt-2 text-xs text-muted-foreground" data-testid="live-figures">
        <Activity className="size-3.5" aria-hidden="true" />
        {gone ? (
          <span data-testid="gone" className="font-medium text-foreground">
            <Since at={entry.goneAt ?? 0} template="card.gone" />
            {" · "}
            {t(`card.goneReason.${entry.goneReason ?? "missing"}`)}
          </span>
        ) : entry.metrics ? (
          <Figures figures={entry.metrics} />
        ) : (
          <LastKnown instance={i} />
        )}
      </div>
    </Card>
  );
}

/**
 * What a gone instance was, from its last record: the former leader of its
 * group when it last said it led (or was last seen ACTIVE) — a leader that stopped
 * or crashed — else just its group. Never "standby": it no longer is one.
 */
function GoneRole({ instance: i }: { instance: ServiceInstance }) {
  const { t } = useI18n();
  if (!i.stickyActiveGroup) return <>{t("card.noGroup")}</>;
  const group = i.stickyActiveGroup;
  if (i.status === "ACTIVE" || reportedLeading(i)) {
    return <>{i.epoch != null ? t("card.formerLeader", { group, epoch: i.epoch }) : t("card.formerLeaderNoEpoch", { group })}</>;
  }
  return <>{t("card.group", { group })}</>;
}

/**
 * Calls/s and p99 from the latest snapshot, or how old it is once none came
 * for a while: figures that stopped must not read as live. Checked on the
 * shared clock's tick against the newest figures the page's store holds:
 * the card keeps the figures it shows, and an idle instance's newer ones
 * read the same ("0 calls/s") and do not replace it, but they prove its
 * snapshots are still coming — as does each of the API's `figures`
 * messages for an instance it does not call late (`figuresTime`). The card
 * re-renders only when that answer changes.
 *
 * A snapshot's time is the instance's clock; its age is measured on the
 * monitor's (`monitorNow`: the browser's corrected by the offset the
 * digests show), as heartbeat ages are, so a browser a minute ahead does
 * not call every instance's figures a minute old. The instance's own skew
 * against the monitor is not corrected — nothing measures it; it is
 * nothing where they share a host or NTP, and `staleAfterMs` leaves a
 * second of room for it. Figures are old two intervals and a second after
 * their snapshot (`InstanceStore.figuresStale`).
 */
function Figures({ figures }: { figures: CardFigures }) {
  const { t, locale } = useI18n();
  const store = useInstanceStore();
  /** The newest figures' snapshot time, at the earliest (the store's newest say it, not the card's copy). */
  const newestAt = React.useCallback(() => {
    if (!store) return Date.parse(figures.timestamp);
    return store.figuresTime(store.latestFigures(figures.serviceName, figures.instanceId) ?? figures);
  }, [store, figures]);
  const isStale = React.useCallback(() => {
    if (!store) return figuresStale(figures, Date.now());
    return store.figuresStale(store.latestFigures(figures.serviceName, figures.instanceId) ?? figures, store.monitorNow());
  }, [store, figures]);
  const [stale, setStale] = React.useState(isStale);
  React.useEffect(() => {
    const check = () => setStale(isStale());
    check();
    return subscribeClock(check);
  }, [isStale]);
  if (stale) {
    return (
      <span data-testid="figures-stale" className="font-medium text-warning-strong">
        <Since at={newestAt()} template="card.metricsStale" clock="monitor" />
      </span>
    );
  }
  return (
    <span className="tabular-nums">
      {t("card.callsPerSec", { value: num(figures.rate, locale) })}
      {" · "}
      {t("card.p99", { value: figures.p99 != null ? ms(figures.p99, locale) : t("detail.none") })}
    </span>
  );
}

/**
 * The figures of an instance without live ones: a down instance's last
 * known, marked as such with their age on the monitor's clock (as in
 * `Figures`; the store keeps its newest snapshot), or "No metrics yet" when
 * none came from its current process — and always for one not down: a
 * fresh (re)started instance read "Last known: 0 calls/s · p99 —, just
 * now" in the amber of stale figures before its first ones.
 */
function LastKnown({ instance: i }: { instance: ServiceInstance }) {
  const { t, locale } = useI18n();
  const store = useInstanceStore();
  const latest = useLatestFigures(i.serviceName, i.instanceId);
  const figures = processDown(i) && store ? store.ownFigures(i, latest) : null;
  if (!store || !figures) return <span>{t("card.noMetrics")}</span>;
  const text = `${t("card.callsPerSec", { value: num(figures.rate, locale) })} · ${t("card.p99", {
    value: figures.p99 != null ? ms(figures.p99, locale) : t("detail.none"),
  })}`;
  return (
    <span data-testid="figures-last-known" className="font-medium text-warning-strong tabular-nums">
      <Since at={store.figuresTime(figures)} template="card.metricsLastKnown" vars={{ figures: text }} clock="monitor" />
    </span>
  );
}

/** Re-renders only when its entry changes (and on the clock's tick for the ages). */
export const ServiceInstanceCard = React.memo(ServiceInstanceCardImpl);
