// A hint, readable by the page, that this browser signed in. The session
// itself is the API's `aegis_session` cookie, HttpOnly, so the page cannot
// see whether it has one; asking `GET /api/session` without one answers
// 401, which the browser logs as a console error on every visit before
// signing in. So the sign-in leaves this cookie beside it (same path, same
// lifetime), signing out or a 401 takes it away, and a page without it
// does not ask. It grants nothing: the API still decides on every request.

const NAME = "aegis_signed_in";

/** Whether this browser signed in and has not signed out or been refused since. */
export function hasSessionHint(): boolean {
  if (typeof document === "undefined") return false;
  return document.cookie.split(";").some((c) => c.trim().startsWith(`${NAME}=`));
}

/** Leaves the hint, until `expiresAt` (the session's end) when known. */
export function setSessionHint(expiresAt?: string | null): void {
  if (typeof document === "undefined") return;
  const until = expiresAt ? new Date(expiresAt) : null;
  const expires = until && !Number.isNaN(until.getTime()) ? `; Expires=${until.toUTCString()}` : "";
  const secure = window.location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `${NAME}=1; Path=/; SameSite=Strict${expires}${secure}`;
}

/** Takes the hint away: signed out, or the API no longer knows the session. */
export function clearSessionHint(): void {
  if (typeof document === "undefined") return;
  document.cookie = `${NAME}=; Path=/; SameSite=Strict; Max-Age=0`;
}
