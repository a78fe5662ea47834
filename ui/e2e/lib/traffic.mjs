// Real calls through `aegis call` (discovery, RPC, the services' metrics),
// so charts and card figures show traffic in screenshots and benchmarks.
import { execFile } from "node:child_process";
import { promisify } from "node:util";

import { AEGIS } from "./stack.mjs";

const run = promisify(execFile);

/** Calls the showcase's services in `loops` parallel loops until `control.untilMs` (which may move). */
export async function makeTraffic(natsUrl, control, loops = 3) {
  let n = 0;
  const calls = [
    () => ["pricing-service", "get_price", JSON.stringify({ symbol: ["AAPL", "MSFT", "NVDA"][n % 3] })],
    () => ["order-service", "create_order", JSON.stringify({ symbol: "AAPL", side: "BUY", quantity: 1 + (n % 9), client_order_id: `shot-${process.pid}-${n}` }), "--active"],
    () => ["risk-service", "simulate_work", JSON.stringify({ ms: 5 + (n % 20) })],
  ];
  const loop = async (k) => {
    while (Date.now() < control.untilMs) {
      n += 1;
      const args = calls[(n + k) % calls.length]();
      await run(AEGIS, ["call", ...args, "--nats-url", natsUrl], { timeout: 10000 }).catch(() => undefined);
    }
  };
  await Promise.all(Array.from({ length: loops }, (_, k) => loop(k)));
  return n;
}
