// The dashboard's data: every instance with what its card shows of its
// metrics, kept live by the SSE feed (with polling and backoff when it
// drops) and re-read from the REST endpoints at start, on reconnect and on
// `lagged`. The dashboard follows the `figures` topic: what cards show,
// sent when it changes (about a hundred bytes per changed card a second,
// where every instance's full snapshots were ~1.2 KB each, 500 a second at
// 1,000 instances). An instance's page (`metricsOf`) follows the full
// snapshots of its one instance instead.
"use client";

import * as React from "react";

import { api, ApiError, notifyUnauthorized } from "@/lib/api/client";
import { LiveFeed, type FeedState } from "@/lib/api/live-feed";
import { InstanceStore, type StoreSnapshot } from "@/lib/instance-store";

export interface LiveInstances {
  store: InstanceStore;
  snapshot: StoreSnapshot;
  feed: FeedState;
  /** The last failed REST read, cleared by the next success. */
  error: ApiError | null;
  retry: () => void;
}

export interface LiveInstancesOptions {
  /** Full metrics snapshots of this one instance (an instance's page), instead of every card's figures. */
  metricsOf?: { service: string | null; instance: string };
}

export function useLiveInstances(options: LiveInstancesOptions = {}): LiveInstances {
  const service = options.metricsOf?.service ?? null;
  const instance = options.metricsOf?.instance ?? null;
  const [store] = React.useState(() => new InstanceStore());
  const snapshot = React.useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
  const [feed, setFeed] = React.useState<FeedState>("connecting");
  const [error, setError] = React.useState<ApiError | null>(null);

  const resync = React.useCallback(async () => {
    try {
      if (instance !== null) {
        const [instances, metrics] = await Promise.all([api.instances(), api.metrics({ service, instance })]);
        store.replaceAll(instances, metrics);
      } else {
        const [instances, figures] = await Promise.all([api.instances(), api.figures()]);
        store.applyFigures(figures);
        store.replaceAll(instances);
      }
      setError(null);
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(0, "NETWORK", String(e));
      setError(err);
      throw err;
    }
  }, [store, service, instance]);

  React.useEffect(() => {
    const live = new LiveFeed({
      topics: instance !== null ? ["instance", "metrics"] : ["instance", "figures"],
      metricsOf: instance !== null ? { service, instance } : undefined,
      onInstance: (e) => store.apply(e),
      onMetrics: (e) => store.setMetrics(e.snapshot),
      onFigures: (e) => store.applyFigures(e),
      onDigest: (d) => store.applyDigest(d),
      resync,
      onState: (s) => {
        // Heartbeats are not known while the feed brings no news.
        store.setFeed(s);
        setFeed(s);
      },
      onExpired: notifyUnauthorized,
    });
    // eslint-disable-next-line react-hooks/set-state-in-effect -- state is set after the request answers
    void resync().catch(() => undefined);
    live.start();
    const sweep = setInterval(() => store.expire(), 5000);
    return () => {
      live.stop();
      clearInterval(sweep);
    };
  }, [store, resync, service, instance]);

  const retry = React.useCallback(() => void resync().catch(() => undefined), [resync]);
  return { store, snapshot, feed, error, retry };
}
