// `npm run dev` proxies the monitor's routes the page asks for, so it works
// against a running monitor. The review: `/status` was not proxied, so
// against an `--insecure-dev` monitor the dev server answered it with its
// own 404 page, the page took that for "tokens" and asked for one.
afterEach(() => {
  vi.unstubAllEnvs();
  vi.resetModules();
});

type Rewrite = { source: string; destination: string };

async function devRewrites(): Promise<Rewrite[]> {
  vi.stubEnv("NODE_ENV", "development");
  vi.stubEnv("AEGIS_API_URL", "http://127.0.0.1:9999");
  vi.resetModules();
  const config = (await import("../next.config")).default;
  expect(config.rewrites).toBeTypeOf("function");
  return (await config.rewrites!()) as Rewrite[];
}

describe("the dev server's proxy", () => {
  it("sends /status to the monitor, as /api", async () => {
    const rules = await devRewrites();
    expect(rules).toContainEqual({ source: "/status", destination: "http://127.0.0.1:9999/status" });
    expect(rules).toContainEqual({ source: "/api/:path*", destination: "http://127.0.0.1:9999/api/:path*" });
  });

  it("is not part of the static export", async () => {
    vi.stubEnv("NODE_ENV", "production");
    vi.resetModules();
    const config = (await import("../next.config")).default;
    expect(config.rewrites).toBeUndefined();
    expect(config.output).toBe("export");
  });
});
