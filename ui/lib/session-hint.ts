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

/** The session's lifetime the docs give (`aegis_session` expires after 12 h). */
export const SESSION_LIFETIME_SECS = 12 * 3600;

/**
 * How long the hint lives, in seconds from now: the session's end less the
 * sign-in answer's `Date`, both on the server's clock, so a browser whose
 * clock is off keeps it exactly as long as the session. The documented
 * 12 h when either is missing or unreadable. Never judged against the
 * browser's clock: one 13 h ahead would write it already expired.
 */
export function sessionHintMaxAge(expiresAt?: string | null, serverDate?: string | null): number {
  const end = expiresAt ? Date.parse(expiresAt) : NaN;
  const now = serverDate ? Date.parse(serverDate) : NaN;
  const left = Math.floor((end - now) / 1000);
  return Number.isFinite(left) && left > 0 ? left : SESSION_LIFETIME_SECS;
}

/**
 * Leaves the hint for as long as the session lasts: `Max-Age`, counted by
 * the browser from now (as the session cookie's own), from the sign-in
 * answer's `expiresAt` and `Date`.
 */
export function setSessionHint(expiresAt?: string | null, serverDate?: string | null): void {
  if (typeof document === "undefined") return;
  const secure = window.location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `${NAME}=1; Path=/; SameSite=Strict; Max-Age=${sessionHintMaxAge(expiresAt, serverDate)}${secure}`;
}

/** Takes the hint away: signed out, or the API no longer knows the session. */
export function clearSessionHint(): void {
  if (typeof document === "undefined") return;
  document.cookie = `${NAME}=; Path=/; SameSite=Strict; Max-Age=0`;
}
