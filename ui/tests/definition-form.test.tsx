// DefinitionForm: the API's rules checked in the browser, the API's 422
// details shown on their fields, the revision sent with an edit, and the
// 409 conflict message with its reload.
import * as React from "react";
import { screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { DefinitionForm } from "@/components/manage/definition-form";
import { renderUi } from "./render";

type Handler = (url: string, init: RequestInit) => { status: number; body?: unknown; headers?: Record<string, string> };

function mockFetch(handler: Handler) {
  const calls: { url: string; init: RequestInit }[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string, init: RequestInit = {}) => {
      calls.push({ url, init });
      const { status, body, headers } = handler(url, init);
      return new Response(body === undefined ? null : JSON.stringify(body), {
        status,
        headers: { "Content-Type": "application/json", ...headers },
      });
    }),
  );
  return calls;
}

const stored = {
  service_name: "order-service",
  owner: "trading",
  description: "Places orders",
  version: "1.0.0",
  created_at: "2026-11-30T10:00:00.000Z",
  updated_at: "2026-11-30T10:00:00.000Z",
};

afterEach(() => vi.unstubAllGlobals());

describe("DefinitionForm", () => {
  it("checks every field as the API does before sending anything", async () => {
    const calls = mockFetch(() => ({ status: 500 }));
    const user = userEvent.setup();
    renderUi(<DefinitionForm open onOpenChange={() => {}} onSaved={() => {}} />);
    await user.type(screen.getByLabelText("Service name"), "Bad--Name");
    await user.type(screen.getByLabelText("Owner"), "   ");
    await user.clear(screen.getByLabelText("Version"));
    await user.type(screen.getByLabelText("Version"), "01.0.0");
    await user.click(screen.getByRole("button", { name: "Create" }));
    expect(screen.getByTestId("error-service_name")).toHaveTextContent("Lower-case letters");
    expect(screen.getByLabelText("Service name")).toHaveAttribute("aria-invalid", "true");
    expect(screen.getByTestId("error-owner")).toHaveTextContent("Must not be blank.");
    expect(screen.getByTestId("error-description")).toHaveTextContent("Required.");
    expect(screen.getByTestId("error-version")).toHaveTextContent("Not a semantic version");
    expect(calls).toHaveLength(0);
  });

  it.each([
    ["ab", "Must be 3–64 characters."],
    ["a".repeat(65), "Must be 3–64 characters."],
    ["1abc", "Lower-case letters"],
    ["abc-", "Lower-case letters"],
  ])("refuses the name %s", async (name, message) => {
    mockFetch(() => ({ status: 500 }));
    const user = userEvent.setup();
    renderUi(<DefinitionForm open onOpenChange={() => {}} onSaved={() => {}} />);
    await user.type(screen.getByLabelText("Service name"), name);
    await user.tab();
    expect(screen.getByTestId("error-service_name")).toHaveTextContent(message);
  });

  it("shows the API's 422 details on their fields", async () => {
    mockFetch(() => ({
      status: 422,
      body: {
        error: {
          code: "VALIDATION_ERROR",
          message: "validation failed",
          details: { fields: [{ field: "owner", message: "must be 1-100 characters, got 101" }] },
        },
      },
    }));
    const user = userEvent.setup();
    renderUi(<DefinitionForm open onOpenChange={() => {}} onSaved={() => {}} />);
    await user.type(screen.getByLabelText("Service name"), "quote-service");
    await user.type(screen.getByLabelText("Owner"), "team");
    await user.type(screen.getByLabelText("Description"), "Quotes");
    await user.click(screen.getByRole("button", { name: "Create" }));
    expect(await screen.findByTestId("error-owner")).toHaveTextContent("must be 1-100 characters, got 101");
    expect(screen.getByTestId("form-error")).toHaveTextContent("The server refused some fields");
  });

  it("says a name is taken on 409 SERVICE_ALREADY_EXISTS", async () => {
    mockFetch(() => ({ status: 409, body: { error: { code: "SERVICE_ALREADY_EXISTS", message: "exists", details: {} } } }));
    const user = userEvent.setup();
    const onSaved = vi.fn();
    renderUi(<DefinitionForm open onOpenChange={() => {}} onSaved={onSaved} />);
    await user.type(screen.getByLabelText("Service name"), "order-service");
    await user.type(screen.getByLabelText("Owner"), "team");
    await user.type(screen.getByLabelText("Description"), "Orders");
    await user.click(screen.getByRole("button", { name: "Create" }));
    expect(await screen.findByTestId("error-service_name")).toHaveTextContent("already exists");
    expect(onSaved).not.toHaveBeenCalled();
  });

  it("edits with If-Match and explains a 409 conflict, offering to reload", async () => {
    let revision = 4;
    let current = { ...stored };
    const calls = mockFetch((url, init) => {
      if ((init.method ?? "GET") === "GET") return { status: 200, body: current, headers: { ETag: `"${revision}"` } };
      return {
        status: 409,
        body: { error: { code: "CONCURRENT_UPDATE", message: "stale", details: { expected: 4, current: 5 } } },
      };
    });
    const user = userEvent.setup();
    const onSaved = vi.fn();
    renderUi(<DefinitionForm open editing="order-service" onOpenChange={() => {}} onSaved={onSaved} />);
    const owner = await screen.findByLabelText("Owner");
    expect(owner).toHaveValue("trading");
    expect(screen.queryByLabelText("Service name")).toBeNull();
    await user.clear(owner);
    await user.type(owner, "risk-team");
    await user.click(screen.getByRole("button", { name: "Save" }));
    const conflict = await screen.findByTestId("conflict");
    expect(conflict).toHaveTextContent("Someone else changed this definition");
    expect(conflict).toHaveTextContent("revision 4 → 5");
    const put = calls.find((c) => c.init.method === "PUT")!;
    expect((put.init.headers as Record<string, string>)["If-Match"]).toBe('"4"');
    expect(JSON.parse(String(put.init.body))).toEqual({ owner: "risk-team" });
    expect(onSaved).not.toHaveBeenCalled();

    // Reload shows the other user's version and the new revision.
    revision = 5;
    current = { ...stored, owner: "someone-else" };
    await user.click(screen.getByRole("button", { name: "Reload the definition" }));
    await waitFor(() => expect(screen.getByLabelText("Owner")).toHaveValue("someone-else"));
    expect(screen.queryByTestId("conflict")).toBeNull();
  });

  it("does not send an edit that changes nothing", async () => {
    const calls = mockFetch(() => ({ status: 200, body: stored, headers: { ETag: '"2"' } }));
    const user = userEvent.setup();
    renderUi(<DefinitionForm open editing="order-service" onOpenChange={() => {}} onSaved={() => {}} />);
    await screen.findByLabelText("Owner");
    await user.click(screen.getByRole("button", { name: "Save" }));
    expect(screen.getByTestId("form-error")).toHaveTextContent("Nothing changed.");
    expect(calls.filter((c) => c.init.method === "PUT")).toHaveLength(0);
  });
});

