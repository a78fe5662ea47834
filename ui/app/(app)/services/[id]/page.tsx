// `/services/{instanceId}`: one pre-rendered shell (`services/_.html`) that
// the monitor serves for every instance id; the page reads the id from the
// address.
import { InstanceDetail } from "@/components/instance/instance-detail";

export const dynamicParams = false;

export function generateStaticParams() {
  return [{ id: "_" }];
}

export default function InstancePage() {
  return <InstanceDetail />;
}
