// Badge: a small label. The status variants carry the semantic colours
// (green ACTIVE, red UNHEALTHY, gray STANDBY) at AA contrast.
import * as React from "react";
import { cva, type VariantProps } from "class-variance-authority";

import { cn } from "@/lib/utils";

export const badgeVariants = cva(
  "inline-flex items-center gap-1 rounded-full border px-2 py-0.5 text-xs font-semibold whitespace-nowrap",
  {
    variants: {
      variant: {
        default: "border-transparent bg-primary text-primary-foreground",
        outline: "border-border text-foreground",
        success: "border-success/30 bg-success-muted text-success-strong",
        danger: "border-danger/30 bg-danger-muted text-danger-strong",
        neutral: "border-border bg-muted text-muted-foreground",
        warning: "border-warning/40 bg-warning-muted text-warning-strong",
      },
    },
    defaultVariants: { variant: "default" },
  },
);

export interface BadgeProps extends React.HTMLAttributes<HTMLSpanElement>, VariantProps<typeof badgeVariants> {}

export function Badge({ className, variant, ...props }: BadgeProps) {
  return <span className={cn(badgeVariants({ variant }), className)} {...props} />;
}
