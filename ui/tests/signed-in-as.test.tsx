// The top bar's "Signed in as": the name and the role, each said once.
import { screen } from "@testing-library/react";

import { SignedInAs } from "@/components/shell/signed-in-as";
import { renderUi } from "./render";

describe("SignedInAs", () => {
  it("names a token and its role", () => {
    renderUi(<SignedInAs session={{ name: "ops-alice", role: "admin" }} />);
    expect(screen.getByTestId("signed-in-as")).toHaveTextContent(/^Signed in as ops-alice \(admin\)$/);
  });

  it("says a token named after its role once", () => {
    renderUi(<SignedInAs session={{ name: "viewer", role: "viewer" }} />);
    expect(screen.getByTestId("signed-in-as")).toHaveTextContent(/^Signed in as viewer$/);
  });

  it("says it once in Chinese too, with the role's word", () => {
    renderUi(<SignedInAs session={{ name: "Admin", role: "admin" }} />, { locale: "zh-CN" });
    expect(screen.getByTestId("signed-in-as")).toHaveTextContent(/^已登录（管理员）$/);
  });
});
