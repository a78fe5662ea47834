// LanguageSwitch: English / 简体中文; the choice is remembered.
"use client";

import { Languages } from "lucide-react";

import { Select } from "@/components/ui/input";
import { locales, useI18n, type Locale } from "@/lib/i18n";

export function LanguageSwitch() {
  const { t, locale, setLocale } = useI18n();
  return (
    <label className="inline-flex items-center gap-1 text-sm">
      <Languages className="size-4 text-muted-foreground" aria-hidden="true" />
      <span className="sr-only">{t("lang.label")}</span>
      <Select
        value={locale}
        onChange={(e) => setLocale(e.target.value as Locale)}
        className="h-8 w-auto py-1 text-xs"
        data-testid="language-switch"
      >
        {locales.map((l) => (
          <option key={l} value={l} lang={l}>
            {t(`lang.${l}`)}
          </option>
        ))}
      </Select>
    </label>
  );
}
