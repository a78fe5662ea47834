// `/`: the dashboard.
import { DashboardView } from "@/components/dashboard/dashboard-view";
import { PageTitle } from "@/components/shell/page-title";

export default function DashboardPage() {
  return (
    <>
      <PageTitle messageKey="dashboard.title" />
      <DashboardView />
    </>
  );
}
