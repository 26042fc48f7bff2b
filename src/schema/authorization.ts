import { GraphQLError } from 'graphql';
import type { Role, Viewer } from '../auth/tokens.ts';
import type { GraphQLContext } from '../context.ts';
import { InvalidInputError } from '../ledger/errors.ts';
import { isUuid } from '../ledger/validation.ts';

const RANK: Record<Role, number> = { member: 1, service: 2, admin: 3 };

export function unauthenticated(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'UNAUTHENTICATED' } });
}

export function forbidden(): GraphQLError {
  return new GraphQLError('You are not allowed to do this.', { extensions: { code: 'FORBIDDEN' } });
}

export function requireViewer(ctx: GraphQLContext): Viewer {
  if (!ctx.viewer) throw unauthenticated(ctx.authFailure ?? 'Authentication required.');
  return ctx.viewer;
}

/** The caller, if its role is at least `minimum`. */
export function authorize(ctx: GraphQLContext, minimum: Role): Viewer {
  const viewer = requireViewer(ctx);
  if (RANK[viewer.role] < RANK[minimum]) throw forbidden();
  return viewer;
}

/**
 * The caller, if it may act for `organizationId` with at least the `minimum` role. Members and
 * services act only for the organization in their token; a malformed id is bad input first, so
 * the answer never depends on whether some other organization exists.
 */
export function authorizeOrganization(ctx: GraphQLContext, organizationId: string, minimum: Role): Viewer {
  const viewer = authorize(ctx, minimum);
  if (!isUuid(organizationId)) throw new InvalidInputError('organizationId is not a valid id.', 'organizationId');
  if (viewer.organizationId !== null && viewer.organizationId !== organizationId.toLowerCase()) throw forbidden();
  return viewer;
}

/** The organization a caller's reads and writes are confined to; null means any (admin). */
export function organizationScope(viewer: Viewer): string | null {
  return viewer.organizationId;
}

/**
 * Queries have no result union, so their bad input is a GraphQL error with code
 * BAD_USER_INPUT naming the field; every other error passes through unchanged.
 */
export async function asQueryInput<T>(work: () => Promise<T> | T): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof InvalidInputError) {
      throw new GraphQLError(error.message, { extensions: { code: 'BAD_USER_INPUT', field: error.field } });
    }
    throw error;
  }
}
