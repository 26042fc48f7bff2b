import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { rowsOf } from '../../src/db/client.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import { changePlan } from '../../src/ledger/organizations.ts';
import { resetCycle } from '../../src/ledger/sweeper.ts';
import { drivers } from '../support/database.ts';
import { type Cleanups, upgradedFromFilled } from '../support/migrations.ts';

// Migration 0006 (the plan history, immutable lots, unexpiring purchases, typed GRANT entries)
// applied to a database that the earlier migrations built and that holds data: each organization's
// history begins with the state it is in (history before the migration is taken as given), so
// the audit stays clean, including an allowance lot of a plan that was in force before and is no
// longer; the ledger then appends to the history, and the audit judges what comes after by it.

const a = randomUUID();
const b = randomUUID();
const lots = { aFree: randomUUID(), aPro: randomUUID(), b: randomUUID() };

// A was on free and upgraded to pro this cycle (a free allowance and pro's difference); B is on
// starter with a downgrade to free scheduled, and holds a promotional lot. Written with the schema
// as it was before 0006.
const FILL = `
  insert into organizations (id, name, plan_id, next_plan_id, billing_cycle_anchor, cycle_starts_at, cycle_ends_at, balance_version, created_at) values
    ('${a}', 'A', 'pro', null, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z', 2, '2026-01-01T00:00:00Z'),
    ('${b}', 'B', 'starter', 'free', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z', 1, '2026-01-01T00:00:00Z');
  insert into credit_lots (id, organization_id, type, granted, available, reserved, expires_at, created_at, source, source_key, plan_id, cycle_starts_at, reason) values
    ('${lots.aFree}', '${a}', 'SUBSCRIPTION', 100, 100, 0, '2026-02-01T00:00:00Z', '2026-01-01T00:00:00Z', 'CYCLE', '2026-01-01T00:00:00.000Z', 'free', '2026-01-01T00:00:00Z', 'Free plan allowance'),
    ('${lots.aPro}', '${a}', 'SUBSCRIPTION', 4900, 4900, 0, '2026-02-01T00:00:00Z', '2026-01-05T00:00:00Z', 'PLAN_CHANGE', '2026-01-01T00:00:00.000Z:pro', 'pro', '2026-01-01T00:00:00Z', 'Pro plan allowance (upgrade from Free)'),
    ('${lots.b}', '${b}', 'PROMOTIONAL', 50, 50, 0, null, '2026-01-03T00:00:00Z', 'GRANT', 'g-1', null, null, 'welcome');
  insert into ledger_entries (organization_id, entry_number, lot_id, kind, available_change, reserved_change, reason, created_at) values
    ('${a}', 1, '${lots.aFree}', 'GRANT', 100, 0, 'Free plan allowance', '2026-01-01T00:00:00Z'),
    ('${a}', 2, '${lots.aPro}', 'GRANT', 4900, 0, 'Pro plan allowance (upgrade from Free)', '2026-01-05T00:00:00Z'),
    ('${b}', 1, '${lots.b}', 'GRANT', 50, 0, 'welcome', '2026-01-03T00:00:00Z');
`;

