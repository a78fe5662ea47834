// The way back after signing in: a page that finds no session sends the
// user to the sign-in page with `next` (its path and query), and the
// sign-in page returns there, so a shared link — a filtered dashboard, an
// instance — survives the detour. Only a page of this UI is a `next`.

export type SignInReason = "expired" | "signedOut";

/** A path of this UI (`/…`, not `//host` nor the sign-in page), else null. */
export function ownPage(next: string | null | undefined): string | null {
  if (!next || !next.startsWith("/") || next.startsWith("//") || next.startsWith("/\\")) return null;
  let url: URL;
  try {
    url = new URL(next, "http://ui.invalid");
  } catch {
    return null;
  }
  if (url.origin !== "http://ui.invalid" || url.pathname.startsWith("/sign-in")) return null;
  return `${url.pathname}${url.search}${url.hash}`;
}

/** The sign-in page's address, coming from `from` (path and query); the dashboard alone needs no way back. */
export function signInHref(reason: SignInReason | null, from: string | null): string {
  const params = new URLSearchParams();
  if (reason) params.set("reason", reason);
  const next = ownPage(from);
  if (next && next !== "/") params.set("next", next);
  const query = params.toString();
  return query ? `/sign-in?${query}` : "/sign-in";
}

/** Where signing in leads: back to `next`, or the dashboard. */
export function afterSignIn(next: string | null): string {
  return ownPage(next) ?? "/";
}
