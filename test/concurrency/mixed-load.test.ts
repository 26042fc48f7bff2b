// Ten seconds of mixed load on PostgreSQL: reserves, captures (full and partial), refunds,
// extends, grants, pack purchases and two sweepers race on the same three organizations, from two
// connection pools as two server processes would. Reservations live 1 to 3 seconds and some lots
// expire within the run, so the sweepers refund and expire while clients settle, and each
// organization's billing cycle ends mid-run. At the end: no unexpected error reached a caller, the
// journal audit is clean, and what callers were told (captures, grants) is what the ledger holds.
// Inflows are kept below demand (but for one large lot per organization that expires after 3 s) so
// that refusals for insufficient credits race too.
//
// Random workers make the mix; besides them, one scripted task per organization drives every kind
// of step on purpose, racing with the workers, so that each kind certainly happens in every run:
// a pack purchase, an extension, a full and a partial capture, a refund, a refusal for
// insufficient credits, a reservation nobody settles (refunded by a sweeper) and a lot that
// expires with credits left. The load goes on past its 10 seconds until all of that has happened
// (a loaded machine gets there later), within a hard limit.
import { randomUUID } from 'node:crypto';
import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { systemClock } from '../../src/clock.ts';
import { openDatabase, rowsOf, type Database } from '../../src/db/client.ts';
import { isSessionTimeout, sqlState } from '../../src/db/errors.ts';
import { reservations } from '../../src/db/schema.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import type { LedgerContext } from '../../src/ledger/context.ts';
import { InsufficientCreditsError, InvalidInputError, ReservationStateError } from '../../src/ledger/errors.ts';
import { grantCredits, purchaseCreditPack } from '../../src/ledger/grants.ts';
import { createOrganization } from '../../src/ledger/organizations.ts';
import { EXPIRED_REFUND_REASON, reserveCredits } from '../../src/ledger/reservations.ts';
import { captureReservation, extendReservation, refundReservation } from '../../src/ledger/settlements.ts';
import { sweepOnce, sweepUntilIdle } from '../../src/ledger/sweeper.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';

const LOAD_MS = 10_000;
// The load stops once LOAD_MS have passed and every kind of step has happened, or at this limit
// (then the checks below fail and say what is missing).
const LOAD_MAX_MS = 60_000;
const WORKERS = 16;
const ORGANIZATIONS = 3;
// The scripted lot that must expire with credits left: far more than the run can consume before
// it expires (a few hundred credits a second per organization on this machine).
const EXPIRING_LOT_CREDITS = 20_000;
const EXPIRING_LOT_MS = 2_000;
const CYCLE_ENDS_MS = 7_000;
// What must have happened while everything raced. (A cycle reset is not required of the
// sweepers: a worker's write usually starts the new cycle first.)
const REQUIRED = [
  'reserve',
  'capture',
  'capture partial',
  'refund',
  'extend',
  'grant',
  'purchase',
  'insufficient',
  'sweeper refunds',
  'sweeper lot expiries',
] as const;
// More than everything the run can ever hold: 100 premium 4K videos of 60 s (288,000 credits).
const UNAFFORDABLE = { modelId: 'video-premium', resolution: 'UHD_4K', durationSeconds: 60, count: 100 } as const;

interface OrgState {
  id: string;
  /** Reservations some caller got back and nobody has seen settled yet. */
  pending: string[];
  captured: number;
  granted: number;
}

