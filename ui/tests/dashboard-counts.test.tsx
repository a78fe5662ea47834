// The dashboard's counts agree with its cards. The trial: after a graceful
// stop of pricing-2, its card showed GONE and the header "Total 6", while
// the group headers still summed to 7 ("pricing-service 2 instances"), and
// no count said one had gone.
import { screen, within } from "@testing-library/react";

import { DashboardView } from "@/components/dashboard/dashboard-view";
import type { LiveInstances } from "@/hooks/use-live-instances";
import type { ServiceInstance } from "@/lib/api/schemas";
import { InstanceStore } from "@/lib/instance-store";
import { instance, renderUi } from "./render";

vi.mock("next/navigation", () => ({ useSearchParams: () => new URLSearchParams() }));
let live: LiveInstances;
vi.mock("@/hooks/use-live-instances", () => ({ useLiveInstances: () => live }));

const fleet = (gone: boolean) => {
  const store = new InstanceStore({ schedule: (flush) => flush() });
  store.replaceAll(
    [
      instance({ instanceId: "order-1", status: "ACTIVE" }),
      instance({ instanceId: "order-2", status: "STANDBY", reportedStatus: "STANDBY" }),
      instance({ serviceName: "pricing-service", instanceId: "pricing-1", stickyActiveGroup: null }),
      instance({ serviceName: "pricing-service", instanceId: "pricing-2", stickyActiveGroup: null }),
    ] as ServiceInstance[],
  );
  if (gone) store.apply({ type: "instanceRemoved", serviceName: "pricing-service", instanceId: "pricing-2", reason: "deregistered" });
  store.flush();
  live = { store, snapshot: store.getSnapshot(), feed: "live", error: null, retry: () => {} };
};

const count = (id: string) => Number(within(screen.getByTestId(id)).getByTestId("count-value").textContent);
const groupHeader = (name: string) => screen.getByRole("heading", { level: 2, name: new RegExp(`^${name}`) }).textContent;

describe("the dashboard's counts", () => {
  it("say how many instances each group has while none is gone", () => {
    fleet(false);
    renderUi(<DashboardView />);
    expect(count("count-total")).toBe(4);
    expect(screen.queryByTestId("count-GONE")).toBeNull();
    expect(groupHeader("pricing-service")).toBe("pricing-service2 instances");
  });

  it("agree when an instance is gone: the group counts the live ones and says one is gone, the header counts it as GONE", () => {
    fleet(true);
    renderUi(<DashboardView />);
    expect(screen.getAllByTestId("instance-card")).toHaveLength(4);
    expect(count("count-total")).toBe(3);
    expect(count("count-GONE")).toBe(1);
    expect(groupHeader("pricing-service")).toBe("pricing-service1 instance, 1 gone");
    expect(groupHeader("order-service")).toBe("order-service2 instances");
  });
});
