// The state of NATS itself for every signed-in page: one poller of
// `GET /api/nats` for the whole app (the shell's badge and the dashboard's
// notice read the same answer), running only while someone is signed in —
// a poll before that would answer 401 and look like an expired session.
"use client";

import * as React from "react";

import { api } from "@/lib/api/client";
import { NatsPoller, type NatsView } from "@/lib/api/nats-poller";
import type { NatsPicture } from "@/lib/api/schemas";

const NatsHealthContext = React.createContext<NatsView>({ kind: "checking" });

export interface NatsHealthProviderProps {
  /** Poll only while true (the session is known to be valid). */
  enabled: boolean;
  children: React.ReactNode;
  /** For tests: how to ask. */
  fetch?: (signal: AbortSignal) => Promise<NatsPicture>;
}

export function NatsHealthProvider({ enabled, children, fetch = api.nats }: NatsHealthProviderProps) {
  const [view, setView] = React.useState<NatsView>({ kind: "checking" });
  React.useEffect(() => {
    if (!enabled) return;
    const poller = new NatsPoller({ fetch, onView: setView });
    poller.start();
    return () => {
      poller.stop();
      setView({ kind: "checking" });
    };
  }, [enabled, fetch]);
  return <NatsHealthContext.Provider value={view}>{children}</NatsHealthContext.Provider>;
}

/** The latest NATS view: checking, absent (older monitor), known or unknown. */
export function useNatsHealth(): NatsView {
  return React.useContext(NatsHealthContext);
}
