// The screenshots' catalogue. The review: `aegis up` registers order-,
// pricing- and risk-service itself (owner trading-team), so the script's
// POSTs got 409, which it did not look at, and the screenshots showed
// other owners and versions than intended. It now updates what is there.
import { defineScreenshotServices, SCREENSHOT_DEFINITIONS } from "../e2e/lib/definitions.mjs";

type Fields = { owner: string; description: string; version: string };
type Call = { method?: string; body?: unknown };

/** A monitor's catalogue behind `stack.api`, as `aegis up` leaves it. */
function monitor(names: string[], refuse: string | null = null) {
  const catalogue = new Map<string, Fields>(names.map((n) => [n, { owner: "trading-team", description: "showcase", version: "0.1.0" }]));
  const api = async (path: string, { method = "GET", body }: Call = {}) => {
    if (method === "POST" && path === "/api/services") {
      const { service_name: name, ...fields } = body as Record<string, string>;
      if (catalogue.has(name!)) return { status: 409, body: { error: { code: "CONFLICT" } } };
      catalogue.set(name!, fields as Fields);
      return { status: 201, body: { service_name: name, ...fields } };
    }
    const name = decodeURIComponent(path.replace("/api/services/", ""));
    if (method === "PUT") {
      if (name === refuse) return { status: 403, body: { error: { code: "FORBIDDEN" } } };
      const had = catalogue.get(name);
      if (!had) return { status: 404, body: { error: { code: "SERVICE_NOT_FOUND" } } };
      catalogue.set(name, { ...had, ...(body as Partial<Fields>) });
      return { status: 200, body: catalogue.get(name) };
    }
    throw new Error(`unexpected ${method} ${path}`);
  };
  return { api, catalogue };
}

describe("the screenshots' definitions", () => {
  const intended = () =>
    new Map(
      SCREENSHOT_DEFINITIONS.map(([name, owner, description, version]) => [
        name,
        { owner, description, version: name === "pricing-service" ? "1.9.0" : version },
      ]),
    );

  it("updates the ones aegis up registered to the intended owner, description and version", async () => {
    const { api, catalogue } = monitor(["order-service", "pricing-service", "risk-service"]);
    await defineScreenshotServices({ api });
    expect(catalogue).toEqual(intended());
  });

  it("creates one that is not there", async () => {
    const { api, catalogue } = monitor(["order-service"]);
    await defineScreenshotServices({ api });
    expect(catalogue).toEqual(intended());
  });

  it("stops on an answer it did not expect, instead of shooting other data", async () => {
    const { api } = monitor(["order-service", "pricing-service", "risk-service"], "risk-service");
    await expect(defineScreenshotServices({ api })).rejects.toThrow(/risk-service.*403/);
  });
});
