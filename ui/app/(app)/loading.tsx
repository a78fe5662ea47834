// The skeleton of a signed-in page while its code loads.
import { ShellSkeleton } from "@/components/shell/app-shell";

export default function Loading() {
  return <ShellSkeleton />;
}
