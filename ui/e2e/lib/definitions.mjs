// The service definitions the screenshots show on the manage page. `aegis
// up` registers order-, pricing- and risk-service itself (owner
// trading-team, its own version), so they are updated to these, and made
// only when missing; any other answer stops the run rather than shooting
// other data than intended.

/** [name, owner, description, version] of each definition shown. */
export const SCREENSHOT_DEFINITIONS = [
  ["order-service", "trading-desk", "Places and tracks orders; sticky single-active", "2.3.0"],
  ["pricing-service", "market-data", "Quotes and price snapshots", "1.8.2"],
  ["risk-service", "risk-team", "Pre-trade limits and positions", "1.4.0"],
];

/** Sets one definition to `fields`: updated when it exists, else created. */
async function define(stack, name, fields) {
  // Created in between (aegis up registers after its monitor is ready):
  // then updated on the next round.
  for (let round = 0; round < 3; round += 1) {
    const put = await stack.api(`/api/services/${encodeURIComponent(name)}`, { method: "PUT", body: fields });
    if (put.status === 200) return;
    if (put.status !== 404) throw new Error(`PUT ${name} answered ${put.status}: ${JSON.stringify(put.body)}`);
    const post = await stack.api("/api/services", { method: "POST", body: { service_name: name, ...fields } });
    if (post.status === 201) return;
    if (post.status !== 409) throw new Error(`POST ${name} answered ${post.status}: ${JSON.stringify(post.body)}`);
  }
  throw new Error(`${name}: neither updated nor created`);
}

/** The catalogue of the screenshots, then pricing-service's newer version (its history shows an edit). */
export async function defineScreenshotServices(stack) {
  for (const [name, owner, description, version] of SCREENSHOT_DEFINITIONS) {
    await define(stack, name, { owner, description, version });
  }
  await define(stack, "pricing-service", { version: "1.9.0" });
}
