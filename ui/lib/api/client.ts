// The one typed client of the monitor API. Same origin (the monitor serves
// the UI), credentials by the `aegis_session` cookie. Every answer is
// parsed with its zod schema; every error becomes an `ApiError` carrying
// the API's stable `code`, which is what the UI branches on.
import { z } from "zod";

import {
  AuthMode,
  ErrorEnvelope,
  FieldErrors,
  Summary,
  HistoryEntry,
  FiguresView,
  InstanceConfig,
  InstanceMetrics,
  LeadershipTimeline,
  LogRecord,
  MetricsHistory,
  NatsPicture,
  ServiceDefinition,
  ServiceInstance,
  ServiceMethods,
  SessionInfo,
} from "./schemas";

/** Codes the UI reacts to; any other code is shown as a generic failure. */
export type ErrorCode =
  | "UNAUTHORIZED"
  | "FORBIDDEN"
  | "VALIDATION_ERROR"
  | "SERVICE_ALREADY_EXISTS"
  | "CONCURRENT_UPDATE"
  | "SERVICE_NOT_FOUND"
  | "INSTANCE_NOT_FOUND"
  | "GATEWAY_TIMEOUT"
  | "BAD_GATEWAY"
  | "SERVICE_UNAVAILABLE"
  | "TOO_MANY_REQUESTS"
  | "NETWORK"
  | "BAD_RESPONSE"
  | (string & {});

/** A failed API call: the envelope's code, message and details. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
    /** Seconds the API asked to wait before trying again (`Retry-After`). */
    readonly retryAfterSecs: number | null = null,
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** `details.fields` of a VALIDATION_ERROR, as field → message. */
  fieldErrors(): Record<string, string> {
    const parsed = FieldErrors.safeParse(this.details);
    if (!parsed.success) return {};
    return Object.fromEntries(parsed.data.fields.map((f) => [f.field, f.message]));
  }
}

type Listener = () => void;
const unauthorizedListeners = new Set<Listener>();

/** Called whenever a request answers 401 (the session expired or was revoked). */
export function onUnauthorized(listener: Listener): () => void {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

/** Tells the 401 listeners the session is gone (the live feed's `expired` event). */
export function notifyUnauthorized(): void {
  unauthorizedListeners.forEach((l) => l());
}

/** `Retry-After` in seconds, when the answer has a numeric one. */
function retryAfter(response: Response): number | null {
  const value = Number(response.headers.get("Retry-After"));
  return Number.isFinite(value) && value > 0 ? Math.ceil(value) : null;
}

interface RequestOptions {
  method?: string;
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Do not tell the 401 listeners (sign-in itself, the first session probe). */
  quiet401?: boolean;
  /** A body held with its `ETag`: sent as `If-None-Match`, returned on 304. */
  held?: { etag: string; data: unknown };
}

/** A successful answer's parsed body and headers. */
export interface Answer<T> {
  data: T;
  headers: Headers;
}

async function send<T>(path: string, schema: z.ZodType<T> | null, opts: RequestOptions = {}): Promise<Answer<T>> {
  let response: Response;
  try {
    response = await fetch(path, {
      method: opts.method ?? "GET",
      credentials: "same-origin",
      headers: {
        Accept: "application/json",
        ...(opts.body !== undefined ? { "Content-Type": "application/json" } : {}),
        ...(opts.held ? { "If-None-Match": opts.held.etag } : {}),
        ...opts.headers,
      },
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
      signal: opts.signal,
      cache: "no-store",
    });
  } catch (e) {
    if (e instanceof DOMException && e.name === "AbortError") throw e;
    throw new ApiError(0, "NETWORK", e instanceof Error ? e.message : String(e));
  }
  // Unchanged since the held body (a 304 reaches us: requests are not
  // cached by the browser, `no-store`, so the tag is sent by hand).
  if (response.status === 304 && opts.held) {
    return { data: opts.held.data as T, headers: response.headers };
  }
  if (!response.ok) {
    const body: unknown = await response.json().catch(() => null);
    const envelope = ErrorEnvelope.safeParse(body);
    const error = envelope.success
      ? new ApiError(
          response.status,
          envelope.data.error.code,
          envelope.data.error.message,
          envelope.data.error.details,
          retryAfter(response),
        )
      : new ApiError(response.status, "BAD_RESPONSE", `HTTP ${response.status}`, {}, retryAfter(response));
    if (response.status === 401 && !opts.quiet401) notifyUnauthorized();
    throw error;
  }
  if (schema === null || response.status === 204) {
    return { data: undefined as T, headers: response.headers };
  }
  const json: unknown = await response.json().catch(() => undefined);
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    throw new ApiError(response.status, "BAD_RESPONSE", `unexpected answer from ${path}: ${parsed.error.message}`);
  }
  return { data: parsed.data, headers: response.headers };
}

const seg = encodeURIComponent;

