// SignInForm: an invalid token and a rate-limited client (429 with
// Retry-After) each get their own message.
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { SignInForm } from "@/components/auth/sign-in-form";
import { clearSessionHint, hasSessionHint, sessionHintMaxAge } from "@/lib/session-hint";
import { renderUi } from "./render";

const replace = vi.fn();
vi.mock("next/navigation", () => ({ useRouter: () => ({ replace }) }));

function answer(
  status: number,
  code: string,
  headers: Record<string, string> = {},
  details: Record<string, unknown> = {},
) {
  vi.stubGlobal(
    "fetch",
    vi.fn(
      async () =>
        new Response(JSON.stringify({ error: { code, message: code.toLowerCase(), details } }), {
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

  // The trial: a click on Sign in with a wrong token disabled the focused
  // button while busy, the focus fell to <body>, and the error path never
  // put it back: a keyboard user had to find the field again.
  it.each([
    [401, "UNAUTHORIZED", /that token is not valid/i],
    [429, "TOO_MANY_REQUESTS", /too many sign-in attempts/i],
    [503, "NOT_READY", /could not reach the monitor/i],
  ])("puts the focus back on the token, selected, after a %i", async (status, code, message) => {
    answer(status, code);
    await signIn("wrong-token");
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent(message);
    const field = screen.getByLabelText(/token/i) as HTMLInputElement;
    await vi.waitFor(() => expect(field).toHaveFocus());
    expect([field.selectionStart, field.selectionEnd]).toEqual([0, "wrong-token".length]);
    // The error is the field's description: read out with it.
    expect(field).toHaveAccessibleDescription(alert.textContent!);
    expect(field).toHaveAttribute("aria-invalid", "true");
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

  // A 429 also answers a connection past its address's share of the
  // monitor's connections (an office NAT is one address). That is not a
  // sign-in budget, and waiting out Retry-After does not free a connection.
  it("says the address holds its share of connections, not that sign-ins were too many", async () => {
    answer(429, "TOO_MANY_REQUESTS", { "Retry-After": "1" }, { maxConnectionsPerClient: 256 });
    await signIn("right");
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent(/already holds 256 connections/i);
    expect(alert).toHaveTextContent(/--max-connections-per-client/);
    expect(alert).not.toHaveTextContent(/sign-in attempts/i);
  });
});

// The review: the hint was written with the session's absolute end
// (`Expires`), which the browser judges by its own clock. A clock 13 h
// ahead wrote it already expired, so every sign-in landed back on the
// sign-in page. Now it lives for the session's remaining seconds, counted
// on the server's clock (its `Date` header), from when the browser got it.
describe("SignInForm's session hint with the browser's clock far ahead", () => {
  const SERVER_NOW = Date.parse("2026-12-05T06:00:00.000Z");
  const AHEAD = 13 * 3600_000;

  function signedIn(lifetimeSecs: number, headers: Record<string, string>) {
    const body = { name: "admin", role: "admin", expiresAt: new Date(SERVER_NOW + lifetimeSecs * 1000).toISOString() };
    vi.stubGlobal("fetch", vi.fn(async () => Response.json(body, { headers })));
  }

  beforeEach(() => {
    clearSessionHint();
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(SERVER_NOW + AHEAD);
  });
  afterEach(() => {
    clearSessionHint();
    vi.useRealTimers();
  });

  it("keeps the hint for the session's remaining time from the server's Date, not until its end on the browser's clock", async () => {
    signedIn(3600, { Date: new Date(SERVER_NOW).toUTCString() });
    await signIn("right");
    await vi.waitFor(() => expect(replace).toHaveBeenCalled());
    expect(hasSessionHint()).toBe(true);
    // (jsdom counts Max-Age from the cookie's last read, so no read between.)
    vi.setSystemTime(SERVER_NOW + AHEAD + 3610_000);
    expect(hasSessionHint()).toBe(false);
  });

  it("keeps it for the documented 12 h when the answer has no Date", async () => {
    signedIn(12 * 3600, {});
    await signIn("right");
    await vi.waitFor(() => expect(replace).toHaveBeenCalled());
    expect(hasSessionHint()).toBe(true);
    vi.setSystemTime(SERVER_NOW + AHEAD + 12.1 * 3600_000);
    expect(hasSessionHint()).toBe(false);
  });
});

describe("sessionHintMaxAge", () => {
  it("is the session's end less the server's Date, else the documented 12 h", () => {
    const date = "Sat, 05 Dec 2026 06:00:00 GMT";
    expect(sessionHintMaxAge("2026-12-05T07:00:00.000Z", date)).toBe(3600);
    expect(sessionHintMaxAge("2026-12-05T18:00:00.000Z", date)).toBe(12 * 3600);
    expect(sessionHintMaxAge("2026-12-05T07:00:00.000Z", null)).toBe(12 * 3600);
    expect(sessionHintMaxAge(null, date)).toBe(12 * 3600);
    expect(sessionHintMaxAge("soon", "whenever")).toBe(12 * 3600);
    expect(sessionHintMaxAge("2026-12-05T05:00:00.000Z", date)).toBe(12 * 3600);
  });
});
