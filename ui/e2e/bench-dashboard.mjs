// Benchmark (not a test): the dashboard with 1,000 instances heart-beating
// at 1 Hz stays responsive. A real monitor and nats-server (`aegis up
// --nats-url` with no showcase services, on a nats-server of its own: the
// fake instances register under 1,000 service names, which no user of the
// showcase's own server may do) plus the monitor's
// `fake_instances` example registering N real SDK instances (1 s heartbeat,
// a metrics snapshot every 2 s). Chromium loads the dashboard and, for the
// measured period, records from the browser's performance APIs:
// main-thread long tasks (PerformanceObserver "longtask"), frame intervals
// (requestAnimationFrame), and the processing time of key presses typed
// into the search box (Event Timing). Prints a JSON report.
//
//   make bench-ui     (or: cargo build -p aegis --release && cargo build -p aegis-monitor --release --example fake_instances
//                       && cd ui && npm run build && AEGIS_BIN=../target/release/aegis npm run bench)
// BENCH_INSTANCES (default 1000) and BENCH_SECONDS (default 30) adjust it.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

import { launch, signIn } from "./lib/browser.mjs";
import { ROOT, freePorts, startStack, until } from "./lib/stack.mjs";

const N = Number(process.env.BENCH_INSTANCES ?? 1000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 30);
const FAKE = resolve(process.env.AEGIS_FAKE_INSTANCES ?? join(ROOT, "target/release/examples/fake_instances"));
if (!existsSync(FAKE)) throw new Error(`${FAKE} is missing: cargo build -p aegis-monitor --release --example fake_instances`);

// Where the bootstrap and the testkit look too: AEGIS_NATS_SERVER, then
// the bootstrapped one, then PATH.
const TOOLS_NATS = join(ROOT, ".tools/bin/nats-server");
const NATS_SERVER = process.env.AEGIS_NATS_SERVER ?? (existsSync(TOOLS_NATS) ? TOOLS_NATS : "nats-server");
const { base: natsPort } = await freePorts();
const storeDir = mkdtempSync(join(tmpdir(), "aegis-bench-ui-nats-"));
const nats = spawn(NATS_SERVER, ["-a", "127.0.0.1", "-p", String(natsPort), "-js", "-sd", storeDir], { stdio: "ignore" });
nats.once("error", (e) => {
  console.error(`cannot start ${NATS_SERVER}: ${e.message} (run make bootstrap, or set AEGIS_NATS_SERVER)`);
  rmSync(storeDir, { recursive: true, force: true });
  process.exit(1);
});
const natsUrl = `nats://127.0.0.1:${natsPort}`;
await until(() => portTaken(natsPort), 10000, "nats-server listening");
const stack = await startStack({ instances: "order=0,pricing=0,risk=0", natsUrl });
const fake = spawn(FAKE, [stack.natsUrl, String(N)], { stdio: ["ignore", "pipe", "inherit"] });
let fakeOut = "";
fake.stdout.on("data", (d) => (fakeOut += d));
const browser = await launch();
try {
  await until(() => fakeOut.includes("instances registered"), 180000, `${N} instances registered`);
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  await signIn(page, stack.url, stack.credentials().admin);
  const loadStart = Date.now();
  await until(async () => (await page.locator("[data-testid=instance-card]").count()) === N, 60000, `${N} cards`);
  const loadMs = Date.now() - loadStart;
  await page.waitForTimeout(3000); // settle

  const report = await page.evaluate(async (seconds) => {
    const longTasks = [];
    const events = [];
    new PerformanceObserver((l) => longTasks.push(...l.getEntries().map((e) => e.duration))).observe({ type: "longtask" });
    new PerformanceObserver((l) => events.push(...l.getEntries().filter((e) => e.name === "keydown" || e.name === "keyup" || e.name === "input").map((e) => e.duration)))
      .observe({ type: "event", durationThreshold: 16 });
    const frames = [];
    let last = performance.now();
    let running = true;
    const tick = (t) => {
      frames.push(t - last);
      last = t;
      if (running) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
    await new Promise((r) => setTimeout(r, seconds * 1000));
    running = false;
    const sorted = (xs) => [...xs].sort((a, b) => a - b);
    const pct = (xs, p) => (xs.length ? sorted(xs)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] : 0);
    const round = (x) => Math.round(x * 10) / 10;
    return {
      seconds,
      longTasks: { count: longTasks.length, totalMs: round(longTasks.reduce((a, b) => a + b, 0)), maxMs: round(Math.max(0, ...longTasks)), p95Ms: round(pct(longTasks, 95)) },
      frames: {
        count: frames.length,
        fps: round(frames.length / seconds),
        p50Ms: round(pct(frames, 50)),
        p95Ms: round(pct(frames, 95)),
        p99Ms: round(pct(frames, 99)),
        maxMs: round(Math.max(...frames)),
        over50ms: frames.filter((f) => f > 50).length,
      },
      heapMB: performance.memory ? round(performance.memory.usedJSHeapSize / 1048576) : null,
      cards: document.querySelectorAll("[data-testid=instance-card]").length,
      events,
    };
  }, SECONDS);

  // Typing into the search box while the feed runs.
  const typing = await page.evaluate(() => {
    window.__events = [];
    new PerformanceObserver((l) => window.__events.push(...l.getEntries().map((e) => ({ name: e.name, duration: e.duration })))).observe({ type: "event", durationThreshold: 16, buffered: false });
  });
  void typing;
  const search = page.getByLabel("Search instance id");
  const typedAt = Date.now();
  await search.pressSequentially("quote-service-09", { delay: 120 });
  // Done when only matching cards are left (quote-service-091, -095, -099).
  await until(
    () => page.$$eval("[data-testid=instance-card]", (els) => els.length > 0 && els.every((e) => e.dataset.instance.includes("quote-service-09"))),
    20000,
    "search narrowed the cards",
  );
  const searchMs = Date.now() - typedAt;
  const keyEvents = await page.evaluate(() => window.__events);
  const keyDurations = keyEvents.map((e) => e.duration);
  const result = {
    date: new Date().toISOString(),
    instances: N,
    machine: "2 cores, shared; chromium headless (software rendering)",
    firstAllCardsMs: loadMs,
    ...report,
    events: undefined,
    typing: {
      keys: 16,
      slowEvents: keyDurations.length,
      maxEventMs: Math.max(0, ...keyDurations),
      searchDoneMs: searchMs,
    },
  };
  console.log(JSON.stringify(result, null, 2));
  if (process.env.BENCH_JSON) writeFileSync(process.env.BENCH_JSON, JSON.stringify(result, null, 2) + "\n");
} finally {
  await browser.close();
  fake.kill("SIGTERM");
  await new Promise((r) => fake.once("exit", r));
  await stack.stop();
  nats.kill("SIGTERM");
  await new Promise((r) => nats.once("exit", r));
  rmSync(storeDir, { recursive: true, force: true });
}

/** Whether something listens on `port`. */
function portTaken(port) {
  return new Promise((done) => {
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.end();
      done(true);
    });
    socket.once("error", () => done(false));
  });
}
