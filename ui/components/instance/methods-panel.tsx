// MethodsPanel: what a service takes, as its running instances list it in
// the services protocol — its methods (request and reply schemas) and, in a
// section of their own, the commands its workers take (payload schema,
// leader only, the instances that take them). Schemas are the JSON Schemas
// the SDK derives from the handlers' types; each is shown the same way.
// The API's errors are said in the page's language.
"use client";

import * as React from "react";
import { RefreshCw } from "lucide-react";

import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Skeleton } from "@/components/ui/skeleton";
import { api, ApiError } from "@/lib/api/client";
import type { CommandSchema, MethodSchema, ServiceMethods } from "@/lib/api/schemas";
import { Message, useI18n, type Translate } from "@/lib/i18n";

export interface MethodsPanelProps {
  serviceName: string;
}

/** An error of the ask, in the page's language. */
function errorText(t: Translate, e: unknown): string {
  if (e instanceof ApiError) {
    if (e.code === "SERVICE_NOT_FOUND") return t("methods.notFound");
    if (e.code === "GATEWAY_TIMEOUT") return t("methods.timeout");
    if (e.code === "BAD_GATEWAY") return t("methods.badAnswer");
  }
  return t("methods.error", { message: e instanceof Error ? e.message : String(e) });
}

export function MethodsPanel({ serviceName }: MethodsPanelProps) {
  const { t } = useI18n();
  const [described, setDescribed] = React.useState<ServiceMethods | null>(null);
  const [error, setError] = React.useState<unknown>(null);
  const [attempt, setAttempt] = React.useState(0);

  React.useEffect(() => {
    let cancelled = false;
    /* eslint-disable react-hooks/set-state-in-effect -- asking again starts from nothing */
    setDescribed(null);
    setError(null);
    /* eslint-enable react-hooks/set-state-in-effect */
    api
      .serviceMethods(serviceName)
      .then((d) => !cancelled && setDescribed(d))
      .catch((e: unknown) => !cancelled && setError(e ?? new Error("unknown error")));
    return () => {
      cancelled = true;
    };
  }, [serviceName, attempt]);

  return (
    <section aria-labelledby="methods-title" className="flex flex-col gap-4">
      <div className="flex flex-wrap items-center justify-between gap-2">
        <div>
          <h2 id="methods-title" className="text-lg font-semibold">
            {t("methods.title")}
          </h2>
          <p className="text-sm text-muted-foreground">
            <Message messageKey="methods.help" />
          </p>
        </div>
        <Button variant="outline" size="sm" onClick={() => setAttempt((a) => a + 1)}>
          <RefreshCw aria-hidden="true" />
          {t("methods.reload")}
        </Button>
      </div>
      {error ? (
        <p role="alert" className="rounded-md border border-danger/40 bg-danger-muted p-3 text-sm text-danger-strong">
          {errorText(t, error)}
        </p>
      ) : described === null ? (
        <div aria-busy="true">
          <span className="sr-only">{t("methods.loading")}</span>
          <Skeleton className="h-48" />
        </div>
      ) : (
        <>
          <p className="text-xs text-muted-foreground">{t("methods.describedBy", { id: described.instanceId, version: described.version })}</p>
          <div className="grid gap-4 lg:grid-cols-2">
            <Section id="methods-list" title={t("methods.methods")} empty={t("methods.noMethods")} count={described.methods.length}>
              {described.methods.map((m) => (
                <MethodItem key={m.name} method={m} />
              ))}
            </Section>
            <Section id="commands-list" title={t("methods.commands")} empty={t("methods.noCommands")} count={described.commands.length}>
              {described.commands.map((c) => (
                <CommandItem key={c.name} command={c} />
              ))}
            </Section>
          </div>
        </>
      )}
    </section>
  );
}

interface SectionProps {
  id: string;
  title: string;
  empty: string;
  count: number;
  children: React.ReactNode;
}

/** One titled list (methods or commands), or why it is empty. */
function Section({ id, title, empty, count, children }: SectionProps) {
  return (
    <section aria-labelledby={id} className="flex min-w-0 flex-col gap-3 rounded-lg border border-border p-4">
      <h3 id={id} className="font-semibold">
        {title}
      </h3>
      {count === 0 ? <p className="text-sm text-muted-foreground">{empty}</p> : <ul className="flex flex-col gap-4">{children}</ul>}
    </section>
  );
}

interface EntryHeadProps {
  name: string;
  subject: string;
  leaderOnly: boolean;
  description?: string | null;
}

/** A method's or a command's name, subject, leader-only mark and description. */
function EntryHead({ name, subject, leaderOnly, description }: EntryHeadProps) {
  const { t } = useI18n();
  return (
    <>
      <div className="flex flex-wrap items-center gap-2">
        <span className="font-mono text-sm font-semibold">{name}</span>
        {leaderOnly ? <Badge variant="warning">{t("methods.leaderOnly")}</Badge> : null}
      </div>
      <code className="break-all font-mono text-xs text-muted-foreground">{subject}</code>
      {description ? <p className="text-sm">{description}</p> : null}
    </>
  );
}

function MethodItem({ method: m }: { method: MethodSchema }) {
  const { t } = useI18n();
  return (
    <li className="flex flex-col gap-1">
      <EntryHead name={m.name} subject={m.subject} leaderOnly={m.leaderOnly} description={m.description} />
      <SchemaView label={t("methods.request")} name={m.name} schema={m.requestSchema} />
      <SchemaView label={t("methods.response")} name={m.name} schema={m.responseSchema} />
    </li>
  );
}

function CommandItem({ command: c }: { command: CommandSchema }) {
  const { t } = useI18n();
  return (
    <li className="flex flex-col gap-1">
      <EntryHead name={c.name} subject={c.subject} leaderOnly={c.leaderOnly} description={c.description} />
      {c.instanceIds.length > 0 ? (
        <p className="text-xs text-muted-foreground">{t("methods.takenBy", { instances: c.instanceIds.join(", ") })}</p>
      ) : null}
      <SchemaView label={t("methods.payload")} name={c.name} schema={c.payloadSchema} />
    </li>
  );
}

interface SchemaViewProps {
  /** What the schema describes: request, reply or payload. */
  label: string;
  /** The method or command it belongs to. */
  name: string;
  schema?: Record<string, unknown> | null;
}

/** A JSON Schema, pretty-printed and scrollable, or that there is none. */
function SchemaView({ label, name, schema }: SchemaViewProps) {
  const { t } = useI18n();
  return (
    <div className="flex flex-col gap-1">
      <span className="text-xs font-medium text-muted-foreground">{label}</span>
      {schema ? (
        <pre
          tabIndex={0}
          aria-label={`${label}: ${name}`}
          className="max-h-64 overflow-auto rounded-md border border-border bg-muted p-3 font-mono text-xs leading-5 focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring"
        >
          {JSON.stringify(schema, null, 2)}
        </pre>
      ) : (
        <p className="text-xs text-muted-foreground">{t("methods.noSchema")}</p>
      )}
    </div>
  );
}
