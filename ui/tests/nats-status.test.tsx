// NatsStatus, NatsBadge and the feed indicator's word on NATS: one quiet
// line when all is well; a notice naming each server down and each stream
// without a leader (with what waits on it); JetStream's own trouble; an
// unknown status never shown green; nothing with an older monitor — in
// English and Chinese, and polled twice a second through the provider; the
// badge's changes announced politely, once each, and not the state found
// on page load.
import { act, screen, within } from "@testing-library/react";
import axe from "axe-core";

import { FeedIndicator } from "@/components/live/feed-indicator";
import { NatsBadge } from "@/components/nats/nats-badge";
import { NatsStatus } from "@/components/nats/nats-status";
import { NatsHealthProvider } from "@/hooks/use-nats-health";
import { ApiError } from "@/lib/api/client";
import type { NatsView } from "@/lib/api/nats-poller";
import type { NatsPicture, StreamState } from "@/lib/api/schemas";
import type { Locale } from "@/lib/i18n";
import { effectKey } from "@/lib/nats-health";
import { renderUi } from "./render";

// Local fields: the clock reads the same in any time zone.
const at = (h: number, m: number, s: number) => new Date(2026, 11, 4, h, m, s).toISOString();

const STREAMS = [
  "KV_orders",
  "KV_service_elections",
  "KV_service_registry",
  "KV_service_definitions",
  "AEGIS_LOG",
  "AEGIS_METRICS",
  "EVENTS",
  "COMMANDS",
  "KV_other_a",
  "KV_other_b",
  "OTHER",
];

function stream(name: string, over: Partial<StreamState> = {}): StreamState {
  return { name, replicas: 3, leader: "n1", offline: [], since: null, ...over };
}

function health(over: Partial<NatsPicture> = {}): NatsPicture {
  return {
    asOf: at(19, 30, 0),
    checkEveryMs: 1000,
    jetstream: "ok",
    servers: ["n1", "n2", "n3"].map((name) => ({ name, up: true, since: null })),
    streams: STREAMS.map((n) => stream(n)),
    ...over,
  };
}

/** n3 died at 19:29:58 and took the leaders of KV_orders and a stream Aegis does not know with it. */
function n3Down(): NatsPicture {
  return health({
    servers: [
      { name: "n1", up: true, since: null },
      { name: "n2", up: true, since: null },
      { name: "n3", up: false, since: at(19, 29, 58) },
    ],
    streams: STREAMS.map((n) =>
      n === "KV_orders" || n === "OTHER"
        ? stream(n, { leader: null, offline: ["n3"], since: at(19, 29, 58) })
        : stream(n, { offline: ["n3"] }),
    ),
  });
}

function show(view: NatsView, locale: Locale = "en") {
  return renderUi(<NatsStatus view={view} />, { locale });
}

