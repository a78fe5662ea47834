// DefinitionForm: the modal that creates a service definition, or edits
// one prefilled with its stored revision. Fields are checked as the API
// checks them; the API's 422 details land inline on their fields; an edit
// sends the revision (If-Match), and a 409 CONCURRENT_UPDATE says someone
// else changed it and offers to reload it.
"use client";

import * as React from "react";
import { AlertTriangle, RefreshCw } from "lucide-react";

import { Button } from "@/components/ui/button";
import { Dialog, DialogContent, DialogDescription, DialogFooter, DialogHeader, DialogTitle } from "@/components/ui/dialog";
import { Input, Textarea } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { Skeleton } from "@/components/ui/skeleton";
import { api, ApiError } from "@/lib/api/client";
import type { ServiceDefinition } from "@/lib/api/schemas";
import { validateDefinition, type DefinitionInput, type FieldName, type RuleError } from "@/lib/definition-rules";
import { useI18n, type MessageKey } from "@/lib/i18n";

export interface DefinitionFormProps {
  open: boolean;
  onOpenChange: (open: boolean) => void;
  /** The definition to edit; absent to create one. */
  editing?: string | null;
  onSaved: (definition: ServiceDefinition, created: boolean) => void;
}

const EMPTY: DefinitionInput = { service_name: "", owner: "", description: "", version: "1.0.0" };

interface Conflict {
  expected: string;
  current: string;
}

