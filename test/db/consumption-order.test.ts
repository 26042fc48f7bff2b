import { sql } from 'drizzle-orm';
import { GraphQLEnumType } from 'graphql';
import { describe, expect } from 'vitest';
import { rowsOf } from '../../src/db/client.ts';
import { accountType, entryKind, lotSource, modelTier, outputType, reservationStatus } from '../../src/db/schema.ts';
import { balanceLots, getBalance } from '../../src/ledger/balance.ts';
import { ACCOUNT_TYPES } from '../../src/ledger/enums.ts';
import { accountPriority } from '../../src/ledger/allocation.ts';
import { schema } from '../../src/schema/index.ts';
import { it, useTestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { balanceOf, grant, newOrganization, reserve, textCredits } from '../support/scenario.ts';

// The consumption order lives in one place, the declaration order of the `credit_account_type`
// enum, and is read in three: the database sorts lots by it (`order by type`), the ledger lists a
// balance's accounts by ACCOUNT_TYPES, and the API lists the GraphQL enum's values. This pins all
// three to each other, on both drivers, so no copy can drift unnoticed.

/** Consecutive duplicates removed: the account types in the order a list of lots visits them. */
function typesInOrder(lots: Array<{ type: string }>): string[] {
  return lots.map((lot) => lot.type).filter((type, index, all) => index === 0 || all[index - 1] !== type);
}

function graphqlEnumValues(name: string): string[] {
  const type = schema.getType(name);
  if (!(type instanceof GraphQLEnumType)) throw new Error(`${name} is not an enum`);
  return type.getValues().map((value) => value.name);
}

describe.each(drivers)('one consumption order for database, ledger and API (%s)', (driver) => {
  useTestApp(driver);

  it('has the migrated database declare every enum as the drizzle schema does, in the same order', async ({ t }) => {
    for (const pgEnum of [accountType, entryKind, reservationStatus, outputType, modelTier, lotSource]) {
      const declared = rowsOf<{ value: string }>(
        await t.database.db.execute(
          sql`select unnest(enum_range(null::${sql.identifier(pgEnum.enumName)}))::text as value`,
        ),
      );
      expect(
        declared.map((row) => row.value),
        pgEnum.enumName,
      ).toEqual([...pgEnum.enumValues]);
    }
  });

  it('lists the GraphQL enums in the ledger order', () => {
    expect(graphqlEnumValues('CreditAccountType')).toEqual([...ACCOUNT_TYPES]);
    expect(graphqlEnumValues('LedgerEntryKind')).toEqual([...entryKind.enumValues]);
    expect(graphqlEnumValues('ReservationStatus')).toEqual([...reservationStatus.enumValues]);
    expect(graphqlEnumValues('OutputType')).toEqual([...outputType.enumValues]);
    expect(graphqlEnumValues('ModelTier')).toEqual([...modelTier.enumValues]);
  });

  it('reads, shows and spends lots in ACCOUNT_TYPES order whatever their age and expiry', async ({ t }) => {
    // Granted in the reverse of the consumption order, with the soonest expiry on a late type,
    // so neither creation time nor expiry could produce the expected order by accident.
    const org = await newOrganization(t);
    await grant(t, org, 'REFERRAL', 5);
    await grant(t, org, 'PROMOTIONAL', 20, { expiresAt: '2026-01-20T00:00:00Z' });
    await grant(t, org, 'PURCHASED', 7);
    await grant(t, org, 'SUBSCRIPTION', 3);

    const lots = await balanceLots(t.database.db, org.id);
    expect(typesInOrder(lots)).toEqual([...ACCOUNT_TYPES]);
    const ledgerBalance = await getBalance(t.database.db, org.id, t.clock.now());
    expect(typesInOrder(ledgerBalance!.accounts.flatMap((account) => account.lots))).toEqual([...ACCOUNT_TYPES]);

    const shown = await balanceOf(t, org);
    expect(shown.accounts.map((account: { type: string }) => account.type)).toEqual(
      graphqlEnumValues('CreditAccountType'),
    );
    expect(shown.accounts.map((account: { priority: number }) => account.priority)).toEqual(
      ACCOUNT_TYPES.map(accountPriority),
    );
    expect(ACCOUNT_TYPES.map(accountPriority)).toEqual([1, 2, 3, 4]);

    // 104 credits take the 103 subscription credits and 1 purchased one, leaving the promotional
    // lot (which expires first) whole: type priority comes before expiry.
    const partial = await reserve(t, org, textCredits(104));
    expect(typesInOrder(partial.reservation.allocations)).toEqual(['SUBSCRIPTION', 'PURCHASED']);
    expect(partial.balance.accounts.map((account: { available: number }) => account.available)).toEqual([0, 6, 20, 5]);
    const rest = await reserve(t, org, textCredits(31));
    expect(typesInOrder(rest.reservation.allocations)).toEqual(['PURCHASED', 'PROMOTIONAL', 'REFERRAL']);
  });
});
