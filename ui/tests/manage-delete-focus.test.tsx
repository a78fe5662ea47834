// After a definition is deleted from the keyboard, the focus goes on in
// the table. Closing the delete confirmation gives the focus back to the
// row's Delete button; when the deletion succeeded, that row then leaves
// the table and the focus fell to <body>.
import { act, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { ManageView } from "@/components/manage/manage-view";
import { api, ApiError } from "@/lib/api/client";
import type { ServiceDefinition } from "@/lib/api/schemas";
import { renderUi } from "./render";

vi.mock("@/hooks/use-session", () => ({ useSession: () => ({ canWrite: true }) }));

/** The page's live stream: silent unless a test sends an event on it. */
class SilentSource {
  static last: SilentSource | null = null;
  onerror: ((e: Event) => void) | null = null;
  private listeners = new Map<string, ((e: MessageEvent) => void)[]>();
  constructor() {
    SilentSource.last = this;
  }
  addEventListener(type: string, listener: (e: MessageEvent) => void) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }
  emit(type: string, data: unknown) {
    for (const l of this.listeners.get(type) ?? []) l(new MessageEvent(type, { data: JSON.stringify(data) }));
  }
  close() {}
}

const definition = (name: string): ServiceDefinition => ({
  service_name: name,
  owner: "desk-ops",
  description: `${name} things`,
  version: "1.0.0",
  created_at: "2026-12-04T18:00:00.000Z",
  updated_at: "2026-12-04T18:00:00.000Z",
});

beforeEach(() => vi.stubGlobal("EventSource", SilentSource));
afterEach(() => {
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});

async function deleteByKeyboard(name: string) {
  const user = userEvent.setup();
  screen.getByRole("button", { name: `Delete ${name}` }).focus();
  await user.keyboard("{Enter}");
  await screen.findByRole("alertdialog");
  // Cancel has the focus; the delete button is the dialog's other one.
  await user.tab();
  await user.keyboard("{Enter}");
  await waitFor(() => expect(screen.queryByRole("alertdialog")).toBeNull());
}

