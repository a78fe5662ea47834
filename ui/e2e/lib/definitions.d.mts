// Types of definitions.mjs, for the unit test that runs it.
type Api = (
  path: string,
  opts?: { method?: string; body?: unknown },
) => Promise<{ status: number; body: unknown }>;

export const SCREENSHOT_DEFINITIONS: [name: string, owner: string, description: string, version: string][];
export function defineScreenshotServices(stack: { api: Api }): Promise<void>;
