// ConfirmDeleteDialog: asks before deleting a definition, naming it in the
// title and on the button; Cancel has the initial focus, so Enter alone
// never deletes.
"use client";

import * as React from "react";

import {
  AlertDialog,
  AlertDialogAction,
  AlertDialogCancel,
  AlertDialogContent,
  AlertDialogDescription,
  AlertDialogFooter,
  AlertDialogTitle,
} from "@/components/ui/alert-dialog";
import { Button } from "@/components/ui/button";
import { useI18n } from "@/lib/i18n";

export interface ConfirmDeleteDialogProps {
  /** The service to delete; null closes the dialog. */
  name: string | null;
  onCancel: () => void;
  /** Deletes; the dialog stays open (busy) until it settles. */
  onConfirm: (name: string) => Promise<void>;
}

export function ConfirmDeleteDialog({ name, onCancel, onConfirm }: ConfirmDeleteDialogProps) {
  const { t } = useI18n();
  const [busy, setBusy] = React.useState(false);
  const shown = name ?? "";
  return (
    <AlertDialog open={name !== null} onOpenChange={(open) => !open && !busy && onCancel()}>
      <AlertDialogContent data-testid="confirm-delete">
        <AlertDialogTitle>{t("delete.title", { name: shown })}</AlertDialogTitle>
        <AlertDialogDescription>{t("delete.body", { name: shown })}</AlertDialogDescription>
        <AlertDialogFooter>
          <AlertDialogCancel disabled={busy}>{t("delete.cancel")}</AlertDialogCancel>
          <AlertDialogAction asChild>
            <Button
              variant="destructive"
              disabled={busy}
              onClick={async (e) => {
                // Keep the dialog open until the delete settles.
                e.preventDefault();
                if (!name) return;
                setBusy(true);
                try {
                  await onConfirm(name);
                } finally {
                  setBusy(false);
                }
              }}
            >
              {busy ? t("delete.deleting") : t("delete.confirm", { name: shown })}
            </Button>
          </AlertDialogAction>
        </AlertDialogFooter>
      </AlertDialogContent>
    </AlertDialog>
  );
}
