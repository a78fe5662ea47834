// Providers every page shares: the message catalogue and the toasts.
"use client";

import * as React from "react";

import { Toaster } from "@/components/ui/toast";
import { I18nProvider, useI18n } from "@/lib/i18n";

function LocalizedToaster() {
  const { t } = useI18n();
  return <Toaster closeLabel={t("toast.close")} regionLabel={t("toast.region")} />;
}

export function Providers({ children }: { children: React.ReactNode }) {
  return (
    <I18nProvider>
      {children}
      <LocalizedToaster />
    </I18nProvider>
  );
}
