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
import { createOrganization } from '../../src/ledger/organizations.ts';

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
    const a = await grantCredits(ctx, { organizationId: org.id, type: 'PROMOTIONAL', amount: 50, reason: 'a', idempotencyKey: 'a' });
    const b = await grantCredits(ctx, { organizationId: org.id, type: 'REFERRAL', amount: 50, reason: 'b', idempotencyKey: 'b' });
    expect(await auditLedger(database.db, { organizationId: org.id })).toEqual([]);
    return { ctx, org, a, b };
  }

  const entry = (org: string, lot: string, kind: string, available: number, reserved: number, reservation: string | null = null) =>
    database.db.execute(sql`
      insert into ledger_entries (organization_id, lot_id, reservation_id, kind, available_change, reserved_change, created_at)
      values (${org}, ${lot}, ${reservation}, ${kind}, ${available}, ${reserved}, now())`);

  it('names an entry whose shape does not fit its kind', async () => {
    const { org, a } = await organizationWithLots();
    // An EXPIRE that also moves reserved credits, with the cache kept in step with it.
    await database.db.execute(sql`update credit_lots set available = available - 5, reserved = reserved + 5 where id = ${a.id}`);
    await entry(org.id, a.id, 'EXPIRE', -5, 5);
    const violations = await auditLedger(database.db, { organizationId: org.id });
    expect(violations).toContainEqual(
      expect.objectContaining({ organizationId: org.id, lotId: a.id, message: expect.stringMatching(/EXPIRE -5, 5\) is malformed/) }),
    );
    // The 5 credits it moved to "reserved" belong to no reservation, so the books no longer close.
    expect(violations).toContainEqual(expect.objectContaining({ organizationId: org.id, message: expect.stringMatching(/^granted 200 != /) }));
  });

  it('names a second GRANT of a lot', async () => {
    const { org, a } = await organizationWithLots();
    await database.db.execute(sql`update credit_lots set available = available + 10, granted = granted + 10 where id = ${a.id}`);
    await entry(org.id, a.id, 'GRANT', 10, 0);
    expect(await auditLedger(database.db, { organizationId: org.id })).toEqual([
      expect.objectContaining({ organizationId: org.id, lotId: a.id, message: '2 GRANT entries; a lot is granted exactly once' }),
    ]);
  });

  it('names an entry filed under another organization', async () => {
    const { org, a } = await organizationWithLots();
    const other = await organizationWithLots();
    // The lot's own numbers still add up; only the organization on the entry is wrong.
    await database.db.execute(sql`update credit_lots set available = available - 3 where id = ${a.id}`);
    await entry(other.org.id, a.id, 'EXPIRE', -3, 0);
    const violations = await auditLedger(database.db);
    expect(violations).toContainEqual(
      expect.objectContaining({ organizationId: other.org.id, lotId: a.id, message: expect.stringMatching(/crosses organizations/) }),
    );
  });

  it('names a settled reservation that consumed from a lot it never held credits in', async () => {
    const { org, a, b } = await organizationWithLots();
    // Held 10 in lot a, captured 10 from lot b: the reservation's totals (reserved, held,
    // captured) all match, so only the lot-by-lot check can see it.
    const [row] = rowsOf<{ id: string }>(await database.db.execute(sql`
      insert into reservations (id, organization_id, idempotency_key, model_id, count, amount, captured_amount, refunded_amount, status, expires_at, created_at, settled_at)
      values (gen_random_uuid(), ${org.id}, 'crossed', 'text-draft', 10, 10, 10, 0, 'CAPTURED', now(), now(), now())
      returning id`));
    const reservationId = row!.id;
    await entry(org.id, a.id, 'RESERVE', -10, 10, reservationId);
    await entry(org.id, b.id, 'CAPTURE', 0, -10, reservationId);
    const violations = await auditLedger(database.db, { organizationId: org.id });
    const mine = violations.filter((v) => v.reservationId === reservationId).sort((x, y) => x.message.localeCompare(y.message));
    expect(mine).toEqual([
      expect.objectContaining({ organizationId: org.id, reservationId, lotId: b.id, message: 'CAPTURED reservation holds -10 in this lot' }),
      expect.objectContaining({ organizationId: org.id, reservationId, lotId: a.id, message: 'CAPTURED reservation holds 10 in this lot' }),
    ]);
  });
});
