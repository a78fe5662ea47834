// The failover timeline says how each hand-over was measured: from a
// goodbye, from the moment the old leader's connection closed (the server
// said so), or bounded by its last metrics snapshot.
import { screen, within } from "@testing-library/react";

import { FailoverTimeline } from "@/components/instance/failover-timeline";
import { renderUi } from "./render";

afterEach(() => vi.unstubAllGlobals());

const term = (instanceId: string, electedAt: string, extra: Record<string, unknown> = {}) => ({
  instanceId,
  epoch: 7,
  electedAt,
  endedAt: null,
  endReason: null,
  handoverMs: null,
  handoverFrom: null,
  handoverBasis: null,
  ...extra,
});

function answer(terms: unknown[]) {
  const body = { serviceName: "order-service", windowSecs: 3600, truncated: false, terms };
  vi.stubGlobal(
    "fetch",
    vi.fn(async () => new Response(JSON.stringify(body), { status: 200, headers: { "Content-Type": "application/json" } })),
  );
}

describe("FailoverTimeline", () => {
  it.each([
    ["notice", "412 ms after order-1 let go"],
    ["disconnect", "412 ms after order-1's connection closed"],
    ["lastSeen", "≤ 412 ms after order-1 was last seen"],
  ])("says a hand-over measured by %s as such", async (basis, said) => {
    answer([
      term("order-1", "2026-12-05T04:00:00.000Z", { endedAt: "2026-12-05T04:00:05.000Z", endReason: "superseded" }),
      term("order-2", "2026-12-05T04:00:05.412Z", { handoverMs: 412, handoverFrom: "order-1", handoverBasis: basis }),
    ]);
    renderUi(<FailoverTimeline serviceName="order-service" group="default" changeKey="" />);
    const cells = await screen.findAllByTestId("handover");
    expect(cells.map((c) => c.textContent)).toContain(said);
  });
});

// The trial, at 390 px: the table was 556 px wide, Until was cut and Ended
// and Hand-over were off-screen, with nothing saying it scrolled. On a
// narrow screen each term is stacked, every figure under its column's name.
describe("FailoverTimeline on a narrow screen", () => {
  it("names every figure of a term by its column, for the stacked layout", async () => {
    answer([
      term("order-1", "2026-12-05T04:00:00.000Z", { endedAt: "2026-12-05T04:00:05.000Z", endReason: "superseded" }),
      term("order-2", "2026-12-05T04:00:05.412Z", { handoverMs: 412, handoverFrom: "order-1", handoverBasis: "notice" }),
    ]);
    renderUi(<FailoverTimeline serviceName="order-service" group="default" changeKey="" />);
    const rows = await screen.findAllByTestId("timeline-term");
    const headers = screen.getAllByRole("columnheader").map((h) => h.textContent);
    expect(headers).toEqual(["Leader", "Epoch", "From", "Until", "Ended", "Hand-over"]);
    for (const row of rows) {
      const cells = within(row).getAllByRole("cell");
      expect(cells.map((c) => c.getAttribute("data-label"))).toEqual(headers);
    }
    // Stacked below the small breakpoint: no row wider than the screen.
    const table = screen.getByRole("table");
    expect(table.className).toMatch(/max-sm:block/);
    expect(rows[0]!.className).toMatch(/max-sm:block/);
  });
});