export function DefinitionForm({ open, onOpenChange, editing, onSaved }: DefinitionFormProps) {
  const { t } = useI18n();
  const creating = !editing;
  const [values, setValues] = React.useState<DefinitionInput>(EMPTY);
  const [original, setOriginal] = React.useState<DefinitionInput | null>(null);
  const [revision, setRevision] = React.useState<number | null>(null);
  const [errors, setErrors] = React.useState<Partial<Record<FieldName, RuleError | string>>>({});
  const [touched, setTouched] = React.useState<Partial<Record<FieldName, boolean>>>({});
  const [formError, setFormError] = React.useState<string | null>(null);
  const [conflict, setConflict] = React.useState<Conflict | null>(null);
  const [loading, setLoading] = React.useState(false);
  const [saving, setSaving] = React.useState(false);
  const formRef = React.useRef<HTMLFormElement>(null);
  // Set each time it opens: the first field takes the focus once it is there.
  const focusFirst = React.useRef(false);

  const load = React.useCallback(
    async (name: string) => {
      setLoading(true);
      setFormError(null);
      try {
        const { definition, revision: rev } = await api.definition(name);
        const v = {
          service_name: definition.service_name,
          owner: definition.owner,
          description: definition.description,
          version: definition.version,
        };
        setValues(v);
        setOriginal(v);
        setRevision(rev);
        setConflict(null);
        setErrors({});
      } catch (e) {
        setFormError(t("error.generic", { message: e instanceof Error ? e.message : String(e) }));
      } finally {
        setLoading(false);
      }
    },
    [t],
  );

  React.useEffect(() => {
    if (!open) return;
    focusFirst.current = true;
    /* eslint-disable react-hooks/set-state-in-effect -- the form resets each time it opens */
    setErrors({});
    setTouched({});
    setFormError(null);
    setConflict(null);
    setSaving(false);
    if (editing) {
      void load(editing);
    } else {
      setValues(EMPTY);
      setOriginal(null);
      setRevision(null);
    }
    /* eslint-enable react-hooks/set-state-in-effect */
  }, [open, editing, load]);

  // An edit opens while its definition loads, when Close is the only
  // control in the dialog and Radix puts the focus there; the fields come
  // after. The first field takes it then, unless the user moved it into
  // the form meanwhile.
  React.useEffect(() => {
    const form = formRef.current;
    if (!open || loading || !form || !focusFirst.current) return;
    focusFirst.current = false;
    if (form.contains(document.activeElement)) return;
    form.querySelector<HTMLElement>("input, textarea")?.focus();
  }, [open, loading]);

  const render = (e: RuleError | string | undefined): string | null =>
    e === undefined ? null : typeof e === "string" ? e : t(e.key, e.vars);

  const set = (field: FieldName) => (ev: React.ChangeEvent<HTMLInputElement | HTMLTextAreaElement>) => {
    const next = { ...values, [field]: ev.target.value };
    setValues(next);
    if (touched[field] || errors[field]) {
      const local = validateDefinition(next, creating);
      setErrors((prev) => ({ ...prev, [field]: local[field] }));
    }
  };
  const blur = (field: FieldName) => () => {
    setTouched((prev) => ({ ...prev, [field]: true }));
    const local = validateDefinition(values, creating);
    setErrors((prev) => ({ ...prev, [field]: local[field] }));
  };

  async function submit(ev: React.FormEvent) {
    ev.preventDefault();
    setFormError(null);
    const local = validateDefinition(values, creating);
    if (Object.keys(local).length > 0) {
      setErrors(local);
      setTouched({ service_name: true, owner: true, description: true, version: true });
      return;
    }
    let patch: Partial<DefinitionInput> = {};
    if (!creating && original) {
      for (const f of ["owner", "description", "version"] as const) {
        if (values[f] !== original[f]) patch[f] = values[f];
      }
      if (Object.keys(patch).length === 0) {
        setFormError(t("form.err.unchanged"));
        return;
      }
    } else {
      patch = values;
    }
    setSaving(true);
    try {
      const saved = creating
        ? await api.createDefinition(values)
        : await api.updateDefinition(values.service_name, patch, revision);
      onSaved(saved, creating);
      onOpenChange(false);
    } catch (e) {
      if (!(e instanceof ApiError)) {
        setFormError(t("error.generic", { message: String(e) }));
      } else if (e.code === "VALIDATION_ERROR") {
        // The server names each failing field; show its words where the field is.
        const fields = e.fieldErrors();
        setErrors(fields as Partial<Record<FieldName, string>>);
        setFormError(t("form.serverErrors"));
      } else if (e.code === "SERVICE_ALREADY_EXISTS") {
        setErrors({ service_name: { key: "form.err.exists" } });
      } else if (e.code === "CONCURRENT_UPDATE") {
        setConflict({ expected: String(e.details.expected ?? revision ?? "?"), current: String(e.details.current ?? "?") });
      } else if (e.code === "EMPTY_UPDATE") {
        setFormError(t("form.err.unchanged"));
      } else {
        setFormError(t("error.generic", { message: e.message }));
      }
    } finally {
      setSaving(false);
    }
  }

  const field = (
    name: FieldName,
    label: MessageKey,
    help: MessageKey,
    input: (props: {
      id: string;
      name: string;
      value: string;
      onChange: React.ChangeEventHandler<HTMLInputElement & HTMLTextAreaElement>;
      onBlur: () => void;
      "aria-invalid": boolean | undefined;
      "aria-describedby": string;
    }) => React.ReactNode,
  ) => {
    const message = render(errors[name]);
    const id = `def-${name}`;
    return (
      <div className="flex flex-col gap-2">
        <Label htmlFor={id}>{t(label)}</Label>
        {input({
          id,
          name,
          value: values[name],
          onChange: set(name),
          onBlur: blur(name),
          "aria-invalid": message ? true : undefined,
          "aria-describedby": message ? `${id}-error ${id}-help` : `${id}-help`,
        })}
        <p id={`${id}-help`} className="text-xs text-muted-foreground">
          {t(help)}
        </p>
        {message ? (
          <p id={`${id}-error`} className="text-sm text-danger-strong" data-testid={`error-${name}`}>
            {message}
          </p>
        ) : null}
      </div>
    );
  };

  return (
    <Dialog open={open} onOpenChange={onOpenChange}>
      <DialogContent closeLabel={t("form.close")} data-testid="definition-form">
        <DialogHeader>
          <DialogTitle>{creating ? t("form.createTitle") : t("form.editTitle", { name: editing ?? "" })}</DialogTitle>
          <DialogDescription>{t("form.description")}</DialogDescription>
        </DialogHeader>
        {loading ? (
          <div className="flex flex-col gap-4" aria-busy="true">
            <Skeleton className="h-10" />
            <Skeleton className="h-24" />
            <Skeleton className="h-10" />
          </div>
        ) : (
          <form ref={formRef} onSubmit={submit} className="flex flex-col gap-4" noValidate>
            {conflict ? (
              <div role="alert" data-testid="conflict" className="flex flex-col gap-2 rounded-md border border-warning/40 bg-warning-muted p-3 text-sm text-warning-strong">
                <p className="flex items-center gap-2 font-semibold">
                  <AlertTriangle className="size-4" aria-hidden="true" />
                  {t("form.conflict.title")}
                </p>
                <p>{t("form.conflict.body", { expected: conflict.expected, current: conflict.current })}</p>
                <Button type="button" variant="outline" size="sm" className="self-start" onClick={() => editing && void load(editing)}>
                  <RefreshCw aria-hidden="true" />
                  {t("form.conflict.reload")}
                </Button>
              </div>
            ) : null}
            {formError ? (
              <p role="alert" className="rounded-md border border-danger/40 bg-danger-muted p-3 text-sm text-danger-strong" data-testid="form-error">
                {formError}
              </p>
            ) : null}
            {creating
              ? field("service_name", "form.name", "form.name.help", (p) => <Input {...p} autoComplete="off" spellCheck={false} />)
              : null}
            {field("owner", "form.owner", "form.owner.help", (p) => <Input {...p} autoComplete="off" />)}
            {field("description", "form.descriptionField", "form.descriptionField.help", (p) => <Textarea {...p} />)}
            {field("version", "form.version", "form.version.help", (p) => <Input {...p} autoComplete="off" spellCheck={false} />)}
            <DialogFooter>
              <Button type="button" variant="outline" onClick={() => onOpenChange(false)}>
                {t("form.cancel")}
              </Button>
              <Button type="submit" disabled={saving}>
                {saving ? t("form.saving") : creating ? t("form.create") : t("form.save")}
              </Button>
            </DialogFooter>
          </form>
        )}
      </DialogContent>
    </Dialog>
  );
}
