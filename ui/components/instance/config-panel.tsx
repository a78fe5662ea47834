// ConfigPanel: the instance's effective configuration, asked live from the
// instance (secrets redacted by it), read-only, with copy. An instance the
// page shows down or gone is not asked (it cannot answer: the ask would
// wait its 2 s for a 504); the tab says why at once, and asks on request.
// The API's errors are said in the page's language.
"use client";

import * as React from "react";
import { Copy, RefreshCw } from "lucide-react";

import { Button } from "@/components/ui/button";
import { Skeleton } from "@/components/ui/skeleton";
import { toast } from "@/hooks/use-toast";
import { api, ApiError } from "@/lib/api/client";
import { useI18n, type MessageKey, type Translate } from "@/lib/i18n";

/** Why an instance is not asked: its process is gone or hung, or it left. */
export type NotAsked = "disconnected" | "unresponsive" | "gone";

export interface ConfigPanelProps {
  serviceName: string;
  instanceId: string;
  /** The instance cannot answer now: it is asked only on request. */
  down?: NotAsked | null;
}

const NOT_ASKED: Record<NotAsked, MessageKey> = {
  disconnected: "config.notAsked.disconnected",
  unresponsive: "config.notAsked.unresponsive",
  gone: "config.notAsked.gone",
};

/** An error of the ask, in the page's language. */
function errorText(t: Translate, e: unknown): string {
  if (e instanceof ApiError) {
    const ms = Number(e.details.timeoutMs);
    if (e.code === "GATEWAY_TIMEOUT") return Number.isFinite(ms) && ms > 0 ? t("config.timeout", { ms }) : t("config.timeoutNoTime");
    if (e.code === "BAD_GATEWAY") return t("config.badAnswer");
    if (e.code === "INSTANCE_NOT_FOUND") return t("config.notFound");
  }
  return t("config.error", { message: e instanceof Error ? e.message : String(e) });
}

export function ConfigPanel({ serviceName, instanceId, down = null }: ConfigPanelProps) {
  const { t } = useI18n();
  const [text, setText] = React.useState<string | null>(null);
  const [error, setError] = React.useState<unknown>(null);
  const [attempt, setAttempt] = React.useState(0);
  // Asked on request while down (the page remounts the panel when that changes).
  const notAsked = down !== null && attempt === 0;

  React.useEffect(() => {
    if (notAsked) return;
    let cancelled = false;
    /* eslint-disable react-hooks/set-state-in-effect -- asking again starts from nothing */
    setText(null);
    setError(null);
    /* eslint-enable react-hooks/set-state-in-effect */
    api
      .instanceConfig(serviceName, instanceId)
      .then((c) => !cancelled && setText(JSON.stringify(c.config, null, 2)))
      .catch((e: unknown) => !cancelled && setError(e ?? new Error("unknown error")));
    return () => {
      cancelled = true;
    };
  }, [serviceName, instanceId, attempt, notAsked]);

  const copy = async () => {
    if (text === null) return;
    try {
      await navigator.clipboard.writeText(text);
      toast({ variant: "success", title: t("config.copied") });
    } catch (e) {
      toast({ variant: "error", title: t("config.copyFailed", { message: e instanceof Error ? e.message : String(e) }) });
    }
  };

  return (
    <section aria-labelledby="config-title" className="flex flex-col gap-3">
      <div className="flex flex-wrap items-center justify-between gap-2">
        <div>
          <h2 id="config-title" className="text-lg font-semibold">
            {t("config.title")}
          </h2>
          <p className="text-sm text-muted-foreground">{t("config.help")}</p>
        </div>
        <div className="flex gap-2">
          <Button variant="outline" size="sm" onClick={() => setAttempt((a) => a + 1)}>
            <RefreshCw aria-hidden="true" />
            {t("config.reload")}
          </Button>
          <Button variant="outline" size="sm" onClick={() => void copy()} disabled={text === null}>
            <Copy aria-hidden="true" />
            {t("config.copy")}
          </Button>
        </div>
      </div>
      {notAsked ? (
        <p data-testid="config-not-asked" className="rounded-md border border-dashed border-border bg-muted p-3 text-sm text-muted-foreground">
          {t(NOT_ASKED[down!])}
        </p>
      ) : error ? (
        <p role="alert" className="rounded-md border border-danger/40 bg-danger-muted p-3 text-sm text-danger-strong">
          {errorText(t, error)}
        </p>
      ) : text === null ? (
        <div aria-busy="true">
          <span className="sr-only">{t("config.loading")}</span>
          <Skeleton className="h-64" />
        </div>
      ) : (
        <pre
          tabIndex={0}
          aria-label={t("config.title")}
          data-testid="config-json"
          className="max-h-[32rem] overflow-auto rounded-md border border-border bg-muted p-4 font-mono text-xs leading-5 focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring"
        >
          {text}
        </pre>
      )}
    </section>
  );
}
