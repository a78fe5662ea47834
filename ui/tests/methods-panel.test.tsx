// The API tab of an instance: the methods of its service and, in a section
// of their own, the commands its workers take, each with its schema. The
// dashboard used to show neither, so an operator could not see which
// commands a service takes nor what their payloads look like.
import { screen, waitFor, within } from "@testing-library/react";

import { MethodsPanel } from "@/components/instance/methods-panel";
import { api, ApiError } from "@/lib/api/client";
import { renderUi } from "./render";

afterEach(() => vi.restoreAllMocks());

const described = {
  serviceName: "ledger",
  version: "1.0.0",
  instanceId: "ledger-1",
  methods: [
    {
      name: "balance",
      subject: "rpc.ledger.balance",
      description: "The balance of one account.",
      leaderOnly: false,
      requestSchema: { type: "object", properties: { account: { type: "string" } } },
      responseSchema: { type: "number" },
    },
  ],
  commands: [
    {
      name: "reconcile",
      subject: "commands.ledger.reconcile",
      description: "Reconciles one account's book with the exchange.",
      leaderOnly: true,
      payloadSchema: { type: "object", properties: { venue: { type: "string" } }, required: ["venue"] },
      instanceIds: ["ledger-1", "ledger-2"],
    },
  ],
};

describe("the API tab", () => {
  it.each([
    ["en", "Methods", "Commands", "Leader only", "Payload"],
    ["zh-CN", "方法", "命令", "仅主实例", "载荷"],
  ] as const)("shows the commands in their own section next to the methods (%s)", async (locale, methods, commands, leaderOnly, payload) => {
    const ask = vi.spyOn(api, "serviceMethods").mockResolvedValue(described);
    renderUi(<MethodsPanel serviceName="ledger" />, { locale });
    const commandSection = await screen.findByRole("region", { name: commands });
    const methodSection = screen.getByRole("region", { name: methods });
    expect(ask).toHaveBeenCalledWith("ledger");

    expect(within(methodSection).getByText("balance")).toBeInTheDocument();
    expect(within(methodSection).queryByText("reconcile")).toBeNull();

    expect(within(commandSection).getByText("reconcile")).toBeInTheDocument();
    expect(within(commandSection).getByText("commands.ledger.reconcile")).toBeInTheDocument();
    expect(within(commandSection).getByText("Reconciles one account's book with the exchange.")).toBeInTheDocument();
    expect(within(commandSection).getByText(leaderOnly)).toBeInTheDocument();
    expect(within(commandSection).queryByText("balance")).toBeNull();
    // The payload's schema, shown as a method's are.
    const schema = within(commandSection).getByLabelText(`${payload}: reconcile`);
    expect(schema).toHaveTextContent('"venue"');
    expect(schema).toHaveTextContent('"required"');
  });

  it("says when the service takes no commands", async () => {
    vi.spyOn(api, "serviceMethods").mockResolvedValue({ ...described, commands: [] });
    renderUi(<MethodsPanel serviceName="ledger" />);
    const section = await screen.findByRole("region", { name: "Commands" });
    expect(within(section).getByText(/No running instance lists a command/)).toBeInTheDocument();
  });

  it("says in the page's language that no instance answers", async () => {
    vi.spyOn(api, "serviceMethods").mockRejectedValue(new ApiError(404, "SERVICE_NOT_FOUND", "no running instance of ledger answers", {}));
    renderUi(<MethodsPanel serviceName="ledger" />, { locale: "zh-CN" });
    await waitFor(() => expect(screen.getByRole("alert")).toHaveTextContent("没有运行中的实例应答"));
  });
});
