// The toast queue: `toast()` from anywhere, `useToasts()` in the Toaster.
import { useSyncExternalStore } from "react";

export interface ToastItem {
  id: number;
  title: string;
  description?: string;
  variant: "success" | "error" | "info";
}

let items: ToastItem[] = [];
let nextId = 1;
const listeners = new Set<() => void>();

function emit() {
  listeners.forEach((l) => l());
}

/** Shows a toast; the newest three are kept. */
export function toast(item: Omit<ToastItem, "id">): void {
  items = [...items, { ...item, id: nextId++ }].slice(-3);
  emit();
}

export function dismissToast(id: number): void {
  items = items.filter((t) => t.id !== id);
  emit();
}

export function useToasts(): ToastItem[] {
  return useSyncExternalStore(
    (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    () => items,
    () => items,
  );
}
