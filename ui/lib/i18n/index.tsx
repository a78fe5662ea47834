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

const pluralRules = new Map<string, Intl.PluralRules>();

function pluralCategory(locale: string, n: number): string {
  let rules = pluralRules.get(locale);
  if (!rules) {
    rules = new Intl.PluralRules(locale);
    pluralRules.set(locale, rules);
  }
  return rules.select(n);
}

// `{n, plural, one {# stream} other {# streams}}`: the subset of ICU
// MessageFormat a count needs. The branch is chosen by the language's
// plural rules (English: one, other; Chinese: other only), `other` when
// the language's category has no branch; `#` is the count. A branch may
// hold `{name}` placeholders but no further plural.
const PLURAL = /\{(\w+), plural,((?:\s*\w+ \{(?:[^{}]|\{\w+\})*\})+)\s*\}/g;
const BRANCH = /(\w+) \{((?:[^{}]|\{\w+\})*)\}/g;

/**
 * Fills `{name}` placeholders and `{name, plural, …}` counts (see
 * `PLURAL`) for `locale`; an unknown placeholder stays visible, and so
 * does a plural whose count is not a number.
 */
export function format(template: string, vars?: Record<string, string | number>, locale: string = "en"): string {
  if (!vars) return template;
  const counted = template.replace(PLURAL, (whole, name: string, branches: string) => {
    const n = Object.prototype.hasOwnProperty.call(vars, name) ? vars[name] : undefined;
    if (typeof n !== "number") return whole;
    const forms = new Map([...branches.matchAll(BRANCH)].map((m) => [m[1]!, m[2]!]));
    const form = forms.get(pluralCategory(locale, n)) ?? forms.get("other");
    return form === undefined ? whole : form.replace(/#/g, String(n));
  });
  return counted.replace(/\{(\w+)\}/g, (whole, name: string) =>
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
 * backtick is never read as markup (and a plural must not span one). An
 * unpaired backtick stays text.
 */
export function splitCode(template: string, vars?: Record<string, string | number>, locale: string = "en"): { code: boolean; text: string }[] {
  const parts = template.split("`");
  // An odd number of backticks: the last one opens nothing.
  if (parts.length % 2 === 0) parts.splice(parts.length - 2, 2, `${parts[parts.length - 2]}\`${parts[parts.length - 1]}`);
  return parts
    .map((text, i) => ({ code: i % 2 === 1, text: format(text, vars, locale) }))
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
      t: (key, vars) => format(messages[key], vars, locale),
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
      {splitCode(catalogues[locale][messageKey], vars, locale).map((p, i) =>
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
