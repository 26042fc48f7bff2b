// Model-based property test: random sequences of ledger operations run against the real ledger
// functions on PGlite and against the in-memory model in ./model.ts; after every step the
// journal audit of the organization is clean and every balance, lot, reservation and the
// organization's plan and cycle equal the model's.
//
// Replaying a failure: fast-check prints `seed`, `path` and the commands' `replayPath`. Run
//   FC_SEED=<seed> FC_PATH=<path> FC_REPLAY_PATH=<replayPath> npx vitest run test/property
// to run exactly that counterexample again. FC_RUNS sets the number of sequences (default 500).
import fc from 'fast-check';
import { and, eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { openDatabase, type Database } from '../../src/db/client.ts';
import { creditLots, ledgerEntries, organizations, reservations } from '../../src/db/schema.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import { getBalance } from '../../src/ledger/balance.ts';
import type { LedgerContext } from '../../src/ledger/context.ts';
import { CreditError, InsufficientCreditsError, ReservationStateError } from '../../src/ledger/errors.ts';
import { grantCredits, purchaseCreditPack } from '../../src/ledger/grants.ts';
import { changePlan, createOrganization } from '../../src/ledger/organizations.ts';
import {
  captureReservation,
  extendReservation,
  listAllocations,
  refundReservation,
  reserveCredits,
} from '../../src/ledger/reservations.ts';
import { sweepUntilIdle } from '../../src/ledger/sweeper.ts';
import * as M from './model.ts';

const NUM_RUNS = Number(process.env.FC_RUNS ?? 500);
const MAX_COMMANDS = 25;
const DAY_MS = 86_400_000;

interface Model {
  state: { s: M.State };
}

interface Real {
  ctx: LedgerContext;
  clock: ManualClock;
  organizationId: string;
}

type Cmd = fc.AsyncCommand<Model, Real>;

/** Runs one real ledger call, turning an expected business failure into a comparable outcome. */
async function attempt<T>(call: () => Promise<T>): Promise<M.Outcome<T>> {
  try {
    return { ok: await call() };
  } catch (error) {
    if (!(error instanceof CreditError)) throw error; // anything else is a bug, not an outcome
    if (error instanceof InsufficientCreditsError) {
      return { error: error.name, required: error.required, available: error.available };
    }
    if (error instanceof ReservationStateError) return { error: error.name, status: error.status };
    return { error: error.name };
  }
}

function errorOf(outcome: M.Outcome<unknown>): Omit<M.Outcome<never>, 'ok'> | null {
  return 'ok' in outcome ? null : outcome;
}

/** How often each kind of step ended each way, printed at the end to show what was covered. */
const tally = new Map<string, number>();

function expectSameOutcome(real: M.Outcome<unknown>, model: M.Outcome<unknown>, what: string): void {
  const name = `${what.replace(/\(.*$/, '')}: ${'ok' in real ? 'ok' : real.error}`;
  tally.set(name, (tally.get(name) ?? 0) + 1);
  expect(errorOf(real), `${what}: real and model answered differently`).toEqual(errorOf(model));
}

let database: Database;

/**
 * After each step: the real organization matches the model exactly. Lots are matched by where
 * they came from (source and key), which also teaches the model the ids of new lots.
 */
async function compare(model: Model, real: Real): Promise<void> {
  const s = model.state.s;
  const db = database.db;
  expect(await auditLedger(db, { organizationId: real.organizationId })).toEqual([]);

  const lots = await db.select().from(creditLots).where(eq(creditLots.organizationId, real.organizationId));
  expect(lots.length, 'number of lots').toBe(s.lots.length);
  const taken = new Set(s.lots.map((lot) => lot.realId).filter((id) => id !== null));
  for (const lot of s.lots) {
    if (lot.realId !== null) continue;
    const match = lots.find(
      (r) => !taken.has(r.id) && r.source === lot.source && (lot.source === 'PLAN_CHANGE' || r.sourceKey === lot.sourceKey),
    );
    expect(match, `a real lot for ${lot.key} (${lot.source} ${lot.sourceKey})`).toBeDefined();
    lot.realId = match!.id;
    taken.add(match!.id);
  }
  for (const lot of s.lots) {
    const r = lots.find((x) => x.id === lot.realId)!;
    expect(
      { type: r.type, granted: r.granted, available: r.available, reserved: r.reserved, expiresAt: r.expiresAt?.getTime() ?? null, createdAt: r.createdAt.getTime() },
      `lot ${lot.key}`,
    ).toEqual({ type: lot.type, granted: lot.granted, available: lot.available, reserved: lot.reserved, expiresAt: lot.expiresAt, createdAt: lot.createdAt });
  }

  const rows = await db.select().from(reservations).where(eq(reservations.organizationId, real.organizationId));
  expect(rows.length, 'number of reservations').toBe(s.reservations.length);
  for (const reservation of s.reservations) {
    const r = rows.find((x) => x.id === reservation.realId);
    expect(r, `reservation ${reservation.idempotencyKey}`).toBeDefined();
    expect(
      { status: r!.status, amount: r!.amount, capturedAmount: r!.capturedAmount, refundedAmount: r!.refundedAmount, expiresAt: r!.expiresAt.getTime() },
      `reservation ${reservation.idempotencyKey}`,
    ).toEqual({ status: reservation.status, amount: reservation.amount, capturedAmount: reservation.capturedAmount, refundedAmount: reservation.refundedAmount, expiresAt: reservation.expiresAt });
  }

  const [org] = await db.select().from(organizations).where(eq(organizations.id, real.organizationId));
  expect(
    { planId: org!.planId, nextPlanId: org!.nextPlanId, cycleStartsAt: org!.cycleStartsAt.getTime(), cycleEndsAt: org!.cycleEndsAt.getTime() },
    'organization',
  ).toEqual({ planId: s.planId, nextPlanId: s.nextPlanId, cycleStartsAt: s.cycleStart, cycleEndsAt: s.cycleEnd });

  const balance = await getBalance(db, real.organizationId, real.clock.now());
  const expected = M.balance(s);
  expect({
    available: balance!.available,
    reserved: balance!.reserved,
    accounts: balance!.accounts.map((a) => ({ type: a.type, available: a.available, reserved: a.reserved })),
  }, 'balance').toEqual(expected);
}

function realLotId(s: M.State, lotKey: string): string | null {
  return s.lots.find((lot) => lot.key === lotKey)?.realId ?? null;
}

// --- commands -------------------------------------------------------------------------------

class GrantCommand implements Cmd {
  constructor(
    readonly type: M.AccountType,
    readonly amount: number,
    readonly expiresInMs: number | null,
  ) {}
  check = () => true;
  async run(model: Model, real: Real) {
    const s = model.state.s;
    const key = `grant-${s.serial + 1}-${s.grants.length}`;
    const expiresAt = this.expiresInMs === null ? null : s.now + this.expiresInMs;
    const expected = M.transact(model.state, (d) => M.grant(d, { key, type: this.type, amount: this.amount, expiresAt }));
    const actual = await attempt(() =>
      grantCredits(real.ctx, {
        organizationId: real.organizationId, type: this.type, amount: this.amount,
        expiresAt: expiresAt === null ? null : new Date(expiresAt), reason: 'property test', idempotencyKey: key,
      }),
    );
    expectSameOutcome(actual, expected, this.toString());
    await compare(model, real);
  }
  toString = () => `grant(${this.type}, ${this.amount}, expiresIn=${this.expiresInMs === null ? 'never' : `${this.expiresInMs}ms`})`;
}

class ReplayGrantCommand implements Cmd {
  constructor(readonly pick: number, readonly conflict: boolean) {}
  check = (m: Readonly<Model>) => m.state.s.grants.length > 0;
  async run(model: Model, real: Real) {
    const original = model.state.s.grants[this.pick % model.state.s.grants.length]!;
    const amount = this.conflict ? original.amount + 1 : original.amount;
    const input = { key: original.key, type: original.type, amount, expiresAt: original.expiresAt };
    const expected = M.transact(model.state, (d) => M.grant(d, input));
    const actual = await attempt(() =>
      grantCredits(real.ctx, {
        organizationId: real.organizationId, type: input.type, amount,
        expiresAt: original.type === 'SUBSCRIPTION' || input.expiresAt === null ? null : new Date(input.expiresAt),
        reason: 'property test', idempotencyKey: original.key,
      }),
    );
    expectSameOutcome(actual, expected, this.toString());
    if ('ok' in actual) expect(actual.ok.id).toBe(realLotId(model.state.s, original.lotKey));
    await compare(model, real);
  }
  toString = () => `replayGrant(#${this.pick}${this.conflict ? ', other amount' : ''})`;
}

class PurchaseCommand implements Cmd {
  constructor(readonly packId: string) {}
  check = () => true;
  async run(model: Model, real: Real) {
    // Payment references are unique across organizations, so they carry the organization's id.
    const reference = `${real.organizationId}-pay-${model.state.s.purchases.length}`;
    const expected = M.transact(model.state, (d) => M.purchase(d, { reference, packId: this.packId }));
    const actual = await attempt(() =>
      purchaseCreditPack(real.ctx, { organizationId: real.organizationId, packId: this.packId, paymentReference: reference }),
    );
    expectSameOutcome(actual, expected, this.toString());
    await compare(model, real);
  }
  toString = () => `purchase(${this.packId})`;
}

class ReplayPurchaseCommand implements Cmd {
  constructor(readonly pick: number, readonly conflict: boolean) {}
  check = (m: Readonly<Model>) => m.state.s.purchases.length > 0;
  async run(model: Model, real: Real) {
    const original = model.state.s.purchases[this.pick % model.state.s.purchases.length]!;
    const packId = this.conflict ? (original.packId === 'pack-500' ? 'pack-2000' : 'pack-500') : original.packId;
    const expected = M.transact(model.state, (d) => M.purchase(d, { reference: original.reference, packId }));
    const actual = await attempt(() =>
      purchaseCreditPack(real.ctx, { organizationId: real.organizationId, packId, paymentReference: original.reference }),
    );
    expectSameOutcome(actual, expected, this.toString());
    if ('ok' in actual) expect(actual.ok.id).toBe(realLotId(model.state.s, original.lotKey));
    await compare(model, real);
  }
  toString = () => `replayPurchase(#${this.pick}${this.conflict ? ', other pack' : ''})`;
}

class ReserveCommand implements Cmd {
  constructor(readonly generation: M.Generation, readonly ttlSeconds: number) {}
  check = () => true;
  async run(model: Model, real: Real) {
    const key = `reserve-${model.state.s.reservations.length}-${model.state.s.serial}`;
    await reserveAndCompare(model, real, key, this.generation, this.ttlSeconds, null);
  }
  toString = () => `reserve(${JSON.stringify(this.generation)} = ${M.costOf(this.generation)}, ttl=${this.ttlSeconds}s)`;
}

class ReplayReserveCommand implements Cmd {
  constructor(readonly pick: number, readonly otherGeneration: M.Generation | null, readonly ttlSeconds: number) {}
  check = (m: Readonly<Model>) => m.state.s.reservations.length > 0;
  async run(model: Model, real: Real) {
    const original = model.state.s.reservations[this.pick % model.state.s.reservations.length]!;
    const generation = this.otherGeneration ?? original.generation;
    await reserveAndCompare(model, real, original.idempotencyKey, generation, this.ttlSeconds, original.realId);
  }
  toString = () => `replayReserve(#${this.pick}${this.otherGeneration ? `, ${JSON.stringify(this.otherGeneration)}` : ''})`;
}

async function reserveAndCompare(model: Model, real: Real, key: string, generation: M.Generation, ttlSeconds: number, replayOf: string | null) {
  const expected = M.transact(model.state, (d) => M.reserve(d, { idempotencyKey: key, generation, ttlSeconds }));
  const actual = await attempt(() =>
    reserveCredits(real.ctx, { organizationId: real.organizationId, idempotencyKey: key, generation, ttlSeconds }),
  );
  expectSameOutcome(actual, expected, `reserve(${key})`);
  if (!('ok' in actual)) return compare(model, real);
  if (replayOf !== null) expect(actual.ok.id, 'a replay returns the original reservation').toBe(replayOf);
  // A new reservation's model copy learns its id; compare() learns the ids of lots this step made.
  const stored = model.state.s.reservations.find((r) => r.idempotencyKey === key)!;
  stored.realId = actual.ok.id;
  await compare(model, real);
  const allocations = await listAllocations(database.db, [actual.ok.id]);
  if (replayOf === null) {
    // Coverage: how often a reservation spanned several lots, and several of one account type.
    const types = new Set(allocations.map((a) => a.type));
    const shape = allocations.length === 1 ? 'one lot' : types.size < allocations.length ? 'several lots of one type' : 'several types';
    tally.set(`reserve spans ${shape}`, (tally.get(`reserve spans ${shape}`) ?? 0) + 1);
  }
  expect(allocations.map((a) => ({ lotId: a.lotId, amount: a.amount })), 'allocations, in order').toEqual(
    stored.allocations.map((a) => ({ lotId: realLotId(model.state.s, a.lotKey), amount: a.amount })),
  );
}

class CaptureCommand implements Cmd {
  constructor(readonly pick: number, readonly spec: M.CaptureSpec) {}
  check = (m: Readonly<Model>) => m.state.s.reservations.length > 0;
  async run(model: Model, real: Real) {
    const index = this.pick % model.state.s.reservations.length;
    const target = model.state.s.reservations[index]!;
    const amount = M.captureAmountFor(this.spec, target.amount);
    const expected = M.capture(model.state, index, amount);
    const actual = await attempt(() => captureReservation(real.ctx, { reservationId: target.realId!, amount }, null));
    expectSameOutcome(actual, expected, this.toString());
    await compare(model, real);
  }
  toString = () => `capture(#${this.pick}, ${JSON.stringify(this.spec)})`;
}

class RefundCommand implements Cmd {
  constructor(readonly pick: number) {}
  check = (m: Readonly<Model>) => m.state.s.reservations.length > 0;
  async run(model: Model, real: Real) {
    const index = this.pick % model.state.s.reservations.length;
    const target = model.state.s.reservations[index]!;
    const expected = M.refund(model.state, index);
    const actual = await attempt(() => refundReservation(real.ctx, { reservationId: target.realId!, reason: 'property test' }, null));
    expectSameOutcome(actual, expected, this.toString());
    await compare(model, real);
  }
  toString = () => `refund(#${this.pick})`;
}

class ExtendCommand implements Cmd {
  constructor(readonly pick: number, readonly ttlSeconds: number) {}
  check = (m: Readonly<Model>) => m.state.s.reservations.length > 0;
  async run(model: Model, real: Real) {
    const index = this.pick % model.state.s.reservations.length;
    const target = model.state.s.reservations[index]!;
    const expected = M.extend(model.state, index, this.ttlSeconds);
    const actual = await attempt(() => extendReservation(real.ctx, { reservationId: target.realId!, ttlSeconds: this.ttlSeconds }, null));
    expectSameOutcome(actual, expected, this.toString());
    await compare(model, real);
  }
  toString = () => `extend(#${this.pick}, ${this.ttlSeconds}s)`;
}

class AdvanceCommand implements Cmd {
  constructor(readonly ms: number, readonly sweep: boolean) {}
  check = () => true;
  async run(model: Model, real: Real) {
    real.clock.advance(this.ms);
    model.state.s.now += this.ms;
    if (this.sweep) {
      const expected = M.sweep(model.state.s);
      const actual = await sweepUntilIdle(real.ctx);
      expect(actual, 'what the sweeper did').toEqual(expected);
      const name = `sweep: ${actual.refundedReservations > 0 ? 'refunded' : ''}${actual.resetOrganizations > 0 ? ' reset' : ''}${actual.expiredLotOrganizations > 0 ? ' expired' : ''}`;
      tally.set(name, (tally.get(name) ?? 0) + 1);
    }
    await compare(model, real);
  }
  toString = () => `advance(${formatMs(this.ms)}${this.sweep ? ', sweep' : ''})`;
}

class ChangePlanCommand implements Cmd {
  constructor(readonly planId: string, readonly immediately: boolean) {}
  check = () => true;
  async run(model: Model, real: Real) {
    const expected = M.transact(model.state, (d) => M.changePlan(d, this.planId, this.immediately));
    const actual = await attempt(() =>
      changePlan(real.ctx, { organizationId: real.organizationId, planId: this.planId, immediately: this.immediately }),
    );
    expectSameOutcome(actual, expected, this.toString());
    await compare(model, real);
  }
  toString = () => `changePlan(${this.planId}, ${this.immediately ? 'immediately' : 'next cycle'})`;
}

function formatMs(ms: number): string {
  if (ms % DAY_MS === 0) return `${ms / DAY_MS}d`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  return `${ms / 1000}s`;
}

// --- arbitraries ----------------------------------------------------------------------------

// Costs from 1 to 100 credits, so a free plan's 100 covers a few and refuses some.
const generationArb: fc.Arbitrary<M.Generation> = fc.oneof(
  fc.integer({ min: 1, max: 100 }).map((count) => ({ modelId: 'text-draft', count })),
  fc.integer({ min: 1, max: 20 }).map((count) => ({ modelId: 'text-premium', count })),
  fc.integer({ min: 1, max: 8 }).map((count) => ({ modelId: 'image-standard', resolution: 'FHD_1080P' as const, count })),
  fc.integer({ min: 1, max: 5 }).map((count) => ({ modelId: 'image-draft', resolution: 'SD_480P' as const, count })),
  fc.record({ durationSeconds: fc.integer({ min: 1, max: 8 }), count: fc.integer({ min: 1, max: 2 }) }).map((g) => ({ modelId: 'video-standard', resolution: 'HD_720P' as const, ...g })),
  fc.integer({ min: 1, max: 2 }).map((durationSeconds) => ({ modelId: 'video-premium', resolution: 'UHD_4K' as const, durationSeconds, count: 1 })),
);

const ttlArb = fc.constantFrom(1, 30, 60, 900, 3600, 86_400);
// Taken modulo the number of reservations (or grants, purchases) so far.
const pickArb = fc.nat({ max: 50 });
// Mostly the types that may carry an expiry, so their lots differ in it.
const accountTypeArb = fc.oneof(
  { weight: 1, arbitrary: fc.constantFrom<M.AccountType>('SUBSCRIPTION', 'PURCHASED') },
  { weight: 3, arbitrary: fc.constantFrom<M.AccountType>('PROMOTIONAL', 'REFERRAL') },
);
// Expiries from seconds to beyond a billing cycle; PURCHASED and SUBSCRIPTION with one are refused.
const expiryArb = fc.option(fc.constantFrom(1_000, 30_000, 3_600_000, DAY_MS, 20 * DAY_MS, 45 * DAY_MS), { freq: 2 });
const advanceArb = fc.oneof(
  fc.integer({ min: 1, max: 120 }).map((s) => s * 1000), // time-to-live scale
  fc.integer({ min: 1, max: 48 }).map((h) => h * 3_600_000),
  fc.integer({ min: 1, max: 35 }).map((d) => d * DAY_MS), // often across a cycle boundary
  fc.integer({ min: 55, max: 100 }).map((d) => d * DAY_MS), // several boundaries: catch-up
);
const captureSpecArb: fc.Arbitrary<M.CaptureSpec> = fc.oneof(
  { weight: 4, arbitrary: fc.constant({ kind: 'full' as const }) },
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 99 }).map((percent) => ({ kind: 'percent' as const, percent })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'over' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'zero' as const }) },
);

