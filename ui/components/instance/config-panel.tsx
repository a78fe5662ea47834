// ConfigPanel: the instance's effective configuration, asked live from the
// instance (secrets redacted by it), read-only, with copy.
"use client";

import * as React from "react";
import { Copy, RefreshCw } from "lucide-react";

import { Button } from "@/components/ui/button";
import { Skeleton } from "@/components/ui/skeleton";
import { toast } from "@/hooks/use-toast";
import { api } from "@/lib/api/client";
import { useI18n } from "@/lib/i18n";

export interface ConfigPanelProps {
  serviceName: string;
  instanceId: string;
}

export function ConfigPanel({ serviceName, instanceId }: ConfigPanelProps) {
  const { t } = useI18n();
  const [text, setText] = React.useState<string | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const [attempt, setAttempt] = React.useState(0);

  React.useEffect(() => {
    let cancelled = false;
    /* eslint-disable react-hooks/set-state-in-effect -- asking again starts from nothing */
    setText(null);
    setError(null);
    /* eslint-enable react-hooks/set-state-in-effect */
    api
      .instanceConfig(serviceName, instanceId)
      .then((c) => !cancelled && setText(JSON.stringify(c.config, null, 2)))
      .catch((e: Error) => !cancelled && setError(e.message));
    return () => {
      cancelled = true;
    };
  }, [serviceName, instanceId, attempt]);

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
      {error ? (
        <p role="alert" className="rounded-md border border-danger/40 bg-danger-muted p-3 text-sm text-danger-strong">
          {t("config.error", { message: error })}
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
