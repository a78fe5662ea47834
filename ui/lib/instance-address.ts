// The address of an instance's page: `/services/{instanceId}?service={name}`.
// The export pre-renders one shell for every id, so the page reads both
// from the address. The service is there because the page of an instance
// that is gone cannot learn it from the fleet any more, and the API's
// routes for its events (kept for gone instances) need it.

/** The page of one instance. */
export function instanceHref(serviceName: string, instanceId: string): string {
  return `/services/${encodeURIComponent(instanceId)}?service=${encodeURIComponent(serviceName)}`;
}

/** The instance id of a `/services/{id}` path. */
export function instanceIdFromPath(pathname: string): string {
  const raw = pathname.replace(/^\/services\/?/, "").replace(/\/$/, "");
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** The service an instance page's query names, or null (an address typed or shared without it). */
export function serviceFromQuery(params: Pick<URLSearchParams, "get"> | null): string | null {
  const service = params?.get("service")?.trim();
  return service ? service : null;
}
