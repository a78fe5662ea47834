// The Logs & events tab on a phone (390 px), from the trial: the table was
// 585 px wide in a 358 px box, Time, Level and Kind filled the screen and
// the Message column — the one that explains anything — started at the
// right edge, wrapped to a sliver; and its scroll box could not be reached
// by keyboard (axe: scrollable-region-focusable, serious). On a phone the
// level and kind now fold under the time, as /manage folds its owner and
// version, and the scroll box is a named, focusable region.
import { screen, within } from "@testing-library/react";

import { EventsPanel } from "@/components/instance/events-panel";
import { api } from "@/lib/api/client";
import { renderUi } from "./render";

afterEach(() => vi.restoreAllMocks());

const records = [
  { timestamp: "2026-12-05T09:01:06.562Z", level: "WARN", kind: "heartbeat_failed", message: "heartbeat failed; retrying", fields: { attempt: 2 } },
  { timestamp: "2026-12-05T09:01:07.000Z", level: "INFO", kind: "leader_elected", message: "became the leader of default (epoch 3)", fields: {} },
];

describe("the events table", () => {
  it("can be scrolled by keyboard: its scroll box is a named region in the tab order", async () => {
    vi.spyOn(api, "instanceEvents").mockResolvedValue(records);
    renderUi(<EventsPanel serviceName="order-service" instanceId="order-3" statusKey="ACTIVE" />);
    const table = await screen.findByTestId("events-table");
    const box = table.parentElement!;
    expect(box).toHaveClass("overflow-x-auto");
    expect(box).toBe(screen.getByRole("region", { name: "Events table" }));
    expect(box).toHaveAttribute("tabindex", "0");
  });

  it("puts the level and kind under the time on a phone, so the message is the second column", async () => {
    vi.spyOn(api, "instanceEvents").mockResolvedValue(records);
    renderUi(<EventsPanel serviceName="order-service" instanceId="order-3" statusKey="ACTIVE" />);
    await screen.findByTestId("events-table");
    // Below `sm` (640 px) the Level and Kind columns are hidden…
    for (const name of ["Level", "Kind"]) {
      expect(screen.getByRole("columnheader", { name })).toHaveClass("hidden", "sm:table-cell");
    }
    const row = screen.getAllByTestId("event-row")[0]!;
    const cells = within(row).getAllByRole("cell");
    expect(cells[1]).toHaveClass("hidden", "sm:table-cell");
    expect(cells[2]).toHaveClass("hidden", "sm:table-cell");
    // …and said in the time's cell instead, shown only there.
    const meta = within(cells[0]!).getByTestId("event-row-meta");
    expect(meta).toHaveClass("sm:hidden");
    expect(meta).toHaveTextContent("INFO");
    expect(meta).toHaveTextContent("leader_elected");
    // The message has no minimum width on a phone (it had 16rem).
    expect(cells[3]).not.toHaveClass("min-w-64");
    expect(cells[3]).toHaveClass("sm:min-w-64");
  });
});
