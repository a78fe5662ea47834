// MissingInstance: the instance page of an id the fleet does not list (it
// stopped, expired, or never existed). The API keeps a gone instance's
// events, so when the address names its service they are shown below;
// without the service they cannot be asked for, and none are promised.
"use client";

import { useI18n } from "@/lib/i18n";
import { EventsPanel } from "./events-panel";

export interface MissingInstanceProps {
  instanceId: string;
  /** From the address (`?service=`), or null when it does not say. */
  serviceName: string | null;
}

export function MissingInstance({ instanceId, serviceName }: MissingInstanceProps) {
  const { t } = useI18n();
  return (
    <>
      <div role="alert" className="rounded-lg border border-dashed border-border p-8 text-center">
        <h1 className="text-xl font-semibold">{t("detail.notFound.title", { id: instanceId })}</h1>
        <p className="text-sm text-muted-foreground">
          {serviceName ? t("detail.notFound.bodyEvents", { service: serviceName }) : t("detail.notFound.body")}
        </p>
      </div>
      {serviceName ? <EventsPanel serviceName={serviceName} instanceId={instanceId} statusKey="missing" /> : null}
    </>
  );
}
