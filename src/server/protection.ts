import { EnvelopArmorPlugin } from '@escape.tech/graphql-armor';
import { costLimitRule } from '@escape.tech/graphql-armor-cost-limit';
import { useCSRFPrevention } from '@graphql-yoga/plugin-csrf-prevention';
import { useContentEncoding } from '@whatwg-node/server';
import {
  GraphQLError,
  Kind,
  NoSchemaIntrospectionCustomRule,
  validate,
  visit,
  type DocumentNode,
  type GraphQLSchema,
  type ValidationContext,
} from 'graphql';
import { maskError, type CORSOptions, type Plugin, type YogaServerOptions } from 'graphql-yoga';
import type { GraphQLContext } from '../context.ts';
import { isConnectionError, isSessionTimeout } from '../db/errors.ts';
import { LEDGER_PAGE_DEFAULT, LEDGER_PAGE_MAX } from '../ledger/limits.ts';
import { serviceUnavailable, useDatabaseHealthGate, type DatabaseHealth } from './database-health.ts';
import { useMutationRateLimit, type MutationRateLimit } from './rate-limit.ts';

// Limits on what one request may ask for. The deepest operation a client needs (a mutation
// returning the balance with its accounts and lots) has depth 5 and cost about 175; the costliest
// is a ledger page of 100 (cost 5,075, as `first` multiplies). GraphiQL's introspection query has
// under 200 tokens; armor leaves `__schema` out of depth and cost, the token limit still bounds it.
export const REQUEST_BODY_BYTES_MAX = 100_000;
export const QUERY_DEPTH_MAX = 10;
export const QUERY_ALIASES_MAX = 15;
export const QUERY_TOKENS_MAX = 1_000;
export const QUERY_DIRECTIVES_MAX = 10;
export const QUERY_COST_MAX = 20_000;

export interface ProtectionOptions {
  /** Answer `__schema` and `__type` (GraphiQL needs them). */
  introspection: boolean;
  /** "Did you mean …" hints in validation errors, which reveal the schema. */
  fieldSuggestions: boolean;
  /** Per-token limit on mutations; null means none. */
  mutationRateLimit: MutationRateLimit | null;
  /** Services' and admins' limit (see MutationRateLimits); null: they share the member limit. */
  serviceMutationRateLimit?: MutationRateLimit | null;
  /** All members of one organization together; null means none. */
  organizationRateLimit?: MutationRateLimit | null;
  /** While it says the database is down, operations are refused at once. */
  databaseHealth?: DatabaseHealth;
}

/** createYoga options that bound the request itself, before any GraphQL parsing. */
export const requestLimits = {
  // Larger bodies get 413 (checked on Content-Length and again while streaming a chunked body).
  maxRequestBodySize: REQUEST_BODY_BYTES_MAX,
  // An array of operations in one body is refused with 400; clients send one operation per request.
  batching: false,
  // No file uploads in this API, so no multipart parser to attack.
  multipart: false,
} satisfies Partial<YogaServerOptions<Record<string, unknown>, GraphQLContext>>;

// Armor's rules throw by default, which ends validation at the first rule; reporting to the
// validation context instead makes each limit an ordinary validation error (HTTP 400,
// GRAPHQL_VALIDATION_FAILED) next to any other.
const report = {
  propagateOnRejection: false,
  onReject: [(context: ValidationContext | null, error: GraphQLError) => context?.reportError(error)],
};