// One weighted choice per step: reserving and settling are the common case.
const commandArbs: Array<fc.Arbitrary<Cmd>> = [
  fc.oneof(
    // Many small grants of every type and expiry, so reservations span several lots of one type
    // and the order among them (expiring first, never last, oldest) decides which lots are used.
    { weight: 8, arbitrary: fc.tuple(accountTypeArb, fc.integer({ min: 1, max: 120 }), expiryArb).map(([t, a, e]): Cmd => new GrantCommand(t, a, e)) },
    { weight: 2, arbitrary: fc.tuple(pickArb, fc.boolean()).map(([p, c]): Cmd => new ReplayGrantCommand(p, c)) },
    // Packs are large next to everything else; rarer, or they would cover every reservation.
    { weight: 1, arbitrary: fc.constantFrom('pack-500', 'pack-2000').map((p): Cmd => new PurchaseCommand(p)) },
    { weight: 1, arbitrary: fc.tuple(pickArb, fc.boolean()).map(([p, c]): Cmd => new ReplayPurchaseCommand(p, c)) },
    { weight: 12, arbitrary: fc.tuple(generationArb, ttlArb).map(([g, t]): Cmd => new ReserveCommand(g, t)) },
    { weight: 2, arbitrary: fc.tuple(pickArb, fc.option(generationArb, { freq: 2 }), ttlArb).map(([p, g, t]): Cmd => new ReplayReserveCommand(p, g, t)) },
    { weight: 8, arbitrary: fc.tuple(pickArb, captureSpecArb).map(([p, s]): Cmd => new CaptureCommand(p, s)) },
    { weight: 4, arbitrary: pickArb.map((p): Cmd => new RefundCommand(p)) },
    { weight: 2, arbitrary: fc.tuple(pickArb, ttlArb).map(([p, t]): Cmd => new ExtendCommand(p, t)) },
    { weight: 6, arbitrary: fc.tuple(advanceArb, fc.boolean()).map(([ms, sweep]): Cmd => new AdvanceCommand(ms, sweep)) },
    { weight: 2, arbitrary: fc.tuple(fc.constantFrom('free', 'starter', 'pro'), fc.boolean()).map(([p, i]): Cmd => new ChangePlanCommand(p, i)) },
  ),
];

