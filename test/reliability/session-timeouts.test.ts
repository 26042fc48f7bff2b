// The pool's session limits: a request stuck behind another transaction's lock, a statement that
// runs too long and a transaction left idle all end with a retryable error and nothing written,
// and the organization's lock and the connection come free.
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../../src/app.ts';
import { secretKey, signToken } from '../../src/auth/tokens.ts';
import { ManualClock } from '../../src/clock.ts';
import { openDatabase, rowsOf, type Database } from '../../src/db/client.ts';
import { isSessionTimeout } from '../../src/db/errors.ts';
import { createOrganization } from '../../src/ledger/organizations.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';
import { RESERVE } from '../support/operations.ts';
import { holdOrganizationLock } from '../support/organization-lock.ts';

const SECRET = 'session-timeouts-secret-long-enough-for-hs256';

describe.skipIf(!hasPostgres)('session timeouts (postgres)', () => {
  let drop: () => Promise<void>;
  let url: string;
  let database: Database;
  let app: App;
  const clock = new ManualClock('2026-02-01T00:00:00Z');

  beforeAll(async () => {
    ({ url, drop } = await createPostgresDatabase());
    database = await openDatabase({
      databaseUrl: url,
      timeouts: { lockTimeoutMs: 300, statementTimeoutMs: 1_000, idleInTransactionTimeoutMs: 1_000 },
    });
    app = createApp({ database, clock, authKey: secretKey(SECRET), sweepIntervalMs: null });
  });
  afterAll(async () => {
    await app?.stop();
    await database?.close();
    await drop?.();
  });

  async function reserve(organizationId: string, idempotencyKey: string) {
    const token = await signToken(
      { subject: 'backend', role: 'service', organizationId, expiresIn: '5m' },
      secretKey(SECRET),
    );
    const response = await app.yoga.fetch('http://localhost/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({
        query: RESERVE,
        variables: { input: { organizationId, idempotencyKey, generation: { modelId: 'text-draft', count: 3 } } },
      }),
    });
    return {
      status: response.status,
      body: (await response.json()) as { data: any; errors?: Array<{ message: string; extensions: any }> },
    };
  }

  const reservationCount = async (organizationId: string) =>
    Number(
      rowsOf<{ n: number }>(
        await database.db.execute(
          sql`select count(*)::int as n from reservations where organization_id = ${organizationId}`,
        ),
      )[0]!.n,
    );

  it('answers a request stuck behind another lock holder with SERVICE_UNAVAILABLE, writing nothing', async () => {
    const org = await createOrganization({ db: database.db, clock }, { name: 'Stuck', planId: 'free' });
    const lock = await holdOrganizationLock(url, org.id);
    try {
      const stuck = await reserve(org.id, 'stuck');
      expect(stuck.status).toBe(503);
      expect(stuck.body.errors).toEqual([
        expect.objectContaining({
          message: 'The request timed out in the database and wrote nothing; retry it.',
          extensions: expect.objectContaining({ code: 'SERVICE_UNAVAILABLE' }),
        }),
      ]);
      expect(await reservationCount(org.id)).toBe(0);
    } finally {
      await lock.release();
    }
    // The same request again, once the lock is free, is written once.
    const retried = await reserve(org.id, 'stuck');
    expect(retried.body.data.reserveCredits.__typename).toBe('ReserveCreditsSuccess');
    expect(await reservationCount(org.id)).toBe(1);
  });

  it('cancels a statement that runs too long, and ends a transaction left idle', async () => {
    const slow = await database.db.execute(sql`select pg_sleep(3)`).then(
      () => null,
      (error: unknown) => error,
    );
    expect(isSessionTimeout(slow)).toBe(true);
    const idle = await database.db
      .transaction(async (tx) => {
        await tx.execute(sql`select 1`);
        await new Promise((resolve) => setTimeout(resolve, 2_500));
        await tx.execute(sql`select 1`);
      })
      .then(
        () => 'committed',
        () => 'ended',
      );
    expect(idle).toBe('ended');
    // The pool goes on serving.
    expect(rowsOf<{ one: number }>(await database.db.execute(sql`select 1 as one`))[0]!.one).toBe(1);
  });
});
