import { z } from 'zod';
import { COMPONENTS, PATH_PARAMS, ROUTES, sharedErrors, type Content, type RouteSpec } from './api-spec.ts';
import { statusOf, type ErrorCode } from './errors.ts';

type Json = Record<string, unknown>;
const REF = (name: string) => `#/components/schemas/${name}`;

/** `/v1/boxes/:name` -> `/v1/boxes/{name}`. */
export function openApiPath(expressPath: string): string {
  return expressPath.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

/** `post /v1/boxes/:name/exec` -> `postBoxesNameExec`. */
function operationId(route: RouteSpec): string {
  const words = route.path.split(/[^A-Za-z0-9]+/).filter((w) => w && w !== 'v1');
  return route.method + (words.length ? words : ['root']).map((w) => w[0]!.toUpperCase() + w.slice(1)).join('');
}

/**
 * The OpenAPI 3.1 document of `routes`, generated from the zod schemas that validate requests and
 * describe answers. Request schemas are rendered as inputs (a field with a default is optional),
 * answers as outputs. Pure: the same routes give the same document.
 */
export function openApiDocument(routes: RouteSpec[] = ROUTES, opts: { serverUrl?: string; version?: string } = {}): Json {
  // Every schema becomes a named component: a registry per side, so zod emits $refs between them.
  const input = z.registry<{ id: string }>();
  const output = z.registry<{ id: string }>();
  const names = new Map<z.ZodType, string>(Object.entries(COMPONENTS).map(([n, s]) => [s, n]));
  const taken = new Set(names.values());
  const nameOf = (schema: z.ZodType, fallback: string, reg: typeof input): string => {
    let name = names.get(schema);
    if (!name) {
      name = fallback;
      for (let i = 2; taken.has(name); i++) name = `${fallback}${i}`;
      names.set(schema, name);
      taken.add(name);
    }
    if (!reg.has(schema)) reg.add(schema, { id: name });
    return name;
  };
  const content = (c: Content, base: string, reg: typeof input): Json => {
    const byType = c instanceof z.ZodType ? { 'application/json': c } : c;
    return Object.fromEntries(
      Object.entries(byType).map(([type, s], i) => [
        type,
        {
          schema:
            s === 'binary' ? { type: 'string', contentMediaType: 'application/octet-stream' } : s === 'text' ? { type: 'string' } : { $ref: REF(nameOf(s, i ? `${base}${i + 1}` : base, reg)) },
        },
      ]),
    );
  };

  const paths: Record<string, Record<string, Json>> = {};
  const ids = new Set<string>();
  for (const route of routes) {
    const id = operationId(route);
    if (ids.has(id)) throw new Error(`two routes named ${id}: ${route.method} ${route.path}`);
    ids.add(id);
    const Id = id[0]!.toUpperCase() + id.slice(1);
    const op: Json = { operationId: id, summary: route.summary };
    if (route.description) op.description = route.description;
    if (route.public) op.security = [];
    const params: Json[] = [...route.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => {
      const schema = PATH_PARAMS[m[1]!];
      return { name: m[1], in: 'path', required: true, schema: schema ? z.toJSONSchema(schema, { target: 'draft-2020-12', io: 'input' }) : { type: 'string' } };
    });
    for (const [name, q] of Object.entries(route.query ?? {})) {
      params.push({ name, in: 'query', required: q.required === true, description: q.description, schema: z.toJSONSchema(q.schema, { target: 'draft-2020-12', io: 'input' }) });
    }
    for (const p of params) delete ((p.schema ?? {}) as Json).$schema;
    if (params.length) op.parameters = params;
    if (route.body) op.requestBody = { required: true, content: content(route.body, `${Id}Body`, input) };

    const responses: Record<string, Json> = {};
    for (const [status, c] of Object.entries(route.ok)) {
      responses[status] = { description: status === '204' ? 'done, no body' : 'success', ...(c ? { content: content(c, `${Id}${status}`, output) } : {}) };
    }
    const byStatus = new Map<number, ErrorCode[]>();
    for (const code of new Set([...route.errors, ...sharedErrors(route)])) byStatus.set(statusOf(code), [...(byStatus.get(statusOf(code)) ?? []), code]);
    for (const [status, codes] of [...byStatus].sort((a, b) => a[0] - b[0])) {
      const okThere = responses[String(status)] as { description: string; content?: Record<string, { schema: Json }> } | undefined;
      const okJson = okThere?.content?.['application/json']?.schema;
      // A status that is both an answer (readyz's 503) and an error code's: either body.
      responses[String(status)] = {
        description: okThere ? `${okThere.description}; or an error: ${codes.join(', ')}` : codes.join(', '),
        content: { ...okThere?.content, 'application/json': { schema: okJson ? { anyOf: [okJson, errorSchema(codes)] } : errorSchema(codes) } },
      };
    }
    op.responses = responses;
    (paths[openApiPath(route.path)] ??= {})[route.method] = op;
  }
  for (const [name, schema] of Object.entries(COMPONENTS)) if (!input.has(schema) && !output.has(schema)) output.add(schema, { id: name });

  const schemas: Record<string, Json> = {};
  for (const [reg, io] of [[input, 'input'], [output, 'output']] as const) {
    const out = z.toJSONSchema(reg, { target: 'draft-2020-12', io, unrepresentable: 'any', uri: REF }) as { schemas: Record<string, Json> };
    for (const [name, s] of Object.entries(out.schemas)) {
      delete s.$schema;
      delete s.$id;
      schemas[name] = s;
    }
  }

  return {
    openapi: '3.1.0',
    info: {
      title: 'boxd API',
      version: opts.version ?? '0.1.0',
      description: 'Boxes you exec in, suspend, fork and preview. Errors are {"error":{"code","message"}}; each answer lists its codes.',
    },
    ...(opts.serverUrl ? { servers: [{ url: opts.serverUrl }] } : {}),
    security: [{ bearer: [] }],
    paths,
    components: { schemas, securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'an API key' } } },
  };
}

function errorSchema(codes: ErrorCode[]): Json {
  return {
    type: 'object',
    required: ['error'],
    additionalProperties: false,
    properties: {
      error: {
        type: 'object',
        required: ['code', 'message'],
        additionalProperties: false,
        properties: { code: { type: 'string', enum: codes }, message: { type: 'string' } },
      },
    },
  };
}