const START_MIN = Date.UTC(2026, 0, 1);
const START_DAYS = 5 * 366;
const setupArb = fc.record({
  startMinute: fc.integer({ min: 0, max: START_DAYS * 1440 }),
  planId: fc.constantFrom('free', 'starter'),
  // An anchor some hours either side of the start, or at a month's end (31 Jan -> 28 Feb -> 31 Mar).
  anchor: fc.oneof(
    fc.integer({ min: -1000, max: 1000 }).map((hours) => ({ kind: 'offset' as const, hours })),
    fc.constantFrom(28, 29, 30, 31).map((day) => ({ kind: 'monthEnd' as const, day })),
  ),
});

function anchorFor(start: number, anchor: { kind: 'offset'; hours: number } | { kind: 'monthEnd'; day: number }): number {
  if (anchor.kind === 'offset') return start + anchor.hours * 3_600_000;
  const s = new Date(start);
  // The given day of the month before the start's month (so the anchor is in the past), at 23:30;
  // a day that month lacks rolls into the next, which is fine: any anchor is valid.
  return Date.UTC(s.getUTCFullYear(), s.getUTCMonth() - 1, anchor.day, 23, 30);
}

/**
 * Runs stay out of each other's way in the one shared database: after a run, its organization's
 * remaining deadlines are moved to the far future, so later runs' sweeps (which cover the whole
 * database, as in production) find nothing of it to do. Deadlines are not journaled amounts, so
 * the audit is unaffected.
 */