describe.skipIf(!hasPostgres)('mixed load (postgres)', () => {
  let drop: () => Promise<void>;
  let first: Database;
  let second: Database;

  beforeAll(async () => {
    const created = await createPostgresDatabase();
    drop = created.drop;
    first = await openDatabase({ databaseUrl: created.url, maxConnections: 12 });
    second = await openDatabase({ databaseUrl: created.url, maxConnections: 12 });
  });
  afterAll(async () => {
    await first?.close();
    await second?.close();
    await drop?.();
  });

  it(
    'keeps every invariant while everything races for at least 10 seconds',
    async () => {
      const contexts: LedgerContext[] = [
        { db: first.db, clock: systemClock },
        { db: second.db, clock: systemClock },
      ];
      // A future anchor puts the end of the current cycle (and the next allowance) mid-run.
      const cycleEnd = new Date(Date.now() + CYCLE_ENDS_MS);
      const orgs: OrgState[] = [];
      for (let i = 0; i < ORGANIZATIONS; i += 1) {
        const org = await createOrganization(contexts[0]!, {
          name: `Hot ${i}`,
          planId: 'free',
          billingCycleAnchor: cycleEnd,
        });
        orgs.push({ id: org.id, pending: [], captured: 0, granted: 0 });
      }

      const unexpected: unknown[] = [];
      const counts = new Map<string, number>();
      const count = (name: string) => counts.set(name, (counts.get(name) ?? 0) + 1);
      const random = (n: number) => Math.floor(Math.random() * n);
      const startedAt = Date.now();
      let scriptsDone = 0;
      const overLimit = () => Date.now() - startedAt >= LOAD_MAX_MS;
      const loadOver = () =>
        overLimit() ||
        (Date.now() - startedAt >= LOAD_MS &&
          scriptsDone === ORGANIZATIONS &&
          REQUIRED.every((name) => (counts.get(name) ?? 0) > 0));

      /**
       * A lock or statement timeout of the session is an answer the API gives under contention
       * (retryable SERVICE_UNAVAILABLE, nothing written), so it is counted, not failed on.
       */
      function expectedRefusal(error: unknown): boolean {
        if (isSessionTimeout(error)) {
          count('session timeout');
          return true;
        }
        return false;
      }

      /** Runs a scripted step again after a session timeout. */
      async function persist<T>(work: () => Promise<T>): Promise<T> {
        for (;;) {
          try {
            return await work();
          } catch (error) {
            if (!expectedRefusal(error) || overLimit()) throw error;
          }
        }
      }

      /** Polls `check` until it holds, while the load goes on. */
      async function eventually(what: string, check: () => Promise<boolean>): Promise<void> {
        await vi.waitFor(
          async () => {
            if (!(await check())) throw new Error(`not within ${LOAD_MAX_MS} ms: ${what}`);
          },
          { timeout: Math.max(0, startedAt + LOAD_MAX_MS - Date.now()), interval: 100 },
        );
      }

      /** Runs one operation; expected refusals are counted, anything else is kept to fail the test. */
      async function step(ctx: LedgerContext): Promise<void> {
        const org = orgs[random(orgs.length)]!;
        const roll = Math.random();
        let grantExpiresAt: Date | null = null;
        try {
          if (roll < 0.4) {
            const reservation = await reserveCredits(ctx, {
              organizationId: org.id,
              idempotencyKey: randomUUID(),
              generation: { modelId: 'text-standard', count: 1 + random(40) }, // 2 to 80 credits
              ttlSeconds: 1 + random(3),
            });
            org.pending.push(reservation.id);
            count('reserve');
          } else if (roll < 0.65 && org.pending.length > 0) {
            // Picked without removal, so two callers may settle the same reservation at once.
            const id = org.pending[random(org.pending.length)]!;
            const partial = Math.random() < 0.5;
            const settled = await captureReservation(ctx, { reservationId: id, amount: partial ? 1 : null }, org.id);
            org.captured += settled.capturedAmount;
            org.pending = org.pending.filter((p) => p !== id);
            count(partial ? 'capture partial' : 'capture');
          } else if (roll < 0.75 && org.pending.length > 0) {
            const id = org.pending[random(org.pending.length)]!;
            await refundReservation(ctx, { reservationId: id, reason: 'load test' }, org.id);
            org.pending = org.pending.filter((p) => p !== id);
            count('refund');
          } else if (roll < 0.8 && org.pending.length > 0) {
            await extendReservation(
              ctx,
              { reservationId: org.pending[random(org.pending.length)]!, ttlSeconds: 1 + random(2) },
              org.id,
            );
            count('extend');
          } else if (roll < 0.99) {
            const amount = 1 + random(40);
            const expiring = Math.random() < 0.5;
            grantExpiresAt = expiring ? new Date(Date.now() + 500 + random(3000)) : null;
            await grantCredits(ctx, {
              organizationId: org.id,
              type: expiring ? 'PROMOTIONAL' : 'REFERRAL',
              amount,
              expiresAt: grantExpiresAt,
              reason: 'load test',
              idempotencyKey: randomUUID(),
            });
            org.granted += amount;
            count('grant');
          } else {
            await purchaseCreditPack(ctx, {
              organizationId: org.id,
              packId: 'pack-500',
              paymentReference: randomUUID(),
            });
            org.granted += 500;
            count('purchase');
          }
        } catch (error) {
          if (error instanceof InsufficientCreditsError) count('insufficient');
          else if (error instanceof ReservationStateError) count(`already ${error.status.toLowerCase()}`);
          // The expiry is checked once the grant holds its organization's lock, so a grant that
          // waited past its own expiry is refused: right, and expected under this much contention.
          else if (
            error instanceof InvalidInputError &&
            error.field === 'expiresAt' &&
            grantExpiresAt !== null &&
            grantExpiresAt.getTime() <= Date.now()
          ) {
            count('grant expired while waiting');
          } else if (!expectedRefusal(error)) unexpected.push(error);
        }
      }

      async function worker(ctx: LedgerContext): Promise<void> {
        while (!loadOver()) await step(ctx);
      }

      /** Reserves `credits` for this task alone (no worker settles it), trying again while refused. */
      async function reserveOwn(
        ctx: LedgerContext,
        org: OrgState,
        credits: number,
        ttlSeconds: number,
      ): Promise<string> {
        for (;;) {
          try {
            const reservation = await reserveCredits(ctx, {
              organizationId: org.id,
              idempotencyKey: randomUUID(),
              generation: { modelId: 'text-standard', count: credits / 2 },
              ttlSeconds,
            });
            count('reserve');
            return reservation.id;
          } catch (error) {
            if (overLimit()) throw error;
            if (error instanceof InsufficientCreditsError) count('insufficient');
            else if (!expectedRefusal(error)) throw error;
          }
        }
      }

      /** Grants a lot that expires EXPIRING_LOT_MS after it is written, with credits left then. */
      async function grantExpiringLot(ctx: LedgerContext, org: OrgState): Promise<string> {
        for (;;) {
          const expiresAt = new Date(Date.now() + EXPIRING_LOT_MS);
          try {
            const lot = await grantCredits(ctx, {
              organizationId: org.id,
              type: 'PROMOTIONAL',
              amount: EXPIRING_LOT_CREDITS,
              expiresAt,
              reason: 'load test: expires with credits left',
              idempotencyKey: randomUUID(),
            });
            org.granted += EXPIRING_LOT_CREDITS;
            count('grant');
            return lot.id;
          } catch (error) {
            if (overLimit()) throw error;
            // Its expiry passed while it waited for the lock: ask again with a later one.
            const expiredWaiting =
              error instanceof InvalidInputError && error.field === 'expiresAt' && expiresAt.getTime() <= Date.now();
            if (!expiredWaiting && !expectedRefusal(error)) throw error;
          }
        }
      }

      async function reservationState(id: string): Promise<{ status: string; refundReason: string | null }> {
        const [row] = await first.db
          .select({ status: reservations.status, refundReason: reservations.refundReason })
          .from(reservations)
          .where(eq(reservations.id, id));
        return row!;
      }

      async function lotAvailable(id: string): Promise<number> {
        const [row] = rowsOf<{ available: number }>(
          await first.db.execute(sql`select available from credit_lots where id = ${id}`),
        );
        return Number(row!.available);
      }

      const expiringLots: string[] = [];

      /** Every kind of step once, on purpose, while the workers race on the same organization. */
      async function scripted(ctx: LedgerContext, org: OrgState): Promise<void> {
        try {
          const lotId = await grantExpiringLot(ctx, org);
          expiringLots.push(lotId);
          await Promise.all([
            (async () => {
              await persist(() =>
                purchaseCreditPack(ctx, { organizationId: org.id, packId: 'pack-500', paymentReference: randomUUID() }),
              );
              org.granted += 500;
              count('purchase');
            })(),
            (async () => {
              // Left for a sweeper (nobody else knows it): refunded once its second has passed.
              const id = await reserveOwn(ctx, org, 2, 1);
              await eventually(
                'a sweeper refunds the reservation nobody settled',
                async () => (await reservationState(id)).status !== 'PENDING',
              );
              expect(await reservationState(id)).toEqual({ status: 'REFUNDED', refundReason: EXPIRED_REFUND_REASON });
            })(),
            (async () => {
              // Expired with its credits left (by a sweeper, or by the cycle's end if that came first).
              await eventually('the scripted lot expires', async () => (await lotAvailable(lotId)) === 0);
            })(),
            (async () => {
              const id = await reserveOwn(ctx, org, 4, 3);
              await persist(() => extendReservation(ctx, { reservationId: id, ttlSeconds: 2 }, org.id));
              count('extend');
              org.pending.push(id); // now the workers may race to settle it
            })(),
            (async () => {
              const id = await reserveOwn(ctx, org, 6, 60);
              const settled = await persist(() => captureReservation(ctx, { reservationId: id, amount: null }, org.id));
              org.captured += settled.capturedAmount;
              count('capture');
            })(),
            (async () => {
              const id = await reserveOwn(ctx, org, 6, 60);
              const settled = await persist(() => captureReservation(ctx, { reservationId: id, amount: 1 }, org.id));
              org.captured += settled.capturedAmount;
              count('capture partial');
            })(),
            (async () => {
              const id = await reserveOwn(ctx, org, 6, 60);
              await persist(() => refundReservation(ctx, { reservationId: id, reason: 'load test' }, org.id));
              count('refund');
            })(),
            (async () => {
              const refusal = await persist(() =>
                reserveCredits(ctx, {
                  organizationId: org.id,
                  idempotencyKey: randomUUID(),
                  generation: UNAFFORDABLE,
                }).then(
                  () => null,
                  (error: unknown) => {
                    if (isSessionTimeout(error)) throw error;
                    return error;
                  },
                ),
              );
              expect(refusal).toBeInstanceOf(InsufficientCreditsError);
              count('insufficient');
            })(),
          ]);
        } catch (error) {
          unexpected.push(error);
        } finally {
          scriptsDone += 1;
        }
      }

      async function sweeper(ctx: LedgerContext): Promise<void> {
        while (!loadOver()) {
          try {
            const pass = await sweepOnce(ctx, {
              onItemError: (_item, error) => {
                if (!expectedRefusal(error)) unexpected.push(error);
              },
            });
            if (pass.refundedReservations > 0) count('sweeper refunds');
            if (pass.resetOrganizations > 0) count('sweeper cycle resets');
            if (pass.expiredLotOrganizations > 0) count('sweeper lot expiries');
          } catch (error) {
            unexpected.push(error);
          }
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }

      await Promise.all([
        ...Array.from({ length: WORKERS }, (_, i) => worker(contexts[i % 2]!)),
        ...orgs.map((org, i) => scripted(contexts[i % 2]!, org)),
        sweeper(contexts[0]!),
        sweeper(contexts[1]!),
      ]);
      console.log(`mixed load: ${JSON.stringify(Object.fromEntries([...counts].sort()))}`);
      // Named, with the SQLSTATE or driver code, so that a failure says what went wrong.
      expect(
        unexpected.map(
          (error) =>
            `${(error as Error).name}: ${sqlState(error) ?? (error as { code?: string }).code ?? ''} ${(error as Error).message}`,
        ),
      ).toEqual([]);

      // Each kind of step happened while everything raced (the scripted tasks make sure of it).
      for (const name of REQUIRED) expect(counts.get(name) ?? 0, name).toBeGreaterThan(0);
      // The scripted lots expired with credits left.
      const expired = rowsOf<{ lot_id: string; expired: number; available: number }>(
        await first.db.execute(sql`
        select l.id as lot_id, l.available,
          (select coalesce(-sum(e.available_change), 0)::int from ledger_entries e where e.organization_id = l.organization_id and e.lot_id = l.id and e.kind = 'EXPIRE') as expired
        from credit_lots l where l.id in ${expiringLots}`),
      );
      expect(expired).toHaveLength(ORGANIZATIONS);
      for (const lot of expired) {
        expect(lot.available).toBe(0);
        expect(Number(lot.expired)).toBeGreaterThan(0);
      }

      // Once every time to live has passed, the sweeper leaves nothing pending (reservations live
      // at most 3 s; the wait is for that state, however long a loaded machine takes).
      const pendingAfterSweep = async () => {
        const sweep = await sweepUntilIdle(contexts[0]!);
        expect(sweep.failedItems).toBe(0);
        const [row] = rowsOf<{ n: number }>(
          await first.db.execute(sql`select count(*)::int as n from reservations where status = 'PENDING'`),
        );
        return Number(row!.n);
      };
      await expect.poll(pendingAfterSweep, { timeout: 30_000, interval: 250 }).toBe(0);
      expect(await auditLedger(first.db)).toEqual([]);
      for (const org of orgs) {
        // What callers were told is what the ledger holds: captured credits and granted credits.
        const [row] = rowsOf<{ captured: number; granted: number; cycles: number; cycle_grants: number }>(
          await first.db.execute(sql`
          select
            (select coalesce(sum(captured_amount), 0)::int from reservations where organization_id = ${org.id}) as captured,
            (select coalesce(sum(granted), 0)::int from credit_lots where organization_id = ${org.id} and source in ('GRANT', 'PURCHASE')) as granted,
            (select count(*)::int from credit_lots where organization_id = ${org.id} and source = 'CYCLE') as cycles,
            (select coalesce(sum(granted), 0)::int from credit_lots where organization_id = ${org.id} and source = 'CYCLE') as cycle_grants`),
        );
        expect({ captured: Number(row!.captured), granted: Number(row!.granted) }).toEqual({
          captured: org.captured,
          granted: org.granted,
        });
        // The cycle that ended mid-run was replaced exactly once, by one allowance.
        expect({ cycles: Number(row!.cycles), cycleGrants: Number(row!.cycle_grants) }).toEqual({
          cycles: 2,
          cycleGrants: 200,
        });
        const settled = await first.db.select().from(reservations).where(eq(reservations.organizationId, org.id));
        for (const reservation of settled) {
          expect(reservation.capturedAmount + reservation.refundedAmount).toBe(reservation.amount);
        }
      }
    },
    LOAD_MAX_MS + 60_000,
  );
});
