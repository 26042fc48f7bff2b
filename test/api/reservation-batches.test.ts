// Reservations that arrive together for one organization are written in one batch; each request
// still gets exactly its own answer, and nothing one request runs into fails another.
import { sql } from 'drizzle-orm';
import { describe, expect } from 'vitest';
import { rowsOf } from '../../src/db/client.ts';
import type { LedgerContext } from '../../src/ledger/context.ts';
import { reserveCredits } from '../../src/ledger/reservations.ts';
import { it, useTestApp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { balanceOf, newOrganization, textCredits, uniqueKey, type TestOrganization } from '../support/scenario.ts';

type Settled = { ok: true; id: string; amount: number } | { ok: false; name: string; detail?: unknown };

describe.each(drivers)('reservation batches (%s)', (driver) => {
  useTestApp(driver);
  const ctx = (t: TestApp): LedgerContext => ({ db: t.database.db, clock: t.clock });

  const attempt = (
    t: TestApp,
    org: TestOrganization,
    idempotencyKey: string,
    credits: number | 'unknown-model',
  ): Promise<Settled> =>
    reserveCredits(ctx(t), {
      organizationId: org.id,
      idempotencyKey,
      generation: credits === 'unknown-model' ? { modelId: 'no-such-model', count: 1 } : textCredits(credits),
    }).then(
      (reservation) => ({ ok: true, id: reservation.id, amount: reservation.amount }),
      (error: { name: string; required?: number; available?: number }) => ({
        ok: false,
        name: error.name,
        detail:
          error.name === 'InsufficientCreditsError'
            ? { required: error.required, available: error.available }
            : undefined,
      }),
    );

  async function version(t: TestApp, org: TestOrganization): Promise<number> {
    const [row] = rowsOf<{ v: number }>(
      await t.database.db.execute(sql`select balance_version as v from organizations where id = ${org.id}`),
    );
    return Number(row!.v);
  }

  it('answers each request of a batch on its own: replays, conflicts, shortfalls and bad input', async ({ t }) => {
    const org = await newOrganization(t, { planId: 'free' });
    const before = await version(t, org);
    const key = uniqueKey();
    // The first request starts a batch at once; the others arrive while it runs and are written
    // together by the next one, in arrival order.
    const results = await Promise.all([
      attempt(t, org, uniqueKey(), 10),
      attempt(t, org, key, 30),
      attempt(t, org, key, 30), // the same request again: the same reservation
      attempt(t, org, key, 20), // the same key for another generation: a conflict
      attempt(t, org, uniqueKey(), 'unknown-model'), // refused before it joins a batch
      attempt(t, org, uniqueKey(), 70), // 60 left after the 10 and the 30: refused, exactly
      attempt(t, org, uniqueKey(), 60),
    ]);
    expect(results.map((r) => (r.ok ? r.amount : r.name))).toEqual([
      10,
      30,
      30,
      'IdempotencyConflictError',
      'InvalidInputError',
      'InsufficientCreditsError',
      60,
    ]);
    expect(results[2]).toEqual(results[1]);
    expect(results[5]).toMatchObject({ detail: { required: 70, available: 60 } });
    // Two batches: the first request alone, then the rest together (one version bump each).
    expect((await version(t, org)) - before).toBe(2);
    expect(await balanceOf(t, org)).toMatchObject({ available: 0, reserved: 100 });
  });

  it('answers every other request of a batch when one fails inside the database', async ({ t }) => {
    const org = await newOrganization(t, { planId: 'free' });
    const doomed = uniqueKey('doomed');
    await t.database.db.execute(
      sql.raw(`
      create function refuse_doomed() returns trigger language plpgsql as $$
      begin if new.idempotency_key = '${doomed}' then raise exception 'injected failure'; end if; return new; end $$`),
    );
    // Citus creates a trigger on a sharded table only when told it is safe.
    await t.database.db.transaction(async (tx) => {
      if (t.database.citus) await tx.execute(sql`set local citus.enable_unsafe_triggers = on`);
      await tx.execute(
        sql.raw(
          'create trigger refuse_doomed before insert on reservations for each row execute function refuse_doomed()',
        ),
      );
    });
    try {
      const results = await Promise.all([
        attempt(t, org, uniqueKey(), 5),
        attempt(t, org, uniqueKey(), 10),
        attempt(t, org, doomed, 15),
        attempt(t, org, uniqueKey(), 20),
        attempt(t, org, uniqueKey(), 100), // 65 left: refused, exactly
      ]);
      expect(results.map((r) => (r.ok ? r.amount : r.name))).toEqual([5, 10, 'Error', 20, 'InsufficientCreditsError']);
      expect(results[4]).toMatchObject({ detail: { required: 100, available: 65 } });
    } finally {
      await t.database.db.transaction(async (tx) => {
        if (t.database.citus) await tx.execute(sql`set local citus.enable_unsafe_triggers = on`);
        await tx.execute(sql`drop trigger refuse_doomed on reservations`);
      });
      await t.database.db.execute(sql`drop function refuse_doomed()`);
    }
    expect(await balanceOf(t, org)).toMatchObject({ available: 65, reserved: 35 });
    // The failed request wrote nothing, so its key is still free.
    expect(await attempt(t, org, doomed, 15)).toMatchObject({ ok: true, amount: 15 });
  });
});
