import type { GraphQLField } from 'graphql';
import { describe, expect, it } from 'vitest';
import { ROLES } from '../../src/auth/tokens.ts';
import { schema } from '../../src/schema/index.ts';

// Who may call what is declared on each root field (scope auth), and the authorization matrix
// checks the answers. This guards the declaration itself: a root field without roles would be
// open to any caller, token or not, until someone noticed it missing from the matrix.

function rootFields(): Array<[string, GraphQLField<unknown, unknown>]> {
  return [schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()].flatMap((type) =>
    type ? Object.entries(type.getFields()) : [],
  );
}

describe('roles per root field', () => {
  it.each(rootFields())('%s names the roles that may call it, and only roles', (_name, field) => {
    const scopes = (field.extensions as { pothosOptions?: { authScopes?: unknown } }).pothosOptions?.authScopes;
    expect(scopes).toBeTypeOf('object');
    const entries = Object.entries(scopes as Record<string, unknown>);
    expect(entries.length).toBeGreaterThan(0);
    for (const [scope, required] of entries) {
      expect(ROLES).toContain(scope);
      expect(required).toBe(true);
    }
  });
});
