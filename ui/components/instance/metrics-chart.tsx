// MetricsChart: one time-series chart drawn by uPlot (canvas; cheap to
// redraw as points stream in). The canvas is described for screen readers
// by a summary — series, point count, the latest point's values — in the
// figure's caption.
"use client";

import * as React from "react";
import uPlot from "uplot";

import { COUNT_STEPS, niceTop, TIME_STEPS, timeTickLabels, VALUE_SPACE, VALUE_STEPS, valueAxisSize, valueTickLabels } from "@/lib/chart-ticks";
import { clockOrDate } from "@/lib/format";
import { useI18n, type Translate } from "@/lib/i18n";

export interface ChartSeries {
  label: string;
  color: string;
  /** One value per timestamp; null where unknown. */
  values: (number | null)[];
  /**
   * A dashed line (uPlot's dash pattern, px), for a series that may lie on
   * another: the solid line under it shows through its gaps.
   */
  dash?: number[];
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
  /**
   * Why a point has no values (latency: "no calls" in its interval). With
   * it, a latest point without values says so, and the last point that had
   * them is given with its time — never as the latest.
   */
  noValue?: string;
  /**
   * The labels of the value axis's ticks, all at once (one unit for the
   * axis: latency in ms or s); by default each tick through `format`.
   */
  tickLabels?: (ticks: number[], step: number, locale: string) => string[];
  /**
   * Indices `i` where the lines break between point `i - 1` and point `i`:
   * nothing is known in between (no snapshot came), and a line there would
   * draw values nobody measured.
   */
  breaks?: ReadonlySet<number>;
}

/**
 * The indices of the values with no value on either side. uPlot draws a
 * line between two values and nothing for one alone: one interval with
 * calls between intervals without, or the one snapshot before a gap, would
 * not show at all (a new service's five calls left its Latency chart
 * empty). Such a value gets a dot.
 */
export function isolatedPoints(values: ArrayLike<number | null | undefined>): number[] {
  const isolated: number[] = [];
  for (let i = 0; i < values.length; i++) {
    if (values[i] == null) continue;
    if ((i === 0 || values[i - 1] == null) && (i === values.length - 1 || values[i + 1] == null)) isolated.push(i);
  }
  return isolated;
}

/**
 * uPlot's data: the times and each series' values, with a point without
 * values between the two sides of every break (uPlot breaks a line at a
 * null), halfway between them.
 */
export function plotData(times: number[], series: ChartSeries[], breaks?: ReadonlySet<number>): uPlot.AlignedData {
  if (!breaks?.size) return [times, ...series.map((s) => s.values)] as uPlot.AlignedData;
  const at: number[] = [];
  const values: (number | null)[][] = series.map(() => []);
  times.forEach((time, i) => {
    if (i > 0 && breaks.has(i)) {
      at.push((times[i - 1]! + time) / 2);
      values.forEach((v) => v.push(null));
    }
    at.push(time);
    series.forEach((s, k) => values[k]!.push(s.values[i] ?? null));
  });
  return [at, ...values] as uPlot.AlignedData;
}

export function MetricsChart({ title, times, series, format, height = 200, integer = false, noValue, tickLabels, breaks }: MetricsChartProps) {
  const { t, locale } = useI18n();
  const box = React.useRef<HTMLDivElement>(null);
  const plot = React.useRef<uPlot | null>(null);
  const labels = series.map((s) => `${s.label}:${s.color}`).join("|");
  const formatRef = React.useRef(format);
  const localeRef = React.useRef(locale);
  const tickLabelsRef = React.useRef(tickLabels);
  React.useEffect(() => {
    formatRef.current = format;
    localeRef.current = locale;
    tickLabelsRef.current = tickLabels;
  }, [format, locale, tickLabels]);

  // (Re)creates the chart when the set of series changes.
  React.useEffect(() => {
    const el = box.current;
    if (!el) return;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height,
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          dash: s.dash,
          // No dots on a line; a value alone, which no line draws, gets one.
          points: {
            show: false,
            size: 6,
            fill: s.color,
            filter: (u: uPlot, seriesIdx: number, show: boolean) =>
              show ? null : isolatedPoints(u.data[seriesIdx] as ArrayLike<number | null | undefined>),
          },
        })),
      ],
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
          // As wide as the widest label: "1,000,000" whole, not cut at the edge.
          size: (_u, values) => valueAxisSize(values),
          // Steps of 1, 2 or 5 × 10ⁿ, whole numbers for counts (in flight,
          // queue depth), every tick with the decimals its step needs:
          // 0.0 0.5 1.0 for an idle rate, not 0 0.3 0.5 0.8 1.
          incrs: integer ? COUNT_STEPS : VALUE_STEPS,
          space: VALUE_SPACE,
          values: (_u, ticks, _axis, _space, step) =>
            tickLabelsRef.current ? tickLabelsRef.current(ticks, step, localeRef.current) : valueTickLabels(ticks, step, formatRef.current),
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
    plot.current?.setData(plotData(times, series, breaks));
  }, [times, series, breaks]);

  const summary = summarize(t, locale, { title, times, series, format, noValue });
  return (
    <figure className="flex min-w-0 flex-col gap-2 rounded-lg border border-border p-4" data-testid="metrics-chart" data-points={times.length}>
      <figcaption className="flex flex-col">
        <span className="text-sm font-semibold">{title}</span>
        <span className="text-xs text-muted-foreground" data-testid="chart-summary">
          {summary}
        </span>
      </figcaption>
      <div ref={box} role="img" aria-label={summary} className="w-full" />
    </figure>
  );
}

/**
 * The caption: the latest point's values. A series without a value there
 * reads "none" — not its last value, which may be minutes old (latency
 * after the calls stopped). With `noValue`, a latest point without any
 * value says why, followed by the last point that had values and its time.
 */
function summarize(
  t: Translate,
  locale: string,
  { title, times, series, format, noValue }: Pick<MetricsChartProps, "title" | "times" | "series" | "format" | "noValue">,
): string {
  const at = (i: number) => series.map((s) => `${s.label} ${s.values[i] == null ? t("detail.none") : format(s.values[i]!)}`).join(", ");
  const last = times.length - 1;
  const points = times.length;
  if (last < 0) return t("chart.summary", { title, points, latest: t("detail.none") });
  const hasValues = (i: number) => series.some((s) => s.values[i] != null);
  if (noValue === undefined || hasValues(last)) return t("chart.summary", { title, points, latest: at(last) });
  let before = last - 1;
  while (before >= 0 && !hasValues(before)) before -= 1;
  if (before < 0) return t("chart.summary.idle", { title, points, reason: noValue });
  const when = clockOrDate(times[before]! * 1000, locale);
  return t("chart.summary.idleSince", { title, points, reason: noValue, values: at(before), when });
}
