// The dashboard's data: every instance with its latest metrics, kept live
// by the SSE feed (with polling and backoff when it drops) and re-read
// from the REST endpoints at start, on reconnect and on `lagged`.
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

export function useLiveInstances(): LiveInstances {
  const [store] = React.useState(() => new InstanceStore());
  const snapshot = React.useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
  const [feed, setFeed] = React.useState<FeedState>("connecting");
  const [error, setError] = React.useState<ApiError | null>(null);

  const resync = React.useCallback(async () => {
    try {
      const [instances, metrics] = await Promise.all([api.instances(), api.metrics()]);
      store.replaceAll(instances, metrics);
      setError(null);
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(0, "NETWORK", String(e));
      setError(err);
      throw err;
    }
  }, [store]);

  React.useEffect(() => {
    const live = new LiveFeed({
      topics: ["instance", "metrics"],
      onInstance: (e) => store.apply(e),
      onMetrics: (e) => store.setMetrics(e.snapshot),
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
  }, [store, resync]);

  const retry = React.useCallback(() => void resync().catch(() => undefined), [resync]);
  return { store, snapshot, feed, error, retry };
}
