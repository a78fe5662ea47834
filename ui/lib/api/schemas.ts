// The monitor API's JSON models as zod schemas, mirroring the OpenAPI
// components of the same names (`lib/api/openapi.json`, generated from the
// monitor's code). `tests/api-contract.test.ts` compares each schema here
// with its OpenAPI counterpart, so the two cannot drift apart unnoticed.
//
// Readers are tolerant where the API says "more fields may appear": objects
// are not strict, so a newer monitor does not break an older UI.
import { z } from "zod";

export const InstanceStatus = z.enum(["ACTIVE", "UNHEALTHY", "STANDBY"]);
export type InstanceStatus = z.infer<typeof InstanceStatus>;

export const Role = z.enum(["viewer", "admin"]);
export type Role = z.infer<typeof Role>;

/** Why the monitor shows a status other than the record's own claim. */
export const StatusReason = z.enum([
  "disconnected",
  "unresponsive",
  "unresponsive_expired",
  "deposed",
  "health_check",
  "operator",
  "degraded",
]);
export type StatusReason = z.infer<typeof StatusReason>;

export const ServiceInstance = z.object({
  serviceName: z.string(),
  instanceId: z.string(),
  version: z.string(),
  /** The monitor's truth: at most one ACTIVE per sticky group, the election's holder. */
  status: InstanceStatus,
  /** What the record itself says. */
  reportedStatus: InstanceStatus,
  lastHeartbeat: z.string(),
  stickyActiveGroup: z.string().nullable().optional(),
  metadata: z.record(z.string(), z.unknown()),
  startedAt: z.string().nullable().optional(),
  epoch: z.number().int().nonnegative().nullable().optional(),
  // A newer monitor may add reasons: read any string, name the known ones.
  statusReason: z.string().nullable().optional(),
  /** What its own failed health check said (with `health_check`, or `degraded` over it). */
  statusDetail: z.string().optional(),
  statusSince: z.string(),
});
export type ServiceInstance = z.infer<typeof ServiceInstance>;

export const Summary = z.object({
  total: z.number().int().nonnegative(),
  active: z.number().int().nonnegative(),
  unhealthy: z.number().int().nonnegative(),
  standby: z.number().int().nonnegative(),
});
export type Summary = z.infer<typeof Summary>;

export const LatencySummary = z.object({
  p50: z.number(),
  p90: z.number(),
  p99: z.number(),
  max: z.number(),
  mean: z.number(),
});

export const EndpointMetrics = z.object({
  name: z.string(),
  requests: z.number().int().nonnegative(),
  successes: z.number().int().nonnegative(),
  errors: z.number().int().nonnegative(),
  requestRate: z.number(),
  errorRate: z.number(),
  latencyMs: LatencySummary,
});
export type EndpointMetrics = z.infer<typeof EndpointMetrics>;

export const MetricsSnapshot = z.object({
  serviceName: z.string(),
  instanceId: z.string(),
  timestamp: z.string(),
  uptimeSecs: z.number(),
  intervalSecs: z.number(),
  endpoints: z.array(EndpointMetrics),
  queueDepth: z.number().int().nonnegative(),
  inFlight: z.number().int().nonnegative(),
  custom: z.record(z.string(), z.number()),
});
export type MetricsSnapshot = z.infer<typeof MetricsSnapshot>;

export const InstanceMetrics = z.object({
  serviceName: z.string(),
  instanceId: z.string(),
  status: InstanceStatus,
  snapshot: MetricsSnapshot.nullable().optional(),
});
export type InstanceMetrics = z.infer<typeof InstanceMetrics>;

export const MetricsHistory = z.object({
  serviceName: z.string(),
  instanceId: z.string(),
  windowSecs: z.number().int().nonnegative(),
  snapshots: z.array(MetricsSnapshot),
});
export type MetricsHistory = z.infer<typeof MetricsHistory>;

export const LogRecord = z.object({
  timestamp: z.string(),
  level: z.string(),
  kind: z.string(),
  message: z.string(),
  fields: z.record(z.string(), z.unknown()),
});
export type LogRecord = z.infer<typeof LogRecord>;

export const InstanceConfig = z.object({
  serviceName: z.string(),
  instanceId: z.string(),
  config: z.record(z.string(), z.unknown()),
});
export type InstanceConfig = z.infer<typeof InstanceConfig>;

/** A JSON Schema as the API passes it on (derived by the SDK). */
const JsonSchema = z.record(z.string(), z.unknown());

