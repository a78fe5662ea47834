// The catalogue key that explains an instance's `statusReason`, for the
// reasons this UI knows; a newer monitor's reason is shown as it is.
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

export function reasonKey(reason: string | null | undefined): MessageKey | null {
  return reason ? (KEYS[reason] ?? null) : null;
}
