// The Logs & events tab on a phone (390 px), from the trial: the table was
// 585 px wide in a 358 px box, Time, Level and Kind filled the screen and
// the Message column — the one that explains anything — started at the
// right edge, wrapped to a sliver; and its scroll box could not be reached
// by keyboard (axe: scrollable-region-focusable, serious). On a phone the
// level and kind now fold under the time, as /manage folds its owner and
// version, and the scroll box is a named, focusable region.
import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

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

// The trial, after a NATS node loss: 13 WARN "order store unavailable"
// records within 3 s, and registry-watch retries, pushed the lifecycle
// events (elected, registered) far down, with no way to pick them out;
// and the panel reads only the newest 200 records without saying so, so
// nothing told that older ones exist. A labelled filter picks warnings and
// errors or lifecycle events, and a line says how many records are shown
// of how many read, and when older ones are left out.
describe("the events filter", () => {
  const mixed = [
    { timestamp: "2026-12-05T09:01:00.000Z", level: "INFO", kind: "registered", message: "registered", fields: {} },
    { timestamp: "2026-12-05T09:01:01.000Z", level: "INFO", kind: "elected", message: "became the leader of default (epoch 3)", fields: {} },
    { timestamp: "2026-12-05T09:01:02.000Z", level: "WARN", kind: "log", message: "order store unavailable", fields: {} },
    { timestamp: "2026-12-05T09:01:03.000Z", level: "ERROR", kind: "log", message: "write failed", fields: {} },
    { timestamp: "2026-12-05T09:01:04.000Z", level: "WARN", kind: "heartbeat_failed", message: "cannot write to the registry", fields: {} },
    { timestamp: "2026-12-05T09:01:05.000Z", level: "WARN", kind: "status_changed", message: "an operator made this instance UNHEALTHY", fields: {} },
  ];
  const kinds = () => screen.getAllByTestId("event-row").map((r) => `${r.getAttribute("data-level")}:${r.getAttribute("data-kind")}`);

  it("shows warnings and errors, or lifecycle events, or all, chosen from a labelled list", async () => {
    const read = vi.spyOn(api, "instanceEvents").mockResolvedValue(mixed);
    renderUi(<EventsPanel serviceName="order-service" instanceId="order-3" statusKey="ACTIVE" />);
    await screen.findByTestId("events-table");
    expect(read).toHaveBeenCalledWith("order-service", "order-3", 200);
    const filter = screen.getByRole("combobox", { name: "Show" });
    expect(filter).toHaveValue("all");
    expect(kinds()).toHaveLength(6);
    expect(screen.getByTestId("events-count")).toHaveTextContent("6 records, newest first.");

    await userEvent.selectOptions(filter, "Warnings and errors");
    expect(kinds()).toEqual(["WARN:status_changed", "WARN:heartbeat_failed", "ERROR:log", "WARN:log"]);
    expect(screen.getByTestId("events-count")).toHaveTextContent("4 of 6 records match.");

    await userEvent.selectOptions(filter, "Lifecycle events");
    expect(kinds()).toEqual(["WARN:status_changed", "INFO:elected", "INFO:registered"]);
    expect(screen.getByTestId("events-count")).toHaveTextContent("3 of 6 records match.");

    // A native list (keyboard-operable as such), and back to all.
    expect(filter.tagName).toBe("SELECT");
    await userEvent.selectOptions(filter, "All records");
    expect(kinds()).toHaveLength(6);
  });

  it("says that it shows only the newest 200 records when it read as many", async () => {
    const many = Array.from({ length: 200 }, (_, i) => ({
      timestamp: new Date(Date.parse("2026-12-05T09:00:00.000Z") + i * 1000).toISOString(),
      level: i === 199 ? "INFO" : "WARN",
      kind: i === 199 ? "elected" : "log",
      message: "m",
      fields: {},
    }));
    vi.spyOn(api, "instanceEvents").mockResolvedValue(many);
    renderUi(<EventsPanel serviceName="order-service" instanceId="order-3" statusKey="ACTIVE" />);
    await screen.findByTestId("events-table");
    expect(screen.getByTestId("events-count")).toHaveTextContent("The newest 200 records, newest first; older ones are not shown here.");
    await userEvent.selectOptions(screen.getByRole("combobox", { name: "Show" }), "Lifecycle events");
    expect(screen.getByTestId("events-count")).toHaveTextContent("1 of the newest 200 records match; older ones are not shown here.");
  });

  it("says when no record read is of the kind chosen, and does it in Chinese too", async () => {
    vi.spyOn(api, "instanceEvents").mockResolvedValue(records.slice(0, 1));
    renderUi(<EventsPanel serviceName="order-service" instanceId="order-3" statusKey="ACTIVE" />, { locale: "zh-CN" });
    await screen.findByTestId("events-table");
    await userEvent.selectOptions(screen.getByRole("combobox", { name: "显示" }), "生命周期事件");
    expect(screen.queryByTestId("events-table")).toBeNull();
    expect(screen.getByText("读取到的记录中没有这一类。")).toBeInTheDocument();
    expect(screen.getByTestId("events-count")).toHaveTextContent("1 条记录中有 0 条符合。");
  });
});

