// Real calls through `aegis call` (discovery, RPC, the services' metrics),
// so charts and card figures show traffic in screenshots and benchmarks.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";

import { AEGIS } from "./stack.mjs";

const run = promisify(execFile);

/**
 * Calls the showcase's services in `loops` parallel loops until
 * `control.untilMs` (which may move), as the operator (NATS refuses
 * clients without credentials). Resolves to the calls that succeeded and
 * failed, and the first failure's message.
 */
export async function makeTraffic(stack, control, loops = 3) {
  let n = 0;
  const result = { ok: 0, failed: 0, firstError: undefined };
  const connection = ["--nats-url", stack.natsUrl, "--credentials", join(stack.stateDir, "credentials")];
  const calls = [
    () => ["pricing-service", "get_price", JSON.stringify({ symbol: ["AAPL", "MSFT", "NVDA"][n % 3] })],
    () => ["order-service", "create_order", JSON.stringify({ symbol: "AAPL", side: "BUY", quantity: 1 + (n % 9), client_order_id: `shot-${process.pid}-${n}` }), "--active"],
    () => ["risk-service", "simulate_work", JSON.stringify({ ms: 5 + (n % 20) })],
  ];
  const loop = async (k) => {
    while (Date.now() < control.untilMs) {
      n += 1;
      const args = calls[(n + k) % calls.length]();
      try {
        await run(AEGIS, ["call", ...args, ...connection], { timeout: 10000 });
        result.ok += 1;
      } catch (e) {
        result.failed += 1;
        result.firstError ??= String(e.stderr || e.message).trim();
      }
    }
  };
  await Promise.all(Array.from({ length: loops }, (_, k) => loop(k)));
  return result;
}
