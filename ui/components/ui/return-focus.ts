// Where the focus goes when a dialog closes: back to the element that had
// it when the dialog opened. Radix returns it to a dialog's trigger, but
// the app's dialogs are opened from state (a row's Edit, Delete, History),
// with no trigger: the focus fell to <body>, and a keyboard user had to
// tab again from the top of the page.
"use client";

import * as React from "react";

interface AutoFocusHandlers {
  onOpenAutoFocus?: (event: Event) => void;
  onCloseAutoFocus?: (event: Event) => void;
}

/** A dialog content's focus handlers that give the focus back to its opener on close; the caller's run first. */
export function useReturnFocus({ onOpenAutoFocus, onCloseAutoFocus }: AutoFocusHandlers): Required<AutoFocusHandlers> {
  const opener = React.useRef<HTMLElement | null>(null);
  return {
    onOpenAutoFocus: (event) => {
      // Still the opener's: the dialog has not moved the focus yet.
      const active = document.activeElement;
      opener.current = active instanceof HTMLElement && active !== document.body ? active : null;
      onOpenAutoFocus?.(event);
    },
    onCloseAutoFocus: (event) => {
      onCloseAutoFocus?.(event);
      const el = opener.current;
      opener.current = null;
      // An opener gone meanwhile (the row of a deleted definition) is left to Radix.
      if (event.defaultPrevented || !el?.isConnected) return;
      event.preventDefault();
      el.focus();
    },
  };
}
