// SignInForm: exchanges an admin or viewer token for the API's session
// cookie, then opens the page the user came from (`next`) or the
// dashboard. Says why the user is here (session expired, signed out) and
// what went wrong (invalid token, monitor down), with the focus back on the
// token, selected, to type it again.
"use client";

import * as React from "react";
import { useRouter } from "next/navigation";
import { LogIn, ShieldCheck } from "lucide-react";

import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { LanguageSwitch } from "@/components/shell/language-switch";
import { PageTitle } from "@/components/shell/page-title";
import { api, ApiError } from "@/lib/api/client";
import { Message, useI18n } from "@/lib/i18n";
import { setSessionHint } from "@/lib/session-hint";
import { afterSignIn } from "@/lib/sign-in-return";

export function SignInForm() {
  const { t } = useI18n();
  const router = useRouter();
  const [token, setToken] = React.useState("");
  const [busy, setBusy] = React.useState(false);
  const [error, setError] = React.useState<string | null>(null);
  const [reason, setReason] = React.useState<string | null>(null);
  const next = React.useRef<string | null>(null);
  const field = React.useRef<HTMLInputElement>(null);
  /** Counts failed attempts: each puts the focus back on the token. */
  const [failures, setFailures] = React.useState(0);

  React.useEffect(() => {
    // Read once from the address; a static export has no server to pass it.
    const params = new URLSearchParams(window.location.search);
    next.current = params.get("next");
    // eslint-disable-next-line react-hooks/set-state-in-effect
    setReason(params.get("reason"));
  }, []);

  // The submit button was disabled while busy, which took the focus from
  // it: after a failure it goes to the token, once the error is rendered
  // as its description, so a screen reader reads both.
  React.useEffect(() => {
    if (failures === 0) return;
    field.current?.focus();
    field.current?.select();
  }, [failures]);

  async function submit(e: React.FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const session = await api.signIn(token.trim());
      setSessionHint(session.expiresAt, session.serverDate);
      router.replace(afterSignIn(next.current));
    } catch (err) {
      if (err instanceof ApiError && (err.code === "UNAUTHORIZED" || err.code === "VALIDATION_ERROR")) {
        setError(t("signIn.invalid"));
      } else if (err instanceof ApiError && err.code === "TOO_MANY_REQUESTS") {
        // Two budgets answer 429: wrong sign-ins, and this address's share
        // of the monitor's connections (which names itself in details).
        const share = err.details.maxConnectionsPerClient;
        setError(
          typeof share === "number"
            ? t("signIn.connectionShare", { count: String(share) })
            : t("signIn.tooMany", { seconds: String(err.retryAfterSecs ?? 60) }),
        );
      } else {
        setError(t("signIn.failed", { message: err instanceof Error ? err.message : String(err) }));
      }
      setBusy(false);
      setFailures((n) => n + 1);
    }
  }

  const notice = reason === "expired" ? t("signIn.expired") : reason === "signedOut" ? t("signIn.signedOut") : null;
  return (
    <main id="main" className="flex min-h-screen flex-col items-center justify-center gap-4 bg-muted px-4 py-8">
      <PageTitle messageKey="signIn.title" />
      <div className="flex w-full max-w-md justify-end">
        <LanguageSwitch />
      </div>
      <Card className="w-full max-w-md">
        <CardHeader>
          <ShieldCheck className="size-8 text-primary" aria-hidden="true" />
          <CardTitle>
            <span className="text-xl">{t("signIn.title")}</span>
          </CardTitle>
          <CardDescription>
            <Message messageKey="signIn.intro" />
          </CardDescription>
        </CardHeader>
        <CardContent>
          <form onSubmit={submit} className="flex flex-col gap-4" noValidate>
            {notice ? (
              <p role="status" data-testid="sign-in-notice" className="rounded-md border border-warning/40 bg-warning-muted p-3 text-sm text-warning-strong">
                {notice}
              </p>
            ) : null}
            <div className="flex flex-col gap-2">
              <Label htmlFor="token">{t("signIn.token")}</Label>
              <Input
                ref={field}
                id="token"
                name="token"
                type="password"
                autoComplete="current-password"
                autoFocus
                required
                value={token}
                aria-invalid={error ? true : undefined}
                aria-describedby={error ? "token-error" : undefined}
                onChange={(e) => setToken(e.target.value)}
              />
              {error ? (
                <p id="token-error" role="alert" className="text-sm text-danger-strong">
                  {error}
                </p>
              ) : null}
            </div>
            <Button type="submit" disabled={busy || token.trim() === ""}>
              <LogIn aria-hidden="true" />
              {busy ? t("signIn.submitting") : t("signIn.submit")}
            </Button>
          </form>
        </CardContent>
      </Card>
    </main>
  );
}