export function protectionPlugins(options: ProtectionOptions): Plugin<GraphQLContext>[] {
  const plugins: Plugin<GraphQLContext>[] = [
    EnvelopArmorPlugin({
      maxDepth: { n: QUERY_DEPTH_MAX, flattenFragments: true, ...report },
      maxAliases: { n: QUERY_ALIASES_MAX, ...report },
      // The token limit runs inside the parser, which has no validation context: it throws a
      // syntax error (HTTP 400, GRAPHQL_PARSE_FAILED) before the document is built.
      maxTokens: { n: QUERY_TOKENS_MAX },
      maxDirectives: { n: QUERY_DIRECTIVES_MAX, ...report },
      costLimit: { maxCost: QUERY_COST_MAX, ...report },
      blockFieldSuggestion: { enabled: !options.fieldSuggestions },
    }) as Plugin<GraphQLContext>,
    useVariablePageCostLimit(),
    // A browser sends a form, or a GET, or a text/plain body, to any site without asking first;
    // such a request must carry the X-GraphQL-Yoga-CSRF header, which no page can add without
    // the CORS preflight that the allow-list answers. JSON bodies are always preflighted.
    useCSRFPrevention({ requestHeaders: [CSRF_HEADER] }) as Plugin<GraphQLContext>,
    useLargeResponseCompression(),
  ];
  if (!options.fieldSuggestions) {
    // Armor's own filter misses some wordings ("Did you mean the enum value …"); this one
    // removes every suggestion from validation errors. Later stages go through errorMasker.
    plugins.push({
      onValidate: () =>
        ({ valid, result, setResult }) => {
          if (!valid) setResult(result.map((error) => withoutSuggestions(error)));
        },
    });
  }
  if (!options.introspection) {
    plugins.push({
      onValidate({ addValidationRule }) {
        addValidationRule(NoSchemaIntrospectionCustomRule);
      },
    });
  }
  if (options.databaseHealth) plugins.push(useDatabaseHealthGate(options.databaseHealth));
  if (options.mutationRateLimit || options.serviceMutationRateLimit || options.organizationRateLimit) {
    plugins.push(
      useMutationRateLimit({
        member: options.mutationRateLimit,
        service: options.serviceMutationRateLimit ?? null,
        organization: options.organizationRateLimit ?? null,
      }),
    );
  }
  return plugins;
}

export const CSRF_HEADER = 'x-graphql-yoga-csrf';

// Armor counts `first: 100` as a hundred times its selection, but `first: $n` as once: it never
// sees variables. The same rule runs again once the variables are known, with each variable
// page size written into the document as the literal it stands for.
const variableCostRule = costLimitRule({ maxCost: QUERY_COST_MAX, ...report });
const PAGE_SIZE_ARGUMENTS = new Set(['first', 'last']);
const pageSizeVariables = new WeakMap<DocumentNode, boolean>();

function hasVariablePageSize(document: DocumentNode): boolean {
  let found = pageSizeVariables.get(document);
  if (found === undefined) {
    found = false;
    visit(document, {
      Argument(node) {
        if (PAGE_SIZE_ARGUMENTS.has(node.name.value) && node.value.kind === Kind.VARIABLE) found = true;
      },
    });
    pageSizeVariables.set(document, found);
  }
  return found;
}

/**
 * `document` with every page-size variable replaced by the page it asks for: its value (or its
 * declared default, or the API's default page when it has neither), at most the largest page the
 * API serves. A larger value is refused by the resolver as BAD_USER_INPUT naming the field
 * before any work, so it costs no more than the largest page.
 */
function withPageSizesInlined(document: DocumentNode, variables: Readonly<Record<string, unknown>> | null | undefined): DocumentNode {
  const defaults = new Map<string, unknown>();
  for (const definition of document.definitions) {
    if (definition.kind !== Kind.OPERATION_DEFINITION) continue;
    for (const variable of definition.variableDefinitions ?? []) {
      if (variable.defaultValue?.kind === Kind.INT) defaults.set(variable.variable.name.value, Number(variable.defaultValue.value));
    }
  }
  return visit(document, {
    Argument(node) {
      if (!PAGE_SIZE_ARGUMENTS.has(node.name.value) || node.value.kind !== Kind.VARIABLE) return undefined;
      const name = node.value.name.value;
      const given = variables && name in variables ? variables[name] : defaults.get(name);
      const value = given === undefined || given === null ? LEDGER_PAGE_DEFAULT : given;
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) return undefined;
      return { ...node, value: { kind: Kind.INT, value: String(Math.min(value, LEDGER_PAGE_MAX)) } };
    },
  });
}

function variablePageCostErrors(schema: GraphQLSchema, document: DocumentNode, variables: Readonly<Record<string, unknown>> | null | undefined) {
  if (!hasVariablePageSize(document)) return [];
  return validate(schema, withPageSizesInlined(document, variables), [variableCostRule]).map(
    (error) => new GraphQLError(error.message, { extensions: { code: 'GRAPHQL_VALIDATION_FAILED', http: { status: 400 } } }),
  );
}

/** The cost limit again, with page sizes passed as variables counted at their value. */
export function useVariablePageCostLimit(): Plugin<GraphQLContext> {
  return {
    onExecute({ args, setResultAndStopExecution }) {
      const errors = variablePageCostErrors(args.schema, args.document, args.variableValues);
      if (errors.length > 0) setResultAndStopExecution({ errors });
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      const errors = variablePageCostErrors(args.schema, args.document, args.variableValues);
      if (errors.length > 0) setResultAndStopExecution({ errors });
    },
  };
}

