// The root layout: html/body, the global styles and the shared providers.
import type { Metadata, Viewport } from "next";

import "./globals.css";
import { Providers } from "@/components/shell/providers";

export const metadata: Metadata = {
  title: "Aegis monitor",
  description: "Live instances and service definitions of an Aegis deployment",
};

export const viewport: Viewport = { width: "device-width", initialScale: 1 };

export default function RootLayout({ children }: { children: React.ReactNode }) {
  return (
    <html lang="en">
      <body>
        <Providers>{children}</Providers>
      </body>
    </html>
  );
}
