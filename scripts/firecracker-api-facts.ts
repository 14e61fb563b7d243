// scripts/firecracker-api-facts.ts [SPEC] [OUT]: extracts from Firecracker's OpenAPI spec
// (firecracker-api.yaml, Swagger 2.0) the facts test/api-spec.test.ts needs, and writes them as JSON to
// test/fixtures/firecracker-api-facts.json. The facts are: every path and its methods, each operation's
// summary (it says "Pre-boot only" / "Post-boot only"), its parameters (where, name, schema) and its
// response schemas, and every definition's schema reduced to the keywords the test reads (type,
// properties, required, enum, items, additionalProperties, minimum, maximum, default, $ref). Descriptions
// and examples are dropped.
//
// The test uses the spec itself when ../shared/firecracker/firecracker-api.yaml exists beside the
// repository, and this committed fixture otherwise (a fresh clone has no ../shared). When the spec is
// present a test checks that extracting it again gives exactly the committed fixture, so a newer spec
// shows up as a failing test: re-run this script to refresh the fixture.

import { join } from "node:path";

export const SPEC_PATH = join(import.meta.dir, "../../shared/firecracker/firecracker-api.yaml");
export const FACTS_PATH = join(import.meta.dir, "../test/fixtures/firecracker-api-facts.json");

/** The JSON-Schema keywords the conformance test reads, in a fixed order. */
export interface Schema {
  $ref?: string;
  type?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  enum?: unknown[];
  items?: Schema;
  additionalProperties?: boolean | Schema;
  minimum?: number;
  maximum?: number;
  default?: unknown;
}
export interface Operation {
  summary?: string;
  parameters?: { in: string; name: string; schema?: Schema }[];
  responses: Record<string, { schema?: Schema }>;
}
export interface ApiFacts {
  paths: Record<string, Record<string, Operation>>;
  definitions: Record<string, Schema>;
}

type Raw = Record<string, unknown>;
const HTTP_METHODS = new Set(["get", "put", "patch", "post", "delete", "head", "options"]);

function schemaFacts(raw: unknown): Schema {
  const s = raw as Raw;
  const out: Schema = {};
  if (typeof s.$ref === "string") out.$ref = s.$ref;
  if (typeof s.type === "string") out.type = s.type;
  if (s.properties && typeof s.properties === "object") {
    out.properties = Object.fromEntries(Object.entries(s.properties as Raw).map(([k, v]) => [k, schemaFacts(v)]));
  }
  if (Array.isArray(s.required)) out.required = [...(s.required as string[])];
  if (Array.isArray(s.enum)) out.enum = [...s.enum];
  if (s.items && typeof s.items === "object") out.items = schemaFacts(s.items);
  if (typeof s.additionalProperties === "boolean") out.additionalProperties = s.additionalProperties;
  else if (s.additionalProperties && typeof s.additionalProperties === "object") out.additionalProperties = schemaFacts(s.additionalProperties);
  if (typeof s.minimum === "number") out.minimum = s.minimum;
  if (typeof s.maximum === "number") out.maximum = s.maximum;
  if (s.default !== undefined) out.default = s.default;
  return out;
}

function operationFacts(raw: Raw): Operation {
  const out: Operation = { responses: {} };
  if (typeof raw.summary === "string") out.summary = raw.summary;
  if (Array.isArray(raw.parameters)) {
    out.parameters = (raw.parameters as Raw[]).map((p) => ({
      in: String(p.in),
      name: String(p.name),
      ...(p.schema ? { schema: schemaFacts(p.schema) } : {}),
    }));
  }
  for (const [code, r] of Object.entries((raw.responses ?? {}) as Record<string, Raw>)) {
    out.responses[code] = r.schema ? { schema: schemaFacts(r.schema) } : {};
  }
  return out;
}

/** The facts of a parsed spec (the object Bun.YAML.parse returns for firecracker-api.yaml). */
export function extractApiFacts(spec: unknown): ApiFacts {
  const s = spec as { paths?: Record<string, Raw>; definitions?: Record<string, unknown> };
  const paths: ApiFacts["paths"] = {};
  for (const [path, methods] of Object.entries(s.paths ?? {})) {
    paths[path] = {};
    for (const [m, op] of Object.entries(methods)) if (HTTP_METHODS.has(m)) paths[path][m] = operationFacts(op as Raw);
  }
  const definitions = Object.fromEntries(Object.entries(s.definitions ?? {}).map(([k, v]) => [k, schemaFacts(v)]));
  return { paths, definitions };
}

/** The committed fixture's text for a spec's facts (stable: two-space JSON, trailing newline). */
export const factsText = (facts: ApiFacts): string => `${JSON.stringify(facts, null, 2)}\n`;

if (import.meta.main) {
  const [specPath = SPEC_PATH, outPath = FACTS_PATH] = process.argv.slice(2);
  const facts = extractApiFacts(Bun.YAML.parse(await Bun.file(specPath).text()));
  await Bun.write(outPath, factsText(facts));
  console.log(`${outPath}: ${Object.keys(facts.paths).length} paths, ${Object.keys(facts.definitions).length} definitions`);
}
