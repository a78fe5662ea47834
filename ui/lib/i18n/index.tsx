// The message catalogue and its React binding. `useI18n()` gives `t(key,
// vars)`, the locale and `setLocale`; `<Message>` renders a message whose
// `backticked` parts (commands, paths, variables) are code. The default locale is the browser's
// preferred language (zh* → zh-CN, else en); a choice made with the switch
// is remembered in localStorage.
"use client";

import * as React from "react";

import { en, type MessageKey } from "./en";
import { zhCN } from "./zh-CN";

export const locales = ["en", "zh-CN"] as const;
export type Locale = (typeof locales)[number];
export type { MessageKey };

export const catalogues: Record<Locale, Record<MessageKey, string>> = { en, "zh-CN": zhCN };

const STORAGE_KEY = "aegis.locale";

/** Fills `{name}` placeholders; an unknown placeholder stays visible. */
export function format(template: string, vars?: Record<string, string | number>): string {
  if (!vars) return template;
  return template.replace(/\{(\w+)\}/g, (whole, name: string) =>
    Object.prototype.hasOwnProperty.call(vars, name) ? String(vars[name]) : whole,
  );
}

/** The locale for a list of browser languages (navigator.languages). */
export function pickLocale(languages: readonly string[]): Locale {
  for (const lang of languages) {
    const l = lang.toLowerCase();
    if (l.startsWith("zh")) return "zh-CN";
    if (l.startsWith("en")) return "en";
  }
  return "en";
}

/**
 * A message as text and code: the parts between backticks are code, the
 * rest text, in order (`[{ code: false, text }, { code: true, text }, …]`).
 * Placeholders are filled inside each part, so a value that holds a
 * backtick is never read as markup. An unpaired backtick stays text.
 */
export function splitCode(template: string, vars?: Record<string, string | number>): { code: boolean; text: string }[] {
  const parts = template.split("`");
  // An odd number of backticks: the last one opens nothing.
  if (parts.length % 2 === 0) parts.splice(parts.length - 2, 2, `${parts[parts.length - 2]}\`${parts[parts.length - 1]}`);
  return parts
    .map((text, i) => ({ code: i % 2 === 1, text: format(text, vars) }))
    .filter((p) => p.text !== "");
}

export type Translate = (key: MessageKey, vars?: Record<string, string | number>) => string;

interface I18nValue {
  locale: Locale;
  setLocale: (l: Locale) => void;
  t: Translate;
}

const I18nContext = React.createContext<I18nValue | null>(null);

export function I18nProvider({ children, initial }: { children: React.ReactNode; initial?: Locale }) {
  const [locale, setLocaleState] = React.useState<Locale>(initial ?? "en");
  React.useEffect(() => {
    if (initial) return;
    const stored = window.localStorage.getItem(STORAGE_KEY);
    const chosen = locales.find((l) => l === stored) ?? pickLocale(navigator.languages ?? [navigator.language]);
    // The export is pre-rendered in English; switch once the browser's
    // language is known.
    // eslint-disable-next-line react-hooks/set-state-in-effect
    setLocaleState(chosen);
  }, [initial]);
  React.useEffect(() => {
    document.documentElement.lang = locale;
  }, [locale]);
  const value = React.useMemo<I18nValue>(() => {
    const messages = catalogues[locale];
    return {
      locale,
      setLocale: (l) => {
        window.localStorage.setItem(STORAGE_KEY, l);
        setLocaleState(l);
      },
      t: (key, vars) => format(messages[key], vars),
    };
  }, [locale]);
  return <I18nContext.Provider value={value}>{children}</I18nContext.Provider>;
}

export interface MessageProps {
  messageKey: MessageKey;
  vars?: Record<string, string | number>;
}

/** A message with its `backticked` parts set as <code>. */
export function Message({ messageKey, vars }: MessageProps) {
  const { locale } = useI18n();
  return (
    <>
      {splitCode(catalogues[locale][messageKey], vars).map((p, i) =>
        p.code ? (
          <code key={i} className="rounded bg-muted px-1 py-0.5 font-mono text-[0.9em] text-foreground">
            {p.text}
          </code>
        ) : (
          <React.Fragment key={i}>{p.text}</React.Fragment>
        ),
      )}
    </>
  );
}

export function useI18n(): I18nValue {
  const value = React.useContext(I18nContext);
  if (!value) throw new Error("useI18n outside I18nProvider");
  return value;
}