describe("NatsStatus", () => {
  // The moments of these pictures are of today, but for those a test puts on another day.
  beforeEach(() => vi.useFakeTimers({ now: new Date(2026, 11, 4, 19, 30, 0), toFake: ["Date"] }));
  afterEach(() => vi.useRealTimers());

  it("is one quiet line when every server is up and every stream has a leader", () => {
    show({ kind: "known", health: health() });
    const region = screen.getByRole("status");
    expect(region).toHaveAttribute("aria-live", "polite");
    expect(region).toHaveTextContent("NATS: 3 of 3 servers up · 11 streams, all with a leader");
    expect(screen.queryByRole("heading")).toBeNull();
    expect(screen.getByTestId("nats-status")).toHaveAttribute("data-state", "ok");
  });

  it("names the server down and the stream without a leader, since when and what waits", () => {
    show({ kind: "known", health: n3Down() });
    const notice = screen.getByTestId("nats-problem");
    expect(within(screen.getByRole("status")).getByRole("heading", { name: "NATS is not fully available" })).toBeInTheDocument();
    expect(notice).toHaveTextContent("2 of 3 servers up · 2 of 11 streams without a leader");
    expect(screen.getByTestId("nats-server-down")).toHaveTextContent(/^n3 down since 19:29:58$/);
    const streams = screen.getAllByTestId("nats-stream-leaderless").map((li) => li.textContent);
    expect(streams).toEqual([
      "KV_orders has no leader (since 19:29:58): order writes wait until JetStream elects one, usually 4–9 s",
      "OTHER has no leader (since 19:29:58): writes to it wait until JetStream elects one, usually 4–9 s",
    ]);
    // Not red: a node down is something to know, not an outage.
    expect(notice.className).toContain("bg-warning-muted");
    expect(screen.getByTestId("nats-status")).toHaveAttribute("data-state", "problem");
  });

  it("names what waits (or is lost) on each stream Aegis creates", () => {
    const effects: Record<string, string> = {
      KV_orders: "order writes wait",
      KV_service_elections: "leader elections and sticky failover wait",
      KV_service_registry: "registrations wait",
      KV_service_definitions: "definition saves wait",
      AEGIS_LOG: "instance events wait",
      AEGIS_METRICS: "metrics wait",
      EVENTS: "events wait",
      COMMANDS: "commands wait",
      // Nothing waits: what consumers give up on meanwhile is not kept.
      DEAD_LETTER: "messages that consumers give up on (dead letters) are not recorded",
    };
    const names = [...STREAMS, "DEAD_LETTER"];
    show({ kind: "known", health: health({ streams: names.map((n) => stream(n, { leader: null })) }) });
    const items = screen.getAllByTestId("nats-stream-leaderless");
    expect(items).toHaveLength(names.length);
    for (const [name, effect] of Object.entries(effects)) {
      expect(items.find((li) => li.textContent?.startsWith(`${name} `))).toHaveTextContent(
        `${name} has no leader (since the monitor started): ${effect} until JetStream elects one, usually 4–9 s`,
      );
    }
    expect(effectKey("KV_other_a")).toBeNull();
    expect(effectKey("constructor")).toBeNull();
  });

  it("does not promise 4–9 s to a stream most of whose replicas are down", () => {
    show({
      kind: "known",
      health: health({
        servers: [
          { name: "n1", up: true, since: null },
          { name: "n2", up: false, since: at(19, 29, 50) },
          { name: "n3", up: false, since: at(19, 29, 58) },
        ],
        streams: [stream("KV_orders", { leader: null, offline: ["n2", "n3"], since: at(19, 29, 58) })],
      }),
    });
    expect(screen.getAllByTestId("nats-server-down").map((li) => li.textContent)).toEqual([
      "n2 down since 19:29:50",
      "n3 down since 19:29:58",
    ]);
    expect(screen.getByTestId("nats-stream-leaderless")).toHaveTextContent(
      "KV_orders has no leader (since 19:29:58): 2 of its 3 replicas are on servers that are down, so it gets one only when enough of them are back; until then order writes wait",
    );
  });

  it("puts the date before a moment of another day", () => {
    const yesterday = new Date(2026, 11, 3, 19, 29, 58).toISOString();
    const picture = health({
      servers: [
        { name: "n1", up: true, since: null },
        { name: "n2", up: false, since: yesterday },
        { name: "n3", up: false, since: at(19, 29, 58) },
      ],
      streams: [stream("KV_orders", { leader: null, offline: ["n2"], since: yesterday })],
    });
    const { unmount } = show({ kind: "known", health: picture });
    expect(screen.getAllByTestId("nats-server-down").map((li) => li.textContent)).toEqual([
      "n2 down since Dec 3, 2026, 19:29:58",
      "n3 down since 19:29:58",
    ]);
    expect(screen.getByTestId("nats-stream-leaderless")).toHaveTextContent(/^KV_orders has no leader \(since Dec 3, 2026, 19:29:58\)/);
    unmount();
    show({ kind: "known", health: picture }, "zh-CN");
    expect(screen.getAllByTestId("nats-server-down")[0]).toHaveTextContent("n2 自 2026年12月3日 19:29:58 起宕机");
  });

  it("counts one server, one stream and one replica in the singular", () => {
    const { unmount } = show({ kind: "known", health: health({ servers: [{ name: "n1", up: true, since: null }], streams: [stream("KV_orders", { replicas: 1 })] }) });
    expect(screen.getByRole("status")).toHaveTextContent("NATS: 1 of 1 server up · 1 stream, with a leader");
    unmount();
    show({
      kind: "known",
      health: health({
        servers: [
          { name: "n1", up: true, since: null },
          { name: "n3", up: false, since: at(19, 29, 58) },
        ],
        streams: [stream("KV_orders", { leader: null, offline: ["n3"], since: at(19, 29, 58) }), stream("KV_single", { replicas: 1, leader: null, offline: ["n3"], since: at(19, 29, 58) })],
      }),
    });
    expect(screen.getByTestId("nats-problem")).toHaveTextContent("1 of 2 servers up · 2 of 2 streams without a leader");
    expect(screen.getAllByTestId("nats-stream-leaderless").map((li) => li.textContent)).toEqual([
      "KV_orders has no leader (since 19:29:58): order writes wait until JetStream elects one, usually 4–9 s",
      "KV_single has no leader (since 19:29:58): 1 of its 1 replica is on a server that is down, so it gets one only when enough of them are back; until then writes to it wait",
    ]);
  });

  it("says a server down since the monitor started so, and streams all led again", () => {
    const { unmount } = show({ kind: "known", health: health({ servers: [{ name: "n2", up: false, since: null }, { name: "n3", up: true, since: null }] }) });
    expect(screen.getByTestId("nats-server-down")).toHaveTextContent("n2 down since the monitor started");
    // Not "0 of 11 streams without a leader".
    expect(screen.getByTestId("nats-problem")).toHaveTextContent("1 of 2 servers up · 11 streams, all with a leader");
    expect(screen.queryByTestId("nats-stream-leaderless")).toBeNull();
    unmount();
    show({ kind: "known", health: health({ servers: [{ name: "n2", up: false, since: null }] }) }, "zh-CN");
    expect(screen.getByTestId("nats-problem")).toHaveTextContent("0/1 个服务器在线 · 11 个流均有主节点");
  });

  it("says JetStream is electing its meta leader", () => {
    show({ kind: "known", health: health({ jetstream: "no_meta_leader", servers: [{ name: "n2", up: false, since: null }], streams: [] }) });
    expect(screen.getByTestId("nats-jetstream")).toHaveTextContent(
      "JetStream is electing its meta leader: no stream or consumer can be created",
    );
    expect(screen.getByTestId("nats-problem").className).toContain("bg-warning-muted");
    // No streams listed (none readable meanwhile): no "0 of 0 streams".
    expect(screen.getByTestId("nats-problem")).toHaveTextContent("0 of 1 server up");
    expect(screen.getByTestId("nats-problem")).not.toHaveTextContent("streams without");
  });

  it("says the monitor has no connection to NATS, in red", () => {
    show({ kind: "known", health: health({ jetstream: "unreachable", servers: [], streams: [] }) });
    expect(screen.getByTestId("nats-jetstream")).toHaveTextContent(/^The monitor has no connection to NATS/);
    expect(screen.getByTestId("nats-problem").className).toContain("bg-danger-muted");
    // No "0 of 0 servers up".
    expect(screen.getByTestId("nats-problem")).not.toHaveTextContent("0 of 0");
  });

  it("shows a JetStream state it does not know as it came", () => {
    show({ kind: "known", health: health({ jetstream: "read_only" }) });
    expect(screen.getByTestId("nats-jetstream")).toHaveTextContent("JetStream reports “read_only”");
  });

  it("says the status is unknown, never green, when the route fails", () => {
    const since = new Date(2026, 11, 4, 19, 30, 1).getTime();
    const { rerender } = show({ kind: "unknown", since, cause: { kind: "failed", status: 503, code: "SERVICE_UNAVAILABLE", message: "not ready" } });
    expect(screen.getByRole("heading", { name: "NATS status unknown" })).toBeInTheDocument();
    expect(screen.getByTestId("nats-unknown")).toHaveTextContent("Since 19:30:01 the monitor answers 503 (not ready).");
    expect(screen.queryByTestId("nats-ok")).toBeNull();
    rerender(<NatsStatus view={{ kind: "unknown", since, cause: { kind: "failed", status: 0, code: "NETWORK", message: "Failed to fetch" } }} />);
    expect(screen.getByTestId("nats-unknown")).toHaveTextContent("Since 19:30:01 the monitor cannot be reached (Failed to fetch).");
    rerender(<NatsStatus view={{ kind: "unknown", since, cause: { kind: "timeout", afterMs: 3000 } }} />);
    expect(screen.getByTestId("nats-unknown")).toHaveTextContent("Since 19:30:01 the monitor has not answered within 3 s.");
    rerender(<NatsStatus view={{ kind: "unknown", since, cause: { kind: "stale", asOf: at(19, 29, 40) } }} />);
    expect(screen.getByTestId("nats-unknown")).toHaveTextContent("The monitor's last check of NATS was at 19:29:40");
  });

  it("shows nothing with an older monitor, and a neutral line while checking", () => {
    const { rerender } = show({ kind: "absent" });
    expect(screen.queryByTestId("nats-status")).toBeNull();
    expect(screen.queryByRole("status")).toBeNull();
    rerender(<NatsStatus view={{ kind: "checking" }} />);
    expect(screen.getByRole("status")).toHaveTextContent("Checking NATS…");
  });

  it("speaks Chinese", () => {
    const { unmount } = show({ kind: "known", health: health() }, "zh-CN");
    expect(screen.getByRole("status")).toHaveTextContent("NATS：3/3 个服务器在线 · 11 个流均有主节点");
    unmount();
    show({ kind: "known", health: { ...n3Down(), jetstream: "no_meta_leader" } }, "zh-CN");
    expect(screen.getByRole("heading")).toHaveTextContent("NATS 并非完全可用");
    expect(screen.getByTestId("nats-server-down")).toHaveTextContent("n3 自 19:29:58 起宕机");
    expect(screen.getAllByTestId("nats-stream-leaderless")[0]).toHaveTextContent(
      "KV_orders 没有主节点（自 19:29:58 起）：在 JetStream 选出新的主节点之前（通常需 4–9 秒），订单写入需等待",
    );
    expect(screen.getByTestId("nats-jetstream")).toHaveTextContent("JetStream 正在选举元数据主节点");
  });

  it("says in Chinese that dead letters are not recorded", () => {
    show({ kind: "known", health: health({ streams: [stream("DEAD_LETTER", { leader: null })] }) }, "zh-CN");
    expect(screen.getByTestId("nats-stream-leaderless")).toHaveTextContent(
      "DEAD_LETTER 没有主节点（自 监控服务启动 起）：在 JetStream 选出新的主节点之前（通常需 4–9 秒），消费者放弃处理的消息（死信）不会被记录",
    );
  });
});

