// The API client's instance list: the last body is held with its ETag and
// sent back as If-None-Match, so an unchanged fleet is re-read as a 304.
import { api } from "@/lib/api/client";
import { instance } from "./render";

describe("api.instances", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("sends the held tag and keeps the held list on 304", async () => {
    const list = [instance({ instanceId: "a" })];
    const fetchMock = vi
      .fn()
      .mockResolvedValueOnce(new Response(JSON.stringify(list), { status: 200, headers: { ETag: '"n-1"' } }))
      .mockResolvedValueOnce(new Response(null, { status: 304, headers: { ETag: '"n-1"' } }))
      .mockResolvedValueOnce(new Response(JSON.stringify([]), { status: 200, headers: { ETag: '"n-2"' } }));
    vi.stubGlobal("fetch", fetchMock);
    const first = await api.instances();
    expect(first.map((i) => i.instanceId)).toEqual(["a"]);
    const headersOf = (call: number) => (fetchMock.mock.calls[call]![1] as RequestInit).headers as Record<string, string>;
    const again = await api.instances();
    expect(headersOf(1)["If-None-Match"]).toBe('"n-1"');
    expect(again).toEqual(first);
    const changed = await api.instances();
    expect(headersOf(2)["If-None-Match"]).toBe('"n-1"');
    expect(changed).toEqual([]);
  });
});
