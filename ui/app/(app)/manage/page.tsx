// `/manage`: service definition management.
import { ManageView } from "@/components/manage/manage-view";
import { PageTitle } from "@/components/shell/page-title";

export default function ManagePage() {
  return (
    <>
      <PageTitle messageKey="manage.title" />
      <ManageView />
    </>
  );
}