/** One method of a service (`GET /api/services/{service}/methods`). */
export const MethodSchema = z.object({
  name: z.string(),
  subject: z.string(),
  description: z.string().nullable().optional(),
  leaderOnly: z.boolean(),
  requestSchema: JsonSchema.nullable().optional(),
  responseSchema: JsonSchema.nullable().optional(),
});
export type MethodSchema = z.infer<typeof MethodSchema>;

/** One command a service's workers take, with the instances listing it. */
export const CommandSchema = z.object({
  name: z.string(),
  subject: z.string(),
  description: z.string().nullable().optional(),
  leaderOnly: z.boolean(),
  payloadSchema: JsonSchema.nullable().optional(),
  instanceIds: z.array(z.string()),
});
export type CommandSchema = z.infer<typeof CommandSchema>;

/** A running service's methods and the commands its workers take. */
export const ServiceMethods = z.object({
  serviceName: z.string(),
  version: z.string(),
  instanceId: z.string(),
  methods: z.array(MethodSchema),
  commands: z.array(CommandSchema),
});
export type ServiceMethods = z.infer<typeof ServiceMethods>;

export const ServiceDefinition = z.object({
  service_name: z.string(),
  owner: z.string(),
  description: z.string(),
  version: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
});
export type ServiceDefinition = z.infer<typeof ServiceDefinition>;

export const ServiceRevision = z.object({
  service: z.string(),
  revision: z.number().int().nonnegative(),
});

export const HistoryEntry = z.object({
  revision: z.number().int().nonnegative(),
  time: z.string(),
  operation: z.string(),
  who: z.string().nullable().optional(),
  definition: ServiceDefinition.nullable().optional(),
});
export type HistoryEntry = z.infer<typeof HistoryEntry>;

export const SessionInfo = z.object({
  name: z.string(),
  role: Role,
  expiresAt: z.string().nullable().optional(),
});
export type SessionInfo = z.infer<typeof SessionInfo>;

/** The part of `GET /status` the UI reads: whether authentication is off
 *  (`insecure-dev`) or on (`tokens`). Public: it never answers 401. */
export const AuthMode = z.object({ authMode: z.string() });

export const LeadershipTerm = z.object({
  instanceId: z.string(),
  epoch: z.number().int().nonnegative().nullable().optional(),
  electedAt: z.string(),
  endedAt: z.string().nullable().optional(),
  /** `resigned`, `stopped`, `superseded`, `lapsed` or `unread` (it ended in
   *  the unread middle of a truncated window, some time after `endedAt`).
   *  A string, not an enum: a value a newer monitor adds is shown as an
   *  end without notice rather than failing the whole timeline. */
  endReason: z.string().nullable().optional(),
  handoverMs: z.number().nonnegative().nullable().optional(),
  handoverFrom: z.string().nullable().optional(),
  handoverBasis: z.string().nullable().optional(),
});
export type LeadershipTerm = z.infer<typeof LeadershipTerm>;

export const LeadershipTimeline = z.object({
  serviceName: z.string(),
  windowSecs: z.number().int().nonnegative(),
  truncated: z.boolean(),
  terms: z.array(LeadershipTerm),
});
export type LeadershipTimeline = z.infer<typeof LeadershipTimeline>;

/** Whether the JetStream API answers (`unreachable`: the monitor has no NATS connection). */
export const JetStreamState = z.enum(["ok", "no_meta_leader", "unreachable"]);
export type JetStreamState = z.infer<typeof JetStreamState>;

/** A NATS server of the cluster, as of the monitor's last check. */
export const ServerState = z.object({
  name: z.string(),
  up: z.boolean(),
  /** When it last went down or came up; null if unchanged since the monitor started. */
  since: z.string().nullable(),
});
export type ServerState = z.infer<typeof ServerState>;

/** A JetStream stream (a KV bucket is one too) and its raft group. */
export const StreamState = z.object({
  name: z.string(),
  replicas: z.number().int().nonnegative(),
  /** The server leading it; null while it has none (writes to it wait). */
  leader: z.string().nullable(),
  /** Its replicas on servers that are down. */
  offline: z.array(z.string()),
  /** When it last lost or got its leader; null if unchanged since the monitor started. */
  since: z.string().nullable(),
});
export type StreamState = z.infer<typeof StreamState>;

/** `GET /api/nats`: NATS itself — its servers, JetStream and each stream's leader. */
export const NatsPicture = z.object({
  asOf: z.string(),
  /** How often the monitor checks, and so how often a poll can learn something new. */
  checkEveryMs: z.number().int().positive(),
  // A newer monitor may add states: read any string, name the known
  // ones (`JetStreamState`).
  jetstream: z.string(),
  servers: z.array(ServerState),
  streams: z.array(StreamState),
});
export type NatsPicture = z.infer<typeof NatsPicture>;

