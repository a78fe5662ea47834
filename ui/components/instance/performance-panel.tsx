// PerformancePanel: latency p50/p99, calls and errors per second, in-flight
// and queue depth over a chosen window (5 min, 15 min, 1 h), read from the
// metrics history and extended live by the snapshots the stream brings.
"use client";

import * as React from "react";

import { Label } from "@/components/ui/label";
import { Select } from "@/components/ui/input";
import { Skeleton } from "@/components/ui/skeleton";
import { api } from "@/lib/api/client";
import type { MetricsSnapshot } from "@/lib/api/schemas";
import { msTickLabels } from "@/lib/chart-ticks";
import { ms, num } from "@/lib/format";
import { useI18n } from "@/lib/i18n";
import { MetricsChart } from "./metrics-chart";

const WINDOWS = { "5m": 300, "15m": 900, "1h": 3600 } as const;
type WindowKey = keyof typeof WINDOWS;

export interface PerformancePanelProps {
  serviceName: string;
  instanceId: string;
  /** The newest snapshot from the live feed, appended when newer. */
  latest: MetricsSnapshot | null;
}

/** The figures charted for one snapshot. */
export function figures(s: MetricsSnapshot) {
  let calls = 0;
  let errors = 0;
  let p50: number | null = null;
  let p99: number | null = null;
  for (const e of s.endpoints) {
    calls += e.requestRate;
    errors += e.errorRate;
    if (e.requestRate > 0) {
      p50 = Math.max(p50 ?? 0, e.latencyMs.p50);
      p99 = Math.max(p99 ?? 0, e.latencyMs.p99);
    }
  }
  return { calls, errors, p50, p99, inFlight: s.inFlight, queue: s.queueDepth };
}

/**
 * Where the charts' lines break (indices, as `MetricsChart`'s `breaks`):
 * between two snapshots further apart than two of their intervals (none
 * came in between: the process was dead, hung or cut off from NATS), or
 * from one process to the next (the uptime starts again). Joined there, a
 * line drew calls across the time an instance was dead (a restarted one's
 * 5 calls/s ran straight through it) or a slope that never happened.
 */
export function lineBreaks(snapshots: MetricsSnapshot[]): ReadonlySet<number> {
  const breaks = new Set<number>();
  for (let i = 1; i < snapshots.length; i += 1) {
    const a = snapshots[i - 1]!;
    const b = snapshots[i]!;
    const gapSecs = (Date.parse(b.timestamp) - Date.parse(a.timestamp)) / 1000;
    const interval = Math.max(a.intervalSecs, b.intervalSecs);
    if (b.uptimeSecs < a.uptimeSecs || (interval > 0 && gapSecs > 2 * interval)) breaks.add(i);
  }
  return breaks;
}

export function PerformancePanel({ serviceName, instanceId, latest }: PerformancePanelProps) {
  const { t, locale } = useI18n();
  const [win, setWin] = React.useState<WindowKey>("15m");
  const [snapshots, setSnapshots] = React.useState<MetricsSnapshot[] | null>(null);
  const [error, setError] = React.useState<string | null>(null);

  React.useEffect(() => {
    let cancelled = false;
    /* eslint-disable react-hooks/set-state-in-effect -- a new window starts from nothing */
    setSnapshots(null);
    setError(null);
    /* eslint-enable react-hooks/set-state-in-effect */
    api
      .instanceMetrics(serviceName, instanceId, win)
      .then((h) => !cancelled && setSnapshots(h.snapshots))
      .catch((e: Error) => !cancelled && setError(e.message));
    return () => {
      cancelled = true;
    };
  }, [serviceName, instanceId, win]);

  React.useEffect(() => {
    if (!latest) return;
    // eslint-disable-next-line react-hooks/set-state-in-effect -- appending what the stream brought
    setSnapshots((prev) => {
      if (!prev) return prev;
      const last = prev[prev.length - 1];
      if (last && last.timestamp >= latest.timestamp) return prev;
      const cutoff = Date.parse(latest.timestamp) - WINDOWS[win] * 1000;
      return [...prev.filter((s) => Date.parse(s.timestamp) >= cutoff), latest];
    });
  }, [latest, win]);

  const data = React.useMemo(() => {
    const list = snapshots ?? [];
    const times = list.map((s) => Date.parse(s.timestamp) / 1000);
    const f = list.map(figures);
    return {
      times,
      breaks: lineBreaks(list),
      latency: [
        { label: t("chart.latency.p50"), color: "#1d4ed8", values: f.map((x) => x.p50) },
        { label: t("chart.latency.p99"), color: "#b45309", values: f.map((x) => x.p99) },
      ],
      throughput: [
        { label: t("chart.calls"), color: "#15803d", values: f.map((x) => x.calls) },
        { label: t("chart.errors"), color: "#b91c1c", values: f.map((x) => x.errors) },
      ],
      load: [
        { label: t("chart.inFlight"), color: "#7c3aed", values: f.map((x) => x.inFlight) },
        // Dashed: the two often sit on the same value (both 0 at rest), and
        // a solid line on the other hid the in-flight one.
        { label: t("chart.queue"), color: "#0e7490", values: f.map((x) => x.queue), dash: [6, 4] },
      ],
    };
  }, [snapshots, t]);

  const fmtMs = React.useCallback((v: number, decimals?: number) => ms(v, locale, decimals), [locale]);
  const fmtNum = React.useCallback(
    (v: number, decimals?: number) => (decimals === undefined ? num(v, locale) : num(v, locale, decimals, true)),
    [locale],
  );

  return (
    <div className="flex flex-col gap-4">
      <div className="flex items-center gap-2">
        <Label htmlFor="metrics-window">{t("detail.window")}</Label>
        <Select id="metrics-window" className="w-auto" value={win} onChange={(e) => setWin(e.target.value as WindowKey)}>
          {(Object.keys(WINDOWS) as WindowKey[]).map((w) => (
            <option key={w} value={w}>
              {t(`detail.window.${w}`)}
            </option>
          ))}
        </Select>
      </div>
      {error ? (
        <p role="alert" className="text-sm text-danger-strong">
          {t("detail.metrics.error", { message: error })}
        </p>
      ) : !snapshots ? (
        <div className="grid gap-4 lg:grid-cols-2" aria-busy="true">
          <span className="sr-only">{t("detail.metrics.loading")}</span>
          <Skeleton className="h-64" />
          <Skeleton className="h-64" />
        </div>
      ) : snapshots.length === 0 ? (
        <p className="rounded-md border border-dashed border-border p-6 text-center text-sm text-muted-foreground">{t("detail.metrics.empty")}</p>
      ) : (
        <div className="grid gap-4 lg:grid-cols-2">
          <MetricsChart title={t("chart.latency")} times={data.times} series={data.latency} breaks={data.breaks} format={fmtMs} noValue={t("chart.noCalls")} tickLabels={msTickLabels} />
          <MetricsChart title={t("chart.throughput")} times={data.times} series={data.throughput} breaks={data.breaks} format={fmtNum} />
          <MetricsChart title={t("chart.load")} times={data.times} series={data.load} breaks={data.breaks} format={fmtNum} integer />
        </div>
      )}
    </div>
  );
}
