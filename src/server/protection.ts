import { EnvelopArmorPlugin } from '@escape.tech/graphql-armor';
import { useCSRFPrevention } from '@graphql-yoga/plugin-csrf-prevention';
import { GraphQLError, NoSchemaIntrospectionCustomRule, type ValidationContext } from 'graphql';
import { maskError, type Plugin, type YogaServerOptions } from 'graphql-yoga';
import type { GraphQLContext } from '../context.ts';
import { isConnectionError, isSessionTimeout } from '../db/errors.ts';
import { useBoundedErrorEchoes } from './bounded-echoes.ts';
import { CSRF_HEADER, useLargeResponseCompression } from './browsers.ts';
import { serviceUnavailable, useDatabaseHealthGate, type DatabaseHealth } from './database-health.ts';
import { useVariablePageCostLimit } from './page-cost.ts';
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

/** Headers whose presence proves a browser sent the request only after a CORS preflight. */
export const PREFLIGHT_HEADERS = [CSRF_HEADER, 'authorization'];

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
    useVariablePageCostLimit({ maxCost: QUERY_COST_MAX, ...report }),
    // A browser sends a form, or a GET, or a text/plain body, to any site without asking first;
    // such a request must carry a header no page can add without the CORS preflight that the
    // allow-list answers: X-GraphQL-Yoga-CSRF, or Authorization (a bearer token, as every real
    // client sends; this service uses no cookies, so nothing else could vouch for a request).
    // JSON bodies are always preflighted.
    useCSRFPrevention({ requestHeaders: PREFLIGHT_HEADERS }) as Plugin<GraphQLContext>,
    useLargeResponseCompression(),
  ];
  if (!options.fieldSuggestions) {
    // Armor's own filter misses some wordings ("Did you mean the enum value …"); this one
    // removes every suggestion from validation errors. Later stages go through errorMasker.
    plugins.push({
      onValidate:
        () =>
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
  // Holds graphql-js's echoes of input to the ledger's bound (src/server/bounded-echoes.ts).
  plugins.push(useBoundedErrorEchoes<GraphQLContext>());
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
      return serviceUnavailable(
        error instanceof GraphQLError ? error : undefined,
        'The request timed out in the database and wrote nothing; retry it.',
      );
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
 *
 * That parser error is also how yoga tells a body it could not parse from an ordinary GraphQL
 * error when the client accepts `application/json` (where GraphQL errors are answered 200). With
 * it gone, the error's `http.spec` mark is dropped too, so its status 400 holds for every client,
 * as the GraphQL-over-HTTP specification asks of a body that is not JSON.
 */
function withoutInternals(error: GraphQLError, isDev?: boolean): GraphQLError {
  if (!isDev && error.extensions && 'originalError' in error.extensions) {
    Reflect.deleteProperty(error.extensions, 'originalError');
    const http = error.extensions.http as { spec?: boolean } | undefined;
    if (http) Reflect.deleteProperty(http, 'spec');
  }
  return error;
}
