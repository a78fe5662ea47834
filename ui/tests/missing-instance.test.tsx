// The page of an instance the fleet no longer lists. The API keeps a gone
// instance's events (docs/api.md, "Also for instances that are gone"), but
// its route needs the service: the links to an instance carry it, and the
// page shows the events when it has it and promises nothing when it does
// not. The trial found the promise "recent events stay readable below"
// over nothing.
import { screen, waitFor } from "@testing-library/react";

import { ServiceInstanceCard } from "@/components/dashboard/service-instance-card";
import { InstanceDetail } from "@/components/instance/instance-detail";
import type { LiveInstances } from "@/hooks/use-live-instances";
import { api } from "@/lib/api/client";
import type { ServiceInstance } from "@/lib/api/schemas";
import { InstanceStore } from "@/lib/instance-store";
import { instance, renderUi } from "./render";

let pathname = "/services/pricing-2";
vi.mock("next/navigation", () => ({ usePathname: () => pathname, useSearchParams: () => new URLSearchParams(window.location.search) }));

// The charts' library needs a real browser; this page shows none of them.
vi.mock("@/components/instance/performance-panel", () => ({ PerformancePanel: () => null }));

let live: LiveInstances;
vi.mock("@/hooks/use-live-instances", () => ({ useLiveInstances: () => live }));

const killed = [
  { timestamp: "2026-12-04T23:59:58.000Z", level: "INFO", kind: "registered", message: "registered", fields: {} },
  { timestamp: "2026-12-04T23:59:59.000Z", level: "INFO", kind: "elected", message: "elected", fields: { epoch: 3 } },
];

beforeEach(() => {
  const store = new InstanceStore({ schedule: (flush) => flush() });
  // A fleet without pricing-2: it was killed and its record expired.
  store.replaceAll([instance({ serviceName: "pricing-service", instanceId: "pricing-1" })] as ServiceInstance[]);
  live = { store, snapshot: store.getSnapshot(), feed: "live", error: null, retry: () => {} };
  pathname = "/services/pricing-2";
  window.history.replaceState(null, "", "/services/pricing-2");
});

afterEach(() => vi.restoreAllMocks());

describe("the page of a missing instance", () => {
  it("shows a gone instance's recent events when the address names its service", async () => {
    const events = vi.spyOn(api, "instanceEvents").mockResolvedValue(killed);
    window.history.replaceState(null, "", "/services/pricing-2?service=pricing-service");
    renderUi(<InstanceDetail />);
    expect(screen.getByRole("alert")).toHaveTextContent("pricing-2 is not registered");
    await waitFor(() => expect(screen.getAllByTestId("event-row")).toHaveLength(2));
    expect(events).toHaveBeenCalledWith("pricing-service", "pricing-2", expect.any(Number));
  });

  it("promises no events when the service is not known", () => {
    const events = vi.spyOn(api, "instanceEvents").mockResolvedValue(killed);
    renderUi(<InstanceDetail />);
    const alert = screen.getByRole("alert");
    expect(alert).toHaveTextContent("pricing-2 is not registered");
    expect(alert).not.toHaveTextContent(/below/);
    expect(screen.queryByTestId("event-row")).toBeNull();
    expect(events).not.toHaveBeenCalled();
  });
});

describe("a link to an instance", () => {
  it("carries its service, so its page can still read its events once it is gone", () => {
    const i = instance({ serviceName: "pricing-service", instanceId: "pricing-2" }) as ServiceInstance;
    renderUi(<ServiceInstanceCard entry={{ instance: i, metrics: null, goneAt: null, goneReason: null }} />);
    expect(screen.getByRole("link", { name: /pricing-2/ })).toHaveAttribute("href", "/services/pricing-2?service=pricing-service");
  });
});
