// The dashboard's filters as the page's query string —
// `/?service=order-service&status=UNHEALTHY&q=order-1` — so a filtered
// view survives a reload, can be shared, and the back button steps
// through it. Values that cannot be a filter (an unknown status) are
// dropped rather than shown as a filter that matches nothing.

/** The statuses a card can show, GONE included. */
export const FILTER_STATUSES = ["ACTIVE", "UNHEALTHY", "STANDBY", "GONE"] as const;
export type StatusFilter = (typeof FILTER_STATUSES)[number];

export interface DashboardFilters {
  /** A service name, or "" for all. */
  service: string;
  /** A status, or "" for all. */
  status: StatusFilter | "";
  /** Text the instance id must contain, as typed. */
  q: string;
}

export const NO_FILTERS: DashboardFilters = { service: "", status: "", q: "" };

/** The filters of a query string (`location.search`, with or without "?"). */
export function parseFilters(search: string): DashboardFilters {
  const params = new URLSearchParams(search);
  const status = params.get("status") ?? "";
  return {
    service: params.get("service")?.trim() ?? "",
    status: (FILTER_STATUSES as readonly string[]).includes(status) ? (status as StatusFilter) : "",
    q: params.get("q") ?? "",
  };
}

/** The query string of `filters`: "?service=…&status=…&q=…" without the empty ones, or "" for none. */
export function filtersSearch(filters: DashboardFilters): string {
  const params = new URLSearchParams();
  if (filters.service) params.set("service", filters.service);
  if (filters.status) params.set("status", filters.status);
  if (filters.q) params.set("q", filters.q);
  const s = params.toString();
  return s ? `?${s}` : "";
}

export function hasFilters(filters: DashboardFilters): boolean {
  return filters.service !== "" || filters.status !== "" || filters.q.trim() !== "";
}

// The dashboard's last query string in this tab, so the detail page's
// "Back to the dashboard" returns to the same filtered view.
let lastSearch = "";

export function rememberDashboardSearch(search: string): void {
  lastSearch = filtersSearch(parseFilters(search));
}

/** The dashboard's address with the filters it last had. */
export function dashboardHref(): string {
  return `/${lastSearch}`;
}
