import SchemaBuilder from '@pothos/core';
import ErrorsPlugin from '@pothos/plugin-errors';
import RelayPlugin from '@pothos/plugin-relay';
import ScopeAuthPlugin from '@pothos/plugin-scope-auth';
import { GraphQLError, Kind } from 'graphql';
import type { GraphQLContext } from '../context.ts';
import type { Role, Scope } from '../auth/tokens.ts';
import { accessScopes, refusal } from './authorization.ts';
import { noteResolvedError } from './resolved-errors.ts';

export const builder = new SchemaBuilder<{
  Context: GraphQLContext;
  DefaultFieldNullability: false;
  // Every root field admits some roles and some token scopes:
  // `allow({ roles: ['service', 'admin'], scopes: ['generation'] })` (see authorization.ts).
  AuthScopes: { role: readonly Role[]; scopedRole: readonly Role[]; scope: readonly Scope[] };
  Scalars: {
    DateTime: { Input: Date; Output: Date };
  };
}>({
  // Scope auth comes first, so it wraps the other plugins and refuses a caller before anything of
  // the field runs; its refusals are GraphQL errors, which the errors plugin passes through.
  plugins: [ScopeAuthPlugin, ErrorsPlugin, RelayPlugin],
  defaultFieldNullability: false,
  scopeAuth: {
    authScopes: accessScopes,
    // A subscription is refused when it starts, not at its first event.
    authorizeOnSubscribe: true,
    unauthorizedError: (_parent, ctx, info, result) => refusal(ctx, info, result.failure),
  },
  relay: {
    // No object is fetched by a global id: the root `node` and `nodes` fields are not offered.
    nodeQueryOptions: false,
    nodesQueryOptions: false,
  },
  errors: {
    directResult: true,
    // Typed errors are answers, not failures; logs and metrics still want to know which.
    onResolvedError: noteResolvedError,
    // `reserveCredits` returns `ReserveCreditsResult`, a union of `ReserveCreditsSuccess` and its errors.
    defaultUnionOptions: {
      name: ({ fieldName }) => `${fieldName.charAt(0).toUpperCase()}${fieldName.slice(1)}Result`,
    },
  },
});

builder.scalarType('DateTime', {
  description: 'An instant, as an ISO 8601 string with a time zone (output is always UTC).',
  serialize: (value) => value.toISOString(),
  parseValue: (value) => parseDateTime(value),
  parseLiteral: (ast) => {
    if (ast.kind !== Kind.STRING) throw new GraphQLError('DateTime must be an ISO 8601 string.');
    return parseDateTime(ast.value);
  },
});

const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;

function parseDateTime(value: unknown): Date {
  if (typeof value !== 'string' || !ISO_DATE_TIME.test(value)) {
    throw new GraphQLError('DateTime must be an ISO 8601 string with a time zone, such as 2026-01-31T00:00:00Z.');
  }
  const date = new Date(value);
  // Date rolls impossible calendar days over (2026-02-30 becomes 2 March) and takes 24:00 as the
  // next day; such input is refused rather than silently moved.
  const [year, month, day, hour] = value.slice(0, 13).split(/[-T]/).map(Number) as [number, number, number, number];
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (Number.isNaN(date.getTime()) || month < 1 || month > 12 || day < 1 || day > daysInMonth || hour > 23) {
    throw new GraphQLError('DateTime is not a valid instant.');
  }
  return date;
}

builder.queryType({});
builder.mutationType({});
