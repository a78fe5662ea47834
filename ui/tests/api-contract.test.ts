// The zod schemas of lib/api against the monitor's OpenAPI document
// (lib/api/openapi.json, kept equal to the code by the monitor's
// tests/openapi_snapshot.rs): same properties, same required ones, same
// enums. A field added, renamed or made optional on either side fails here.
import { z } from "zod";

import openapi from "@/lib/api/openapi.json";
import { JETSTREAM_STATES, aheadRouteSchemas, contractSchemas } from "@/lib/api/schemas";

type Json = Record<string, unknown>;
const components = (openapi as { components: { schemas: Record<string, Json> } }).components.schemas;
const paths = (openapi as unknown as { paths: Record<string, Record<string, Json>> }).paths;

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
    for (const name of ["ServiceInstance", "ServiceDefinition", "MetricsSnapshot", "LogRecord", "HistoryEntry", "LeadershipTimeline"]) {
      expect(Object.keys(contractSchemas)).toContain(name);
    }
  });
});

/** A `$ref` resolved; `null` taken out of a nullable (it is `required` that says optional). */
function resolve(schema: Json): Json {
  if (typeof schema.$ref === "string") return resolve(components[schema.$ref.replace("#/components/schemas/", "")]!);
  for (const key of ["oneOf", "anyOf"] as const) {
    const alts = (schema[key] as Json[] | undefined)?.filter((s) => s.type !== "null");
    if (alts?.length === 1) return resolve(alts[0]!);
  }
  if (Array.isArray(schema.type)) {
    const types = (schema.type as string[]).filter((t) => t !== "null");
    if (types.length === 1) return { ...schema, type: types[0] };
  }
  return schema;
}

/** Properties and required ones, all the way down, in one comparable tree. */
function shape(schema: Json): unknown {
  const s = resolve(schema);
  if (s.type === "array") return { items: shape(s.items as Json) };
  if (s.type === "object" && s.properties) {
    const props = s.properties as Record<string, Json>;
    return {
      required: ((s.required as string[] | undefined) ?? []).slice().sort(),
      props: Object.fromEntries(Object.keys(props).sort().map((k) => [k, shape(props[k]!)])),
    };
  }
  // Leaves: the type alone (the UI reads enums as any string, see below).
  return s.type ?? "any";
}

describe("answers the UI reads ahead of the OpenAPI document", () => {
  for (const [path, schema] of Object.entries(aheadRouteSchemas)) {
    // Until the monitor publishes the route there is nothing to compare
    // with; from then on its answer must be what the UI reads.
    it(`GET ${path}, once the document has it`, () => {
      const op = paths[path]?.get as { responses?: Record<string, { content?: Record<string, { schema: Json }> }> } | undefined;
      if (!op) return;
      const published = op.responses?.["200"]?.content?.["application/json"]?.schema;
      expect(published, `GET ${path} has a JSON 200 answer`).toBeDefined();
      const mine = z.toJSONSchema(schema as z.ZodType, { io: "input", unrepresentable: "any" }) as Json;
      expect(shape(mine)).toEqual(shape(published!));
    });
  }

  it("names the JetStream states the document names", () => {
    const op = paths["/api/nats"]?.get as { responses?: Record<string, { content?: Record<string, { schema: Json }> }> } | undefined;
    const published = op?.responses?.["200"]?.content?.["application/json"]?.schema;
    if (!published) return;
    const jetstream = resolve((resolve(published).properties as Record<string, Json>).jetstream!);
    if (Array.isArray(jetstream.enum)) expect([...JETSTREAM_STATES].sort()).toEqual((jetstream.enum as string[]).slice().sort());
  });
});