/** The last full instance list and its tag: a re-read of an unchanged
 *  fleet (every reconnect, `lagged`, the 5 s polling) costs a 304, not
 *  megabytes. */
let heldInstances: { etag: string; data: unknown } | undefined;

async function instances(signal?: AbortSignal): Promise<ServiceInstance[]> {
  const answer = await send("/api/instances", z.array(ServiceInstance), { signal, held: heldInstances });
  const etag = answer.headers.get("ETag");
  heldInstances = etag ? { etag, data: answer.data } : undefined;
  return answer.data;
}

/** The fields of a definition a user edits. */
export interface DefinitionFields {
  owner: string;
  description: string;
  version: string;
}

/** The monitor API, one function per route the UI uses. */
export const api = {
  /** The session, and the answer's `Date` (the server's clock, to time the session's end by). */
  signIn: (token: string) =>
    send("/api/session", SessionInfo, { method: "POST", body: { token }, quiet401: true }).then((a) => ({
      ...a.data,
      serverDate: a.headers.get("Date"),
    })),
  whoAmI: () => send("/api/session", SessionInfo, { quiet401: true }).then((a) => a.data),
  signOut: () => send("/api/session", null, { method: "DELETE" }).then(() => undefined),
  /** `tokens`, or `insecure-dev` (authentication off), from the public `GET /status`. */
  authMode: () => send("/status", AuthMode).then((a) => a.data.authMode),

  instances,
  summary: () => send("/api/instances/health/summary", Summary).then((a) => a.data),
  /** The latest snapshots, of every instance or only of `of` (an instance's page). */
  metrics: (of?: { service?: string | null; instance: string }, signal?: AbortSignal) => {
    const query = new URLSearchParams();
    if (of?.service) query.set("service", of.service);
    if (of) query.set("instance", of.instance);
    const q = query.toString();
    return send(`/api/metrics${q ? `?${q}` : ""}`, z.array(InstanceMetrics), { signal }).then((a) => a.data);
  },
  /** What dashboard cards show of every instance's latest snapshot. */
  figures: (signal?: AbortSignal) => send("/api/metrics/figures", FiguresView, { signal }).then((a) => a.data),
  instanceConfig: (service: string, id: string) =>
    send(`/api/instances/${seg(service)}/${seg(id)}/config`, InstanceConfig).then((a) => a.data),
  serviceMethods: (service: string) => send(`/api/services/${seg(service)}/methods`, ServiceMethods).then((a) => a.data),
  instanceEvents: (service: string, id: string, limit = 200) =>
    send(`/api/instances/${seg(service)}/${seg(id)}/events?limit=${limit}`, z.array(LogRecord)).then((a) => a.data),
  instanceMetrics: (service: string, id: string, window: string) =>
    send(`/api/instances/${seg(service)}/${seg(id)}/metrics?window=${seg(window)}`, MetricsHistory).then((a) => a.data),
  /** NATS itself: servers up or down, JetStream, each stream's leader. */
  nats: (signal?: AbortSignal) => send("/api/nats", NatsPicture, { signal }).then((a) => a.data),
  /** The leaders of a sticky service over `window`; of one group's instances with `group`. */
  leadership: (service: string, { window = "1h", group }: { window?: string; group?: string | null } = {}) => {
    const query = new URLSearchParams({ window });
    if (group) query.set("group", group);
    return send(`/api/leadership/${seg(service)}?${query}`, LeadershipTimeline).then((a) => a.data);
  },

  definitions: () => send("/api/services", z.array(ServiceDefinition)).then((a) => a.data),
  /** A definition and its revision (the ETag), for a conditional update. */
  definition: async (name: string) => {
    const { data, headers } = await send(`/api/services/${seg(name)}`, ServiceDefinition);
    return { definition: data, revision: parseEtag(headers.get("ETag")) };
  },
  createDefinition: (body: DefinitionFields & { service_name: string }) =>
    send("/api/services", ServiceDefinition, { method: "POST", body }).then((a) => a.data),
  updateDefinition: (name: string, fields: Partial<DefinitionFields>, revision: number | null) =>
    send(`/api/services/${seg(name)}`, ServiceDefinition, {
      method: "PUT",
      body: fields,
      headers: revision !== null ? { "If-Match": `"${revision}"` } : {},
    }).then((a) => a.data),
  deleteDefinition: (name: string) => send(`/api/services/${seg(name)}`, null, { method: "DELETE" }),
  definitionHistory: (name: string) =>
    send(`/api/services/${seg(name)}/history`, z.array(HistoryEntry)).then((a) => a.data),
};

/** `"12"`, `W/"12"` or `12` → 12. */
export function parseEtag(etag: string | null): number | null {
  if (!etag) return null;
  const m = /^(?:W\/)?"?(\d+)"?$/.exec(etag.trim());
  return m?.[1] ? Number(m[1]) : null;
}
