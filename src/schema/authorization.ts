import { GraphQLError } from 'graphql';
import type { Role, Viewer } from '../auth/tokens.ts';
import type { GraphQLContext } from '../context.ts';
import { InvalidInputError } from '../ledger/errors.ts';
import { isUuid } from '../ledger/validation.ts';

export function unauthenticated(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'UNAUTHENTICATED' } });
}

export function forbidden(): GraphQLError {
  return new GraphQLError('You are not allowed to do this.', { extensions: { code: 'FORBIDDEN' } });
}

/**
 * The scope-auth initializer: the caller holds exactly the scope of its token's role, and none
 * without a valid token. Fields name every role they admit, so a field reads as its own rule.
 */
export function roleScopes(ctx: GraphQLContext): Record<Role, boolean> {
  const role = ctx.viewer?.role;
  return { member: role === 'member', service: role === 'service', admin: role === 'admin' };
}

/** Why a field's scopes refused the caller: no valid token, or a role the field does not admit. */
export function refusal(ctx: GraphQLContext): GraphQLError {
  return ctx.viewer ? forbidden() : unauthenticated(ctx.authFailure ?? 'Authentication required.');
}

/**
 * The caller, once a field's scopes let it through. Scope auth has refused a caller without a
 * valid token before the resolver runs; this only narrows the type, and fails loudly if a field
 * forgot its scopes.
 */
export function requireViewer(ctx: GraphQLContext): Viewer {
  if (!ctx.viewer) throw unauthenticated(ctx.authFailure ?? 'Authentication required.');
  return ctx.viewer;
}

/**
 * The organization id `organizationId` names, lower-cased, if the caller may act for it. Members
 * and services act only for the organization in their token; an admin for any. A malformed id is
 * bad input first, so the answer never depends on whether some other organization exists. The
 * role was already checked by the field's scopes.
 */
export function authorizeOrganization(ctx: GraphQLContext, organizationId: string | number): string {
  const viewer = requireViewer(ctx);
  const id = String(organizationId);
  if (!isUuid(id)) throw new InvalidInputError('organizationId is not a valid id.', 'organizationId');
  const normalised = id.toLowerCase();
  if (viewer.organizationId !== null && viewer.organizationId !== normalised) throw forbidden();
  return normalised;
}

/**
 * An id that names no organization, given to a field that reads or computes from one and cannot
 * answer null, is bad input naming the argument (README, API). Callers run this only when their
 * answer came out empty, the one case where the organization may be missing.
 */
export function noSuchOrganization(): InvalidInputError {
  return new InvalidInputError('organizationId names no organization.', 'organizationId');
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
