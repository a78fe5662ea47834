// AppShell: the frame of every signed-in page — skip link, top bar with
// navigation, the state of NATS, language switch, who is signed in and
// sign-out — and the route's content. Pages render inside it once the
// session is known; NATS is polled from then on, for every page.
"use client";

import * as React from "react";
import Link from "next/link";
import { usePathname } from "next/navigation";
import { LogOut, ShieldCheck } from "lucide-react";

import { Button } from "@/components/ui/button";
import { Skeleton } from "@/components/ui/skeleton";
import { NatsBadge } from "@/components/nats/nats-badge";
import { NatsHealthProvider } from "@/hooks/use-nats-health";
import { useSession } from "@/hooks/use-session";
import { useI18n } from "@/lib/i18n";
import { cn } from "@/lib/utils";
import { LanguageSwitch } from "./language-switch";
import { SignedInAs } from "./signed-in-as";

export interface AppShellProps {
  children: React.ReactNode;
}

export function AppShell({ children }: AppShellProps) {
  const { t } = useI18n();
  const { state, session, signOut } = useSession();
  const pathname = usePathname();
  const nav = [
    { href: "/", label: t("nav.dashboard"), active: pathname === "/" || pathname.startsWith("/services") },
    { href: "/manage", label: t("nav.manage"), active: pathname.startsWith("/manage") },
  ];
  return (
    <NatsHealthProvider enabled={state.status === "signedIn"}>
    <div className="flex min-h-screen flex-col">
      <a
        href="#main"
        className="sr-only z-50 rounded-md bg-primary px-4 py-2 text-primary-foreground focus:not-sr-only focus:fixed focus:left-4 focus:top-4"
      >
        {t("app.skipToContent")}
      </a>
      <header className="sticky top-0 z-40 border-b border-border bg-background/95 backdrop-blur">
        <div className="mx-auto flex max-w-screen-2xl flex-wrap items-center gap-x-4 gap-y-2 px-4 py-2 sm:px-6">
          <Link href="/" className="flex items-center gap-2 font-semibold">
            <ShieldCheck className="size-5 text-primary" aria-hidden="true" />
            {t("app.name")}
          </Link>
          <nav aria-label={t("nav.main")} className="order-3 w-full sm:order-none sm:w-auto">
            <ul className="flex gap-1">
              {nav.map((item) => (
                <li key={item.href}>
                  <Link
                    href={item.href}
                    aria-current={item.active ? "page" : undefined}
                    className={cn(
                      "inline-flex h-8 items-center rounded-md px-3 text-sm font-medium hover:bg-muted focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring",
                      item.active ? "bg-muted text-foreground" : "text-muted-foreground",
                    )}
                  >
                    {item.label}
                  </Link>
                </li>
              ))}
            </ul>
          </nav>
          {/* Wraps, and sign-out keeps only its icon on a phone: at 320 px
              the badge, language and sign-out are wider than the window. */}
          <div className="ml-auto flex min-w-0 flex-wrap items-center justify-end gap-2">
            <NatsBadge />
            <LanguageSwitch />
            {session ? (
              <>
                <SignedInAs session={session} />
                <Button variant="ghost" size="sm" onClick={() => void signOut()}>
                  <LogOut aria-hidden="true" />
                  <span className="sr-only sm:not-sr-only">{t("session.signOut")}</span>
                </Button>
              </>
            ) : null}
          </div>
        </div>
      </header>
      <main id="main" tabIndex={-1} className="mx-auto w-full max-w-screen-2xl flex-1 px-4 py-6 focus:outline-none sm:px-6">
        {state.status === "signedIn" ? children : <ShellSkeleton />}
      </main>
    </div>
    </NatsHealthProvider>
  );
}

/** The shell's placeholder while the session is checked. */
export function ShellSkeleton() {
  return (
    <div className="flex flex-col gap-4" aria-busy="true">
      <Skeleton className="h-8 w-64" />
      <Skeleton className="h-4 w-96 max-w-full" />
      <div className="grid grid-cols-1 gap-4 sm:grid-cols-2 lg:grid-cols-3 xl:grid-cols-4">
        {Array.from({ length: 8 }, (_, i) => (
          <Skeleton key={i} className="h-40" />
        ))}
      </div>
    </div>
  );
}
