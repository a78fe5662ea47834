// Closing a /manage dialog gives the keyboard focus back to the control
// that opened it. The trial (keyboard only): Tab to "+ New service
// definition", Enter, then Escape or Cancel — the focus was on <body> and
// the next Tab landed on "Skip to content"; the same after the delete
// confirmation and the history. The dialogs are opened from state, with no
// Radix trigger to return to.
import * as React from "react";
import { screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { ConfirmDeleteDialog } from "@/components/manage/confirm-delete-dialog";
import { DefinitionForm } from "@/components/manage/definition-form";
import { DefinitionHistory } from "@/components/manage/definition-history";
import { renderUi } from "./render";

beforeEach(() => {
  vi.stubGlobal(
    "fetch",
    vi.fn(async () => new Response(JSON.stringify([]), { status: 200, headers: { "Content-Type": "application/json" } })),
  );
});
afterEach(() => vi.unstubAllGlobals());

/** A page with other controls around the opener, as /manage has. */
function Page({ dialog }: { dialog: (open: boolean, close: () => void) => React.ReactNode }) {
  const [open, setOpen] = React.useState(false);
  return (
    <>
      <button type="button">Before</button>
      <button type="button" onClick={() => setOpen(true)}>
        Open it
      </button>
      <button type="button">After</button>
      {dialog(open, () => setOpen(false))}
    </>
  );
}

const dialogs: [string, (open: boolean, close: () => void) => React.ReactNode, string, string][] = [
  ["the definition form", (open, close) => <DefinitionForm open={open} onOpenChange={(o) => !o && close()} editing={null} onSaved={() => {}} />, "dialog", "Cancel"],
  ["the delete confirmation", (open, close) => <ConfirmDeleteDialog name={open ? "quote-service" : null} onCancel={close} onConfirm={async () => {}} />, "alertdialog", "Cancel"],
  ["the history", (open, close) => <DefinitionHistory name={open ? "quote-service" : null} onClose={close} />, "dialog", "Close"],
];

describe("a /manage dialog closed", () => {
  it.each(dialogs)("%s with Escape gives the focus back to its opener", async (_, dialog, role) => {
    const user = userEvent.setup();
    renderUi(<Page dialog={dialog} />);
    const opener = screen.getByRole("button", { name: "Open it" });
    opener.focus();
    await user.keyboard("{Enter}");
    await screen.findByRole(role);
    await waitFor(() => expect(opener).not.toHaveFocus());
    await user.keyboard("{Escape}");
    await waitFor(() => expect(screen.queryByRole(role)).toBeNull());
    expect(opener).toHaveFocus();
    // The next Tab goes on from there, not from the top of the page.
    await user.tab();
    expect(screen.getByRole("button", { name: "After" })).toHaveFocus();
  });

  it.each(dialogs)("%s with its button gives the focus back to its opener", async (_, dialog, role, close) => {
    const user = userEvent.setup();
    renderUi(<Page dialog={dialog} />);
    const opener = screen.getByRole("button", { name: "Open it" });
    opener.focus();
    await user.keyboard("{Enter}");
    const shown = await screen.findByRole(role);
    const buttons = [...shown.querySelectorAll("button")].filter((b) => b.textContent === close);
    await user.click(buttons.at(-1)!);
    await waitFor(() => expect(screen.queryByRole(role)).toBeNull());
    expect(opener).toHaveFocus();
  });
});
