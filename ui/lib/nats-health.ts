// What an answer of `GET /api/nats` means for an operator: all good, or
// which servers are down, which streams have no leader (and what waits on
// each), and whether JetStream itself can act. Pure, so the words the page
// shows are tested without a DOM.
import type { NatsView } from "@/lib/api/nats-poller";
import type { NatsPicture, ServerState, StreamState } from "@/lib/api/schemas";
import type { MessageKey } from "@/lib/i18n";

/**
 * The streams Aegis creates, and what a stream without a leader does to
 * Aegis: its writes wait, or, for DEAD_LETTER, the messages consumers
 * give up on meanwhile are not recorded (neither the SDK's copy nor the
 * server's max-deliveries advisory is stored: `give_up` in
 * `crates/aegis-sdk/src/pull.rs`).
 */
const EFFECTS: Record<string, MessageKey> = {
  KV_orders: "nats.effect.KV_orders",
  KV_service_elections: "nats.effect.KV_service_elections",
  KV_service_registry: "nats.effect.KV_service_registry",
  KV_service_definitions: "nats.effect.KV_service_definitions",
  AEGIS_LOG: "nats.effect.AEGIS_LOG",
  AEGIS_METRICS: "nats.effect.AEGIS_METRICS",
  EVENTS: "nats.effect.EVENTS",
  COMMANDS: "nats.effect.COMMANDS",
  DEAD_LETTER: "nats.effect.DEAD_LETTER",
};

/** The message saying what waits (or is lost) while `stream` has no leader. */
export function effectKey(stream: string): MessageKey | null {
  return Object.prototype.hasOwnProperty.call(EFFECTS, stream) ? EFFECTS[stream]! : null;
}

export interface NatsAssessment {
  ok: boolean;
  serversUp: number;
  servers: number;
  streams: number;
  down: ServerState[];
  leaderless: StreamState[];
  /** `ok`, `no_meta_leader`, `unreachable` or a newer monitor's state. */
  jetstream: string;
}

export function assess(health: NatsPicture): NatsAssessment {
  const down = health.servers.filter((s) => !s.up);
  const leaderless = health.streams.filter((s) => !s.leader);
  return {
    ok: health.jetstream === "ok" && down.length === 0 && leaderless.length === 0,
    serversUp: health.servers.length - down.length,
    servers: health.servers.length,
    streams: health.streams.length,
    down,
    leaderless,
    jetstream: health.jetstream,
  };
}

/**
 * What the rest of the page may claim about NATS: `ok`, `problem`,
 * `unknown`, or nothing (not asked yet, or a monitor without the route).
 */
export type NatsSummary = "ok" | "problem" | "unknown" | null;

export function summarize(view: NatsView): NatsSummary {
  switch (view.kind) {
    case "known":
      return assess(view.health).ok ? "ok" : "problem";
    case "unknown":
      return "unknown";
    default:
      return null;
  }
}
