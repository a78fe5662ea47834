// SignedInAs: who is signed in, for the top bar — the session's name and
// its role, or the role alone for a token named after its role ("viewer"),
// which would otherwise read "viewer (viewer)".
"use client";

import type { SessionInfo } from "@/lib/api/schemas";
import { useI18n } from "@/lib/i18n";

export interface SignedInAsProps {
  session: SessionInfo;
}

export function SignedInAs({ session }: SignedInAsProps) {
  const { t } = useI18n();
  const role = t(`session.role.${session.role}`);
  const sameWord = session.name.trim().toLowerCase() === session.role.toLowerCase();
  return (
    <span className="hidden text-xs text-muted-foreground md:inline" data-testid="signed-in-as">
      {sameWord ? t("session.signedInAsRole", { role }) : t("session.signedInAs", { name: session.name, role })}
    </span>
  );
}
