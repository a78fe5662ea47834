// The API's validation rules for a service definition, checked in the
// browser before sending (the server checks them again and its 422
// details are shown the same way). Mirrors docs/api.md "Validation" and
// the patterns in the OpenAPI document.
import type { MessageKey } from "@/lib/i18n";

export interface DefinitionInput {
  service_name: string;
  owner: string;
  description: string;
  version: string;
}

export type FieldName = keyof DefinitionInput;

/** A failed rule: the message key and its placeholders. */
export interface RuleError {
  key: MessageKey;
  vars?: Record<string, string | number>;
}

const NAME = /^[a-z][a-z0-9-]{1,62}[a-z0-9]$/;
const SEMVER =
  /^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$/;

/** Characters as the server counts them (Unicode scalar values). */
const chars = (s: string) => [...s].length;

export function checkName(v: string): RuleError | null {
  if (v === "") return { key: "form.err.required" };
  if (v.length < 3 || v.length > 64) return { key: "form.err.nameLength" };
  if (!NAME.test(v) || v.includes("--")) return { key: "form.err.namePattern" };
  return null;
}

function checkText(v: string, max: number): RuleError | null {
  if (v === "") return { key: "form.err.required" };
  if (v.trim() === "") return { key: "form.err.blank" };
  if (chars(v) > max) return { key: "form.err.tooLong", vars: { max } };
  return null;
}

export function checkVersion(v: string): RuleError | null {
  if (v === "") return { key: "form.err.required" };
  return SEMVER.test(v) ? null : { key: "form.err.semver" };
}

/** Every failing field of `input`; `name` is checked only when creating. */
export function validateDefinition(input: DefinitionInput, creating: boolean): Partial<Record<FieldName, RuleError>> {
  const errors: Partial<Record<FieldName, RuleError>> = {};
  const add = (field: FieldName, e: RuleError | null) => {
    if (e) errors[field] = e;
  };
  if (creating) add("service_name", checkName(input.service_name));
  add("owner", checkText(input.owner, 100));
  add("description", checkText(input.description, 500));
  add("version", checkVersion(input.version));
  return errors;
}
