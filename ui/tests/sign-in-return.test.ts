// The way back after signing in: a shared link (a filtered dashboard, an
// instance) opened without a session leads through the sign-in page and
// back to itself — and never to another site.
import { afterSignIn, ownPage, signInHref } from "@/lib/sign-in-return";

describe("signInHref()", () => {
  it("carries the page the user was on, with its query", () => {
    expect(signInHref(null, "/?status=UNHEALTHY&q=order")).toBe("/sign-in?next=%2F%3Fstatus%3DUNHEALTHY%26q%3Dorder");
    expect(signInHref("expired", "/services/order-1")).toBe("/sign-in?reason=expired&next=%2Fservices%2Forder-1");
  });

  it("needs no way back to the plain dashboard or after signing out", () => {
    expect(signInHref(null, "/")).toBe("/sign-in");
    expect(signInHref("signedOut", null)).toBe("/sign-in?reason=signedOut");
  });
});

describe("afterSignIn()", () => {
  it("returns to a page of this UI", () => {
    expect(afterSignIn("/?status=UNHEALTHY")).toBe("/?status=UNHEALTHY");
    expect(afterSignIn("/manage")).toBe("/manage");
    expect(afterSignIn(null)).toBe("/");
  });

  it("never leads to another site or back to the sign-in page", () => {
    for (const next of ["//evil.example/x", "/\\evil.example", "https://evil.example/", "javascript:alert(1)", "manage", "/sign-in?next=/"]) {
      expect(ownPage(next), next).toBeNull();
      expect(afterSignIn(next), next).toBe("/");
    }
  });
});
