// MetricsChart: one time-series chart drawn by uPlot (canvas; cheap to
// redraw as points stream in). The canvas is described for screen readers
// by a summary — series, point count, latest values — in the figure's
// caption.
"use client";

import * as React from "react";
import uPlot from "uplot";

import { COUNT_STEPS, niceTop, TIME_STEPS, timeTickLabels, VALUE_SPACE, VALUE_STEPS, valueTickLabels } from "@/lib/chart-ticks";
import { useI18n } from "@/lib/i18n";

export interface ChartSeries {
  label: string;
  color: string;
  /** One value per timestamp; null where unknown. */
  values: (number | null)[];
}

export interface MetricsChartProps {
  title: string;
  /** Seconds since the epoch, ascending. */
  times: number[];
  series: ChartSeries[];
  /**
   * Formats a value: for the summary with `decimals` undefined (as many as
   * it needs), for an axis tick with exactly `decimals`.
   */
  format: (v: number, decimals?: number) => string;
  height?: number;
  /** The values are counts: ticks on whole numbers. */
  integer?: boolean;
}

export function MetricsChart({ title, times, series, format, height = 200, integer = false }: MetricsChartProps) {
  const { t, locale } = useI18n();
  const box = React.useRef<HTMLDivElement>(null);
  const plot = React.useRef<uPlot | null>(null);
  const labels = series.map((s) => `${s.label}:${s.color}`).join("|");
  const formatRef = React.useRef(format);
  const localeRef = React.useRef(locale);
  React.useEffect(() => {
    formatRef.current = format;
    localeRef.current = locale;
  }, [format, locale]);

  // (Re)creates the chart when the set of series changes.
  React.useEffect(() => {
    const el = box.current;
    if (!el) return;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height,
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2, points: { show: false } }))],
      axes: [
        {
          stroke: "#4b5563",
          grid: { stroke: "#e5e7eb" },
          ticks: { stroke: "#e5e7eb" },
          // The UI's 24-hour clock, not uPlot's "6:39pm" with a date line.
          incrs: TIME_STEPS,
          space: 64,
          values: (_u, ticks, _axis, _space, step) => timeTickLabels(ticks, step, localeRef.current),
        },
        {
          stroke: "#4b5563",
          grid: { stroke: "#e5e7eb" },
          ticks: { stroke: "#e5e7eb" },
          size: 64,
          // Steps of 1, 2 or 5 × 10ⁿ, whole numbers for counts (in flight,
          // queue depth), every tick with the decimals its step needs:
          // 0.0 0.5 1.0 for an idle rate, not 0 0.3 0.5 0.8 1.
          incrs: integer ? COUNT_STEPS : VALUE_STEPS,
          space: VALUE_SPACE,
          values: (_u, ticks, _axis, _space, step) => valueTickLabels(ticks, step, formatRef.current),
        },
      ],
      // The axis ends on a round value that is a tick (lib/chart-ticks).
      scales: { y: { range: (_u, min, max) => [Math.min(0, min), niceTop(max)] } },
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
    };
    const chart = new uPlot(opts, [[], ...series.map(() => [])] as uPlot.AlignedData, el);
    plot.current = chart;
    const resize = new ResizeObserver(() => chart.setSize({ width: Math.max(200, el.clientWidth), height }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      chart.destroy();
      plot.current = null;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps -- `labels` stands for the series' identity
  }, [labels, height, integer]);

  React.useEffect(() => {
    plot.current?.setData([times, ...series.map((s) => s.values)] as uPlot.AlignedData);
  }, [times, series]);

  const latest = series
    .map((s) => {
      const v = [...s.values].reverse().find((x) => x !== null);
      return `${s.label} ${v == null ? t("detail.none") : format(v)}`;
    })
    .join(", ");
  return (
    <figure className="flex min-w-0 flex-col gap-2 rounded-lg border border-border p-4" data-testid="metrics-chart" data-points={times.length}>
      <figcaption className="flex flex-col">
        <span className="text-sm font-semibold">{title}</span>
        <span className="text-xs text-muted-foreground" data-testid="chart-summary">
          {t("chart.summary", { title, points: times.length, latest })}
        </span>
      </figcaption>
      <div ref={box} role="img" aria-label={t("chart.summary", { title, points: times.length, latest })} className="w-full" />
    </figure>
  );
}
