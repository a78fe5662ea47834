// Signed-in pages: the session check and the app shell around them.
"use client";

import { AppShell } from "@/components/shell/app-shell";
import { SessionProvider } from "@/hooks/use-session";

export default function SignedInLayout({ children }: { children: React.ReactNode }) {
  return (
    <SessionProvider>
      <AppShell>{children}</AppShell>
    </SessionProvider>
  );
}
