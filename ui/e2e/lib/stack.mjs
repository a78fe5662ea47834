// Starts a real Aegis stack for the browser tests: `aegis up --single-node`
// (one nats-server, or with `cluster` the showcase's three; the monitor
// serving ui/out, order ×3, pricing ×2,
// risk ×2 — each a real process) on free ports with a temporary state
// directory, and stops all of it again, also when a test fails.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const ROOT = resolve(import.meta.dirname, "../../..");
export const AEGIS = resolve(process.env.AEGIS_BIN ?? join(ROOT, "target/debug/aegis"));
export const UI_DIR = resolve(process.env.AEGIS_UI_DIR ?? join(ROOT, "ui/out"));

function portFree(port) {
  return new Promise((done) => {
    const server = net.createServer();
    server.once("error", () => done(false));
    server.listen(port, "127.0.0.1", () => server.close(() => done(true)));
  });
}

/**
 * A base port whose neighbours `aegis up` uses are free too: per node
 * base+i, +2000 and +4000; the API's port right after the nodes' own.
 */
export async function freePorts(nodes = 1) {
  for (;;) {
    const probe = net.createServer();
    const base = await new Promise((done) => probe.listen(0, "127.0.0.1", () => done(probe.address().port)));
    await new Promise((done) => probe.close(done));
    if (base > 60000) continue;
    const node = Array.from({ length: nodes }, (_, i) => [base + i, base + 2000 + i, base + 4000 + i]).flat();
    const ok = await Promise.all([...node, base + nodes].map(portFree));
    if (ok.every(Boolean)) return { base, api: base + nodes };
  }
}

/** Waits until `check()` is truthy; polls every 50 ms. */
export async function until(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts the showcase. Options: `instances` (e.g. "order=3,pricing=2,risk=2"),
 * `env` (extra environment for `aegis up` and its children), `natsUrl` (an
 * existing NATS to use instead of the node `aegis up` starts with its users:
 * for clients that connect without the showcase's credentials), `cluster`
 * (three NATS nodes, R3 streams, as `aegis up` does by default).
 */
export async function startStack({ instances, env = {}, natsUrl, cluster = false } = {}) {
  if (!existsSync(AEGIS)) throw new Error(`${AEGIS} is missing: run cargo build -p aegis first`);
  if (!existsSync(join(UI_DIR, "index.html"))) throw new Error(`${UI_DIR} is missing: run npm run build first`);
  const { base, api } = await freePorts(cluster ? 3 : 1);
  const stateDir = mkdtempSync(join(tmpdir(), "aegis-ui-e2e-"));
  const nats = natsUrl ? ["--nats-url", natsUrl] : [...(cluster ? [] : ["--single-node"]), "--base-port", String(base)];
  const args = ["up", ...nats, "--api-port", String(api), "--state-dir", stateDir, "--ui-dir", UI_DIR];
  if (instances) args.push("--instances", instances);
  const child = spawn(AEGIS, args, {
    cwd: ROOT,
    env: { ...process.env, AEGIS_LOG: "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: false,
  });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const exited = new Promise((done) => child.once("exit", (code, signal) => done({ code, signal })));
  let gone = false;
  exited.then(() => (gone = true));

  const stack = {
    url: `http://127.0.0.1:${api}`,
    natsUrl: natsUrl ?? `nats://127.0.0.1:${base}`,
    stateDir,
    output: () => output,
    /** The admin and viewer tokens `aegis up` wrote. */
    credentials() {
      const text = readFileSync(join(stateDir, "credentials"), "utf8");
      const get = (k) => text.match(new RegExp(`^${k}=(.+)$`, "m"))?.[1]?.trim();
      return { admin: get("AEGIS_ADMIN_TOKEN"), viewer: get("AEGIS_VIEWER_TOKEN") };
    },
    /** name → pid of the supervised children (nats-n1, monitor, order-1, ...). */
    pids() {
      const dir = join(stateDir, "pids");
      return Object.fromEntries(
        readdirSync(dir)
          .filter((f) => f.endsWith(".pid"))
          .map((f) => [f.slice(0, -4), Number(readFileSync(join(dir, f), "utf8").trim())]),
      );
    },
    /** Runs `aegis chaos … <args>` against this stack (e.g. `kill-nats 2`). */
    chaos(...chaosArgs) {
      return new Promise((done, fail) => {
        const c = spawn(AEGIS, ["chaos", "--state-dir", stateDir, ...chaosArgs], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        c.stdout.on("data", (d) => (out += d));
        c.stderr.on("data", (d) => (out += d));
        c.once("exit", (code) => (code === 0 ? done(out) : fail(new Error(`aegis chaos ${chaosArgs.join(" ")}: exit ${code}\n${out}`))));
      });
    },
    /** Calls the API with a bearer token. */
    async api(path, { token, method = "GET", body, headers = {} } = {}) {
      const res = await fetch(`${stack.url}${path}`, {
        method,
        headers: { Authorization: `Bearer ${token ?? stack.credentials().admin}`, ...(body ? { "Content-Type": "application/json" } : {}), ...headers },
        body: body ? JSON.stringify(body) : undefined,
      });
      const text = await res.text();
      return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
    },
    /** Stops the showcase (SIGTERM, then SIGKILL) and removes its state. */
    async stop() {
      if (!gone) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 20000);
        await exited;
        clearTimeout(timer);
      }
      // A child that outlived its supervisor must not outlive the test.
      try {
        for (const pid of Object.values(stack.pids())) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            /* already gone */
          }
        }
      } catch {
        /* no pids folder */
      }
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
  try {
    await until(() => output.includes("Aegis showcase is up") || (gone && Promise.reject(new Error("aegis up exited"))), 120000, "aegis up");
  } catch (e) {
    await stack.stop();
    throw new Error(`${e.message}\n${output}`);
  }
  return stack;
}
