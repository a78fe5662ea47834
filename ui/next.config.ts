// The monitor UI is a static export: `next build` writes plain files to
// `out/`, which aegis-monitor serves on the API's origin (no Node at run
// time, no CORS). Instance pages are one pre-rendered shell
// (`services/_.html`) that the monitor serves for every `/services/*` path;
// the page reads the instance id from the address.
import type { NextConfig } from "next";

const config: NextConfig = {
  output: "export",
  reactStrictMode: true,
  poweredByHeader: false,
  images: { unoptimized: true },
  // The dev server proxies the API, and the public `/status` the page reads
  // the authentication mode from (`insecure-dev` signs in by itself), so
  // `npm run dev` works against a running monitor (AEGIS_API_URL, default
  // the showcase's port).
  ...(process.env.NODE_ENV === "development"
    ? {
        async rewrites() {
          const api = process.env.AEGIS_API_URL ?? "http://127.0.0.1:8100";
          return [
            { source: "/api/:path*", destination: `${api}/api/:path*` },
            { source: "/status", destination: `${api}/status` },
          ];
        },
      }
    : {}),
};

export default config;
