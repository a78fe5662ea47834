// Toasts on Radix Toast: announced politely to screen readers, dismissed
// by swipe, Escape or the close button. `Toaster` renders the queue kept by
// `hooks/use-toast.ts`.
"use client";

import * as React from "react";
import { Toast as ToastPrimitive } from "radix-ui";
import { X } from "lucide-react";

import { cn } from "@/lib/utils";
import { dismissToast, useToasts } from "@/hooks/use-toast";

export function Toaster({ closeLabel, regionLabel }: { closeLabel: string; regionLabel: string }) {
  const toasts = useToasts();
  return (
    <ToastPrimitive.Provider swipeDirection="right" duration={5000} label={regionLabel}>
      {toasts.map((t) => (
        <ToastPrimitive.Root
          key={t.id}
          onOpenChange={(open) => !open && dismissToast(t.id)}
          data-testid="toast"
          data-variant={t.variant}
          className={cn(
            "relative grid gap-1 rounded-md border p-4 pr-10 shadow-lg",
            t.variant === "error" ? "border-danger/40 bg-danger-muted text-danger-strong" : "border-border bg-background",
          )}
        >
          <ToastPrimitive.Title className="text-sm font-semibold">{t.title}</ToastPrimitive.Title>
          {t.description ? <ToastPrimitive.Description className="text-sm">{t.description}</ToastPrimitive.Description> : null}
          <ToastPrimitive.Close className="absolute right-2 top-2 rounded-sm p-1 opacity-70 hover:opacity-100 focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring">
            <X className="size-4" aria-hidden="true" />
            <span className="sr-only">{closeLabel}</span>
          </ToastPrimitive.Close>
        </ToastPrimitive.Root>
      ))}
      {/* Named in the page's language: Radix's default is English ("Notifications ({hotkey})"). */}
      <ToastPrimitive.Viewport label={`${regionLabel} ({hotkey})`} className="fixed bottom-0 right-0 z-[100] flex w-full max-w-sm flex-col gap-2 p-4 outline-none" />
    </ToastPrimitive.Provider>
  );
}
