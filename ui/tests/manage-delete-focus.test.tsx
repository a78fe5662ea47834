// After a definition is deleted from the keyboard, the focus goes on in
// the table. Closing the delete confirmation gives the focus back to the
// row's Delete button; when the deletion succeeded, that row then leaves
// the table and the focus fell to <body>.
import { screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { ManageView } from "@/components/manage/manage-view";
import { api } from "@/lib/api/client";
import type { ServiceDefinition } from "@/lib/api/schemas";
import { renderUi } from "./render";

vi.mock("@/hooks/use-session", () => ({ useSession: () => ({ canWrite: true }) }));

class SilentSource {
  onerror: ((e: Event) => void) | null = null;
  addEventListener() {}
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
});
