// HeartbeatAge: "3 s ago", re-rendered by the page's shared one-second clock.
"use client";

import { useNow } from "@/hooks/use-now";
import { ago } from "@/lib/format";
import { useI18n, type MessageKey } from "@/lib/i18n";

export interface HeartbeatAgeProps {
  at: string;
}

export function HeartbeatAge({ at }: HeartbeatAgeProps) {
  const { t } = useI18n();
  const now = useNow();
  return (
    <time dateTime={at} title={at}>
      {ago(t, at, now)}
    </time>
  );
}

export interface SinceProps {
  /** Milliseconds since the epoch. */
  at: number;
  /** A message with an `{ago}` placeholder, e.g. "Gone {ago}". */
  template?: MessageKey;
}

/** The age of a moment given in epoch milliseconds, optionally in a sentence. */
export function Since({ at, template }: SinceProps) {
  const { t } = useI18n();
  const now = useNow();
  const iso = new Date(at).toISOString();
  const age = ago(t, iso, now);
  return <time dateTime={iso}>{template ? t(template, { ago: age }) : age}</time>;
}
