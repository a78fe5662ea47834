// The failover timeline says how each hand-over was measured: from a
// goodbye, from the moment the old leader's connection closed (the server
// said so), or bounded by its last metrics snapshot.
import { screen, within } from "@testing-library/react";

import { FailoverTimeline } from "@/components/instance/failover-timeline";
import type { ServiceInstance } from "@/lib/api/schemas";
import { InstanceStoreContext } from "@/hooks/use-instance-store";
import { InstanceStore } from "@/lib/instance-store";
import { instance, renderUi } from "./render";

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

function answer(terms: unknown[], truncated = false) {
  const body = { serviceName: "order-service", windowSecs: 3600, truncated, terms };
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
    // A whole restart is no hand-over (dab8343): it says so.
    ["restart", "restarted: 412 ms without a leader after order-1 let go"],
    // A lapse of the lease and a renewal: the same leader, not a hand-over.
    ["resumed", "resumed: order-1's lease lapsed for 412 ms; nobody else led"],
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

describe("FailoverTimeline after a lapse of the lease", () => {
  it("says the lease lapsed, and no successor only while none followed", async () => {
    answer([
      term("order-1", "2026-12-05T04:00:00.000Z", { endedAt: "2026-12-05T04:00:05.000Z", endReason: "lapsed" }),
      term("order-1", "2026-12-05T04:00:06.701Z", {
        endedAt: "2026-12-05T04:00:09.000Z",
        endReason: "lapsed",
        handoverMs: 1701,
        handoverFrom: "order-1",
        handoverBasis: "resumed",
      }),
    ]);
    renderUi(<FailoverTimeline serviceName="order-service" group="default" changeKey="" />);
    const rows = await screen.findAllByTestId("timeline-term");
    const ended = rows.map((row) => within(row).getAllByRole("cell")[4]!.textContent);
    // Newest first: the last term's lapse has no successor yet; the first one's was followed.
    expect(ended).toEqual(["lease lapsed, no successor yet", "lease lapsed"]);
    expect(within(rows[0]!).getByTestId("handover").textContent).toBe("resumed: order-1's lease lapsed for 1,701 ms; nobody else led");
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

/** The page's live view of group default: these instances, as the API lists them. */
function liveView(...instances: Partial<ServiceInstance>[]) {
  const store = new InstanceStore({ schedule: (flush) => flush() });
  store.replaceAll(instances.map((i) => instance({ stickyActiveGroup: "default", ...i }) as ServiceInstance));
  return store;
}

function renderWith(store: InstanceStore | null, locale: "en" | "zh-CN" = "en") {
  return renderUi(
    <InstanceStoreContext.Provider value={store}>
      <FailoverTimeline serviceName="order-service" group="default" changeKey="" />
    </InstanceStoreContext.Provider>,
    { locale },
  );
}

// The review: a leader elected before a flood of records, whose end (and
// its successor's election) lay in the part of the window not read, stayed
// open in the answer, and the timeline crowned it "now" while the dashboard
// showed another instance leading.
describe("FailoverTimeline against the live view", () => {
  const a = () => term("order-1", "2026-12-05T04:00:00.000Z", { epoch: 3 });

  it("crowns an open term as current when the live view shows that instance leading with that epoch", async () => {
    answer([a()]);
    renderWith(liveView({ instanceId: "order-1", status: "ACTIVE", epoch: 3 }, { instanceId: "order-2", status: "STANDBY", epoch: null }));
    const [row] = await screen.findAllByTestId("timeline-term");
    expect(row).toHaveAttribute("data-current", "true");
    expect(within(row!).getAllByRole("cell")[3]).toHaveTextContent(/^now$/);
  });

  it("shows an open term another instance's lead contradicts as ended at an unknown time, not current", async () => {
    answer([a()], true);
    renderWith(liveView({ instanceId: "order-1", status: "UNHEALTHY", reportedStatus: "ACTIVE", statusReason: "deposed", epoch: null }, { instanceId: "order-2", status: "ACTIVE", epoch: 4 }));
    const [row] = await screen.findAllByTestId("timeline-term");
    expect(row).toHaveAttribute("data-current", "false");
    const until = within(row!).getAllByRole("cell")[3]!;
    expect(until).not.toHaveTextContent(/^now$/);
    expect(until.querySelector("[title]")).toHaveAttribute("title", expect.stringMatching(/unknown time.*order-2 leads now/));
    expect(row!.querySelector("svg")).toBeNull();
  });

  it("does not take an open term of the same instance with an older epoch for the current one", async () => {
    answer([a()]);
    renderWith(liveView({ instanceId: "order-1", status: "ACTIVE", epoch: 5 }));
    const [row] = await screen.findAllByTestId("timeline-term");
    expect(row).toHaveAttribute("data-current", "false");
    expect(within(row!).getAllByRole("cell")[3]).not.toHaveTextContent(/^now$/);
  });

  it("says nobody's term is current while no instance of the group leads in the live view", async () => {
    answer([a()]);
    renderWith(liveView({ instanceId: "order-1", status: "UNHEALTHY", reportedStatus: "ACTIVE", statusReason: "disconnected", epoch: 3 }));
    const [row] = await screen.findAllByTestId("timeline-term");
    expect(row).toHaveAttribute("data-current", "false");
    const until = within(row!).getAllByRole("cell")[3]!;
    expect(until.querySelector("[title]")).toHaveAttribute("title", expect.stringMatching(/unknown time.*no instance of the group leads/));
  });
});

// The review: the answer's `truncated` flag was never shown, so a window
// with more records than one request reads looked complete.
describe("FailoverTimeline of a truncated window", () => {
  it("says terms in between may be missing, in English and Chinese", async () => {
    answer([term("order-2", "2026-12-05T04:10:00.000Z", { epoch: 4 })], true);
    const { unmount } = renderWith(liveView({ instanceId: "order-2", status: "ACTIVE", epoch: 4 }));
    expect(await screen.findByTestId("timeline-truncated")).toHaveTextContent(/more records than one request reads.*terms in between may be missing/);
    unmount();
    renderWith(liveView({ instanceId: "order-2", status: "ACTIVE", epoch: 4 }), "zh-CN");
    expect(await screen.findByTestId("timeline-truncated")).toHaveTextContent(/其间的任期可能缺失/);
  });

  it("does not say 'no elections' of a truncated window with none read", async () => {
    answer([], true);
    renderWith(liveView({ instanceId: "order-2", status: "ACTIVE", epoch: 4 }));
    expect(await screen.findByTestId("timeline-truncated")).toBeInTheDocument();
    expect(screen.queryByText("No elections recorded in the last hour.")).toBeNull();
  });

  it("says nothing of the kind when the window was read whole", async () => {
    answer([term("order-2", "2026-12-05T04:10:00.000Z", { epoch: 4 })]);
    renderWith(liveView({ instanceId: "order-2", status: "ACTIVE", epoch: 4 }));
    await screen.findAllByTestId("timeline-term");
    expect(screen.queryByTestId("timeline-truncated")).toBeNull();
  });
});

// The showcase, after `aegis chaos kill order-service`: order-3 led with
// epoch 1, order-1 took over with epoch 1019, order-2 later with 4100. A
// new user read that as a thousand elections in two minutes; nothing on
// the page said that an epoch is the election bucket's revision, which
// every lease renewal advances.
describe("FailoverTimeline's epochs", () => {
  it("says why epochs jump between terms, in English and Chinese", async () => {
    answer([
      term("order-3", "2026-12-05T15:00:15.506Z", { epoch: 1, endedAt: "2026-12-05T15:01:57.170Z", endReason: "superseded" }),
      term("order-1", "2026-12-05T15:01:57.513Z", { epoch: 1019, handoverMs: 342, handoverFrom: "order-3", handoverBasis: "disconnect" }),
    ]);
    const { unmount } = renderWith(liveView({ instanceId: "order-1", status: "ACTIVE", epoch: 1019 }));
    await screen.findAllByTestId("timeline-term");
    expect(screen.getByTestId("timeline-epoch-help")).toHaveTextContent(/revision.*every lease renewal advances it.*only their order matters/i);
    unmount();
    renderWith(liveView({ instanceId: "order-1", status: "ACTIVE", epoch: 1019 }), "zh-CN");
    await screen.findAllByTestId("timeline-term");
    expect(screen.getByTestId("timeline-epoch-help")).toHaveTextContent(/修订号.*续期.*先后顺序/);
  });
});

// The monitor's answer after a flood of records (commit "the failover
// timeline claims nothing across the unread middle"): a term still open
// where the unread middle of a truncated window begins ends there with
// endReason "unread", endedAt the last record read before the middle (its
// real end is later, unknown when), and the first term after the middle
// has no hand-over. The timeline called that end "lost without notice",
// gave the last record read as the time it ended, and called the next
// leader the first in the window.
describe("FailoverTimeline across the unread middle of a truncated window", () => {
  const before = () =>
    term("order-1", "2026-12-05T04:00:00.000Z", { epoch: 3, endedAt: "2026-12-05T04:00:09.000Z", endReason: "unread" });
  const after = () => term("order-2", "2026-12-05T04:40:00.000Z", { epoch: 9 });

  it("says the term ended unseen, in English and Chinese, never 'lost without notice'", async () => {
    answer([before(), after()], true);
    const { unmount } = renderWith(liveView({ instanceId: "order-2", status: "ACTIVE", epoch: 9 }));
    const rows = await screen.findAllByTestId("timeline-term");
    const ended = within(rows[1]!).getAllByRole("cell")[4]!;
    expect(ended).toHaveTextContent(/^ended unseen: its end was not read$/);
    unmount();
    renderWith(liveView({ instanceId: "order-2", status: "ACTIVE", epoch: 9 }), "zh-CN");
    const zh = await screen.findAllByTestId("timeline-term");
    expect(within(zh[1]!).getAllByRole("cell")[4]).toHaveTextContent(/^结束时未被看到：未读取到其结束记录$/);
  });

  it("gives endedAt as a time the term ended after, not at", async () => {
    // On the day of the records: a time of another day is shown with its
    // date, and this test ran on the real clock (it failed from the next day on).
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(Date.parse("2026-12-05T05:00:00.000Z"));
    onTestFinished(() => {
      vi.useRealTimers();
    });
    answer([before(), after()], true);
    renderWith(liveView({ instanceId: "order-2", status: "ACTIVE", epoch: 9 }));
    const rows = await screen.findAllByTestId("timeline-term");
    const until = within(rows[1]!).getAllByRole("cell")[3]!;
    expect(until).toHaveTextContent(/^after \d\d:\d\d:09\.000/);
    expect(until.querySelector("time")).toHaveAttribute("dateTime", "2026-12-05T04:00:09.000Z");
    expect(until.querySelector("[title]")).toHaveAttribute("title", expect.stringMatching(/some time after.*last record read of it; the records of its end were not read/));
  });

  it("crowns neither it nor anyone else by it, even while its leader leads with that epoch", async () => {
    answer([before()], true);
    renderWith(liveView({ instanceId: "order-1", status: "ACTIVE", epoch: 3 }));
    const [row] = await screen.findAllByTestId("timeline-term");
    expect(row).toHaveAttribute("data-current", "false");
    expect(row!.querySelector("svg")).toBeNull();
    expect(within(row!).getAllByRole("cell")[3]).not.toHaveTextContent(/^now$/);
  });

  it("does not call the leader elected after the middle the first in the window, nor invent a hand-over", async () => {
    answer([before(), after()], true);
    renderWith(liveView({ instanceId: "order-2", status: "ACTIVE", epoch: 9 }));
    const rows = await screen.findAllByTestId("timeline-term");
    const [newer, older] = rows.map((r) => within(r).getByTestId("handover"));
    expect(newer).toHaveTextContent(/^unknown: elected after the unread part of the window$/);
    expect(newer).not.toHaveTextContent(/order-1/);
    // The oldest term read is still the first in the window.
    expect(older).toHaveTextContent(/^first leader in the window$/);
  });
});

// The trial: in a service with two sticky groups, a term of group "b"
// elected after group "a"'s leader's lease lapsed made that lapse read
// "lease lapsed" as if someone had taken over "a"; and the timeline, whose
// help says "Who led group a", asked for the whole service.
describe("FailoverTimeline of one group of several", () => {
  const lapsed = () => term("order-1", "2026-12-05T04:00:00.000Z", { epoch: 3, endedAt: "2026-12-05T04:00:05.000Z", endReason: "lapsed" });
  const otherGroup = () => term("order-5", "2026-12-05T04:00:07.000Z", { epoch: 9 });

  function renderGroupA() {
    const store = liveView(
      { instanceId: "order-1", stickyActiveGroup: "a", status: "UNHEALTHY", reportedStatus: "ACTIVE", statusReason: "disconnected", epoch: 3 },
      { instanceId: "order-5", stickyActiveGroup: "b", status: "ACTIVE", epoch: 9 },
    );
    return renderUi(
      <InstanceStoreContext.Provider value={store}>
        <FailoverTimeline serviceName="order-service" group="a" changeKey="" />
      </InstanceStoreContext.Provider>,
    );
  }

  it("asks for its group's terms", async () => {
    answer([lapsed()]);
    renderGroupA();
    await screen.findAllByTestId("timeline-term");
    const url = String(vi.mocked(fetch).mock.calls[0]![0]);
    expect(new URL(url, "http://x").searchParams.get("group")).toBe("a");
  });

  it("says a lapse has no successor yet while only another group's leader was elected after it", async () => {
    answer([lapsed(), otherGroup()]);
    renderGroupA();
    const rows = await screen.findAllByTestId("timeline-term");
    const ended = (id: string) => within(rows.find((r) => r.textContent?.includes(id))!).getAllByRole("cell")[4]!.textContent;
    expect(ended("order-1")).toBe("lease lapsed, no successor yet");
  });

  it("says the lease lapsed once a leader of its own group followed", async () => {
    answer([lapsed(), otherGroup(), term("order-2", "2026-12-05T04:00:08.000Z", { epoch: 4 })]);
    renderGroupA();
    const rows = await screen.findAllByTestId("timeline-term");
    const ended = (id: string) => within(rows.find((r) => r.textContent?.includes(id))!).getAllByRole("cell")[4]!.textContent;
    expect(ended("order-1")).toBe("lease lapsed");
  });
});
