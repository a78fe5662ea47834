// The toast region's name for screen readers, from the trial: in zh-CN
// every page had an aria-label "Notifications (F8)" — the Radix
// viewport's default — while the translated "通知" went only to its
// provider.
import { render, screen } from "@testing-library/react";

import { Toaster } from "@/components/ui/toast";

describe("the toast region", () => {
  it("is named in the page's language, with the key that reaches it", () => {
    render(<Toaster closeLabel="关闭" regionLabel="通知" />);
    expect(screen.getByRole("region", { name: "通知 (F8)" })).toBeInTheDocument();
    expect(document.querySelector('[aria-label*="Notifications"]')).toBeNull();
  });
});
