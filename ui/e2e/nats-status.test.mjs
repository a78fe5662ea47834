// End to end: the state of NATS itself on the dashboard, in Debian's
// chromium against a real `aegis up` with its three NATS nodes. All good is
// one quiet line; SIGKILL of the node leading KV_orders (`aegis chaos
// kill-nats`) shows that node down and KV_orders without a leader, with
// what waits on it, while JetStream elects a new one — the badge and the
// feed indicator no longer all green — and axe finds nothing either way.
//
//   cd ui && npm run build && node --test e2e/nats-status.test.mjs   (needs target/debug/aegis)
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { axe, launch, signIn } from "./lib/browser.mjs";
import { startStack, until } from "./lib/stack.mjs";

let stack;
let browser;

before(async () => {
  stack = await startStack({ cluster: true, instances: "order=2,pricing=1,risk=1" });
  browser = await launch();
});

after(async () => {
  await browser?.close().catch(() => undefined);
  await stack?.stop();
});

const text = async (page, testId) => {
  const el = page.locator(`[data-testid=${testId}]`);
  return (await el.count()) ? el.first().innerText() : null;
};

describe("NATS status", () => {
  test("a NATS node killed shows as down, and KV_orders as without a leader until one is elected", async () => {
    const context = await browser.newContext({ locale: "en-US", viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    await signIn(page, stack.url, stack.credentials().admin);

    await until(async () => /^NATS: 3 of 3 servers up · \d+ streams, all with a leader$/.test((await text(page, "nats-ok")) ?? ""), 20000, "the quiet line");
    assert.equal(await page.locator("[data-testid=nats-badge]").getAttribute("data-state"), "ok");
    assert.deepEqual(await axe(page), [], "axe, all good");

    // Kill the node leading KV_orders: its leader is gone until the others elect one.
    const before = await stack.api("/api/nats");
    assert.equal(before.status, 200);
    const leader = before.body.streams.find((s) => s.name === "KV_orders")?.leader;
    assert.ok(leader, `KV_orders has a leader: ${JSON.stringify(before.body.streams)}`);
    // The showcase names its nodes aegis-n1…aegis-n3; `kill-nats N` takes N.
    const index = Number(/(\d+)$/.exec(leader)?.[1]);
    assert.ok(index >= 1 && index <= 3, `a node number in ${leader}`);
    await stack.chaos("kill-nats", String(index));
    const killed = Date.now();

    let down = null;
    let leaderless = null;
    await until(async () => {
      const items = await page.locator("[data-testid=nats-problems] li").allInnerTexts();
      if (!down && items.some((t) => t.startsWith(`${leader} down since `))) down = Date.now() - killed;
      if (!leaderless && items.some((t) => t.startsWith("KV_orders has no leader (since ") && t.includes("order writes wait"))) leaderless = Date.now() - killed;
      return down !== null && leaderless !== null;
    }, 10000, `${leader} down and KV_orders without a leader on screen`);
    console.log(`${leader} shown down after ${down} ms, KV_orders leaderless after ${leaderless} ms`);
    assert.equal(await page.locator("[data-testid=nats-badge]").getAttribute("data-state"), "problem");
    assert.match((await text(page, "feed-indicator")) ?? "", /Live · NATS degraded/);
    assert.deepEqual(await axe(page), [], "axe, a node down");

    // A new leader: KV_orders leaves the notice; the node stays down in it.
    await until(async () => {
      const items = await page.locator("[data-testid=nats-problems] li").allInnerTexts();
      return !items.some((t) => t.startsWith("KV_orders ")) && items.some((t) => t.startsWith(`${leader} down since `));
    }, 30000, "KV_orders led again while the node stays down");

    await stack.chaos("restart-nats", String(index));
    await until(async () => /^NATS: 3 of 3 servers up/.test((await text(page, "nats-ok")) ?? ""), 60000, "all good again");
    await context.close();
  });
});
