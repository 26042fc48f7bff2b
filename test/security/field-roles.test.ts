import type { GraphQLField } from 'graphql';
import { describe, expect, it } from 'vitest';
import { ROLES, SCOPES } from '../../src/auth/tokens.ts';
import { schema } from '../../src/schema/index.ts';

// Who may call what is declared on each root field (scope auth), and the authorization matrix
// checks the answers. This guards the declaration itself: a root field without roles and scopes
// would be open to any caller, token or not, until someone noticed it missing from the matrix.

function rootFields(): Array<[string, GraphQLField<unknown, unknown>]> {
  return [schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()].flatMap((type) =>
    type ? Object.entries(type.getFields()) : [],
  );
}

interface Declared {
  $all?: {
    role?: unknown;
    scope?: unknown;
    $any?: { role?: unknown; scopedRole?: unknown };
  };
}

function expectSubsetOf(values: unknown, allowed: readonly string[]): void {
  expect(Array.isArray(values)).toBe(true);
  expect((values as unknown[]).length).toBeGreaterThan(0);
  for (const value of values as unknown[]) expect(allowed).toContain(value);
  expect(new Set(values as unknown[]).size).toBe((values as unknown[]).length);
}

// What each scope is for (README, Authentication): the fields a token with only that scope may
// call, role permitting. Adding a root field means adding it here.
const FIELDS_OF_SCOPE: Record<(typeof SCOPES)[number], string[]> = {
  generation: [
    'balance',
    'balanceAlert',
    'balanceChanged',
    'captureReservation',
    'creditPacks',
    'creditQuote',
    'extendReservation',
    'increaseReservation',
    'models',
    'plans',
    'refundReservation',
    'reservation',
    'reserveCredits',
  ],
  read: [
    'balance',
    'balanceAlert',
    'balanceChanged',
    'creditPacks',
    'creditQuote',
    'ledger',
    'models',
    'organization',
    'plans',
    'reservation',
    'webhookDeliveries',
  ],
  billing: [
    'changePlan',
    'createOrganization',
    'creditPacks',
    'grantCredits',
    'models',
    'plans',
    'purchaseCreditPack',
    'removeBalanceAlert',
    'removeOrganizationWebhook',
    'rotateWebhookSecret',
    'setBalanceAlert',
    'setOrganizationWebhook',
    'webhookDeliveries',
  ],
};

describe('roles and scopes per root field', () => {
  it.each(rootFields())(
    '%s names the roles and the token scopes that may call it, and nothing else',
    (_name, field) => {
      const declared = (field.extensions as { pothosOptions?: { authScopes?: Declared } }).pothosOptions?.authScopes;
      expect(declared).toBeTypeOf('object');
      expect(Object.keys(declared!)).toEqual(['$all']);
      const all = declared!.$all!;
      expect(Object.keys(all).filter((key) => key !== '$any')).toEqual(['role', 'scope']);
      expectSubsetOf(all.role, ROLES);
      expectSubsetOf(all.scope, SCOPES);
      if (all.$any) {
        // Some of the roles only with a scope claim: together the two lists are the field's roles.
        expect(Object.keys(all.$any)).toEqual(['role', 'scopedRole']);
        expectSubsetOf(all.$any.role, ROLES);
        expectSubsetOf(all.$any.scopedRole, ROLES);
        expect([...(all.$any.role as string[]), ...(all.$any.scopedRole as string[])].sort()).toEqual(
          [...(all.role as string[])].sort(),
        );
      }
    },
  );

  it.each(SCOPES)('scope %s opens exactly its fields', (scope) => {
    const opened = rootFields()
      .filter(([, field]) => {
        const declared = (field.extensions as { pothosOptions?: { authScopes?: Declared } }).pothosOptions?.authScopes;
        return (declared?.$all?.scope as string[] | undefined)?.includes(scope);
      })
      .map(([name]) => name)
      .sort();
    expect(opened).toEqual(FIELDS_OF_SCOPE[scope]);
  });
});
