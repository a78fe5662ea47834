// ConfirmDeleteDialog: names the service, starts on Cancel, deletes only
// when confirmed.
import { screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { ConfirmDeleteDialog } from "@/components/manage/confirm-delete-dialog";
import { renderUi } from "./render";

describe("ConfirmDeleteDialog", () => {
  it("names the service and focuses Cancel", async () => {
    renderUi(<ConfirmDeleteDialog name="quote-service" onCancel={() => {}} onConfirm={async () => {}} />);
    const dialog = await screen.findByRole("alertdialog");
    expect(dialog).toHaveTextContent("Delete quote-service?");
    expect(screen.getByRole("button", { name: "Delete quote-service" })).toBeInTheDocument();
    await waitFor(() => expect(screen.getByRole("button", { name: "Cancel" })).toHaveFocus());
  });

  it("cancels without deleting", async () => {
    const onConfirm = vi.fn(async () => {});
    const onCancel = vi.fn();
    const user = userEvent.setup();
    renderUi(<ConfirmDeleteDialog name="quote-service" onCancel={onCancel} onConfirm={onConfirm} />);
    await user.click(await screen.findByRole("button", { name: "Cancel" }));
    expect(onCancel).toHaveBeenCalled();
    expect(onConfirm).not.toHaveBeenCalled();
  });

  it("deletes the named service when confirmed", async () => {
    const onConfirm = vi.fn(async () => {});
    const user = userEvent.setup();
    renderUi(<ConfirmDeleteDialog name="quote-service" onCancel={() => {}} onConfirm={onConfirm} />);
    await user.click(await screen.findByRole("button", { name: "Delete quote-service" }));
    expect(onConfirm).toHaveBeenCalledWith("quote-service");
  });

  it("is closed without a name", () => {
    renderUi(<ConfirmDeleteDialog name={null} onCancel={() => {}} onConfirm={async () => {}} />);
    expect(screen.queryByRole("alertdialog")).toBeNull();
  });
});
