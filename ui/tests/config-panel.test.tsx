// The Configuration tab of an instance that cannot answer, from the
// trial: on risk-1, shown "disconnected from NATS: the process is gone",
// the tab still asked it, waited 2 s for a 504 and showed the API's raw
// English message — in zh-CN too.
import { screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { ConfigPanel } from "@/components/instance/config-panel";
import { api, ApiError } from "@/lib/api/client";
import { renderUi } from "./render";

afterEach(() => vi.restoreAllMocks());

const timeout = () =>
  new ApiError(504, "GATEWAY_TIMEOUT", 'instance "risk-1" of "risk-service" did not answer within 2000 ms', {
    service: "risk-service",
    instanceId: "risk-1",
    reason: "timeout",
    timeoutMs: 2000,
  });

describe("the Configuration tab", () => {
  it.each([
    ["en", "disconnected", "Not asked: the process is gone (disconnected from NATS). Ask again once it is back."],
    ["zh-CN", "disconnected", "未询问：该进程已不存在（与 NATS 断开连接）。待其恢复后再询问。"],
    ["en", "unresponsive", "Not asked: the instance has stopped beating and would not answer. Ask again once it is back."],
  ] as const)("does not ask an instance shown down, and says why at once (%s, %s)", async (locale, down, text) => {
    const ask = vi.spyOn(api, "instanceConfig").mockRejectedValue(timeout());
    renderUi(<ConfigPanel serviceName="risk-service" instanceId="risk-1" down={down} />, { locale });
    expect(screen.getByTestId("config-not-asked")).toHaveTextContent(text);
    expect(screen.queryByRole("alert")).toBeNull();
    expect(ask).not.toHaveBeenCalled();
    // Asked anyway, on request.
    await userEvent.click(screen.getByRole("button", { name: locale === "en" ? "Ask again" : "重新请求" }));
    expect(ask).toHaveBeenCalledTimes(1);
  });

  it.each([
    ["en", "The instance did not answer within 2000 ms."],
    ["zh-CN", "实例在 2000 毫秒内没有应答。"],
  ] as const)("says an instance that did not answer in the page's language (%s)", async (locale, text) => {
    vi.spyOn(api, "instanceConfig").mockRejectedValue(timeout());
    renderUi(<ConfigPanel serviceName="risk-service" instanceId="risk-1" />, { locale });
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent(text);
    expect(alert).not.toHaveTextContent("did not answer within 2000 ms\"");
    expect(alert).not.toHaveTextContent('instance "risk-1"');
  });

  it("asks a live instance at once", async () => {
    const ask = vi.spyOn(api, "instanceConfig").mockResolvedValue({ serviceName: "risk-service", instanceId: "risk-1", config: { a: 1 } });
    renderUi(<ConfigPanel serviceName="risk-service" instanceId="risk-1" down={null} />);
    await waitFor(() => expect(screen.getByTestId("config-json")).toHaveTextContent('"a": 1'));
    expect(ask).toHaveBeenCalledTimes(1);
  });
});
