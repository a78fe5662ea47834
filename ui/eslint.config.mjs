// Lint rules of the monitor UI: Next's core-web-vitals and TypeScript sets,
// plus the i18n rule — no literal text in JSX, so every user-visible string
// goes through the message catalogue (lib/i18n).
import next from "eslint-config-next/core-web-vitals";
import nextTs from "eslint-config-next/typescript";

const config = [
  ...next,
  ...nextTs,
  { ignores: ["node_modules/**", ".next/**", "out/**", "next-env.d.ts"] },
  {
    files: ["app/**/*.tsx", "components/**/*.tsx"],
    rules: {
      "react/jsx-no-literals": [
        "error",
        { noStrings: false, ignoreProps: true, allowedStrings: ["·", "—", "/", ":", "%", "+", "×", "(", ")", "…", "#", "ms", "s"] },
      ],
    },
  },
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
      "@typescript-eslint/no-unused-expressions": "error",
    },
  },
];

export default config;