describe.each(drivers)('migration 0006 on a filled database (%s)', (driver) => {
  const cleanups: Cleanups = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it('begins each organization’s plan history where it stands, keeps the audit clean, and judges what follows by it', async () => {
    const database = await upgradedFromFilled(driver, { count: 5, fill: FILL }, cleanups);
    cleanups.push(() => database.close());
    const rows = async (query: ReturnType<typeof sql>) =>
      rowsOf<Record<string, unknown>>(await database.db.execute(query));
    const history = async (org: string) =>
      (
        await rows(sql`
          select change_number, kind, plan_id, next_plan_id, cycle_starts_at from plan_changes
          where organization_id = ${org} order by change_number`)
      ).map((row) => ({
        kind: String(row.kind),
        plan_id: String(row.plan_id),
        next_plan_id: row.next_plan_id as string | null,
        change_number: Number(row.change_number),
        cycle_starts_at: new Date(row.cycle_starts_at as string).toISOString(),
      }));

    expect(await history(a)).toEqual([
      {
        change_number: 1,
        kind: 'INITIAL',
        plan_id: 'pro',
        next_plan_id: null,
        cycle_starts_at: '2026-01-01T00:00:00.000Z',
      },
    ]);
    expect(await history(b)).toEqual([
      {
        change_number: 1,
        kind: 'INITIAL',
        plan_id: 'starter',
        next_plan_id: 'free',
        cycle_starts_at: '2026-01-01T00:00:00.000Z',
      },
    ]);
    // The free allowance of A's current cycle is from before the history: taken as given.
    expect(await auditLedger(database.db)).toEqual([]);
    // Entries from before the migration were given their lot's type, so the journal's rule holds
    // for every entry; the journal is append-only again, and the lots are now guarded.
    expect(
      await rows(sql`select e.kind::text as kind, e.lot_type::text as lot_type from ledger_entries e
        join credit_lots l on l.organization_id = e.organization_id and l.id = e.lot_id
        where e.kind = 'GRANT' and e.lot_type is distinct from l.type order by e.entry_number`),
    ).toEqual([]);
    expect(await rows(sql`select count(*)::int as n from ledger_entries where lot_type is not null`)).toEqual([
      { n: 3 },
    ]);
    await expect(database.db.execute(sql`update ledger_entries set reason = 'x'`)).rejects.toThrow();
    await expect(
      database.db.execute(sql`update credit_lots set type = 'PURCHASED' where id = ${lots.b}`),
    ).rejects.toThrow();
    await expect(database.db.execute(sql`delete from plan_changes`)).rejects.toThrow();

    // B's scheduled downgrade takes effect at the next cycle and is appended to the history; the
    // new cycle's allowance is judged by it (free's 100, nothing of starter's).
    const clock = new ManualClock('2026-02-02T00:00:00Z');
    expect(await resetCycle({ db: database.db, clock }, b)).toBe(true);
    await changePlan({ db: database.db, clock }, { organizationId: b, planId: 'starter' });
    expect((await history(b)).map((change) => [change.kind, change.plan_id, change.next_plan_id])).toEqual([
      ['INITIAL', 'starter', 'free'],
      ['APPLIED', 'free', null],
      ['SCHEDULED', 'free', 'starter'],
    ]);
    expect(
      await rows(sql`select type::text as type, lot_type::text as lot_type from ledger_entries e join credit_lots l
      on l.organization_id = e.organization_id and l.id = e.lot_id where e.organization_id = ${b} and e.entry_number > 1`),
    ).toEqual([{ type: 'SUBSCRIPTION', lot_type: 'SUBSCRIPTION' }]);
    expect(await auditLedger(database.db)).toEqual([]);
    // A starter allowance in the new cycle, labelled as such, would now be a plan never in force.
    await database.db.execute(sql`
      with lot as (
        insert into credit_lots (id, organization_id, type, granted, available, reserved, expires_at, created_at, source, source_key, plan_id, cycle_starts_at, reason)
        values (gen_random_uuid(), ${b}, 'SUBSCRIPTION', 50, 50, 0, '2026-03-01T00:00:00Z', '2026-02-02T00:00:00Z', 'PLAN_CHANGE', 'forged', 'starter', '2026-02-01T00:00:00Z', 'forged')
        returning id
      )
      insert into ledger_entries (organization_id, entry_number, lot_id, kind, available_change, reserved_change, created_at, lot_type)
      select ${b}, (select max(entry_number) + 1 from ledger_entries where organization_id = ${b}), id, 'GRANT', 50, 0, '2026-02-02T00:00:00Z', 'SUBSCRIPTION' from lot`);
    expect((await auditLedger(database.db)).map((violation) => [violation.organizationId, violation.message])).toEqual([
      [b, expect.stringMatching(/allowance lot of plan starter, which the plan history never put in force during it$/)],
      [b, expect.stringMatching(/granted 150 allowance credits, more than the largest plan's 100$/)],
    ]);
  });
});
