// ServiceStatusBadge: each status in words and in its semantic colour.
import { screen } from "@testing-library/react";

import { ServiceStatusBadge } from "@/components/dashboard/service-status-badge";
import { renderUi } from "./render";

describe("ServiceStatusBadge", () => {
  it.each([
    ["ACTIVE", "ACTIVE", "bg-success-muted", "text-success-strong"],
    ["UNHEALTHY", "UNHEALTHY", "bg-danger-muted", "text-danger-strong"],
    ["STANDBY", "STANDBY", "bg-muted", "text-muted-foreground"],
    ["GONE", "GONE", "border-border", "text-foreground"],
  ] as const)("shows %s as %s with its colour", (status, text, bg, fg) => {
    renderUi(<ServiceStatusBadge status={status} />);
    const badge = screen.getByText(text);
    expect(badge).toHaveAttribute("data-status", status);
    expect(badge).toHaveClass(bg, fg);
  });

  it("colours differ between the statuses", () => {
    renderUi(
      <>
        <ServiceStatusBadge status="ACTIVE" />
        <ServiceStatusBadge status="UNHEALTHY" />
        <ServiceStatusBadge status="STANDBY" />
      </>,
    );
    const classes = ["ACTIVE", "UNHEALTHY", "STANDBY"].map((s) => screen.getByText(s).className);
    expect(new Set(classes).size).toBe(3);
  });

  it("speaks Chinese when the locale is zh-CN", () => {
    renderUi(<ServiceStatusBadge status="UNHEALTHY" />, { locale: "zh-CN" });
    expect(screen.getByText("不健康")).toHaveClass("bg-danger-muted");
  });
});
