// Renders a component inside the providers the app gives it.
import * as React from "react";
import { render, type RenderOptions } from "@testing-library/react";

import { Toaster } from "@/components/ui/toast";
import { I18nProvider, type Locale } from "@/lib/i18n";

export function renderUi(ui: React.ReactElement, { locale = "en", ...opts }: RenderOptions & { locale?: Locale } = {}) {
  function Wrapper({ children }: { children: React.ReactNode }) {
    return (
      <I18nProvider initial={locale}>
        {children}
        <Toaster closeLabel="Dismiss" regionLabel="Notifications" />
      </I18nProvider>
    );
  }
  return render(ui, { wrapper: Wrapper, ...opts });
}

/** A ServiceInstance as the API sends it. */
export function instance(over: Record<string, unknown> = {}) {
  return {
    serviceName: "order-service",
    instanceId: "order-1",
    version: "1.2.3",
    status: "ACTIVE" as const,
    reportedStatus: "ACTIVE" as const,
    statusSince: new Date().toISOString(),
    lastHeartbeat: new Date().toISOString(),
    stickyActiveGroup: "main",
    metadata: { host: "h1", pid: 42 },
    startedAt: new Date().toISOString(),
    epoch: 17,
    ...over,
  };
}
