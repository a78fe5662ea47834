// The page's InstanceStore for components deep in the tree that read the
// fast-changing parts (heartbeats, every metrics snapshot) straight from
// it, so those changes do not re-render whole cards.
"use client";

import * as React from "react";

import type { MetricsSnapshot } from "@/lib/api/schemas";
import type { CardFigures, InstanceStore } from "@/lib/instance-store";

export const InstanceStoreContext = React.createContext<InstanceStore | null>(null);

/** The page's store, or null outside one (component tests). */
export function useInstanceStore(): InstanceStore | null {
  return React.useContext(InstanceStoreContext);
}

/** Every new metrics snapshot of one instance, as it arrives. */
export function useLatestMetrics(service: string, id: string): MetricsSnapshot | null {
  const store = useInstanceStore();
  const subscribe = React.useCallback(
    (listener: () => void) => store?.subscribeMetrics(service, id, listener) ?? (() => undefined),
    [store, service, id],
  );
  const get = () => store?.latestMetrics(service, id) ?? null;
  return React.useSyncExternalStore(subscribe, get, get);
}

/** The newest figures of one instance (what its card shows), as they arrive. */
export function useLatestFigures(service: string, id: string): CardFigures | null {
  const store = useInstanceStore();
  const subscribe = React.useCallback(
    (listener: () => void) => store?.subscribeMetrics(service, id, listener) ?? (() => undefined),
    [store, service, id],
  );
  const get = () => store?.latestFigures(service, id) ?? null;
  return React.useSyncExternalStore(subscribe, get, get);
}