async function retire(organizationId: string): Promise<void> {
  const far = new Date('9999-01-01T00:00:00Z');
  await database.db.update(organizations).set({ cycleEndsAt: far }).where(eq(organizations.id, organizationId));
  await database.db.update(creditLots).set({ expiresAt: far }).where(and(eq(creditLots.organizationId, organizationId), sql`${creditLots.expiresAt} is not null`));
  await database.db.update(reservations).set({ expiresAt: far }).where(and(eq(reservations.organizationId, organizationId), eq(reservations.status, 'PENDING')));
}

describe('ledger against its model (PGlite)', () => {
  beforeAll(async () => {
    database = await openDatabase({});
  });
  afterAll(async () => {
    await database?.close();
  });

  it(`keeps every balance equal to the model's over ${NUM_RUNS} random sequences`, async () => {
    let runs = 0;
    let reservationsMade = 0;
    let commandsRun = 0;
    const property = fc.asyncProperty(
      setupArb,
      fc.commands(commandArbs, { maxCommands: MAX_COMMANDS, size: 'max', replayPath: process.env.FC_REPLAY_PATH }),
      async (setup, commands) => {
        const start = START_MIN + setup.startMinute * 60_000;
        const anchor = anchorFor(start, setup.anchor);
        const clock = new ManualClock(new Date(start));
        const ctx = { db: database.db, clock };
        const org = await createOrganization(ctx, { name: 'Property test', planId: setup.planId, billingCycleAnchor: new Date(anchor) });
        const model: Model = { state: { s: M.initialState(start, setup.planId, anchor) } };
        const real: Real = { ctx, clock, organizationId: org.id };
        runs += 1;
        try {
          await compare(model, real);
          await fc.asyncModelRun(() => ({ model, real }), commands);
          commandsRun += [...commands].length;
          reservationsMade += model.state.s.reservations.length;
        } finally {
          await retire(org.id);
        }
      },
    );
    await fc.assert(property, {
      numRuns: NUM_RUNS,
      seed: process.env.FC_SEED === undefined ? undefined : Number(process.env.FC_SEED),
      path: process.env.FC_PATH,
      verbose: 1,
    });
    // The whole database, every run's organization included, is still consistent.
    expect(await auditLedger(database.db)).toEqual([]);
    expect(runs).toBeGreaterThanOrEqual(NUM_RUNS);
    expect(reservationsMade, 'reservations made across all runs').toBeGreaterThan(NUM_RUNS);
    const [{ entries }] = (await database.db.select({ entries: sql<number>`count(*)::int` }).from(ledgerEntries)) as [{ entries: number }];
    console.log([...tally].sort().map(([k, v]) => `${k} ${v}`).join('\n'));
    console.log(`property test: ${runs} runs, ${commandsRun} commands generated, ${reservationsMade} reservations, ${entries} journal entries`);
  }, 900_000);
});