describe("NatsStatus accessibility", () => {
  const views: [string, NatsView][] = [
    ["ok", { kind: "known", health: health() }],
    ["problem", { kind: "known", health: { ...n3Down(), jetstream: "no_meta_leader" } }],
    ["unreachable", { kind: "known", health: health({ jetstream: "unreachable", servers: [], streams: [] }) }],
    ["unknown", { kind: "unknown", since: Date.now(), cause: { kind: "timeout", afterMs: 3000 } }],
  ];
  for (const [name, view] of views) {
    it(`has no axe violations: ${name}`, async () => {
      const { container } = renderUi(
        <main>
          <NatsStatus view={view} />
        </main>,
      );
      // Colour contrast needs layout, which jsdom has not: the browser tests check it.
      const result = await axe.run(container, { rules: { "color-contrast": { enabled: false } } });
      expect(result.violations.map((v) => `${v.id}: ${v.help}`)).toEqual([]);
    });
  }
});

describe("FeedIndicator with NATS", () => {
  it("does not call a live feed all well while NATS has a problem or is unknown", () => {
    const { rerender } = renderUi(<FeedIndicator state="live" nats="ok" />);
    expect(screen.getByTestId("feed-indicator")).toHaveTextContent("Live");
    expect(screen.getByTestId("feed-indicator")).not.toHaveTextContent("NATS");
    rerender(<FeedIndicator state="live" nats="problem" />);
    expect(screen.getByTestId("feed-indicator")).toHaveTextContent("Live · NATS degraded");
    expect(screen.getByTestId("feed-indicator").querySelector(".animate-pulse")).toBeNull();
    rerender(<FeedIndicator state="live" nats="unknown" />);
    expect(screen.getByTestId("feed-indicator")).toHaveTextContent("Live · NATS unknown");
    // A feed that is down says so first.
    rerender(<FeedIndicator state="reconnecting" nats="problem" />);
    expect(screen.getByTestId("feed-indicator")).toHaveTextContent("Reconnecting…");
  });

  it("speaks Chinese", () => {
    renderUi(<FeedIndicator state="live" nats="problem" />, { locale: "zh-CN" });
    expect(screen.getByTestId("feed-indicator")).toHaveTextContent("实时 · NATS 异常");
  });
});

