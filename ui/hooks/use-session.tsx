// Who is signed in. The session is the API's `aegis_session` cookie
// (HttpOnly, so the page cannot read it): `GET /api/session` says whether
// it is valid, asked only when this browser signed in (lib/session-hint;
// without a session it would answer 401, a console error on every visit
// before signing in) or the monitor has authentication off. Any API answer 401 later means it expired or was revoked,
// and sends the user to the sign-in page with a message. Both ways there
// carry the page the user was on, which signing in returns to.
"use client";

import * as React from "react";
import { useRouter } from "next/navigation";

import { api, ApiError, onUnauthorized } from "@/lib/api/client";
import { clearSessionHint, hasSessionHint } from "@/lib/session-hint";
import { signInHref } from "@/lib/sign-in-return";
import type { SessionInfo } from "@/lib/api/schemas";

type SessionState =
  | { status: "loading" }
  | { status: "signedIn"; session: SessionInfo }
  | { status: "signedOut" };

interface SessionValue {
  state: SessionState;
  /** The signed-in principal, once known. */
  session: SessionInfo | null;
  canWrite: boolean;
  signOut: () => Promise<void>;
}

const SessionContext = React.createContext<SessionValue | null>(null);

export function SessionProvider({ children }: { children: React.ReactNode }) {
  const router = useRouter();
  const [state, setState] = React.useState<SessionState>({ status: "loading" });

  React.useEffect(() => {
    let cancelled = false;
    const here = () => `${window.location.pathname}${window.location.search}`;
    const toSignIn = () => {
      if (cancelled) return;
      setState({ status: "signedOut" });
      router.replace(signInHref(null, here()));
    };
    // Without the hint there is no session to ask about: asking would
    // answer 401, logged by the browser as an error. Only a monitor with
    // authentication off lets anyone in without signing in.
    const mayHaveSession = hasSessionHint()
      ? Promise.resolve(true)
      : api.authMode().then(
          (mode) => mode === "insecure-dev",
          () => false,
        );
    void mayHaveSession.then((ask) => {
      if (cancelled) return;
      if (!ask) return toSignIn();
      api
        .whoAmI()
        .then((session) => !cancelled && setState({ status: "signedIn", session }))
        .catch((e: unknown) => {
          if (e instanceof ApiError && e.status === 401) clearSessionHint();
          toSignIn();
        });
    });
    const off = onUnauthorized(() => {
      clearSessionHint();
      setState({ status: "signedOut" });
      router.replace(signInHref("expired", here()));
    });
    return () => {
      cancelled = true;
      off();
    };
  }, [router]);

  const value = React.useMemo<SessionValue>(() => {
    const session = state.status === "signedIn" ? state.session : null;
    return {
      state,
      session,
      canWrite: session?.role === "admin",
      signOut: async () => {
        await api.signOut().catch(() => undefined);
        clearSessionHint();
        setState({ status: "signedOut" });
        router.replace(signInHref("signedOut", null));
      },
    };
  }, [state, router]);

  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSession(): SessionValue {
  const value = React.useContext(SessionContext);
  if (!value) throw new Error("useSession outside SessionProvider");
  return value;
}
