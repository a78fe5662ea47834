// HeartbeatAge: "on time" while the monitor's digests say the instance
// beats on time (the bound they allow in the title: "a sign of life within
// the last 3 s"), "3 s ago" when the monitor says its last beat, otherwise
// "at most 3 s ago" (only a bound: a record write, or a digest's bound),
// or "stopped" for one down or gone (its age, a bound or the monitor's
// record of its last beat, in the title);
// "checking…" until the first digest; "unknown: no news for 9 s" while the
// live feed is stalled or reconnecting; updated by the page's shared
// one-second clock.
"use client";

import * as React from "react";

import { useInstanceStore } from "@/hooks/use-instance-store";
import { subscribeClock, useNow } from "@/hooks/use-now";
import { ago, agoAtLeast, agoAtMost, duration } from "@/lib/format";
import type { HeartbeatView } from "@/lib/instance-store";
import { useI18n, type MessageKey } from "@/lib/i18n";

export interface HeartbeatAgeProps {
  /** The heartbeat the record carried when the card last rendered. */
  at: string;
  /** With these, the newest heartbeat is read from the page's store on each tick. */
  service?: string;
  id?: string;
}

export function HeartbeatAge({ at, service, id }: HeartbeatAgeProps) {
  const { t } = useI18n();
  const store = useInstanceStore();
  const ref = React.useRef<HTMLTimeElement>(null);
  // The page's store holds the newest heartbeat, and measures its age on
  // the monitor's clock (lib/instance-store); without one (component
  // tests), the record's time against the browser's clock.
  const read = React.useCallback((): HeartbeatView => {
    const view = service && id ? store?.heartbeatView(service, id) : undefined;
    return view ?? { kind: "age", iso: at, age: Date.now() - Date.parse(at), down: false };
  }, [store, service, id, at]);
  // A thousand cards tick every second: the text is written straight into
  // the element on the clock's tick instead of re-rendering each card.
  // Layout effect: the text is there before the first paint. React renders
  // no children here, so it never fights the text written below.
  const paint = React.useCallback(() => {
    const el = ref.current;
    if (!el) return;
    const view = read();
    el.dataset.kind = view.kind;
    // Rounded up: the text stands until the next tick, a second later,
    // and must not read fresher than the truth meanwhile.
    if (view.kind === "onTime") {
      // The age is only the digest's bound: said as one, not as the age.
      el.textContent = t("card.heartbeatOnTime");
      el.title = t("card.heartbeatWithin", { n: Math.max(1, Math.ceil(view.age / 1000)) });
    } else if (view.kind === "checking") {
      // Not the record's write time as an age: it read as late.
      el.textContent = t("card.heartbeatChecking");
      el.title = t("card.heartbeatCheckingHelp");
    } else if ((view.kind === "atMost" || view.kind === "age") && view.down) {
      // Down or gone: it stopped, whatever is known of its last beat — a
      // bound ("at most 3 s ago" beside "Gone just now" read as news of a
      // process shown dead) or, once a digest lists it, the monitor's
      // record. The age is only in the title: said as the text once the
      // record came, the same dead instance read "stopped", then "5 s
      // ago", and flipped between the two as digests moved its last beat.
      el.textContent = t("card.heartbeatStopped");
      el.title =
        view.kind === "atMost"
          ? t("card.heartbeatAtMostHelp", { ago: agoAtMost(t, view.age) })
          : t("card.heartbeatStoppedHelp", { ago: agoAtLeast(t, view.age) });
    } else if (view.kind === "atMost") {
      // The monitor has not said when it last beat: only a bound, said as
      // one (the trial read "4 s ago" 0.2 s after a beat; while the page
      // polled, every healthy card read 2–9 s ago, its record's write).
      el.textContent = agoAtMost(t, view.age);
      el.title = t("card.heartbeatAtMostLiveHelp", { ago: agoAtMost(t, view.age) });
    } else if (view.kind === "noNews") {
      const vars = { duration: duration(t, view.since / 1000) };
      el.textContent = t("card.heartbeatNoNews", vars);
      el.title = t("card.heartbeatNoNewsHelp", vars);
    } else {
      el.textContent = Number.isNaN(view.age) ? t("detail.none") : agoAtLeast(t, view.age);
      el.removeAttribute("title");
    }
    el.dateTime = view.iso;
  }, [read, t]);
  // On every render, not only when `read` changes: the card re-renders
  // when the instance goes down or leaves, with the same heartbeat, and
  // "on time" must not stand beside a red badge until the next tick.
  React.useLayoutEffect(paint);
  React.useEffect(() => subscribeClock(paint), [paint]);
  return <time ref={ref} dateTime={at} />;
}

export interface SinceProps {
  /** Milliseconds since the epoch. */
  at: number;
  /** A message with an `{ago}` placeholder, e.g. "Gone {ago}". */
  template?: MessageKey;
  /** More of the template's placeholders. */
  vars?: Record<string, string | number>;
  /**
   * The clock `at` was read on: "browser" (default) for a moment the page
   * saw itself, "monitor" for a time the monitor or an instance stamped
   * (measured on the page's store's `monitorNow`, as heartbeat ages are).
   */
  clock?: "browser" | "monitor";
}

/** The age of a moment given in epoch milliseconds, optionally in a sentence. */
export function Since({ at, template, vars, clock = "browser" }: SinceProps) {
  const { t } = useI18n();
  const store = useInstanceStore();
  // Re-rendered on the shared clock's tick; read on the clock asked for.
  const browserNow = useNow();
  const now = clock === "monitor" && store ? store.monitorNow() : browserNow;
  const iso = new Date(at).toISOString();
  const age = ago(t, iso, now);
  return <time dateTime={iso}>{template ? t(template, { ...vars, ago: age }) : age}</time>;
}
