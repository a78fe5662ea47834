// An operator's `slow` drill (`aegis chaos slow`) as an instance's record
// says it: metadata `drillDelayMs` (the delay every handler waits first)
// and `drillDelaySince` (since when), written by the instance while the
// drill holds and removed when it is lifted. The instance keeps its status:
// it is only slower, on purpose, and the card says so, so that a forgotten
// drill is not chased as a latency problem.
import type { ServiceInstance } from "@/lib/api/schemas";

/** The record's metadata keys (as `aegis_contracts::control`). */
export const DRILL_DELAY_MS = "drillDelayMs";
export const DRILL_DELAY_SINCE = "drillDelaySince";

export interface DrillDelay {
  /** The delay added before every call, in milliseconds (> 0). */
  delayMs: number;
  /** Since when (RFC 3339), when the record says. */
  since: string | null;
}

/** The drill delaying `i`'s handlers, or null: none, or not a delay the UI can read. */
export function drillDelay(i: Pick<ServiceInstance, "metadata">): DrillDelay | null {
  const delay = i.metadata?.[DRILL_DELAY_MS];
  if (typeof delay !== "number" || !Number.isFinite(delay) || delay <= 0) return null;
  const since = i.metadata[DRILL_DELAY_SINCE];
  return { delayMs: delay, since: typeof since === "string" && !Number.isNaN(Date.parse(since)) ? since : null };
}