// The trial (keyboard only): Edit opened the dialog with the focus on its
// Close (×) button, not on the first field. The dialog opens while the
// definition loads, when Close is the only control in it; the fields come
// after, and the focus stayed on Close.
describe("DefinitionForm's focus", () => {
  function Opener({ editing }: { editing?: string }) {
    const [open, setOpen] = React.useState(false);
    return (
      <>
        <button type="button" onClick={() => setOpen(true)}>
          Edit it
        </button>
        <DefinitionForm open={open} editing={editing} onOpenChange={setOpen} onSaved={() => {}} />
      </>
    );
  }

  it("is on the first field once an edited definition has loaded, not on Close", async () => {
    mockFetch(() => ({ status: 200, body: stored, headers: { ETag: '"2"' } }));
    const user = userEvent.setup();
    renderUi(<Opener editing="order-service" />);
    screen.getByRole("button", { name: "Edit it" }).focus();
    await user.keyboard("{Enter}");
    const owner = await screen.findByLabelText("Owner");
    await waitFor(() => expect(owner).toHaveFocus());
    expect(owner).toHaveValue("trading");
  });

  it("is on the name field of a new definition", async () => {
    mockFetch(() => ({ status: 500 }));
    const user = userEvent.setup();
    renderUi(<Opener />);
    screen.getByRole("button", { name: "Edit it" }).focus();
    await user.keyboard("{Enter}");
    await waitFor(() => expect(screen.getByLabelText("Service name")).toHaveFocus());
  });
});