describe("deleting a definition from the keyboard", () => {
  it("leaves the focus on the row that took the deleted one's place", async () => {
    let list = ["order-service", "pricing-service", "risk-service"].map(definition);
    vi.spyOn(api, "definitions").mockImplementation(async () => list);
    vi.spyOn(api, "deleteDefinition").mockImplementation(async (name: string) => {
      list = list.filter((d) => d.service_name !== name);
      return { data: null } as never;
    });
    renderUi(<ManageView />);
    await screen.findByRole("button", { name: "Delete pricing-service" });
    await deleteByKeyboard("pricing-service");
    await waitFor(() => expect(screen.queryByRole("button", { name: "Delete pricing-service" })).toBeNull());
    await waitFor(() => expect(screen.getByRole("button", { name: "History of risk-service" })).toHaveFocus());
  });

  it("leaves it on New when the last definition went", async () => {
    let list = [definition("order-service")];
    vi.spyOn(api, "definitions").mockImplementation(async () => list);
    vi.spyOn(api, "deleteDefinition").mockImplementation(async () => {
      list = [];
      return { data: null } as never;
    });
    renderUi(<ManageView />);
    await screen.findByRole("button", { name: "Delete order-service" });
    await deleteByKeyboard("order-service");
    await waitFor(() => expect(screen.getByTestId("new-definition")).toHaveFocus());
  });

  // Another admin deleted it first: the delete answers SERVICE_NOT_FOUND,
  // the dialog closes and the re-read drops the row all the same.
  it("leaves the focus on the next row when another admin deleted it first", async () => {
    let list = ["order-service", "pricing-service", "risk-service"].map(definition);
    vi.spyOn(api, "definitions").mockImplementation(async () => list);
    vi.spyOn(api, "deleteDefinition").mockImplementation(async (name: string) => {
      list = list.filter((d) => d.service_name !== name);
      throw new ApiError(404, "SERVICE_NOT_FOUND", `no service definition named ${name}`);
    });
    renderUi(<ManageView />);
    await screen.findByRole("button", { name: "Delete pricing-service" });
    await deleteByKeyboard("pricing-service");
    await waitFor(() => expect(screen.queryByRole("button", { name: "Delete pricing-service" })).toBeNull());
    await waitFor(() => expect(screen.getByRole("button", { name: "History of risk-service" })).toHaveFocus());
  });

  // The usual way another admin's delete reaches the page: over the live
  // feed, while this page's dialog for the same definition is open. The
  // row is gone before the confirm, so its place must be known from before.
  it.each([
    ["answered SERVICE_NOT_FOUND", true],
    ["answered success", false],
  ])("leaves the focus on the next row when a live event dropped the row while the dialog was open (%s)", async (_, notFound) => {
    let list = ["order-service", "pricing-service", "risk-service"].map(definition);
    vi.spyOn(api, "definitions").mockImplementation(async () => list);
    vi.spyOn(api, "deleteDefinition").mockImplementation(async (name: string) => {
      if (notFound) throw new ApiError(404, "SERVICE_NOT_FOUND", `no service definition named ${name}`);
      return { data: null } as never;
    });
    renderUi(<ManageView />);
    await screen.findByRole("button", { name: "Delete pricing-service" });
    const user = userEvent.setup();
    screen.getByRole("button", { name: "Delete pricing-service" }).focus();
    await user.keyboard("{Enter}");
    await screen.findByRole("alertdialog");
    // Another admin deletes it; the live event's re-read drops the row
    // behind the open dialog.
    list = list.filter((d) => d.service_name !== "pricing-service");
    act(() => SilentSource.last!.emit("definition", { type: "definition", serviceName: "pricing-service", revision: 4, operation: "DELETE" }));
    await waitFor(() => expect(document.querySelector('[data-testid="definition-row"][data-name="pricing-service"]')).toBeNull());
    // The user confirms.
    await user.tab();
    await user.keyboard("{Enter}");
    await waitFor(() => expect(screen.queryByRole("alertdialog")).toBeNull());
    await waitFor(() => expect(screen.getByRole("button", { name: "History of risk-service" })).toHaveFocus());
  });

  it("leaves it on New when a live event dropped the last row while the dialog was open", async () => {
    let list = [definition("order-service")];
    vi.spyOn(api, "definitions").mockImplementation(async () => list);
    vi.spyOn(api, "deleteDefinition").mockImplementation(async (name: string) => {
      throw new ApiError(404, "SERVICE_NOT_FOUND", `no service definition named ${name}`);
    });
    renderUi(<ManageView />);
    await screen.findByRole("button", { name: "Delete order-service" });
    const user = userEvent.setup();
    screen.getByRole("button", { name: "Delete order-service" }).focus();
    await user.keyboard("{Enter}");
    await screen.findByRole("alertdialog");
    list = [];
    act(() => SilentSource.last!.emit("definition", { type: "definition", serviceName: "order-service", revision: 4, operation: "DELETE" }));
    await waitFor(() => expect(document.querySelector('[data-testid="definition-row"]')).toBeNull());
    await user.tab();
    await user.keyboard("{Enter}");
    await waitFor(() => expect(screen.queryByRole("alertdialog")).toBeNull());
    await waitFor(() => expect(screen.getByTestId("new-definition")).toHaveFocus());
  });

  // The re-read after the delete fails, and the row stays. Minutes later a
  // live event's re-read drops it, while the user's focus is on <body>
  // (a click on plain text leaves it there): the focus must stay put, not
  // jump to a row and scroll the page there.
  it("does not move the focus at a later re-read when the one after the delete failed", async () => {
    let list = ["order-service", "pricing-service", "risk-service"].map(definition);
    let failNext = false;
    vi.spyOn(api, "definitions").mockImplementation(async () => {
      if (failNext) {
        failNext = false;
        throw new ApiError(503, "NATS_UNAVAILABLE", "NATS is not reachable");
      }
      return list;
    });
    vi.spyOn(api, "deleteDefinition").mockImplementation(async (name: string) => {
      list = list.filter((d) => d.service_name !== name);
      failNext = true;
      return { data: null } as never;
    });
    renderUi(<ManageView />);
    await screen.findByRole("button", { name: "Delete pricing-service" });
    await deleteByKeyboard("pricing-service");
    await waitFor(() => expect(failNext).toBe(false));
    expect(screen.getByRole("button", { name: "Delete pricing-service" })).toBeInTheDocument();
    // The user clicks on plain text.
    act(() => (document.activeElement as HTMLElement | null)?.blur());
    expect(document.activeElement).toBe(document.body);
    // Later, another admin's change: a live event, and a re-read that works.
    act(() => SilentSource.last!.emit("definition", { type: "definition", serviceName: "order-service", revision: 9, operation: "PUT" }));
    await waitFor(() => expect(screen.queryByRole("button", { name: "Delete pricing-service" })).toBeNull());
    // One task later, where the focus would have been moved.
    await act(() => new Promise((resolve) => setTimeout(resolve, 0)));
    expect(document.activeElement).toBe(document.body);
  });
});
