// The session check of the signed-in pages. The session cookie is HttpOnly,
// so the page keeps a hint of its own (`aegis_signed_in`, set on sign-in,
// gone on sign-out or a 401): without it there is no session to ask about,
// and asking `GET /api/session` anyway answers 401, which the browser logs
// as a console error before every sign-in. So: no hint, no probe — straight
// to the sign-in page (unless the monitor runs with authentication off).
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { SignInForm } from "@/components/auth/sign-in-form";
import { SessionProvider, useSession } from "@/hooks/use-session";
import { hasSessionHint } from "@/lib/session-hint";
import { renderUi } from "./render";

const replace = vi.fn();
const router = { replace };
vi.mock("next/navigation", () => ({ useRouter: () => router }));

const HINT = "aegis_signed_in";

function clearCookies() {
  for (const c of document.cookie.split(";")) {
    const name = c.split("=")[0]?.trim();
    if (name) document.cookie = `${name}=; Path=/; Max-Age=0`;
  }
}

/** Answers by route; records every request as "METHOD path". */
function monitor(routes: Record<string, () => Response>) {
  const asked: string[] = [];
  const fetch = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const key = `${init?.method ?? "GET"} ${String(input)}`;
    asked.push(key);
    const route = routes[key];
    if (!route) return Response.json({ error: { code: "NOT_FOUND", message: key, details: {} } }, { status: 404 });
    return route();
  });
  vi.stubGlobal("fetch", fetch);
  return asked;
}

const unauthorized = () =>
  Response.json({ error: { code: "UNAUTHORIZED", message: "authentication required", details: {} } }, { status: 401 });
const status = (authMode: string) => () =>
  Response.json({ service: "aegis-monitor", version: "0.1.0", environment: "local", authMode });

function Who() {
  const { state, session } = useSession();
  return <p data-testid="who">{state.status === "signedIn" ? session?.name : state.status}</p>;
}

beforeEach(() => {
  clearCookies();
  window.history.replaceState(null, "", "/services/order-1?service=order-service");
});

afterEach(() => {
  vi.unstubAllGlobals();
  replace.mockClear();
  clearCookies();
  window.history.replaceState(null, "", "/");
});

describe("SessionProvider", () => {
  it("does not ask GET /api/session without a sign-in of this browser: it goes to sign in", async () => {
    const asked = monitor({ "GET /api/session": unauthorized, "GET /status": status("tokens") });
    renderUi(
      <SessionProvider>
        <Who />
      </SessionProvider>,
    );
    await vi.waitFor(() => expect(replace).toHaveBeenCalledWith("/sign-in?next=%2Fservices%2Forder-1%3Fservice%3Dorder-service"));
    expect(asked).not.toContain("GET /api/session");
    expect(screen.getByTestId("who")).toHaveTextContent("signedOut");
  });

  it("asks with the hint, and a valid session signs the page in", async () => {
    document.cookie = `${HINT}=1; Path=/`;
    const asked = monitor({ "GET /api/session": () => Response.json({ name: "admin", role: "admin" }) });
    renderUi(
      <SessionProvider>
        <Who />
      </SessionProvider>,
    );
    expect(await screen.findByText("admin")).toBeInTheDocument();
    expect(asked).toEqual(["GET /api/session"]);
    expect(replace).not.toHaveBeenCalled();
  });

  it("drops the hint when the session turns out gone (401), so the next load does not ask", async () => {
    document.cookie = `${HINT}=1; Path=/`;
    monitor({ "GET /api/session": unauthorized });
    renderUi(
      <SessionProvider>
        <Who />
      </SessionProvider>,
    );
    await vi.waitFor(() => expect(replace).toHaveBeenCalled());
    expect(hasSessionHint()).toBe(false);
  });

  it("with authentication off (insecure-dev) signs the page in without a sign-in", async () => {
    const asked = monitor({
      "GET /status": status("insecure-dev"),
      "GET /api/session": () => Response.json({ name: "insecure-dev", role: "admin" }),
    });
    renderUi(
      <SessionProvider>
        <Who />
      </SessionProvider>,
    );
    expect(await screen.findByText("insecure-dev")).toBeInTheDocument();
    expect(asked).toEqual(["GET /status", "GET /api/session"]);
    expect(replace).not.toHaveBeenCalled();
  });

  it("signing out drops the hint", async () => {
    document.cookie = `${HINT}=1; Path=/`;
    monitor({
      "GET /api/session": () => Response.json({ name: "admin", role: "admin" }),
      "DELETE /api/session": () => new Response(null, { status: 204 }),
    });
    function SignOut() {
      const { signOut } = useSession();
      return <button onClick={() => void signOut()}>out</button>;
    }
    renderUi(
      <SessionProvider>
        <Who />
        <SignOut />
      </SessionProvider>,
    );
    expect(await screen.findByText("admin")).toBeInTheDocument();
    await userEvent.click(screen.getByRole("button", { name: "out" }));
    await vi.waitFor(() => expect(replace).toHaveBeenCalledWith("/sign-in?reason=signedOut"));
    expect(hasSessionHint()).toBe(false);
  });
});

describe("SignInForm", () => {
  it("leaves the hint on a sign-in, and none on a wrong token", async () => {
    window.history.replaceState(null, "", "/sign-in");
    monitor({ "POST /api/session": unauthorized });
    renderUi(<SignInForm />);
    await userEvent.type(screen.getByLabelText(/token/i), "wrong");
    await userEvent.click(screen.getByRole("button", { name: /sign in/i }));
    expect(await screen.findByText(/that token is not valid/i)).toBeInTheDocument();
    expect(hasSessionHint()).toBe(false);

    monitor({ "POST /api/session": () => Response.json({ name: "admin", role: "admin", expiresAt: "2099-01-01T00:00:00Z" }) });
    await userEvent.clear(screen.getByLabelText(/token/i));
    await userEvent.type(screen.getByLabelText(/token/i), "right");
    await userEvent.click(screen.getByRole("button", { name: /sign in/i }));
    await vi.waitFor(() => expect(replace).toHaveBeenCalledWith("/"));
    expect(hasSessionHint()).toBe(true);
  });
});