// Text from services is untrusted: a record's message and fields may carry
// bidirectional overrides that reorder what is read ("…gnp.exe" read as
// "…exe.png"), zero-width characters that hide a difference ("admin" vs
// "ad\u200Bmin"), and tag characters that some renderers read. The panel
// printed them as they were (the fields through JSON.stringify, which
// leaves them); it now shows each as a visible mark naming it.
describe("what the events table shows of a record's text", () => {
  const HIDDEN = /[\u200B-\u200F\u202A-\u202E\u2060-\u206F\uFEFF\u{E0000}-\u{E007F}]/u;
  const tricky = {
    timestamp: "2026-12-05T09:01:08.000Z",
    level: "WARN",
    kind: "log",
    message: "saved invoice_\u202Egnp.exe for ad\u200Bmin",
    fields: { user: "ad\u2066min\u2069", note: "x\uFEFFy", tag: "ok\u{E0041}\u{E007F}", path: "a\u200Fb" },
  };

  it("marks every bidirectional, zero-width and tag character, in the message and the fields", async () => {
    vi.spyOn(api, "instanceEvents").mockResolvedValue([tricky]);
    renderUi(<EventsPanel serviceName="order-service" instanceId="order-3" statusKey="ACTIVE" />);
    const row = (await screen.findAllByTestId("event-row"))[0]!;
    const message = within(row).getAllByRole("cell")[3]!;
    expect(message.textContent).not.toMatch(HIDDEN);
    for (const code of ["U+202E", "U+200B", "U+2066", "U+2069", "U+FEFF", "U+E0041", "U+E007F", "U+200F"]) {
      expect(message.textContent).toContain(code);
    }
    expect(message).toHaveTextContent(/saved invoice_\s*U\+202E\s*gnp\.exe for ad\s*U\+200B\s*min/);
    // Each a mark of its own, set apart from the text, that says what it is.
    const marks = within(message).getAllByTestId("hidden-char");
    expect(marks).toHaveLength(8);
    expect(marks[0]).toHaveAttribute("title", expect.stringContaining("invisible character (U+202E)"));
  });

  it("leaves ordinary text as it is", async () => {
    vi.spyOn(api, "instanceEvents").mockResolvedValue([{ ...tricky, message: "store full: 1.0 MiB — 订单", fields: { n: 2, who: "risk-1" } }]);
    renderUi(<EventsPanel serviceName="order-service" instanceId="order-3" statusKey="ACTIVE" />);
    const row = (await screen.findAllByTestId("event-row"))[0]!;
    const message = within(row).getAllByRole("cell")[3]!;
    expect(message.textContent).toBe('store full: 1.0 MiB — 订单{"n":2,"who":"risk-1"}');
  });
});
