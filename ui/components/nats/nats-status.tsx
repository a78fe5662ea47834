// NatsStatus: the dashboard's word on NATS itself. All good is one quiet
// line; a server down, a stream without a leader or JetStream unable to
// act is a notice naming each, with since when and what waits on it; a
// status the page cannot learn says so instead of staying green. A monitor
// without the route (older) shows nothing. One polite live region holds
// every state, so a change is announced without taking the focus; nothing
// in it changes with every poll (no "as of" time), or it would be read out
// on every poll.
"use client";

import * as React from "react";
import { CircleCheck, CircleHelp, TriangleAlert } from "lucide-react";

import { useNatsHealth } from "@/hooks/use-nats-health";
import type { NatsView, UnknownCause } from "@/lib/api/nats-poller";
import type { NatsPicture, StreamState } from "@/lib/api/schemas";
import { clockOrDate } from "@/lib/format";
import { useI18n, type Translate } from "@/lib/i18n";
import { assess, effectKey } from "@/lib/nats-health";
import { cn } from "@/lib/utils";

export interface NatsStatusProps {
  /** The view to show; by default the app's poller's. */
  view?: NatsView;
  className?: string;
}

export function NatsStatus({ view: given, className }: NatsStatusProps) {
  const polled = useNatsHealth();
  const view = given ?? polled;
  const { t } = useI18n();
  if (view.kind === "absent") return null;
  return (
    <section id="nats-status" aria-label={t("nats.label")} className={className} data-testid="nats-status" data-state={view.kind === "known" ? (assess(view.health).ok ? "ok" : "problem") : view.kind}>
      <div role="status" aria-live="polite">
        {view.kind === "checking" ? (
          <p className="text-sm text-muted-foreground">{t("nats.checking")}</p>
        ) : view.kind === "unknown" ? (
          <Unknown since={view.since} cause={view.cause} />
        ) : (
          <Known health={view.health} />
        )}
      </div>
    </section>
  );
}

function Known({ health }: { health: NatsPicture }) {
  const { t, locale } = useI18n();
  const a = assess(health);
  if (a.ok) {
    return (
      <p className="flex items-center gap-2 text-sm text-muted-foreground" data-testid="nats-ok">
        <CircleCheck className="size-4 shrink-0 text-success" aria-hidden="true" />
        {t("nats.ok", { up: a.serversUp, total: a.servers, streams: a.streams })}
      </p>
    );
  }
  // Usually minutes ago, but a node can stay down for days: the date
  // then comes first.
  const since = (iso: string | null | undefined) => (iso ? clockOrDate(iso, locale) : t("nats.sinceStart"));
  // Without a connection the monitor cannot see anything change: that is
  // the one state in red.
  const severe = a.jetstream === "unreachable";
  return (
    <div
      className={cn(
        "flex gap-3 rounded-lg border p-4",
        severe ? "border-danger/40 bg-danger-muted text-danger-strong" : "border-warning/40 bg-warning-muted text-warning-strong",
      )}
      data-testid="nats-problem"
    >
      <TriangleAlert className="mt-0.5 size-5 shrink-0" aria-hidden="true" />
      <div className="flex min-w-0 flex-col gap-1">
        <h2 className="font-semibold">{t("nats.problem.title")}</h2>
        {/* Without a connection the monitor knows no servers: no "0 of 0". */}
        {a.servers > 0 ? (
          <p className="text-sm">
            {a.streams === 0
              ? t("nats.problem.servers", { up: a.serversUp, total: a.servers })
              : a.leaderless.length === 0
                ? t("nats.problem.summaryAllLed", { up: a.serversUp, total: a.servers, streams: a.streams })
                : t("nats.problem.summary", { up: a.serversUp, total: a.servers, leaderless: a.leaderless.length, streams: a.streams })}
          </p>
        ) : null}
        <ul className="mt-1 list-disc space-y-1 pl-5 text-sm" data-testid="nats-problems">
          {a.jetstream !== "ok" ? <li data-testid="nats-jetstream">{jetstreamText(t, a.jetstream)}</li> : null}
          {a.down.map((s) => (
            <li key={`server-${s.name}`} data-testid="nats-server-down">
              {t("nats.server.down", { name: s.name, since: since(s.since) })}
            </li>
          ))}
          {a.leaderless.map((s) => (
            <li key={`stream-${s.name}`} data-testid="nats-stream-leaderless">
              {streamText(t, s, since(s.since))}
            </li>
          ))}
        </ul>
      </div>
    </div>
  );
}

function jetstreamText(t: Translate, state: string): string {
  if (state === "no_meta_leader") return t("nats.jetstream.no_meta_leader");
  if (state === "unreachable") return t("nats.jetstream.unreachable");
  return t("nats.jetstream.other", { state });
}

function streamText(t: Translate, s: StreamState, since: string): string {
  const key = effectKey(s.name);
  const effect = t(key ?? "nats.effect.other");
  // Without a majority of its replicas up, no election can succeed: the
  // usual 4–9 s would be a false promise.
  if (s.replicas > 0 && s.offline.length * 2 >= s.replicas) {
    return t("nats.stream.noQuorum", { name: s.name, since, offline: s.offline.length, replicas: s.replicas, effect });
  }
  return t("nats.stream.noLeader", { name: s.name, since, effect });
}

function Unknown({ since, cause }: { since: number; cause: UnknownCause }) {
  const { t, locale } = useI18n();
  const at = clockOrDate(since, locale);
  const body =
    cause.kind === "timeout"
      ? t("nats.unknown.timeout", { secs: cause.afterMs / 1000, since: at })
      : cause.kind === "stale"
        ? t("nats.unknown.stale", { time: clockOrDate(cause.asOf, locale) })
        : cause.status === 0
          ? t("nats.unknown.network", { since: at, message: cause.message })
          : t("nats.unknown.failed", { status: cause.status, since: at, message: cause.message });
  // No answer at all is the monitor's problem, not NATS's: said so, so it
  // is not read as a NATS outage. An answer that is an error, or a check
  // that stopped moving, leaves only NATS's state unknown.
  const silent = cause.kind === "timeout" || (cause.kind === "failed" && cause.status === 0);
  return (
    <div className="flex gap-3 rounded-lg border border-dashed border-input bg-muted p-4" data-testid="nats-unknown" data-cause={silent ? "monitor" : "nats"}>
      <CircleHelp className="mt-0.5 size-5 shrink-0 text-muted-foreground" aria-hidden="true" />
      <div className="flex flex-col gap-1">
        <h2 className="font-semibold">{t(silent ? "nats.unknown.monitorTitle" : "nats.unknown.title")}</h2>
        <p className="text-sm text-muted-foreground">{body}</p>
      </div>
    </div>
  );
}
