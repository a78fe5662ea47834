// SignInForm: an invalid token and a rate-limited client (429 with
// Retry-After) each get their own message.
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { SignInForm } from "@/components/auth/sign-in-form";
import { renderUi } from "./render";

const replace = vi.fn();
vi.mock("next/navigation", () => ({ useRouter: () => ({ replace }) }));

function answer(status: number, code: string, headers: Record<string, string> = {}) {
  vi.stubGlobal(
    "fetch",
    vi.fn(
      async () =>
        new Response(JSON.stringify({ error: { code, message: code.toLowerCase(), details: {} } }), {
          status,
          headers: { "Content-Type": "application/json", ...headers },
        }),
    ),
  );
}

afterEach(() => {
  vi.unstubAllGlobals();
  replace.mockClear();
  window.history.replaceState(null, "", "/");
});

async function signIn(token: string) {
  renderUi(<SignInForm />);
  await userEvent.type(screen.getByLabelText(/token/i), token);
  await userEvent.click(screen.getByRole("button", { name: /sign in/i }));
}

describe("SignInForm", () => {
  it("says where the tokens are, with the command and the path set as code", () => {
    renderUi(<SignInForm />);
    const code = (text: string) => screen.getByText(text, { selector: "code" });
    expect(code("aegis up")).toBeInTheDocument();
    expect(code("AEGIS_ADMIN_TOKEN")).toBeInTheDocument();
    // Right for the default state directory and for `--state-dir`.
    expect(code(".aegis/credentials").parentElement).toHaveTextContent(/state directory: the path it printed at start/);
    expect(screen.queryByText(/`/)).toBeNull();
  });

  it("says the token is invalid on 401", async () => {
    answer(401, "UNAUTHORIZED");
    await signIn("wrong");
    expect(await screen.findByText(/that token is not valid/i)).toBeInTheDocument();
    expect(replace).not.toHaveBeenCalled();
  });

  it("returns to the page the user came from, a filtered dashboard", async () => {
    window.history.replaceState(null, "", "/sign-in?next=%2F%3Fstatus%3DUNHEALTHY");
    vi.stubGlobal("fetch", vi.fn(async () => Response.json({ name: "admin", role: "admin" })));
    await signIn("right");
    await vi.waitFor(() => expect(replace).toHaveBeenCalledWith("/?status=UNHEALTHY"));
  });

  it("says how long to wait when sign-ins are rate-limited", async () => {
    answer(429, "TOO_MANY_REQUESTS", { "Retry-After": "42" });
    await signIn("guess");
    expect(await screen.findByText(/too many sign-in attempts.*42 s/i)).toBeInTheDocument();
  });
});
