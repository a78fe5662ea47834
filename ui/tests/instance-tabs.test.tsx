// The instance page's tabs on a phone. The trial, at 390 px: the tab row
// scrolled sideways (overflow-x auto, 538 px of tabs in a 358 px box) and
// the fourth tab, "Methods & commands", started at x = 376, wholly off
// screen, with nothing to say it existed. The row now wraps, so every tab
// is on screen at any width; on a wide screen it is the one row it was,
// and the arrow keys still move between the tabs (Radix).
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { InstanceDetail } from "@/components/instance/instance-detail";
import type { LiveInstances } from "@/hooks/use-live-instances";
import { api } from "@/lib/api/client";
import type { ServiceInstance } from "@/lib/api/schemas";
import { InstanceStore } from "@/lib/instance-store";
import { instance, renderUi } from "./render";

vi.mock("next/navigation", () => ({ usePathname: () => "/services/order-1", useSearchParams: () => new URLSearchParams("service=order-service") }));
vi.mock("@/components/instance/performance-panel", () => ({ PerformancePanel: () => null }));
vi.mock("@/components/instance/failover-timeline", () => ({ FailoverTimeline: () => null }));
vi.mock("@/components/instance/methods-panel", () => ({ MethodsPanel: () => null }));
let live: LiveInstances;
vi.mock("@/hooks/use-live-instances", () => ({ useLiveInstances: () => live }));

function renderPage() {
  vi.spyOn(api, "instanceEvents").mockResolvedValue([]);
  vi.spyOn(api, "instanceConfig").mockResolvedValue({} as never);
  const store = new InstanceStore({ schedule: (flush) => flush() });
  store.replaceAll([instance() as ServiceInstance]);
  live = { store, snapshot: store.getSnapshot(), feed: "live", error: null, retry: () => {} };
  renderUi(<InstanceDetail />);
}

describe("the instance page's tabs", () => {
  afterEach(() => vi.restoreAllMocks());

  it("wrap onto a second row rather than scroll a tab out of sight", () => {
    renderPage();
    const list = screen.getByRole("tablist", { name: "Instance views" });
    expect(screen.getAllByRole("tab").map((t) => t.textContent)).toEqual(["Performance", "Configuration", "Logs & events", "Methods & commands"]);
    // No sideways scrolling: a tab past the edge would be hidden there.
    expect(list).not.toHaveClass("overflow-x-auto");
    expect(list).toHaveClass("flex-wrap");
    // Its height follows its rows (a fixed h-10 clipped the second one);
    // one row is still 40 px: 32 px tabs in 4 px of padding.
    expect(list).not.toHaveClass("h-10");
    expect(list).toHaveClass("min-h-10");
  });

  it("still follow the arrow keys, the panel with them", async () => {
    renderPage();
    const user = userEvent.setup();
    const tabs = screen.getAllByRole("tab");
    await user.click(tabs[0]!);
    await user.keyboard("{ArrowLeft}");
    expect(tabs[3]).toHaveFocus();
    expect(tabs[3]).toHaveAttribute("aria-selected", "true");
    await user.keyboard("{ArrowRight}");
    expect(tabs[0]).toHaveFocus();
    expect(tabs[0]).toHaveAttribute("aria-selected", "true");
  });
});
