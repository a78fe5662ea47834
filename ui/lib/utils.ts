// `cn`: joins class names and lets later Tailwind classes win over earlier
// ones, so primitives can be restyled by the caller.
import { clsx, type ClassValue } from "clsx";
import { twMerge } from "tailwind-merge";

export function cn(...inputs: ClassValue[]): string {
  return twMerge(clsx(inputs));
}
