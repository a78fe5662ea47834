// `/`: the dashboard. Its filters live in the query string, which a static
// export only knows in the browser: the boundary lets the rest of the page
// pre-render without it.
import { Suspense } from "react";

import { DashboardView } from "@/components/dashboard/dashboard-view";
import { ShellSkeleton } from "@/components/shell/app-shell";
import { PageTitle } from "@/components/shell/page-title";

export default function DashboardPage() {
  return (
    <>
      <PageTitle messageKey="dashboard.title" />
      <Suspense fallback={<ShellSkeleton />}>
        <DashboardView />
      </Suspense>
    </>
  );
}
