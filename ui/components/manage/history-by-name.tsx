// HistoryByName: opens the history of a service definition by its name —
// the way to the trail of a deleted one, which has no row in the table
// any more (the API keeps it: GET /api/services/{name}/history).
"use client";

import * as React from "react";
import { History } from "lucide-react";

import { Button } from "@/components/ui/button";
import { Input } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { checkName, type RuleError } from "@/lib/definition-rules";
import { useI18n } from "@/lib/i18n";

export interface HistoryByNameProps {
  /** Opens the history of a well-formed name. */
  onOpen: (name: string) => void;
}

export function HistoryByName({ onOpen }: HistoryByNameProps) {
  const { t } = useI18n();
  const [name, setName] = React.useState("");
  const [error, setError] = React.useState<RuleError | null>(null);

  const submit = (e: React.FormEvent) => {
    e.preventDefault();
    const wanted = name.trim();
    const problem = checkName(wanted);
    setError(problem);
    if (!problem) onOpen(wanted);
  };

  return (
    <form onSubmit={submit} noValidate className="flex flex-col gap-2 sm:max-w-lg" data-testid="history-by-name">
      <Label htmlFor="history-name">{t("manage.historyByName.label")}</Label>
      <div className="flex gap-2">
        <Input
          id="history-name"
          value={name}
          autoComplete="off"
          spellCheck={false}
          placeholder={t("manage.historyByName.placeholder")}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? "history-name-error history-name-help" : "history-name-help"}
          onChange={(e) => setName(e.target.value)}
        />
        <Button type="submit" variant="outline">
          <History aria-hidden="true" />
          {t("manage.historyByName.open")}
        </Button>
      </div>
      {error ? (
        <p id="history-name-error" className="text-sm text-danger-strong">
          {t(error.key, error.vars)}
        </p>
      ) : null}
      <p id="history-name-help" className="text-xs text-muted-foreground">
        {t("manage.historyByName.help")}
      </p>
    </form>
  );
}
