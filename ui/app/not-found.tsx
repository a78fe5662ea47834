// Any address without a page.
"use client";

import Link from "next/link";

import { buttonVariants } from "@/components/ui/button";
import { useI18n } from "@/lib/i18n";

export default function NotFound() {
  const { t } = useI18n();
  return (
    <main id="main" className="flex min-h-screen flex-col items-center justify-center gap-4 p-8 text-center">
      <h1 className="text-2xl font-bold">{t("notFound.title")}</h1>
      <p className="text-muted-foreground">{t("notFound.body")}</p>
      <Link href="/" className={buttonVariants()}>
        {t("notFound.home")}
      </Link>
    </main>
  );
}
