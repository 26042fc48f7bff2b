import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.ts';
import { secretKey, signToken } from '../../src/auth/tokens.ts';
import { ManualClock } from '../../src/clock.ts';
import { rowsOf } from '../../src/db/client.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import { TEST_SECRET } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { type Cleanups, upgradedFromFilled } from '../support/migrations.ts';
import { LEDGER, PURCHASE_PACK, RESERVE } from '../support/operations.ts';

// Migration 0003 (per-organization payment references and entry numbers) applied to a database
// that the earlier migrations built and that holds data: every row survives, each organization's
// existing entries are numbered 1..n in the order they were written, the journal stays
// append-only, and the service runs on the result.

const a = randomUUID();
const b = randomUUID();
const lots = { a1: randomUUID(), b1: randomUUID(), a2: randomUUID(), b2: randomUUID() };

// Two organizations whose entries interleave (global ids 1..4 alternate between them), written
// with the schema as it was before 0003.
const FILL = `
  insert into organizations (id, name, plan_id, billing_cycle_anchor, cycle_starts_at, cycle_ends_at, created_at) values
    ('${a}', 'A', 'free', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z', '2026-01-01T00:00:00Z'),
    ('${b}', 'B', 'free', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z', '2026-01-01T00:00:00Z');
  insert into credit_lots (id, organization_id, type, granted, available, reserved, expires_at, created_at, source, source_key, pack_id, reason) values
    ('${lots.a1}', '${a}', 'PURCHASED', 500, 500, 0, null, '2026-01-02T00:00:00Z', 'PURCHASE', 'pay-shared', 'pack-500', 'Starter pack purchase'),
    ('${lots.b1}', '${b}', 'PROMOTIONAL', 50, 50, 0, null, '2026-01-03T00:00:00Z', 'GRANT', 'g-1', null, 'welcome'),
    ('${lots.a2}', '${a}', 'PURCHASED', 70, 70, 0, null, '2026-01-04T00:00:00Z', 'GRANT', 'g-1', null, 'goodwill'),
    ('${lots.b2}', '${b}', 'PURCHASED', 500, 500, 0, null, '2026-01-05T00:00:00Z', 'PURCHASE', 'pay-b', 'pack-500', 'Starter pack purchase');
  insert into ledger_entries (organization_id, lot_id, kind, available_change, reserved_change, reason, created_at) values
    ('${a}', '${lots.a1}', 'GRANT', 500, 0, 'Starter pack purchase', '2026-01-02T00:00:00Z');
  insert into ledger_entries (organization_id, lot_id, kind, available_change, reserved_change, reason, created_at) values
    ('${b}', '${lots.b1}', 'GRANT', 50, 0, 'welcome', '2026-01-03T00:00:00Z');
  insert into ledger_entries (organization_id, lot_id, kind, available_change, reserved_change, reason, created_at) values
    ('${a}', '${lots.a2}', 'GRANT', 70, 0, 'goodwill', '2026-01-04T00:00:00Z');
  insert into ledger_entries (organization_id, lot_id, kind, available_change, reserved_change, reason, created_at) values
    ('${b}', '${lots.b2}', 'GRANT', 500, 0, 'Starter pack purchase', '2026-01-05T00:00:00Z');
`;

describe.each(drivers)('migration 0003 on a filled database (%s)', (driver) => {
  const cleanups: Cleanups = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it('keeps every row, numbers existing entries per organization, and serves on the result', async () => {
    const database = await upgradedFromFilled(driver, { count: 3, fill: FILL }, cleanups);
    const authKey = secretKey(TEST_SECRET);
    const app = createApp({ database, clock: new ManualClock('2026-01-15T12:00:00Z'), authKey, sweepIntervalMs: null });
    cleanups.push(async () => {
      await app.stop();
      await database.close();
    });
    const token = (role: 'member' | 'service', organizationId: string) =>
      signToken({ subject: `migration-${role}`, role, organizationId, expiresIn: '1h' }, authKey);
    const gql = async (query: string, variables: Record<string, unknown>, bearer: string) => {
      const response = await app.yoga.fetch('http://localhost/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${bearer}` },
        body: JSON.stringify({ query, variables }),
      });
      return (await response.json()) as { data: any; errors?: unknown[] };
    };
    const numbered = async () =>
      rowsOf<{ organization_id: string; lot_id: string; entry_number: string }>(
        await database.db.execute(sql`select organization_id, lot_id, entry_number from ledger_entries order by id`),
      ).map((row) => [row.organization_id, row.lot_id, Number(row.entry_number)]);

    expect(await numbered()).toEqual([
      [a, lots.a1, 1],
      [b, lots.b1, 1],
      [a, lots.a2, 2],
      [b, lots.b2, 2],
    ]);
    expect(await auditLedger(database.db)).toEqual([]);
    // The numbering was the only rewrite: the journal is append-only again.
    await expect(database.db.execute(sql`update ledger_entries set reason = 'rewritten'`)).rejects.toThrow();

    // The ledger pages by the new numbers, newest first.
    const aMember = await token('member', a);
    const first = await gql(LEDGER, { id: a, first: 1 }, aMember);
    expect(first.data.ledger.edges.map((edge: any) => edge.node.lotId)).toEqual([lots.a2]);
    const second = await gql(LEDGER, { id: a, first: 1, after: first.data.ledger.pageInfo.endCursor }, aMember);
    expect(second.data.ledger.edges.map((edge: any) => edge.node.lotId)).toEqual([lots.a1]);
    expect(second.data.ledger.pageInfo.hasNextPage).toBe(false);

    // A's pre-migration payment reference still replays for A, and is B's to use as well.
    const purchase = async (organizationId: string) =>
      (
        await gql(
          PURCHASE_PACK,
          { input: { organizationId, packId: 'pack-500', paymentReference: 'pay-shared' } },
          await token('service', organizationId),
        )
      ).data.purchaseCreditPack;
    expect(await purchase(a)).toMatchObject({ __typename: 'PurchaseCreditPackSuccess', lot: { id: lots.a1 } });
    const bPurchase = await purchase(b);
    expect(bPurchase).toMatchObject({ __typename: 'PurchaseCreditPackSuccess', lot: { granted: 500 } });
    expect(bPurchase.lot.id).not.toBe(lots.a1);

    // New entries continue each organization's numbering.
    const reserved = await gql(
      RESERVE,
      {
        input: {
          organizationId: a,
          idempotencyKey: 'after-migration',
          generation: { modelId: 'text-draft', count: 3 },
        },
      },
      aMember,
    );
    expect(reserved.data.reserveCredits.__typename).toBe('ReserveCreditsSuccess');
    const after = await numbered();
    expect(after.filter(([org]) => org === a).map(([, , number]) => number)).toEqual([1, 2, 3]);
    expect(after.filter(([org]) => org === b).map(([, , number]) => number)).toEqual([1, 2, 3]);
    expect(await auditLedger(database.db)).toEqual([]);
  });
});
