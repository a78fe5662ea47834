// The zod schemas of lib/api against the monitor's OpenAPI document
// (lib/api/openapi.json, kept equal to the code by the monitor's
// tests/openapi_snapshot.rs): same properties, same required ones, same
// enums. A field added, renamed or made optional on either side fails here.
import { z } from "zod";

import openapi from "@/lib/api/openapi.json";
import { contractSchemas } from "@/lib/api/schemas";

type Json = Record<string, unknown>;
const components = (openapi as { components: { schemas: Record<string, Json> } }).components.schemas;

/** Fields the UI reads ahead of the API's document, while a monitor change
 *  lands in parallel. Once the document has one, this test fails until it
 *  is removed from here. */
const AHEAD: Record<string, string[]> = {};

function objectShape(schema: Json): { props: string[]; required: string[] } | null {
  if (schema.type !== "object" || !schema.properties) return null;
  return {
    props: Object.keys(schema.properties as Json).sort(),
    required: ((schema.required as string[] | undefined) ?? []).slice().sort(),
  };
}

describe("zod schemas mirror the OpenAPI components", () => {
  for (const [name, schema] of Object.entries(contractSchemas)) {
    it(name, () => {
      const api = components[name];
      expect(api, `OpenAPI has no schema ${name}`).toBeDefined();
      const mine = z.toJSONSchema(schema as z.ZodType, { io: "input", unrepresentable: "any" }) as Json;
      if (Array.isArray(api!.enum)) {
        expect((mine.enum as string[]).slice().sort()).toEqual((api!.enum as string[]).slice().sort());
        return;
      }
      const theirs = objectShape(api!);
      const ours = objectShape(mine);
      expect(theirs, `${name} is an object in OpenAPI`).not.toBeNull();
      const ahead = AHEAD[name] ?? [];
      for (const field of ahead) expect(theirs!.props, `${name}.${field} is published now: drop it from AHEAD`).not.toContain(field);
      expect(ours!.props.filter((p) => !ahead.includes(p))).toEqual(theirs!.props);
      expect(ours!.required).toEqual(theirs!.required);
    });
  }

  it("covers every model the UI reads", () => {
    for (const name of ["ServiceInstance", "ServiceDefinition", "MetricsSnapshot", "LogRecord", "HistoryEntry", "LeadershipTimeline", "NatsPicture", "ServerState", "StreamState"]) {
      expect(Object.keys(contractSchemas)).toContain(name);
    }
  });
});

