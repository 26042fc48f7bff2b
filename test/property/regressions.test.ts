// Counterexamples the model-based property test found, kept as plain tests so they stay fixed
// whatever the random sequences happen to cover.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { openDatabase, type Database } from '../../src/db/client.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import { grantCredits } from '../../src/ledger/grants.ts';
import { createOrganization } from '../../src/ledger/organizations.ts';
import { reserveCredits } from '../../src/ledger/reservations.ts';
import { refundReservation } from '../../src/ledger/settlements.ts';

describe('property test counterexamples (PGlite)', () => {
  let database: Database;
  beforeAll(async () => {
    database = await openDatabase({});
  });
  afterAll(() => database?.close());

  // Shrunk: grant(PROMOTIONAL, 1, expiresIn=1000ms), advance(1s), replayGrant(#0). The retry was
  // refused with "expiresAt must be in the future" instead of returning the original lot.
  it('returns the original lot for a retried grant whose expiry has passed meanwhile', async () => {
    const clock = new ManualClock('2026-01-01T00:00:00Z');
    const ctx = { db: database.db, clock };
    const org = await createOrganization(ctx, { name: 'Replay', planId: 'free' });
    const input = {
      organizationId: org.id,
      type: 'PROMOTIONAL' as const,
      amount: 1,
      expiresAt: new Date(clock.now().getTime() + 1000),
      reason: 'retry',
      idempotencyKey: 'retry-after-expiry',
    };
    const first = await grantCredits(ctx, input);
    clock.advanceSeconds(1);
    const again = await grantCredits(ctx, input);
    expect(again.id).toBe(first.id);
    // A new grant with an expiry in the past is still refused.
    await expect(grantCredits(ctx, { ...input, idempotencyKey: 'new-in-the-past' })).rejects.toMatchObject({
      name: 'InvalidInputError',
      field: 'expiresAt',
    });
  });

  // Shrunk: free plan, cycle ending in 1 h; reserve(40, ttl=86400); advance(past cycle end);
  // refund(#0). The refund expired the 40 credits it returned to the old allowance lot (past its
  // expiry), but left the lot's other 60 available: a lot with an EXPIRE entry that still holds
  // available credits, which the product's own audit reports ("holds 60 spendable credits after
  // it expired"). README "Expiry": the lot's available credits expire at the next write, and a lot
  // that has expired never holds available credits again.
  it('leaves no available credits in a lot past its expiry that a refund returned credits to', async () => {
    const clock = new ManualClock('2026-01-01T00:00:00Z');
    const ctx = { db: database.db, clock };
    const cycleEnd = new Date('2026-01-01T01:00:00Z');
    const org = await createOrganization(ctx, {
      name: 'Refund into expired lot',
      planId: 'free',
      billingCycleAnchor: cycleEnd,
    });
    const reservation = await reserveCredits(ctx, {
      organizationId: org.id,
      idempotencyKey: 'held-across-the-cycle-end',
      ttlSeconds: 86_400,
      generation: { modelId: 'text-draft', count: 40 },
    });
    clock.set('2026-01-01T02:00:00Z');
    await refundReservation(ctx, { reservationId: reservation.id, reason: 'regression' }, null);
    const { rows } = await database.pglite!.query<{ available: number; reserved: number }>(
      'select available, reserved from credit_lots where organization_id = $1 and expires_at = $2',
      [org.id, cycleEnd],
    );
    expect(rows).toEqual([{ available: 0, reserved: 0 }]);
    expect(await auditLedger(database.db, { organizationId: org.id })).toEqual([]);
  });
});