describe("NatsHealthProvider", () => {
  beforeEach(() => vi.useFakeTimers({ now: new Date(2026, 11, 4, 19, 30, 0) }));
  afterEach(() => vi.useRealTimers());

  it("polls twice a second (half the monitor's check) and the notice and badge follow within one poll", async () => {
    let answer: () => Promise<NatsPicture> = () => Promise.resolve(health({ asOf: new Date().toISOString() }));
    const fetch = vi.fn(() => answer());
    renderUi(
      <NatsHealthProvider enabled fetch={fetch}>
        <NatsBadge />
        <FeedIndicator state="live" />
        <NatsStatus />
      </NatsHealthProvider>,
    );
    await act(() => vi.advanceTimersByTimeAsync(0));
    expect(screen.getByTestId("nats-ok")).toBeInTheDocument();
    expect(screen.getByTestId("nats-badge")).toHaveTextContent("NATS OK");

    answer = () => Promise.resolve({ ...n3Down(), asOf: new Date().toISOString() });
    await act(() => vi.advanceTimersByTimeAsync(500));
    expect(fetch).toHaveBeenCalledTimes(2);
    expect(screen.getByTestId("nats-server-down")).toHaveTextContent("n3 down since 19:29:58");
    expect(screen.getByTestId("nats-badge")).toHaveTextContent("NATS degraded");
    // Every page's feed indicator reads the same poller.
    expect(screen.getByTestId("feed-indicator")).toHaveTextContent("Live · NATS degraded");

    answer = () => Promise.reject(new ApiError(502, "BAD_GATEWAY", "bad gateway"));
    await act(() => vi.advanceTimersByTimeAsync(500));
    expect(screen.getByTestId("nats-unknown")).toBeInTheDocument();
    expect(screen.queryByTestId("nats-problem")).toBeNull();
    expect(screen.getByTestId("nats-badge")).toHaveTextContent("NATS unknown");

    answer = () => Promise.reject(new ApiError(404, "NOT_FOUND", "no route"));
    await act(() => vi.advanceTimersByTimeAsync(500));
    expect(screen.queryByTestId("nats-status")).toBeNull();
    expect(screen.queryByTestId("nats-badge")).toBeNull();
  });

  it("does not poll before the session is known", async () => {
    const fetch = vi.fn(() => Promise.resolve(health()));
    renderUi(
      <NatsHealthProvider enabled={false} fetch={fetch}>
        <NatsBadge />
      </NatsHealthProvider>,
    );
    await act(() => vi.advanceTimersByTimeAsync(5000));
    expect(fetch).not.toHaveBeenCalled();
    expect(screen.queryByTestId("nats-badge")).toBeNull();
  });
});

