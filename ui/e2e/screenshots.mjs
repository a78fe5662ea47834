// Screenshots of the monitor UI for docs/screenshots/: dashboard, instance
// detail (each tab) and manage, at 1440×900 (desktop) and 390×844 (phone),
// against a real `aegis up --single-node` with some real traffic.
//
//   make screenshots      (or: cargo build -p aegis && cd ui && npm run build && npm run screenshots)
import { mkdirSync } from "node:fs";
import { join } from "node:path";

import { launch, signIn } from "./lib/browser.mjs";
import { defineScreenshotServices } from "./lib/definitions.mjs";
import { ROOT, startStack, until } from "./lib/stack.mjs";
import { makeTraffic } from "./lib/traffic.mjs";

const OUT = join(ROOT, "docs/screenshots");
const SIZES = { desktop: { width: 1440, height: 900 }, phone: { width: 390, height: 844 } };

mkdirSync(OUT, { recursive: true });
const stack = await startStack();
const browser = await launch();
try {
  const { admin } = stack.credentials();
  // aegis up registered these already: updated, with each answer checked.
  await defineScreenshotServices(stack);
  // Calls all along (cards and charts show traffic); 20 s before the first
  // shot, so the charts have ten snapshots with traffic in them.
  const traffic = { untilMs: Date.now() + 600000 };
  const calling = makeTraffic(stack, traffic, 2);
  await new Promise((r) => setTimeout(r, 20000));

  for (const [size, viewport] of Object.entries(SIZES)) {
    const context = await browser.newContext({ viewport, locale: "en-US", deviceScaleFactor: 1 });
    const page = await context.newPage();
    await signIn(page, stack.url, admin);
    await until(async () => (await page.locator("[data-testid=instance-card]").count()) === 7, 20000, "cards");
    await until(async () => (await page.getByTestId("feed-indicator").getAttribute("data-state")) === "live", 10000, "live");
    await page.waitForTimeout(2500); // metrics snapshots reach the cards
    const shot = (name) => page.screenshot({ path: join(OUT, `${name}-${size}.png`), fullPage: true });
    await shot("dashboard");

    // The order leader's page: it serves the calls, so its charts move.
    const leader = await page.locator("[data-testid=instance-card][data-role=leader]").first().getAttribute("data-instance");
    await page.goto(`${stack.url}/services/${leader}`);
    await page.getByTestId("instance-detail").waitFor();
    await until(async () => Number(await page.getByTestId("metrics-chart").first().getAttribute("data-points")) > 5, 20000, "chart");
    await page.getByTestId("timeline-term").first().waitFor();
    await page.waitForTimeout(500);
    await shot("detail-performance");
    await page.getByRole("tab", { name: "Configuration" }).click();
    await page.getByTestId("config-json").waitFor();
    await shot("detail-configuration");
    await page.getByRole("tab", { name: "Logs & events" }).click();
    await page.getByTestId("event-row").first().waitFor();
    await shot("detail-events");

    await page.goto(`${stack.url}/manage`);
    await page.getByTestId("definition-row").first().waitFor();
    await shot("manage");
    if (size === "desktop") {
      await page.getByTestId("new-definition").click();
      await page.getByRole("dialog").waitFor();
      await page.getByLabel("Service name").fill("Quote Service");
      await page.getByLabel("Owner").fill("desk-ops");
      await page.getByRole("button", { name: "Create" }).click();
      await page.getByTestId("error-service_name").waitFor();
      await page.screenshot({ path: join(OUT, `manage-form-${size}.png`) });
      await page.keyboard.press("Escape");
      await page.getByLabel("Language").selectOption("zh-CN");
      await page.goto(`${stack.url}/`);
      await until(async () => (await page.locator("[data-testid=instance-card]").count()) === 7, 20000, "cards");
      await page.waitForTimeout(1000);
      await page.screenshot({ path: join(OUT, `dashboard-zh-CN-${size}.png`) });
    }
    await context.close();
  }
  traffic.untilMs = 0;
  const calls = await calling;
  console.log(`made ${calls.ok} calls (${calls.failed} failed); screenshots in ${OUT}`);
  if (calls.ok === 0) throw new Error(`no call succeeded, so the charts show no traffic: ${calls.firstError}`);
} finally {
  await browser.close();
  await stack.stop();
}
