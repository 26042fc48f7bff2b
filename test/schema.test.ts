import { readFileSync } from 'node:fs';
import { printSchema } from 'graphql';
import { describe, expect, it } from 'vitest';
import { schema } from '../src/schema/index.ts';

describe('schema.graphql', () => {
  it('matches the schema the code builds (run `npm run schema:print` after changing it)', () => {
    const committed = readFileSync(new URL('../schema.graphql', import.meta.url), 'utf8');
    expect(committed).toBe(`${printSchema(schema)}\n`);
  });

  it('keeps the contract names and the domain order of enum values', () => {
    const printed = printSchema(schema);
    expect(printed).toContain('enum CreditAccountType {\n  SUBSCRIPTION\n  PURCHASED\n  PROMOTIONAL\n  REFERRAL\n}');
    expect(printed).toContain('union ReserveCreditsResult = ');
    expect(printed).toMatch(/type ReserveCreditsSuccess \{[^}]*reservation: Reservation![^}]*balance: Balance!/);
    expect(printed).toContain('interface Error {\n  message: String!\n}');
  });
});
