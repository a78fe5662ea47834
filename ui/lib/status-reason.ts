// The catalogue key that explains an instance's `statusReason`, for the
// reasons this UI knows; a newer monitor's reason is shown as it is.
//
// A leader shown `degraded` leads although unhealthy; why it is unhealthy
// is its record's own reason (`metadata.statusReason`: `health_check` or
// `operator`), said with it as `aegis status` says "degraded: forced by
// an operator". That reason is whatever the record says: one this UI does
// not know is not shown (anyone who can write the registry writes it),
// and the plain degraded words stand.
import type { MessageKey } from "@/lib/i18n";

const KEYS: Record<string, MessageKey> = {
  disconnected: "reason.disconnected",
  unresponsive: "reason.unresponsive",
  unresponsive_expired: "reason.unresponsive_expired",
  deposed: "reason.deposed",
  health_check: "reason.health_check",
  operator: "reason.operator",
  degraded: "reason.degraded",
};

/** A degraded leader's words, by its record's own reason. */
const DEGRADED_KEYS: Record<string, MessageKey> = {
  health_check: "reason.degraded.health_check",
  operator: "reason.degraded.operator",
};

export function reasonKey(reason: string | null | undefined): MessageKey | null {
  return reason ? (KEYS[reason] ?? null) : null;
}

/**
 * The catalogue key that explains an instance's status: `reasonKey` of its
 * `statusReason`, and for a degraded leader the words that also say what
 * made it unhealthy, when its record says a reason this UI knows.
 */
export function instanceReasonKey(i: { statusReason?: string | null; metadata?: Record<string, unknown> }): MessageKey | null {
  if (i.statusReason === "degraded") {
    const own = i.metadata?.statusReason;
    if (typeof own === "string" && Object.hasOwn(DEGRADED_KEYS, own)) return DEGRADED_KEYS[own]!;
  }
  return reasonKey(i.statusReason);
}
