// The dashboard's filters live in the query string: a reload or a shared
// link shows the same view, each choice is a history entry that back
// undoes, and the detail page's back link returns to the filtered view.
// The trial found them reset on every reload.
import { act, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { DashboardView } from "@/components/dashboard/dashboard-view";
import type { LiveInstances } from "@/hooks/use-live-instances";
import type { ServiceInstance } from "@/lib/api/schemas";
import { dashboardHref, filtersSearch, NO_FILTERS, parseFilters } from "@/lib/dashboard-filters";
import { InstanceStore } from "@/lib/instance-store";
import { instance, renderUi } from "./render";

const params = new URLSearchParams();
vi.mock("next/navigation", () => ({ useSearchParams: () => params }));

let live: LiveInstances;
vi.mock("@/hooks/use-live-instances", () => ({ useLiveInstances: () => live }));

beforeEach(() => {
  const store = new InstanceStore({ schedule: (flush) => flush() });
  store.replaceAll(
    [
      instance({ instanceId: "order-1", status: "ACTIVE" }),
      instance({ instanceId: "order-2", status: "STANDBY", reportedStatus: "STANDBY" }),
      instance({ serviceName: "risk-service", instanceId: "risk-1", status: "ACTIVE", stickyActiveGroup: null }),
    ] as ServiceInstance[],
  );
  live = { store, snapshot: store.getSnapshot(), feed: "live", error: null, retry: () => {} };
  window.history.replaceState(null, "", "/");
});

const cards = () => screen.queryAllByTestId("instance-card").map((c) => c.dataset.instance);
const statusSelect = () => screen.getByLabelText("Status") as HTMLSelectElement;
const serviceSelect = () => screen.getByLabelText("Service") as HTMLSelectElement;
const searchBox = () => screen.getByLabelText("Search instance id") as HTMLInputElement;

describe("the filters' query string", () => {
  it("reads and writes service, status and search, leaving out what is empty", () => {
    const f = parseFilters("?service=order-service&status=UNHEALTHY&q=order%201");
    expect(f).toEqual({ service: "order-service", status: "UNHEALTHY", q: "order 1" });
    expect(parseFilters(filtersSearch(f))).toEqual(f);
    expect(filtersSearch({ ...NO_FILTERS, status: "GONE" })).toBe("?status=GONE");
    expect(filtersSearch(NO_FILTERS)).toBe("");
  });

  it("drops a status that is not one", () => {
    expect(parseFilters("status=sleepy&q=x")).toEqual({ service: "", status: "", q: "x" });
  });
});

describe("DashboardView's filters", () => {
  it("come from the address, so a reload or a shared link shows the same view", () => {
    window.history.replaceState(null, "", "/?status=STANDBY&q=order");
    renderUi(<DashboardView />);
    expect(statusSelect().value).toBe("STANDBY");
    expect(searchBox().value).toBe("order");
    expect(cards()).toEqual(["order-2"]);
  });

  it("go to the address as they change; back undoes a choice, and a whole search", async () => {
    const user = userEvent.setup();
    renderUi(<DashboardView />);
    const start = window.history.length;

    await user.selectOptions(statusSelect(), "ACTIVE");
    expect(window.location.search).toBe("?status=ACTIVE");
    expect(window.history.length).toBe(start + 1);
    expect(cards()).toEqual(["order-1", "risk-1"]);

    // One entry for the search, however many keys.
    await user.type(searchBox(), "risk");
    expect(window.location.search).toBe("?status=ACTIVE&q=risk");
    expect(window.history.length).toBe(start + 2);
    await waitFor(() => expect(cards()).toEqual(["risk-1"]));

    act(() => window.history.back());
    await waitFor(() => expect(searchBox().value).toBe(""));
    expect(statusSelect().value).toBe("ACTIVE");
    act(() => window.history.back());
    await waitFor(() => expect(statusSelect().value).toBe(""));
    // The search is applied as a deferred value: on a loaded machine its
    // render can come after the select's.
    await waitFor(() => expect(cards()).toEqual(["order-1", "order-2", "risk-1"]));
  });

  it("are cleared from the address by \"Clear filters\"", async () => {
    window.history.replaceState(null, "", "/?service=order-service&q=nothing-like-this");
    const user = userEvent.setup();
    renderUi(<DashboardView />);
    await user.click(await screen.findByRole("button", { name: "Clear filters" }));
    expect(window.location.search).toBe("");
    expect(cards()).toHaveLength(3);
  });

  it("keep a linked service that has no instance now choosable", () => {
    window.history.replaceState(null, "", "/?service=ghost-service");
    renderUi(<DashboardView />);
    expect(serviceSelect().value).toBe("ghost-service");
    expect(screen.getByText("No instance matches the filters")).toBeInTheDocument();
  });

  it("are what the detail page's back link returns to", async () => {
    window.history.replaceState(null, "", "/?status=STANDBY");
    renderUi(<DashboardView />);
    await waitFor(() => expect(dashboardHref()).toBe("/?status=STANDBY"));
  });
});

// The scale trial: with a thousand instances in a hundred services, the
// 100 UNHEALTHY cards of a killed worker were far down a 69,000 px page,
// and the status filter left 100 groups of one card each over 29,000 px.
// The header's counts now choose the status filter, and a status filter
// shows its cards in one grid, each card naming its service.
describe("DashboardView at fleet size", () => {
  it("lets a count choose its status, and the total or the same count choose all again", async () => {
    const user = userEvent.setup();
    renderUi(<DashboardView />);
    const standby = screen.getByRole("button", { name: /standby\s*1/i });
    expect(standby).toHaveAttribute("aria-pressed", "false");
    await user.click(standby);
    expect(window.location.search).toBe("?status=STANDBY");
    expect(statusSelect().value).toBe("STANDBY");
    expect(cards()).toEqual(["order-2"]);
    expect(screen.getByRole("button", { name: /standby\s*1/i })).toHaveAttribute("aria-pressed", "true");

    await user.click(screen.getByRole("button", { name: /standby\s*1/i }));
    expect(window.location.search).toBe("");
    expect(cards()).toEqual(["order-1", "order-2", "risk-1"]);

    await user.click(screen.getByRole("button", { name: /active\s*2/i }));
    expect(cards()).toEqual(["order-1", "risk-1"]);
    await user.click(screen.getByRole("button", { name: /total\s*3/i }));
    expect(statusSelect().value).toBe("");
    expect(cards()).toEqual(["order-1", "order-2", "risk-1"]);
  });

  it("shows a status filter's cards in one grid, ordered by service, not one group per service", () => {
    window.history.replaceState(null, "", "/?status=ACTIVE");
    renderUi(<DashboardView />);
    const groups = screen.getAllByTestId("service-group");
    expect(groups).toHaveLength(1);
    expect(within(groups[0]!).getByRole("heading", { level: 2 })).toHaveTextContent(/2 active instances in 2 services/i);
    expect(cards()).toEqual(["order-1", "risk-1"]);
  });

  it("keeps one group per service without a status filter", () => {
    renderUi(<DashboardView />);
    expect(screen.getAllByTestId("service-group")).toHaveLength(2);
  });
});
