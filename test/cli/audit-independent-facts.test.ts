// The audit judges lots and organizations against facts the audited rows cannot rewrite: the plan
// history (append-only, written with every plan change), each lot's identity (type, source, plan,
// cycle, credits granted; a trigger keeps them), the unexpiring purchased lots (a CHECK) and the
// type each GRANT entry names. Each case builds a real history through the API, then writes a
// tampered state straight into the database, as an operator with a SQL prompt could, and expects
// the audit to name it. Where a guard now refuses the write, the case shows the refusal and then
// writes past the guard, so the audit is seen not to rely on it.
import { sql } from 'drizzle-orm';
import { describe, expect } from 'vitest';
import type { Database } from '../../src/db/client.ts';
import { rowsOf } from '../../src/db/client.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import { sweepUntilIdle } from '../../src/ledger/sweeper.ts';
import { it, useTestApp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { CHANGE_PLAN, PURCHASE_PACK } from '../support/operations.ts';
import { expectSuccess, grant, newOrganization, type TestOrganization, uniqueKey } from '../support/scenario.ts';

/** The error the database raised, under the wrapper the query builder puts around it. */
async function refusal(write: Promise<unknown>): Promise<{ code?: string; message: string }> {
  const error = await write.then(
    () => null,
    (caught: unknown) => caught,
  );
  expect(error, 'the database accepted the write').not.toBeNull();
  const cause = (error as { cause?: unknown }).cause ?? error;
  return cause as { code?: string; message: string };
}

/** Runs `write` with triggers (and foreign key checks) off, as a superuser could. */
function pastTheTriggers(database: Database, write: ReturnType<typeof sql>) {
  return database.db.transaction(async (tx) => {
    await tx.execute(sql`set local session_replication_role = replica`);
    await tx.execute(write);
  });
}

const auditOf = (t: TestApp, org: TestOrganization) => auditLedger(t.database.db, { organizationId: org.id });

async function changePlan(t: TestApp, org: TestOrganization, planId: string, immediately: boolean) {
  const result = await t.gql(CHANGE_PLAN, { input: { organizationId: org.id, planId, immediately } }, org.admin);
  return expectSuccess(result.data.changePlan, 'ChangePlanSuccess');
}

async function planHistory(t: TestApp, org: TestOrganization) {
  return rowsOf<{ change_number: number; kind: string; plan_id: string; next_plan_id: string | null }>(
    await t.database.db.execute(sql`
      select change_number, kind, plan_id, next_plan_id from plan_changes
      where organization_id = ${org.id} order by change_number`),
  ).map((row) => ({ ...row, change_number: Number(row.change_number) }));
}

describe.each(drivers)('the audit against its independent facts (%s)', (driver) => {
  // The cases damage their organizations on purpose: each audits its own organization.
  useTestApp(driver, { auditAfterEach: false });

  it('records every plan change in an append-only history, in the transaction that makes it', async ({ t }) => {
    t.clock.set('2026-01-15T12:00:00Z');
    const org = await newOrganization(t, { planId: 'free', billingCycleAnchor: '2026-01-01T00:00:00Z' });
    await changePlan(t, org, 'starter', false); // scheduled
    await changePlan(t, org, 'free', false); // cancelled: back to the plan in force
    await changePlan(t, org, 'pro', true); // an immediate upgrade
    await changePlan(t, org, 'free', false); // a downgrade, scheduled
    t.clock.set('2026-02-03T00:00:00Z');
    await sweepUntilIdle({ db: t.database.db, clock: t.clock }); // the next cycle starts on free
    expect(await planHistory(t, org)).toEqual([
      { change_number: 1, kind: 'CREATED', plan_id: 'free', next_plan_id: null },
      { change_number: 2, kind: 'SCHEDULED', plan_id: 'free', next_plan_id: 'starter' },
      { change_number: 3, kind: 'CANCELLED', plan_id: 'free', next_plan_id: null },
      { change_number: 4, kind: 'UPGRADED', plan_id: 'pro', next_plan_id: null },
      { change_number: 5, kind: 'SCHEDULED', plan_id: 'pro', next_plan_id: 'free' },
      { change_number: 6, kind: 'APPLIED', plan_id: 'free', next_plan_id: null },
    ]);
    expect(await auditOf(t, org)).toEqual([]);

    // The history refuses to be rewritten, deleted or emptied.
    const { database } = t;
    for (const write of [
      sql`update plan_changes set plan_id = 'studio' where organization_id = ${org.id}`,
      sql`delete from plan_changes where organization_id = ${org.id}`,
      sql`truncate plan_changes`,
    ]) {
      expect((await refusal(database.db.execute(write))).message).toMatch(/plan_changes is append-only/);
    }
  });

  it('names a forged allowance lot of a plan the organization was never on', async ({ t }) => {
    t.clock.set('2026-03-10T09:00:00Z');
    const org = await newOrganization(t, { planId: 'free' });
    // A PLAN_CHANGE lot labelled studio with its GRANT entry, its cache in step: studio's 20,000
    // would bound 100 + 5,000, so only the history can tell that studio was never in force.
    await t.database.db.execute(sql`
      with cycle as (select cycle_starts_at, cycle_ends_at from organizations where id = ${org.id}),
      lot as (
        insert into credit_lots (id, organization_id, type, granted, available, reserved, expires_at, created_at, source, source_key, plan_id, cycle_starts_at, reason)
        select gen_random_uuid(), ${org.id}, 'SUBSCRIPTION', 5000, 5000, 0, cycle_ends_at, now(), 'PLAN_CHANGE', 'forged', 'studio', cycle_starts_at, 'Studio plan allowance (upgrade from Free)'
        from cycle
        returning id
      )
      insert into ledger_entries (organization_id, entry_number, lot_id, kind, available_change, reserved_change, created_at, lot_type)
      select ${org.id}, (select max(entry_number) + 1 from ledger_entries where organization_id = ${org.id}), id, 'GRANT', 5000, 0, now(), 'SUBSCRIPTION'
      from lot`);
    expect((await auditOf(t, org)).map((violation) => violation.message)).toEqual([
      expect.stringMatching(
        /has an allowance lot of plan studio, which the plan history never put in force during it$/,
      ),
      expect.stringMatching(/granted 5100 allowance credits, more than the largest plan's 100$/),
    ]);
  });

  it('names an organization whose plan or scheduled plan was rewritten past its history', async ({ t }) => {
    t.clock.set('2026-03-10T09:00:00Z');
    const org = await newOrganization(t, { planId: 'free' });
    await t.database.db.execute(sql`update organizations set plan_id = 'studio' where id = ${org.id}`);
    expect(await auditOf(t, org)).toEqual([
      expect.objectContaining({
        organizationId: org.id,
        message: 'plan studio (next none) but the plan history says free (next none)',
      }),
    ]);
    // Put back, then a next plan nobody scheduled: the next cycle would start on it.
    await t.database.db.execute(
      sql`update organizations set plan_id = 'free', next_plan_id = 'pro' where id = ${org.id}`,
    );
    expect((await auditOf(t, org)).map((violation) => violation.message)).toEqual([
      'plan free (next pro) but the plan history says free (next none)',
    ]);
  });

  it("refuses a change of a lot's type, source, plan, cycle or credits granted, and names a type changed past the guard", async ({
    t,
  }) => {
    t.clock.set('2026-03-10T09:00:00Z');
    const org = await newOrganization(t, { planId: 'free' });
    const promotional = (await grant(t, org, 'PROMOTIONAL', 50, { idempotencyKey: uniqueKey('promo') })).lot;
    const [allowance] = rowsOf<{ id: string }>(
      await t.database.db.execute(
        sql`select id from credit_lots where organization_id = ${org.id} and source = 'CYCLE'`,
      ),
    );
    for (const [lotId, change] of [
      [promotional.id, sql`type = 'PURCHASED'`],
      [promotional.id, sql`granted = 500, available = 500`],
      [promotional.id, sql`source = 'PURCHASE'`],
      [promotional.id, sql`source_key = 'another'`],
      [allowance!.id, sql`plan_id = 'studio'`],
      [allowance!.id, sql`cycle_starts_at = cycle_starts_at - interval '1 month'`],
      [allowance!.id, sql`created_at = created_at - interval '1 day'`],
    ] as const) {
      const write = t.database.db.execute(
        sql`update credit_lots set ${change} where organization_id = ${org.id} and id = ${lotId}`,
      );
      expect((await refusal(write)).message).toMatch(/type, source, plan, cycle and granted credits never change/);
    }
    expect(await auditOf(t, org)).toEqual([]);

    // Past the trigger, a PROMOTIONAL lot turned PURCHASED (spent before promotional credits,
    // and counted as paid for) disagrees with the GRANT entry that created it.
    await pastTheTriggers(t.database, sql`update credit_lots set type = 'PURCHASED' where id = ${promotional.id}`);
    expect(await auditOf(t, org)).toEqual([
      expect.objectContaining({
        organizationId: org.id,
        lotId: promotional.id,
        message: 'PURCHASED lot, but its GRANT entry granted PROMOTIONAL credits',
      }),
    ]);
  });

  it('refuses an expiry on a PURCHASED lot, and names one written past the constraint', async ({ t }) => {
    t.clock.set('2026-03-10T09:00:00Z');
    const org = await newOrganization(t, { planId: 'free' });
    const bought = await t.gql(
      PURCHASE_PACK,
      { input: { organizationId: org.id, packId: 'pack-500', paymentReference: uniqueKey('pay') } },
      org.admin,
    );
    const lot = expectSuccess(bought.data.purchaseCreditPack, 'PurchaseCreditPackSuccess').lot;
    const expire = sql`update credit_lots set expires_at = '2026-04-01T00:00:00Z' where id = ${lot.id}`;
    const refused = await refusal(t.database.db.execute(expire));
    expect(refused).toMatchObject({ code: '23514' });
    expect(refused.message).toMatch(/credit_lots_purchased_never_expire/);
    expect(await auditOf(t, org)).toEqual([]);

    // A database without the constraint (dropped in this throwaway one): the audit still sees it.
    await t.database.db.execute(sql`alter table credit_lots drop constraint credit_lots_purchased_never_expire`);
    try {
      await t.database.db.execute(expire);
      expect(await auditOf(t, org)).toEqual([
        expect.objectContaining({
          organizationId: org.id,
          lotId: lot.id,
          message: expect.stringMatching(/^PURCHASED lot expires at .*; purchased credits never expire$/),
        }),
      ]);
    } finally {
      await t.database.db.execute(sql`update credit_lots set expires_at = null where id = ${lot.id}`);
      await t.database.db.execute(sql`
        alter table credit_lots add constraint credit_lots_purchased_never_expire
          check (type <> 'PURCHASED' or expires_at is null)`);
    }
  });
});
