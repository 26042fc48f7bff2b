import { AuthScopeFailureType, type AuthFailure } from '@pothos/plugin-scope-auth';
import { GraphQLError, type GraphQLResolveInfo } from 'graphql';
import type { Role, Scope, Viewer } from '../auth/tokens.ts';
import type { GraphQLContext } from '../context.ts';
import { InvalidInputError } from '../ledger/errors.ts';
import { isUuid } from '../ledger/validation.ts';

export function unauthenticated(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'UNAUTHENTICATED' } });
}

/**
 * The generic refusal, for an organization or object the token may not use: it says nothing of
 * whether that organization exists.
 */
export function forbidden(message = 'This token may not act for this organization.'): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'FORBIDDEN' } });
}

/**
 * Who may call a root field: a token of one of `roles` that holds one of `scopes`, or of one of
 * `scopedRoles` whose `scope` claim names one of them (a token without the claim keeps only the
 * rights its role had before scopes, which `roles` lists).
 */
export interface FieldAccess {
  roles: readonly Role[];
  scopedRoles?: readonly Role[];
  scopes: readonly Scope[];
}

interface AccessScopeMap {
  role: readonly Role[];
  scope: readonly Scope[];
  $any?: { role: readonly Role[]; scopedRole: readonly Role[] };
}

/**
 * A root field's `authScopes`: its caller's role must be one of `roles` (or `scopedRoles`), and the
 * token must hold one of `scopes` (an admin, and a token without a `scope` claim, hold every scope
 * of their role). Every root field declares one, so a field reads as its own rule.
 */
export function allow(access: FieldAccess): { $all: AccessScopeMap } {
  const scopedRoles = access.scopedRoles ?? [];
  if (scopedRoles.length === 0) return { $all: { role: access.roles, scope: access.scopes } };
  return {
    $all: {
      role: [...access.roles, ...scopedRoles],
      scope: access.scopes,
      $any: { role: access.roles, scopedRole: scopedRoles },
    },
  };
}

/** The scope-auth initializer: the loaders `allow` names, for this caller. */
export function accessScopes(ctx: GraphQLContext): {
  role: (roles: readonly Role[]) => boolean;
  scopedRole: (roles: readonly Role[]) => boolean;
  scope: (scopes: readonly Scope[]) => boolean;
} {
  const viewer = ctx.viewer;
  return {
    role: (roles) => viewer !== null && roles.includes(viewer.role),
    scopedRole: (roles) => viewer !== null && viewer.scopes !== null && roles.includes(viewer.role),
    scope: (scopes) => viewer !== null && holdsAny(viewer, scopes),
  };
}

function holdsAny(viewer: Viewer, scopes: readonly Scope[]): boolean {
  if (viewer.role === 'admin' || viewer.scopes === null) return true;
  return scopes.some((scope) => viewer.scopes!.includes(scope));
}

/**
 * Why a field's scopes refused the caller: no valid token, or a role or scope the field does not
 * admit. The answer names what the field needs and what this token has, both facts of the field
 * and the token alone, never of any organization.
 */
export function refusal(ctx: GraphQLContext, info: GraphQLResolveInfo, failure: AuthFailure): GraphQLError {
  if (!ctx.viewer) return unauthenticated(ctx.authFailure ?? 'Authentication required.');
  const failed = failedScopes(failure);
  const scopedRole = failed.find((scope) => scope.scope === 'scopedRole');
  if (scopedRole) {
    return forbidden(
      `${info.fieldName} needs the ${either(declaredScopes(info))} scope named in the token's "scope" claim; ` +
        `this ${ctx.viewer.role} token has no "scope" claim.`,
    );
  }
  const role = failed.find((scope) => scope.scope === 'role');
  if (role) {
    return forbidden(
      `${info.fieldName} needs the ${either(role.parameter as readonly string[])} role; ` +
        `this token's role is ${ctx.viewer.role}.`,
    );
  }
  const scope = failed.find((scope) => scope.scope === 'scope');
  if (scope) {
    const held = ctx.viewer.scopes?.join(', ') ?? 'none';
    return forbidden(
      `${info.fieldName} needs the ${either(scope.parameter as readonly string[])} scope; this token has ${held}.`,
    );
  }
  return forbidden('This token may not use this field.');
}

/** The scopes the refused field's `allow` lists. */
function declaredScopes(info: GraphQLResolveInfo): readonly string[] {
  const field = info.parentType.getFields()[info.fieldName];
  const declared = (field?.extensions as { pothosOptions?: { authScopes?: { $all?: AccessScopeMap } } } | undefined)
    ?.pothosOptions?.authScopes?.$all?.scope;
  return declared ?? [];
}

function failedScopes(failure: AuthFailure): Array<{ scope: string; parameter: unknown }> {
  if (failure.kind === AuthScopeFailureType.AuthScope) return [failure];
  if (failure.kind === AuthScopeFailureType.AllAuthScopes || failure.kind === AuthScopeFailureType.AnyAuthScopes) {
    return failure.failures.flatMap(failedScopes);
  }
  return [];
}

/** "service or admin", "generation, read or billing". */
function either(names: readonly string[]): string {
  return names.length <= 1 ? (names[0] ?? '') : `${names.slice(0, -1).join(', ')} or ${names.at(-1)}`;
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
