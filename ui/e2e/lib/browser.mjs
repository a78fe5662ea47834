// Debian's chromium driven by playwright-core (no browser download: the
// binary comes from apt). Each launch gets a fresh temporary profile.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

import { chromium } from "playwright-core";

export const CHROMIUM = process.env.AEGIS_CHROMIUM ?? "/usr/bin/chromium";

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-dev-shm-usage",
  "--disable-quic",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
];

/** Launches chromium; playwright gives it a fresh --user-data-dir in a temp folder. */
export function launch() {
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
}

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

/** axe-core's serious and critical violations on the current page. */
export async function axe(page) {
  await page.addScriptTag({ content: AXE });
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
  });
  return result.filter((v) => v.impact === "serious" || v.impact === "critical");
}

/** Signs in through the sign-in page with `token`. */
export async function signIn(page, baseUrl, token) {
  await page.goto(`${baseUrl}/sign-in`);
  await page.getByLabel(/token|令牌/i).fill(token);
  await page.getByRole("button", { name: /sign in|登录/i }).click();
  await page.waitForURL(`${baseUrl}/`);
}
