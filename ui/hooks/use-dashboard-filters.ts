// The dashboard's filters, kept in the address (lib/dashboard-filters):
// read from `location.search`, written with history.pushState/replaceState
// (which Next's router follows), and read again on back/forward and after
// Next's own navigations. The address is the only copy, so a reload, a
// shared link and the back button all show the same view.
"use client";

import * as React from "react";
import { useSearchParams } from "next/navigation";

import { filtersSearch, parseFilters, rememberDashboardSearch, type DashboardFilters } from "@/lib/dashboard-filters";

const listeners = new Set<() => void>();

function notify() {
  listeners.forEach((l) => l());
}

function subscribe(listener: () => void) {
  listeners.add(listener);
  window.addEventListener("popstate", listener);
  return () => {
    listeners.delete(listener);
    window.removeEventListener("popstate", listener);
  };
}

const readSearch = () => window.location.search;
// The export is pre-rendered without a query.
const noSearch = () => "";

/**
 * How a filter changed: `choose` (a select, "clear") adds a history
 * entry; `type` adds one for the first key of a search and replaces it
 * for the next ones, so back undoes the whole search, not a letter.
 */
export type FilterChange = "choose" | "type";

export interface DashboardFiltersValue {
  filters: DashboardFilters;
  setFilters: (change: Partial<DashboardFilters>, how: FilterChange) => void;
}

export function useDashboardFilters(): DashboardFiltersValue {
  const search = React.useSyncExternalStore(subscribe, readSearch, noSearch);
  // A Next navigation (a link to "/" while here) changes the address
  // without a popstate; the search params change with it.
  const params = useSearchParams();
  React.useEffect(notify, [params]);
  React.useEffect(() => rememberDashboardSearch(search), [search]);

  const typing = React.useRef(false);
  React.useEffect(() => {
    const stop = () => {
      typing.current = false;
    };
    window.addEventListener("popstate", stop);
    return () => window.removeEventListener("popstate", stop);
  }, []);

  const filters = React.useMemo(() => parseFilters(search), [search]);
  const setFilters = React.useCallback((change: Partial<DashboardFilters>, how: FilterChange) => {
    const { pathname, search: current, hash } = window.location;
    const next = filtersSearch({ ...parseFilters(current), ...change });
    const continuing = how === "type" && typing.current;
    typing.current = how === "type";
    if (next === filtersSearch(parseFilters(current))) return;
    const url = `${pathname}${next}${hash}`;
    // `null`: Next's patched history keeps its own state and follows the URL.
    if (continuing) window.history.replaceState(null, "", url);
    else window.history.pushState(null, "", url);
    notify();
  }, []);

  return { filters, setFilters };
}
