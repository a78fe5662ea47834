// `/services/{instanceId}?service={name}`: one pre-rendered shell
// (`services/_.html`) that the monitor serves for every instance id; the
// page reads the id and the service from the address. The query is known
// only in the browser: the boundary lets the rest pre-render without it.
import { Suspense } from "react";

import { InstanceDetail } from "@/components/instance/instance-detail";
import { ShellSkeleton } from "@/components/shell/app-shell";

export const dynamicParams = false;

export function generateStaticParams() {
  return [{ id: "_" }];
}

export default function InstancePage() {
  return (
    <Suspense fallback={<ShellSkeleton />}>
      <InstanceDetail />
    </Suspense>
  );
}