export const ErrorBody = z.object({
  code: z.string(),
  message: z.string(),
  details: z.record(z.string(), z.unknown()),
});

export const ErrorEnvelope = z.object({ error: ErrorBody });

/** The fields of a VALIDATION_ERROR's details. */
export const FieldErrors = z.object({
  fields: z.array(z.object({ field: z.string(), message: z.string() })),
});

/** SSE `instance` data. */
export const InstanceEvent = z.discriminatedUnion("type", [
  z.object({ type: z.literal("instanceUpserted"), instance: ServiceInstance }),
  z.object({
    type: z.literal("instanceRemoved"),
    serviceName: z.string(),
    instanceId: z.string(),
    reason: z.string().nullable().optional(),
  }),
]);
export type InstanceEvent = z.infer<typeof InstanceEvent>;

/** An instance whose beats are late, as of a digest. */
export const LateBeat = z.object({
  serviceName: z.string(),
  instanceId: z.string(),
  lastBeat: z.string(),
});
export type LateBeat = z.infer<typeof LateBeat>;

/**
 * SSE `digest` data (every 2 s with topic `instance`): as of `asOf`, every
 * instance announcing `metadata.heartbeatMs` and not in `late` had a sign of
 * life within `lateAfterIntervals` of its intervals; `late` gives the
 * others' last one. `summary` counts the instances as the instance events
 * before it left them.
 */
export const DigestEvent = z.object({
  type: z.literal("digest"),
  asOf: z.string(),
  version: z.number().int().nonnegative(),
  summary: Summary,
  lateAfterIntervals: z.number().positive(),
  late: z.array(LateBeat),
});
export type DigestEvent = z.infer<typeof DigestEvent>;

/** SSE `definition` data. */
export const DefinitionEvent = z.object({
  type: z.literal("definition"),
  serviceName: z.string(),
  revision: z.number().int().nonnegative(),
  operation: z.enum(["PUT", "DELETE", "PURGE"]),
  definition: ServiceDefinition.nullable().optional(),
});
export type DefinitionEvent = z.infer<typeof DefinitionEvent>;

/** SSE `metrics` data. */
export const MetricsEvent = z.object({ type: z.literal("metrics"), snapshot: MetricsSnapshot });
export type MetricsEvent = z.infer<typeof MetricsEvent>;

/**
 * What a dashboard card shows of one instance's latest snapshot: calls/s
 * and the highest p99, rounded as shown. Not `late`: as of the message's
 * `asOf`, its latest snapshot was taken within the late bound (and
 * `timestamp` may be older); `late`: `timestamp` is its latest snapshot's.
 */
export const InstanceFigures = z.object({
  serviceName: z.string(),
  instanceId: z.string(),
  timestamp: z.string(),
  intervalSecs: z.number(),
  callsPerSec: z.number(),
  p99Ms: z.number().nullable(),
  late: z.boolean(),
});
export type InstanceFigures = z.infer<typeof InstanceFigures>;

export const InstanceName = z.object({ serviceName: z.string(), instanceId: z.string() });

/**
 * `GET /api/metrics/figures`, and the data of the SSE `figures` event
 * (with `type`): every instance's figures (`full`), or those whose shown
 * figures changed. Every instance not `late` had, as of `asOf`, a snapshot
 * within max(`lateAfterIntervals` × its interval, `lateAfterMinSecs`).
 */
export const FiguresView = z.object({
  asOf: z.string(),
  full: z.boolean(),
  lateAfterIntervals: z.number().nonnegative(),
  lateAfterMinSecs: z.number().nonnegative(),
  instances: z.array(InstanceFigures),
  forgotten: z.array(InstanceName),
});
export type FiguresView = z.infer<typeof FiguresView>;

/** SSE `figures` data. */
export const FiguresEvent = FiguresView.extend({ type: z.literal("figures") });
export type FiguresEvent = z.infer<typeof FiguresEvent>;

/** The schemas checked against the OpenAPI components of the same name. */
export const contractSchemas = {
  ServiceInstance,
  Summary,
  LateBeat,
  LatencySummary,
  EndpointMetrics,
  MetricsSnapshot,
  InstanceMetrics,
  MetricsHistory,
  InstanceFigures,
  InstanceName,
  FiguresView,
  LogRecord,
  InstanceConfig,
  MethodSchema,
  CommandSchema,
  ServiceMethods,
  ServiceDefinition,
  ServiceRevision,
  HistoryEntry,
  SessionInfo,
  LeadershipTerm,
  LeadershipTimeline,
  NatsPicture,
  ServerState,
  StreamState,
  ErrorBody,
  InstanceStatus,
  JetStreamState,
  StatusReason,
  Role,
} as const;
