// Counterexamples the model-based property test found, kept as plain tests so they stay fixed
// whatever the random sequences happen to cover.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { openDatabase, type Database } from '../../src/db/client.ts';
import { grantCredits } from '../../src/ledger/grants.ts';
import { createOrganization } from '../../src/ledger/organizations.ts';

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
});
