// The audit's checks each catch the damage they are for. Every case writes the journal the way no
// ledger function would (raw SQL; the journal refuses updates and deletes, not inserts), keeps the
// lots' cached numbers in step where the case is not about them, and expects the audit to name
// the organization and the lot or reservation concerned.
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { openDatabase, rowsOf, type Database } from '../../src/db/client.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import { grantCredits } from '../../src/ledger/grants.ts';
import { changePlan, createOrganization } from '../../src/ledger/organizations.ts';
import { reserveCredits } from '../../src/ledger/reservations.ts';

describe('audit invariants (PGlite)', () => {
  let database: Database;
  const clock = new ManualClock('2026-05-01T08:00:00Z');
  beforeAll(async () => {
    database = await openDatabase({});
  });
  afterAll(() => database?.close());

  async function organizationWithLots() {
    const ctx = { db: database.db, clock };
    const org = await createOrganization(ctx, { name: 'Audit', planId: 'free' });
    const a = await grantCredits(ctx, {
      organizationId: org.id,
      type: 'PROMOTIONAL',
      amount: 50,
      reason: 'a',
      idempotencyKey: 'a',
    });
    const b = await grantCredits(ctx, {
      organizationId: org.id,
      type: 'REFERRAL',
      amount: 50,
      reason: 'b',
      idempotencyKey: 'b',
    });
    expect(await auditLedger(database.db, { organizationId: org.id })).toEqual([]);
    return { ctx, org, a, b };
  }

  // A corrupting entry is numbered as postEntries would number it: next in its organization's journal.
  const nextEntryNumber = (org: string) =>
    sql`(select coalesce(max(entry_number), 0) + 1 from ledger_entries where organization_id = ${org})`;

  // A GRANT names its lot's type, as the journal requires of every grant.
  const entry = (
    org: string,
    lot: string,
    kind: string,
    available: number,
    reserved: number,
    reservation: string | null = null,
  ) =>
    database.db.execute(sql`
      insert into ledger_entries (organization_id, entry_number, lot_id, reservation_id, kind, available_change, reserved_change, created_at, lot_type)
      values (${org}, ${nextEntryNumber(org)}, ${lot}, ${reservation}, ${kind}, ${available}, ${reserved}, now(),
        case when ${kind} = 'GRANT' then (select type from credit_lots where organization_id = ${org} and id = ${lot}) end)`);

  it('names an entry whose shape does not fit its kind', async () => {
    const { org, a } = await organizationWithLots();
    // An EXPIRE that also moves reserved credits, with the cache kept in step with it.
    await database.db.execute(
      sql`update credit_lots set available = available - 5, reserved = reserved + 5 where id = ${a.id}`,
    );
    await entry(org.id, a.id, 'EXPIRE', -5, 5);
    const violations = await auditLedger(database.db, { organizationId: org.id });
    expect(violations).toContainEqual(
      expect.objectContaining({
        organizationId: org.id,
        lotId: a.id,
        message: expect.stringMatching(/EXPIRE -5, 5\) is malformed/),
      }),
    );
    // The 5 credits it moved to "reserved" belong to no reservation, so the books no longer close.
    expect(violations).toContainEqual(
      expect.objectContaining({ organizationId: org.id, message: expect.stringMatching(/^granted 200 != /) }),
    );
  });

  it('names a second GRANT of a lot', async () => {
    const { org, a } = await organizationWithLots();
    // A lot's granted credits never change (a trigger refuses it); written past the trigger.
    await database.db.transaction(async (tx) => {
      await tx.execute(sql`set local session_replication_role = replica`);
      await tx.execute(
        sql`update credit_lots set available = available + 10, granted = granted + 10 where id = ${a.id}`,
      );
    });
    await entry(org.id, a.id, 'GRANT', 10, 0);
    expect(await auditLedger(database.db, { organizationId: org.id })).toEqual([
      expect.objectContaining({
        organizationId: org.id,
        lotId: a.id,
        message: '2 GRANT entries; a lot is granted exactly once',
      }),
    ]);
  });

  it('names a journal whose entry numbers have a gap', async () => {
    const { org, a } = await organizationWithLots();
    // A well-formed EXPIRE whose number skips one: the journal no longer runs 1 to n.
    await database.db.execute(sql`update credit_lots set available = available - 1 where id = ${a.id}`);
    await database.db.execute(sql`
      insert into ledger_entries (organization_id, entry_number, lot_id, kind, available_change, reserved_change, created_at)
      values (${org.id}, (select max(entry_number) + 2 from ledger_entries where organization_id = ${org.id}), ${a.id}, 'EXPIRE', -1, 0, now())`);
    // (An EXPIRE of a lot that never expires breaks lifecycle rules too, reported as well; the gap is what matters here.)
    expect(await auditLedger(database.db, { organizationId: org.id })).toContainEqual(
      expect.objectContaining({
        organizationId: org.id,
        message: expect.stringMatching(/^\d+ entries numbered 1 to \d+; a journal is numbered 1 to n without gaps$/),
      }),
    );
  });

  it('refuses an entry filed under another organization, and names one written past the keys', async () => {
    const { a } = await organizationWithLots();
    const other = await organizationWithLots();
    // The composite foreign key (organization_id, lot_id) refuses it outright.
    await expect(entry(other.org.id, a.id, 'EXPIRE', -3, 0)).rejects.toMatchObject({
      cause: { code: '23503', constraint: 'ledger_entries_lot_fk' },
    });
    // Written past the keys (the replica role skips foreign key checks), the audit still sees it.
    // The lot's own numbers still add up; only the organization on the entry is wrong.
    await database.db.transaction(async (tx) => {
      await tx.execute(sql`set local session_replication_role = replica`);
      await tx.execute(sql`update credit_lots set available = available - 3 where id = ${a.id}`);
      await tx.execute(sql`
        insert into ledger_entries (organization_id, entry_number, lot_id, kind, available_change, reserved_change, created_at)
        values (${other.org.id}, ${nextEntryNumber(other.org.id)}, ${a.id}, 'EXPIRE', -3, 0, now())`);
    });
    const violations = await auditLedger(database.db);
    expect(violations).toContainEqual(
      expect.objectContaining({
        organizationId: other.org.id,
        lotId: a.id,
        message: expect.stringMatching(/crosses organizations/),
      }),
    );
  });

  it('names a settled reservation that consumed from a lot it never held credits in', async () => {
    const { org, a, b } = await organizationWithLots();
    // Held 10 in lot a, captured 10 from lot b: the reservation's totals (reserved, held,
    // captured) all match, so only the lot-by-lot check can see it.
    const [row] = rowsOf<{ id: string }>(
      await database.db.execute(sql`
      insert into reservations (id, organization_id, idempotency_key, model_id, count, amount, captured_amount, refunded_amount, status, expires_at, created_at, settled_at)
      values (gen_random_uuid(), ${org.id}, 'crossed', 'text-draft', 10, 10, 10, 0, 'CAPTURED', now(), now(), now())
      returning id`),
    );
    const reservationId = row!.id;
    await entry(org.id, a.id, 'RESERVE', -10, 10, reservationId);
    await entry(org.id, b.id, 'CAPTURE', 0, -10, reservationId);
    const violations = await auditLedger(database.db, { organizationId: org.id });
    // (Taking from lot a while the subscription lot had credits is also out of consumption order;
    // that check is the subject of its own case below.)
    const mine = violations
      .filter((v) => v.reservationId === reservationId && v.lotId)
      .sort((x, y) => x.message.localeCompare(y.message));
    expect(mine).toEqual([
      expect.objectContaining({
        organizationId: org.id,
        reservationId,
        lotId: b.id,
        message: 'CAPTURED reservation holds -10 in this lot',
      }),
      expect.objectContaining({
        organizationId: org.id,
        reservationId,
        lotId: a.id,
        message: 'CAPTURED reservation holds 10 in this lot',
      }),
    ]);
  });

  // The lifecycle checks: rules about time and order that balanced books can still break.

  it('names a lot that holds spendable credits after it expired (the plan-change minting bug)', async () => {
    const { ctx, org } = await organizationWithLots();
    const [lot] = rowsOf<{ id: string }>(
      await database.db.execute(
        sql`select id from credit_lots where organization_id = ${org.id} and type = 'SUBSCRIPTION'`,
      ),
    );
    // What the old immediate plan change left behind: the allowance lot expired (here: 40 of its
    // credits), yet a refund later put 40 back as spendable, with no EXPIRE after it.
    await database.db.execute(sql`update credit_lots set available = available - 40 where id = ${lot!.id}`);
    await database.db.execute(sql`
      insert into ledger_entries (organization_id, entry_number, lot_id, kind, available_change, reserved_change, created_at)
      values (${org.id}, ${nextEntryNumber(org.id)}, ${lot!.id}, 'EXPIRE', -40, 0, ${ctx.clock.now()})`);
    const reservation = await reserveCredits(ctx, {
      organizationId: org.id,
      idempotencyKey: 'held',
      generation: { modelId: 'text-draft', count: 60 },
    });
    await database.db.execute(
      sql`update credit_lots set available = available + 60, reserved = reserved - 60 where id = ${lot!.id}`,
    );
    await database.db.execute(
      sql`update reservations set status = 'REFUNDED', refunded_amount = 60, settled_at = now() where id = ${reservation.id}`,
    );
    await database.db.execute(sql`
      insert into ledger_entries (organization_id, entry_number, lot_id, reservation_id, kind, available_change, reserved_change, created_at)
      values (${org.id}, ${nextEntryNumber(org.id)}, ${lot!.id}, ${reservation.id}, 'REFUND', 60, -60, ${ctx.clock.now()})`);
    const violations = await auditLedger(database.db, { organizationId: org.id });
    expect(violations).toContainEqual(
      expect.objectContaining({
        organizationId: org.id,
        lotId: lot!.id,
        message: 'holds 60 spendable credits after it expired',
      }),
    );
    expect(violations).toContainEqual(
      expect.objectContaining({
        lotId: lot!.id,
        message: expect.stringMatching(/expires credits before the lot's expiry/),
      }),
    );
  });

  it('names a cycle whose allowance grants exceed the largest plan in force (a full grant on every plan change)', async () => {
    const { ctx, org } = await organizationWithLots();
    // An immediate upgrade to starter, as the ledger makes it: the difference, 900, on top of free's 100.
    await changePlan(ctx, { organizationId: org.id, planId: 'starter', immediately: true });
    expect(await auditLedger(database.db, { organizationId: org.id })).toEqual([]);
    // The old rule granted starter's whole 1,000 on every plan change. The largest plan of the cycle allows 1,000.
    await database.db.execute(sql`
      with lot as (
        insert into credit_lots (id, organization_id, type, granted, available, reserved, expires_at, created_at, source, source_key, plan_id, cycle_starts_at, reason)
        values (gen_random_uuid(), ${org.id}, 'SUBSCRIPTION', 1000, 1000, 0, ${org.cycleEndsAt}, ${ctx.clock.now()}, 'PLAN_CHANGE', 'full-grant', 'starter', ${org.cycleStartsAt}, 'Starter plan allowance (plan change)')
        returning id
      )
      insert into ledger_entries (organization_id, entry_number, lot_id, kind, available_change, reserved_change, created_at, lot_type)
      select ${org.id}, ${nextEntryNumber(org.id)}, id, 'GRANT', 1000, 0, ${ctx.clock.now()}, 'SUBSCRIPTION' from lot`);
    expect(await auditLedger(database.db, { organizationId: org.id })).toEqual([
      expect.objectContaining({
        organizationId: org.id,
        message: expect.stringMatching(/granted 2000 allowance credits, more than the largest plan's 1000$/),
      }),
    ]);
  });

  it('names a reservation that may live past 24 hours, and one still pending after them', async () => {
    const { ctx, org } = await organizationWithLots();
    const reservation = await reserveCredits(ctx, {
      organizationId: org.id,
      idempotencyKey: 'long',
      generation: { modelId: 'text-draft', count: 5 },
    });
    await database.db.execute(
      sql`update reservations set expires_at = created_at + interval '30 hours' where id = ${reservation.id}`,
    );
    expect(await auditLedger(database.db, { organizationId: org.id })).toEqual([
      expect.objectContaining({
        reservationId: reservation.id,
        message: expect.stringMatching(/more than 24 hours after it was created$/),
      }),
    ]);
    const sweptAt = new Date(reservation.createdAt.getTime() + 25 * 3_600_000);
    expect(await auditLedger(database.db, { organizationId: org.id, sweptAt })).toContainEqual(
      expect.objectContaining({
        reservationId: reservation.id,
        message: expect.stringMatching(/^still pending more than 24 hours/),
      }),
    );
  });

  it('names a lot left spendable after its expiry once a sweep has run', async () => {
    const { org, a } = await organizationWithLots();
    await database.db.execute(
      sql`update credit_lots set expires_at = ${new Date('2026-05-01T09:00:00Z')} where id = ${a.id}`,
    );
    // Before the expiry, or with no sweep known to have run, nothing is wrong yet.
    expect(await auditLedger(database.db, { organizationId: org.id })).toEqual([]);
    expect(
      await auditLedger(database.db, { organizationId: org.id, sweptAt: new Date('2026-05-01T10:00:00Z') }),
    ).toEqual([
      expect.objectContaining({
        lotId: a.id,
        message: expect.stringMatching(/^holds 50 spendable credits though it expired/),
      }),
    ]);
  });

  it('names a reservation that took credits out of consumption order', async () => {
    const { ctx, org, a } = await organizationWithLots();
    // Held 10 from the promotional lot while the subscription lot still had 100.
    const [row] = rowsOf<{ id: string }>(
      await database.db.execute(sql`
      insert into reservations (id, organization_id, idempotency_key, model_id, count, amount, status, expires_at, created_at)
      values (gen_random_uuid(), ${org.id}, 'skipper', 'text-draft', 10, 10, 'PENDING', ${new Date(ctx.clock.now().getTime() + 60_000)}, ${ctx.clock.now()})
      returning id`),
    );
    await database.db.execute(
      sql`update credit_lots set available = available - 10, reserved = reserved + 10 where id = ${a.id}`,
    );
    await database.db.execute(sql`
      insert into ledger_entries (organization_id, entry_number, lot_id, reservation_id, kind, available_change, reserved_change, created_at)
      values (${org.id}, ${nextEntryNumber(org.id)}, ${a.id}, ${row!.id}, 'RESERVE', -10, 10, ${ctx.clock.now()})`);
    expect(await auditLedger(database.db, { organizationId: org.id })).toEqual([
      expect.objectContaining({
        reservationId: row!.id,
        message: expect.stringMatching(/^skipped 100 credits of lot .* which comes first/),
      }),
    ]);
  });
});
