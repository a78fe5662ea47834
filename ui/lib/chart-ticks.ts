// Tick steps and labels of the metrics charts' axes (uPlot asks for the
// steps it may use and formats the ticks of the one it picked). Time axes
// read on the 24-hour clock like every other time in the UI.
import { clock } from "@/lib/format";

/** Steps of a time axis, in seconds: whole seconds, minutes, hours. */
export const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

/**
 * Labels of a time axis's ticks (seconds since the epoch): "18:39:10"
 * while they are seconds apart, "18:39" from a minute up.
 */
export function timeTickLabels(ticks: number[], step: number, locale: string): string[] {
  const seconds = step < 60 || ticks.some((s) => s % 60 !== 0);
  return ticks.map((s) => clock(s * 1000, locale, { seconds }));
}
