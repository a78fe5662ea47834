// PageTitle: sets the document title from the catalogue, in the chosen language.
"use client";

import * as React from "react";

import { useI18n, type MessageKey } from "@/lib/i18n";

export interface PageTitleProps {
  messageKey: MessageKey;
  vars?: Record<string, string>;
}

export function PageTitle({ messageKey, vars }: PageTitleProps) {
  const { t } = useI18n();
  const title = t(messageKey, vars);
  React.useEffect(() => {
    document.title = `${title} · Aegis`;
  }, [title]);
  return null;
}
