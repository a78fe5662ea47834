// The history of a deleted definition: it has no row in the table, so it
// is opened by name (HistoryByName), and the dialog shows its trail with
// the delete on top; a name that never held a definition says so. The
// trial found the delete dialog promising a history the UI gave no way to.
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { ConfirmDeleteDialog } from "@/components/manage/confirm-delete-dialog";
import { DefinitionHistory } from "@/components/manage/definition-history";
import { HistoryByName } from "@/components/manage/history-by-name";
import { renderUi } from "./render";

afterEach(() => vi.unstubAllGlobals());

function answer(status: number, body: unknown) {
  const fetch = vi.fn(async () => new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } }));
  vi.stubGlobal("fetch", fetch);
  return fetch;
}

const definition = (version: string) => ({
  service_name: "quote-service",
  owner: "desk-ops",
  description: "Quotes",
  version,
  created_at: "2026-12-04T18:00:00.000Z",
  updated_at: "2026-12-04T18:00:00.000Z",
});

describe("HistoryByName", () => {
  it("opens the history of the name typed", async () => {
    const onOpen = vi.fn();
    const user = userEvent.setup();
    renderUi(<HistoryByName onOpen={onOpen} />);
    await user.type(screen.getByLabelText("History of a definition by name"), " quote-service ");
    await user.click(screen.getByRole("button", { name: "Open history" }));
    expect(onOpen).toHaveBeenCalledWith("quote-service");
  });

  it("refuses a name that cannot be a service's, and says why", async () => {
    const onOpen = vi.fn();
    const user = userEvent.setup();
    renderUi(<HistoryByName onOpen={onOpen} />);
    const input = screen.getByLabelText("History of a definition by name");
    await user.type(input, "Quote Service{Enter}");
    expect(onOpen).not.toHaveBeenCalled();
    expect(input).toHaveAttribute("aria-invalid", "true");
    expect(input).toHaveAccessibleDescription(/lower-case letters/i);
  });
});

describe("DefinitionHistory", () => {
  it("shows a deleted definition's trail, the delete first", async () => {
    const fetch = answer(200, [
      { revision: 3, time: "2026-12-04T18:00:00.000Z", operation: "PUT", who: "admin", definition: definition("1.0.0") },
      { revision: 5, time: "2026-12-04T18:05:00.000Z", operation: "PUT", who: "admin", definition: definition("1.1.0") },
      { revision: 9, time: "2026-12-04T18:10:00.000Z", operation: "DELETE", who: "admin", definition: null },
    ]);
    renderUi(<DefinitionHistory name="quote-service" onClose={() => {}} />);
    const entries = await screen.findAllByTestId("history-entry");
    expect(fetch).toHaveBeenCalledWith("/api/services/quote-service/history", expect.anything());
    expect(entries.map((e) => e.querySelector("span")?.textContent)).toEqual(["deleted", "saved", "created"]);
    expect(entries[0]).toHaveTextContent(/deleted\s*by admin/);
    expect(entries[1]).toHaveTextContent("version: 1.0.0 → 1.1.0");
  });

  it("says when no definition of that name was ever stored", async () => {
    answer(404, { error: { code: "SERVICE_NOT_FOUND", message: "service not found: nope-service", details: {} } });
    renderUi(<DefinitionHistory name="nope-service" onClose={() => {}} />);
    expect(await screen.findByTestId("history-error")).toHaveTextContent("No definition named nope-service was ever stored.");
  });
});

describe("ConfirmDeleteDialog", () => {
  it("says where the history of the deleted definition is opened", async () => {
    renderUi(<ConfirmDeleteDialog name="quote-service" onCancel={() => {}} onConfirm={async () => {}} />);
    expect(await screen.findByRole("alertdialog")).toHaveTextContent(/Its history stays: open it by name under the table\./);
  });
});