describe("NatsBadge for screen readers", () => {
  beforeEach(() => vi.useFakeTimers({ now: new Date(2026, 11, 4, 19, 30, 0) }));
  afterEach(() => vi.useRealTimers());

  it("says nothing of the state it finds on page load, then each change once, not every poll", async () => {
    let answer: () => NatsPicture = () => health({ asOf: new Date().toISOString() });
    const fetch = vi.fn(() => Promise.resolve(answer()));
    renderUi(
      <NatsHealthProvider enabled fetch={fetch}>
        <NatsBadge />
      </NatsHealthProvider>,
    );
    // A polite live region in the page from the start, empty.
    const region = screen.getByTestId("nats-badge-region");
    expect(region).toHaveAttribute("role", "status");
    expect(region).toHaveAttribute("aria-live", "polite");
    expect(region).toBeEmptyDOMElement();
    let seen: MutationRecord[] = [];
    const changes = new MutationObserver((records) => seen.push(...records));
    changes.observe(region, { childList: true, subtree: true, characterData: true });
    const changed = () => {
      const all = [...seen, ...changes.takeRecords()];
      seen = [];
      return all.length;
    };

    // The first answer is shown, not read: it is no change, and a screen
    // reader would hear "NATS OK" on every page load.
    await act(() => vi.advanceTimersByTimeAsync(0));
    expect(screen.getByTestId("nats-badge")).toHaveTextContent("NATS OK");
    expect(screen.getByTestId("nats-badge").closest("[aria-live]")).toBeNull();
    expect(changed()).toBe(0);
    expect(region).toBeEmptyDOMElement();

    // Polls that find NATS as it was change nothing a screen reader reads.
    await act(() => vi.advanceTimersByTimeAsync(3000));
    expect(fetch).toHaveBeenCalledTimes(7);
    expect(changed()).toBe(0);

    // A change is said, once, in the same region.
    answer = () => ({ ...n3Down(), asOf: new Date().toISOString() });
    await act(() => vi.advanceTimersByTimeAsync(1000));
    expect(screen.getByTestId("nats-badge-region")).toBe(region);
    expect(screen.getByTestId("nats-badge")).toHaveTextContent("NATS degraded");
    expect(region).toHaveTextContent("NATS degraded");
    expect(changed()).toBeGreaterThan(0);
    await act(() => vi.advanceTimersByTimeAsync(2000));
    expect(changed()).toBe(0);

    // And so is the way back.
    answer = () => health({ asOf: new Date().toISOString() });
    await act(() => vi.advanceTimersByTimeAsync(1000));
    expect(region).toHaveTextContent("NATS OK");
    expect(changed()).toBeGreaterThan(0);
    changes.disconnect();
  });

  it("says nothing of a first answer that is a problem either, in any language", async () => {
    const fetch = vi.fn(() => Promise.resolve({ ...n3Down(), asOf: new Date().toISOString() }));
    renderUi(
      <NatsHealthProvider enabled fetch={fetch}>
        <NatsBadge />
      </NatsHealthProvider>,
      { locale: "zh-CN" },
    );
    await act(() => vi.advanceTimersByTimeAsync(0));
    expect(screen.getByTestId("nats-badge")).toHaveAttribute("data-state", "problem");
    expect(screen.getByTestId("nats-badge-region")).toBeEmptyDOMElement();
  });
});
