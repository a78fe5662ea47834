// Text from services made to read as it is: format characters that reorder
// or hide what a reader sees — bidirectional overrides and isolates
// (U+202A–U+202E, U+2066–U+2069), zero-width characters and marks
// (U+200B–U+200F, U+2060–U+206F, U+FEFF), tag characters
// (U+E0000–U+E007F) and the monitor's other format characters (soft
// hyphen, Arabic letter mark, Mongolian vowel separator, interlinear
// annotation) — are split out, to be shown as visible marks that name them.
// The same set the monitor removes from a record's statusDetail
// (aegis-monitor `fleet::derive::is_format`); here nothing is removed, so
// an operator sees that the text carried one. JSON.stringify leaves them
// as they are.

const HIDDEN = /[\u00AD\u061C\u180E\u200B-\u200F\u202A-\u202E\u2060-\u206F\uFEFF\uFFF9-\uFFFB\u{E0000}-\u{E007F}]/gu;

/** A run of text as it was, or one hidden character named by its code point (`U+202E`). */
export type TextPart = { hidden: false; text: string } | { hidden: true; code: string };

/** `text` split into its plain runs and its hidden characters, in order. */
export function splitHidden(text: string): TextPart[] {
  const parts: TextPart[] = [];
  let from = 0;
  for (const m of text.matchAll(HIDDEN)) {
    if (m.index > from) parts.push({ hidden: false, text: text.slice(from, m.index) });
    const code = m[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
    parts.push({ hidden: true, code: `U+${code}` });
    from = m.index + m[0].length;
  }
  if (from < text.length) parts.push({ hidden: false, text: text.slice(from) });
  return parts;
}