// Compressing a few hundred bytes costs more than it saves; the responses worth it are ledger
// pages, introspection and the GraphiQL page.
const COMPRESSION_THRESHOLD_BYTES = 1024;

/**
 * gzip or deflate (as the client accepts) for responses of known length from 1 KB up, through
 * @whatwg-node/server's content encoding. Event streams are never compressed (compression would
 * hold events back until a block fills), nor are compressed request bodies accepted (a small
 * body could inflate far beyond the body limit).
 */
export function useLargeResponseCompression(): Plugin<GraphQLContext> {
  const encoding = useContentEncoding<Record<string, unknown>>();
  return {
    onResponse(payload) {
      const length = Number(payload.response.headers.get('content-length') ?? NaN);
      if (!(length >= COMPRESSION_THRESHOLD_BYTES)) return undefined;
      if (payload.response.headers.get('content-encoding')) return undefined;
      if ((payload.response.headers.get('content-type') ?? '').startsWith('text/event-stream')) return undefined;
      return encoding.onResponse?.(payload as Parameters<NonNullable<typeof encoding.onResponse>>[0]);
    },
  };
}

/**
 * CORS for the allowed origins: each is answered with itself, never with `*` echoed for
 * credentials and never for the `null` origin (sandboxed frames and local files). No cookies
 * are used (tokens travel in the Authorization header), so credentials are never allowed.
 * `'*'` allows any origin; it is the development default. Other origins get no CORS headers,
 * so browsers keep their pages from reading the answers.
 */
export function corsPolicy(allowed: readonly string[] | '*'): (request: Request) => CORSOptions {
  return (request) => {
    const origin = request.headers.get('origin');
    if (!origin || origin === 'null') return false;
    if (allowed !== '*' && !allowed.includes(origin)) return false;
    return {
      origin: [origin],
      credentials: false,
      methods: ['GET', 'POST'],
      allowedHeaders: ['authorization', 'content-type', 'accept', CSRF_HEADER],
      exposedHeaders: ['retry-after'],
      maxAge: 600,
    };
  };
}

// graphql-js appends these to validation and coercion messages ("Did you mean "resolution"?",
// "Did you mean the enum value "HD_720P" or "UHD_4K"?"); names are GraphQL names, so the
// suggestion ends at the first question mark.
const SUGGESTION = /\s*Did you mean [^?]*\?/g;

/** The error with its "Did you mean …" suggestions removed (in place, like armor does). */
export function withoutSuggestions<E extends Error>(error: E): E {
  if (error.message.includes('Did you mean')) error.message = error.message.replace(SUGGESTION, '').trim();
  return error;
}

/**
 * yoga's error masking, except that an unreachable database is reported as what it is: a
 * SERVICE_UNAVAILABLE error (HTTP 503) the caller may retry, instead of "Unexpected error.".
 * Neither form carries the original message or stack. `health` hears of every such failure.
 */
export function errorMasker(health?: DatabaseHealth, options: { hideSuggestions?: boolean } = {}) {
  const mask = maskerOf(health);
  if (!options.hideSuggestions) return mask;
  // Whatever stage produced it (validation, variable coercion, execution), no message suggests
  // a name of the schema.
  return (error: unknown, message: string, isDev?: boolean): Error => withoutSuggestions(mask(error, message, isDev));
}

function maskerOf(health?: DatabaseHealth) {
  return (error: unknown, message: string, isDev?: boolean): Error => {
    if (error instanceof GraphQLError && !error.originalError) return withoutInternals(error, isDev);
    // A session timeout is no outage: the database answered, but this request waited too long
    // for a lock or ran too long. Its transaction rolled back whole, so a retry is safe.
    if (isSessionTimeout(error)) {
      return serviceUnavailable(error instanceof GraphQLError ? error : undefined, 'The request timed out in the database and wrote nothing; retry it.');
    }
    if (!isConnectionError(error)) return maskError(error, message, isDev);
    health?.reportConnectionError(error);
    return serviceUnavailable(error instanceof GraphQLError ? error : undefined);
  };
}

/**
 * yoga puts the JSON parser's own message (which quotes the body back) into
 * `extensions.originalError` of "POST body sent invalid JSON."; it is kept only when debugging.
 * The error is changed in place: returning a new one would make yoga log every malformed body
 * as a server error.
 */
function withoutInternals(error: GraphQLError, isDev?: boolean): GraphQLError {
  if (!isDev && error.extensions && 'originalError' in error.extensions) {
    Reflect.deleteProperty(error.extensions, 'originalError');
  }
  return error;
}
