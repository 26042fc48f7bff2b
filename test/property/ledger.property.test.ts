// Model-based property test: random sequences of ledger operations run against the real ledger
// functions (the system under test) with a manual clock, on PGlite and on PostgreSQL (or a Citus
// coordinator) when DATABASE_URL names one, and against the in-memory
// model in ./model.ts, written from README.md's rules alone (it imports nothing from src/).
// After every step the organization is read back with plain SQL (./snapshot.ts: the tables
// organizations, credit_lots, reservations, ledger_entries, withheld_credits; no ledger read
// function) and must equal the model: plan and cycle, every lot's fixed facts, the totals of
// every group of equally ranked lots, every reservation and what it took from, consumed in and
// returned to each such group, the journal behind every lot, and the README's invariants.
// At the end of each run the product's own audit must be clean too (a check of the product, not
// a judge of the model comparison).
//
// Replaying a failure: fast-check prints `seed`, `path` and the commands' `replayPath`. Run
//   FC_SEED=<seed> FC_PATH=<path> FC_REPLAY_PATH=<replayPath> npx vitest run test/property
// to run exactly that counterexample again. FC_RUNS sets the number of sequences (default 200).
// STRICT_CATCH_UP=1 holds every write to the README's catch-up rule as written (see model.ts).
import { sql } from 'drizzle-orm';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { type Database, rowsOf } from '../../src/db/client.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import type { LedgerContext } from '../../src/ledger/context.ts';
import { CreditError, InsufficientCreditsError, ReservationStateError } from '../../src/ledger/errors.ts';
import { grantCredits, purchaseCreditPack } from '../../src/ledger/grants.ts';
import { changePlan, createOrganization } from '../../src/ledger/organizations.ts';
import { listAllocations, reserveCredits, type Reservation } from '../../src/ledger/reservations.ts';
import {
  captureReservation,
  extendReservation,
  increaseReservation,
  refundReservation,
} from '../../src/ledger/settlements.ts';
import { sweepUntilIdle } from '../../src/ledger/sweeper.ts';
import { createTestDatabase, drivers } from '../support/database.ts';
import * as M from './model.ts';
import {
  checkCaptureWithinTies,
  checkReserveWithinTies,
  diff,
  readSnapshot,
  type Identities,
  type Snapshot,
} from './snapshot.ts';

// 500 sequences took about 180 s on the 2-core CI machine (300 took 105 s), so the default is 200.
const NUM_RUNS = Number(process.env.FC_RUNS ?? 200);
const REPLAYING = process.env.FC_PATH !== undefined || process.env.FC_SEED !== undefined;
const MAX_COMMANDS = 40;
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

interface Model {
  s: M.State;
}

interface Real {
  ctx: LedgerContext;
  clock: ManualClock;
  database: Database;
  organizationId: string;
  ids: Identities;
  /** Per reservation id: the lot it stopped in, when it stopped inside one (taken last). */
  lastLots: Map<string, string | null>;
  serial: number;
  /** Captures, refunds and extensions that succeeded with an idempotency key: how to send each again, and what it answered. */
  keyed: Array<{ label: string; call: () => Promise<Reservation>; answer: Reservation }>;
}

type Cmd = fc.AsyncCommand<Model, Real>;

/** What the real call answered, in the model's terms. */
type RealOutcome<R> = { ok: R } | { error: string; required?: number; available?: number; status?: string };

async function attempt<R>(call: () => Promise<R>): Promise<RealOutcome<R>> {
  try {
    return { ok: await call() };
  } catch (error) {
    if (!(error instanceof CreditError)) throw error; // anything else is a bug, not an outcome
    if (error instanceof InsufficientCreditsError)
      return { error: error.name, required: error.required, available: error.available };
    if (error instanceof ReservationStateError) return { error: error.name, status: error.status };
    return { error: error.name };
  }
}

// --- coverage ---------------------------------------------------------------------------------

const tally = new Map<string, number>();
const count = (name: string, n = 1) => tally.set(name, (tally.get(name) ?? 0) + n);

/**
 * What the runs must have covered, per 100 runs: about half of what a 200-run sample showed, so
 * the generators below clear these with a wide margin. Checked on runs of 200 sequences or more,
 * not on replays.
 */
const MINIMUM_PER_100_RUNS: Record<string, number> = {
  'reservation spans several lots': 40,
  'reservation spans several tie groups': 30,
  'tie group of several lots reserved from': 12,
  'reservation: InsufficientCreditsError': 20,
  'partial capture': 30,
  'partial capture over several tie groups': 1,
  'refund into an expired lot': 35,
  'sweeper refunded an expired reservation': 40,
  'cycle reset with holds': 10,
  'cycle reset with a scheduled plan change': 6,
  'cycle reset after missed cycles': 4,
  'immediate upgrade': 25,
  'scheduled downgrade': 20,
  'extend capped at 24 h': 10,
  'allowance withheld': 4,
};

// --- one step -----------------------------------------------------------------------------------

function describeOutcome(o: RealOutcome<unknown> | M.Outcome<unknown>): string {
  return 'ok' in o ? 'ok' : JSON.stringify(o);
}

function sameError(real: RealOutcome<unknown>, model: M.Outcome<unknown>): boolean {
  if ('ok' in real || 'ok' in model) return 'ok' in real && 'ok' in model;
  if (real.error !== model.error) return false;
  if (model.error === 'InsufficientCreditsError')
    return real.required === model.required && real.available === model.available;
  if (model.error === 'ReservationStateError') return real.status === model.status;
  return true;
}

interface StepSpec<T, R> {
  label: string;
  alternatives: M.Alternative<T>[];
  call: () => Promise<R>;
  /** For an answer both sides gave: what differs between them; may teach `ids` new ids. */
  answer?: (real: R, model: T, ids: Identities, state: M.State) => string[];
}

/**
 * Runs the real call, reads the organization back, and keeps the first alternative of the model
 * whose answer and state both match the database. Fails with every alternative's differences.
 */
async function step<T, R>(
  model: Model,
  real: Real,
  spec: StepSpec<T, R>,
): Promise<{ actual: RealOutcome<R>; snapshot: Snapshot; chosen: M.Alternative<T> }> {
  const actual = await attempt(spec.call);
  const snapshot = await readSnapshot(real.database.db, real.organizationId, real.clock.now().getTime());
  const report: string[] = [];
  for (const alternative of spec.alternatives) {
    const reading = alternative.reading ? ` [${alternative.reading}]` : '';
    if (!sameError(actual, alternative.outcome)) {
      report.push(
        `model${reading} answered ${describeOutcome(alternative.outcome)}, the ledger ${describeOutcome(actual)}`,
      );
      continue;
    }
    const ids: Identities = { lots: new Map(real.ids.lots), reservations: [...real.ids.reservations] };
    const problems: string[] = [];
    if ('ok' in actual && 'ok' in alternative.outcome && spec.answer)
      problems.push(...spec.answer(actual.ok, alternative.outcome.ok, ids, alternative.state));
    problems.push(...diff(alternative.state, snapshot, ids));
    if (problems.length === 0) {
      real.ids = ids;
      model.s = alternative.state;
      const selfProblems = M.selfCheck(model.s);
      if (selfProblems.length > 0)
        throw new Error(`model broke its own rules after ${spec.label}:\n  ${selfProblems.join('\n  ')}`);
      for (const event of model.s.events) count(event);
      if (alternative.reading) count(`reading: ${alternative.reading}`);
      count(`${spec.label.replace(/\(.*$/, '')}: ${'ok' in actual ? 'ok' : actual.error}`);
      return { actual, snapshot, chosen: alternative };
    }
    report.push(
      `model${reading} answered ${describeOutcome(alternative.outcome)} like the ledger, but:\n    ${problems.slice(0, 20).join('\n    ')}`,
    );
  }
  throw new Error(
    `${spec.label} at ${new Date(real.clock.now()).toISOString()}: the ledger disagrees with the model\n  ${report.join('\n  ')}`,
  );
}

function expectNoProblems(problems: string[], what: string): void {
  expect(problems, what).toEqual([]);
}

// --- commands -----------------------------------------------------------------------------------

/** Which reservation a command acts on: mostly a pending one (if any), sometimes any. */
interface Pick {
  n: number;
  pending: boolean;
}

function pickReservation(s: M.State, pick: Pick): number {
  const pending = s.reservations.map((r, i) => (r.status === 'PENDING' ? i : -1)).filter((i) => i >= 0);
  if (pick.pending && pending.length > 0) return pending[pick.n % pending.length]!;
  return pick.n % s.reservations.length;
}

const formatPick = (p: Pick) => `${p.pending ? 'pending ' : ''}#${p.n}`;

const lotAnswer = (real: { id: string }, model: M.LotAnswer, ids: Identities): string[] => {
  if (model.replay)
    return real.id === ids.lots.get(model.lot)
      ? []
      : [`a repeat returned lot ${real.id}, not the original ${ids.lots.get(model.lot)}`];
  if ([...ids.lots.values()].includes(real.id)) return [`a new grant returned the existing lot ${real.id}`];
  ids.lots.set(model.lot, real.id);
  return [];
};

class GrantCommand implements Cmd {
  constructor(
    readonly type: M.AccountType,
    readonly amount: number,
    readonly expiresInMs: number | null,
  ) {}
  check = () => true;
  async run(model: Model, real: Real) {
    const input: M.GrantInput = {
      key: `grant-${real.serial++}`,
      type: this.type,
      amount: this.amount,
      reason: 'property test',
      expiresAt: this.expiresInMs === null ? null : model.s.now + this.expiresInMs,
    };
    await runGrant(model, real, input, this.toString());
  }
  toString = () =>
    `grant(${this.type}, ${this.amount}, expiresIn=${this.expiresInMs === null ? 'never' : formatMs(this.expiresInMs)})`;
}

/** Two grants alike but for their amounts, at one moment: lots that tie in consumption order. */
class TiedGrantsCommand implements Cmd {
  constructor(
    readonly type: M.AccountType,
    readonly amounts: [number, number],
    readonly expiresInMs: number | null,
  ) {}
  check = () => true;
  async run(model: Model, real: Real) {
    for (const amount of this.amounts) {
      const input: M.GrantInput = {
        key: `grant-${real.serial++}`,
        type: this.type,
        amount,
        reason: 'property test',
        expiresAt: this.expiresInMs === null ? null : model.s.now + this.expiresInMs,
      };
      await runGrant(model, real, input, this.toString());
    }
  }
  toString = () =>
    `tiedGrants(${this.type}, ${this.amounts.join(' and ')}, expiresIn=${this.expiresInMs === null ? 'never' : formatMs(this.expiresInMs)})`;
}

/**
 * Grants never-expiring credits until the organization holds all but `room` credits of the
 * balance cap, so that later grants, purchases, cycle allowances and upgrades meet the cap.
 */
class FillToCapCommand implements Cmd {
  constructor(readonly room: number) {}
  check = () => true;
  async run(model: Model, real: Real) {
    for (let i = 0; i < 3; i += 1) {
      const amount = Math.min(M.GRANT_MAX, M.BALANCE_CAP - this.room - M.held(model.s));
      if (amount < 1) return;
      const input: M.GrantInput = {
        key: `grant-${real.serial++}`,
        type: 'REFERRAL',
        amount,
        reason: 'property test',
        expiresAt: null,
      };
      await runGrant(model, real, input, this.toString());
    }
  }
  toString = () => `fillToCap(room=${this.room})`;
}

class ReplayGrantCommand implements Cmd {
  constructor(
    readonly pick: number,
    readonly conflict: boolean,
  ) {}
  check = (m: Readonly<Model>) => m.s.grants.length > 0;
  async run(model: Model, real: Real) {
    const original = model.s.grants[this.pick % model.s.grants.length]!.input;
    const amount = !this.conflict ? original.amount : original.amount === 1 ? 2 : original.amount - 1;
    await runGrant(model, real, { ...original, amount }, this.toString());
  }
  toString = () => `replayGrant(#${this.pick}${this.conflict ? ', other amount' : ''})`;
}

async function runGrant(model: Model, real: Real, input: M.GrantInput, label: string) {
  await step(model, real, {
    label,
    alternatives: M.grant(model.s, input),
    call: () =>
      grantCredits(real.ctx, {
        organizationId: real.organizationId,
        type: input.type,
        amount: input.amount,
        reason: input.reason,
        expiresAt: input.expiresAt === null ? null : new Date(input.expiresAt),
        idempotencyKey: input.key,
      }),
    answer: (lot, m, ids) => lotAnswer(lot, m, ids),
  });
}

class PurchaseCommand implements Cmd {
  constructor(readonly packId: string) {}
  check = () => true;
  async run(model: Model, real: Real) {
    // Payment references are unique across organizations, so they carry the organization's id.
    await runPurchase(model, real, `${real.organizationId}-pay-${real.serial++}`, this.packId, this.toString());
  }
  toString = () => `purchase(${this.packId})`;
}

class ReplayPurchaseCommand implements Cmd {
  constructor(
    readonly pick: number,
    readonly conflict: boolean,
  ) {}
  check = (m: Readonly<Model>) => m.s.purchases.length > 0;
  async run(model: Model, real: Real) {
    const original = model.s.purchases[this.pick % model.s.purchases.length]!;
    const packId = this.conflict ? (original.packId === 'pack-500' ? 'pack-2000' : 'pack-500') : original.packId;
    await runPurchase(model, real, original.reference, packId, this.toString());
  }
  toString = () => `replayPurchase(#${this.pick}${this.conflict ? ', other pack' : ''})`;
}

async function runPurchase(model: Model, real: Real, reference: string, packId: string, label: string) {
  await step(model, real, {
    label,
    alternatives: M.purchase(model.s, reference, packId),
    call: () =>
      purchaseCreditPack(real.ctx, { organizationId: real.organizationId, packId, paymentReference: reference }),
    answer: (lot, m, ids) => lotAnswer(lot, m, ids),
  });
}

class ReserveCommand implements Cmd {
  constructor(
    readonly generation: M.Generation,
    readonly ttlSeconds: number | null,
  ) {}
  check = () => true;
  async run(model: Model, real: Real) {
    await runReserve(model, real, `reserve-${real.serial++}`, this.generation, this.ttlSeconds, this.toString());
  }
  toString = () =>
    `reserve(${JSON.stringify(this.generation)} = ${M.costOf(this.generation)}, ttl=${this.ttlSeconds ?? 'default'})`;
}

/**
 * A reservation sized from the model's state to need a little more than the first spendable group
 * of lots holds, so it spans several lots (or is refused when nothing else is left). Only the
 * request is chosen from the state; what it must do is still the model's to say.
 */
class SpanningReserveCommand implements Cmd {
  constructor(
    readonly extra: number,
    readonly ttlSeconds: number | null,
  ) {}
  check = () => true;
  async run(model: Model, real: Real) {
    const first = M.consumptionOrder(model.s)[0]?.available ?? 0;
    const needed = Math.max(1, first + this.extra);
    const generation: M.Generation =
      needed <= 100
        ? { modelId: 'text-draft', count: needed }
        : { modelId: 'text-premium', count: Math.min(100, Math.ceil(needed / 5)) };
    await runReserve(
      model,
      real,
      `reserve-${real.serial++}`,
      generation,
      this.ttlSeconds,
      `${this} = ${M.costOf(generation)}`,
    );
  }
  toString = () => `spanningReserve(first group + ${this.extra}, ttl=${this.ttlSeconds ?? 'default'})`;
}

class ReplayReserveCommand implements Cmd {
  constructor(
    readonly pick: number,
    readonly otherGeneration: M.Generation | null,
    readonly ttlSeconds: number | null,
  ) {}
  check = (m: Readonly<Model>) => m.s.reservations.length > 0;
  async run(model: Model, real: Real) {
    const original = model.s.reservations[this.pick % model.s.reservations.length]!;
    await runReserve(
      model,
      real,
      original.idempotencyKey,
      this.otherGeneration ?? original.generation,
      this.ttlSeconds,
      this.toString(),
    );
  }
  toString = () =>
    `replayReserve(#${this.pick}${this.otherGeneration ? `, ${JSON.stringify(this.otherGeneration)}` : ''})`;
}

async function runReserve(
  model: Model,
  real: Real,
  key: string,
  generation: M.Generation,
  ttlSeconds: number | null,
  label: string,
) {
  const { actual, snapshot, chosen } = await step(model, real, {
    label: `reservation(${label})`,
    alternatives: M.reserve(model.s, { idempotencyKey: key, generation, ttlSeconds }),
    call: () =>
      reserveCredits(real.ctx, { organizationId: real.organizationId, idempotencyKey: key, generation, ttlSeconds }),
    answer: (r, m, ids, state) => {
      const expected = state.reservations[m.index]!;
      const problems: string[] = [];
      if (m.replay) {
        if (r.id !== ids.reservations[m.index])
          problems.push(`a repeat returned reservation ${r.id}, not the original ${ids.reservations[m.index]}`);
      } else {
        if (ids.reservations.includes(r.id)) problems.push(`a new reservation returned the existing ${r.id}`);
        ids.reservations[m.index] = r.id;
      }
      if (r.amount !== expected.amount) problems.push(`answered amount ${r.amount}, model ${expected.amount}`);
      if (r.expiresAt.getTime() !== expected.expiresAt)
        problems.push(
          `answered expiresAt ${r.expiresAt.toISOString()}, model ${new Date(expected.expiresAt).toISOString()}`,
        );
      return problems;
    },
  });
  if (!('ok' in actual) || !('ok' in chosen.outcome) || chosen.outcome.ok.replay) return;
  const id = actual.ok.id;
  const moves = snapshot.movements.filter((m) => m.reservationId === id);
  if (moves.length > 1) count('reservation spans several lots');
  const lotById = new Map(snapshot.lots.map((l) => [l.id, l]));
  const perBucket = new Map<string, number>();
  for (const m of moves) {
    const lot = lotById.get(m.lotId)!;
    const key = M.bucketKey(lot.type, lot.expiresAt, lot.createdAt);
    perBucket.set(key, (perBucket.get(key) ?? 0) + 1);
  }
  if ([...perBucket.values()].some((n) => n > 1)) count('tie group of several lots reserved from');
  const { problems, lastLot } = checkReserveWithinTies(snapshot, id);
  expectNoProblems(problems, `${label}: lots within a tie group`);
  real.lastLots.set(id, lastLot);
}

class CaptureCommand implements Cmd {
  constructor(
    readonly pick: Pick,
    readonly spec: CaptureSpec,
  ) {}
  check = (m: Readonly<Model>) => m.s.reservations.length > 0;
  async run(model: Model, real: Real) {
    const index = pickReservation(model.s, this.pick);
    const id = real.ids.reservations[index]!;
    const amount = captureAmountFor(this.spec, model.s.reservations[index]!.amount);
    const idempotencyKey = `settle-${real.serial++}`;
    const call = () => captureReservation(real.ctx, { reservationId: id, amount, idempotencyKey }, null);
    const { actual } = await step(model, real, {
      label: this.toString(),
      alternatives: M.settleOp(model.s, index, { kind: 'capture', amount }),
      call,
      answer: (r, m, _ids, state) => answerMatches(r, state.reservations[m.index]!),
    });
    rememberKeyed(real, this.toString(), call, actual);
    if ('ok' in actual) {
      const snapshot = await readSnapshot(real.database.db, real.organizationId, real.clock.now().getTime());
      expectNoProblems(
        checkCaptureWithinTies(snapshot, id, real.lastLots.get(id) ?? null),
        `${this}: order of consumption within a tie group`,
      );
    }
  }
  toString = () => `capture(${formatPick(this.pick)}, ${JSON.stringify(this.spec)})`;
}

function answerMatches(
  r: { status: string; capturedAmount: number; refundedAmount: number; expiresAt: Date },
  m: M.Reservation,
): string[] {
  const real = {
    status: r.status,
    captured: r.capturedAmount,
    refunded: r.refundedAmount,
    expiresAt: r.expiresAt.getTime(),
  };
  const model = { status: m.status, captured: m.capturedAmount, refunded: m.refundedAmount, expiresAt: m.expiresAt };
  return JSON.stringify(real) === JSON.stringify(model)
    ? []
    : [`answered ${JSON.stringify(real)}, model ${JSON.stringify(model)}`];
}

class RefundCommand implements Cmd {
  constructor(readonly pick: Pick) {}
  check = (m: Readonly<Model>) => m.s.reservations.length > 0;
  async run(model: Model, real: Real) {
    const index = pickReservation(model.s, this.pick);
    const id = real.ids.reservations[index]!;
    const idempotencyKey = `settle-${real.serial++}`;
    const call = () =>
      refundReservation(real.ctx, { reservationId: id, reason: 'property test', idempotencyKey }, null);
    const { actual } = await step(model, real, {
      label: this.toString(),
      alternatives: M.settleOp(model.s, index, { kind: 'refund', reason: 'property test' }),
      call,
      answer: (r, m, _ids, state) => answerMatches(r, state.reservations[m.index]!),
    });
    rememberKeyed(real, this.toString(), call, actual);
  }
  toString = () => `refund(${formatPick(this.pick)})`;
}

class ExtendCommand implements Cmd {
  constructor(
    readonly pick: Pick,
    readonly ttlSeconds: number,
    readonly afterMs: number,
  ) {}
  check = (m: Readonly<Model>) => m.s.reservations.length > 0;
  async run(model: Model, real: Real) {
    // Some time first, so the reservation has aged and a long extension meets the 24 h lifetime.
    if (this.afterMs > 0) await advanceClock(model, real, this.afterMs, this.toString());
    const index = pickReservation(model.s, this.pick);
    const id = real.ids.reservations[index]!;
    const idempotencyKey = `settle-${real.serial++}`;
    const call = () =>
      extendReservation(real.ctx, { reservationId: id, ttlSeconds: this.ttlSeconds, idempotencyKey }, null);
    const { actual } = await step(model, real, {
      label: this.toString(),
      alternatives: M.settleOp(model.s, index, { kind: 'extend', ttlSeconds: this.ttlSeconds }),
      call,
      answer: (r, m, _ids, state) => answerMatches(r, state.reservations[m.index]!),
    });
    rememberKeyed(real, this.toString(), call, actual);
  }
  toString = () =>
    `extend(${formatPick(this.pick)}, ${this.ttlSeconds}s${this.afterMs > 0 ? `, after ${formatMs(this.afterMs)}` : ''})`;
}

class IncreaseCommand implements Cmd {
  constructor(
    readonly pick: Pick,
    readonly additionalCredits: number,
  ) {}
  check = (m: Readonly<Model>) => m.s.reservations.length > 0;
  async run(model: Model, real: Real) {
    const index = pickReservation(model.s, this.pick);
    const id = real.ids.reservations[index]!;
    const idempotencyKey = `settle-${real.serial++}`;
    const call = () =>
      increaseReservation(
        real.ctx,
        { reservationId: id, additionalCredits: this.additionalCredits, idempotencyKey },
        null,
      );
    const { actual } = await step(model, real, {
      label: this.toString(),
      alternatives: M.settleOp(model.s, index, { kind: 'increase', additionalCredits: this.additionalCredits }),
      call,
      answer: (r, m, _ids, state) => {
        const expected = state.reservations[m.index]!;
        const problems = answerMatches(r, expected);
        return r.amount === expected.amount ? problems : [...problems, `amount ${r.amount}, model ${expected.amount}`];
      },
    });
    rememberKeyed(real, this.toString(), call, actual);
    if ('ok' in actual) {
      // The credits the increase took are now the reservation's last: a capture consumes them last.
      const allocations = await listAllocations(real.database.db, [id], real.organizationId);
      real.lastLots.set(id, allocations.at(-1)!.lotId);
    }
  }
  toString = () => `increase(${formatPick(this.pick)}, ${this.additionalCredits})`;
}

function rememberKeyed(real: Real, label: string, call: () => Promise<Reservation>, actual: RealOutcome<Reservation>) {
  if ('ok' in actual) real.keyed.push({ label, call, answer: actual.ok });
}

/**
 * A client that lost an answer sends a keyed capture, refund or extension again, maybe long after
 * (README "Idempotency"): it must get exactly the first answer, and nothing may change, whatever
 * happened to the reservation since. The one effect a retry may have is the one every write has,
 * starting a billing cycle that has ended, which the model does not take for a replay; so a retry
 * is sent only while the organization's current cycle lasts.
 */
class RetrySettlementCommand implements Cmd {
  constructor(readonly n: number) {}
  check = () => true;
  async run(model: Model, real: Real) {
    if (real.keyed.length === 0) {
      count('retry: nothing to retry');
      return;
    }
    const [org] = rowsOf<{ ends: string | Date }>(
      await real.database.db.execute(
        sql`select cycle_ends_at as ends from organizations where id = ${real.organizationId}`,
      ),
    );
    if (real.clock.now().getTime() >= new Date(org!.ends).getTime()) {
      count('retry: skipped at a cycle end');
      return;
    }
    const first = real.keyed[this.n % real.keyed.length]!;
    const again = await attempt(first.call);
    expect(again, `${this} of ${first.label}`).toEqual({ ok: first.answer });
    const snapshot = await readSnapshot(real.database.db, real.organizationId, real.clock.now().getTime());
    expectNoProblems(diff(model.s, snapshot, real.ids), `${this} of ${first.label}: a replay changes nothing`);
    count('retry: replayed');
  }
  toString = () => `retry(#${this.n})`;
}

class ChangePlanCommand implements Cmd {
  constructor(
    readonly planId: string,
    readonly immediately: boolean,
  ) {}
  check = () => true;
  async run(model: Model, real: Real) {
    await step(model, real, {
      label: this.toString(),
      alternatives: M.changePlan(model.s, this.planId, this.immediately),
      call: () =>
        changePlan(real.ctx, {
          organizationId: real.organizationId,
          planId: this.planId,
          immediately: this.immediately,
        }),
      answer: (r, m) => {
        const problems: string[] = [];
        if (m.appliedImmediately !== null && r.appliedImmediately !== m.appliedImmediately)
          problems.push(`appliedImmediately ${r.appliedImmediately}, model ${m.appliedImmediately}`);
        if (m.effectiveAt !== null && r.effectiveAt.getTime() !== m.effectiveAt)
          problems.push(`effectiveAt ${r.effectiveAt.toISOString()}, model ${new Date(m.effectiveAt).toISOString()}`);
        return problems;
      },
    });
  }
  toString = () => `changePlan(${this.planId}, ${this.immediately ? 'immediately' : 'next cycle'})`;
}

/** Moves the clock: by a fixed time, or to just past the next deadline the model knows of. */
type Advance =
  | { kind: 'by'; ms: number }
  | { kind: 'pastNextDeadline'; extraMs: number }
  | { kind: 'pastCycleEnd'; extraMs: number };

function nextDeadline(s: M.State): number {
  const deadlines = [
    s.cycleEnd,
    ...s.buckets
      .filter((b) => b.expiresAt !== null && b.expiresAt > s.now && (b.available > 0 || b.reserved > 0))
      .map((b) => b.expiresAt!),
    ...s.reservations.filter((r) => r.status === 'PENDING' && r.expiresAt > s.now).map((r) => r.expiresAt),
  ];
  return Math.min(...deadlines);
}

class AdvanceCommand implements Cmd {
  constructor(
    readonly advance: Advance,
    readonly sweep: boolean,
  ) {}
  check = () => true;
  async run(model: Model, real: Real) {
    const s = model.s;
    const to =
      this.advance.kind === 'by'
        ? s.now + this.advance.ms
        : this.advance.kind === 'pastCycleEnd'
          ? s.cycleEnd + this.advance.extraMs
          : nextDeadline(s) + this.advance.extraMs;
    await advanceClock(model, real, Math.max(0, to - s.now), this.toString());
    if (!this.sweep) return;
    await step(model, real, {
      label: 'sweep',
      alternatives: M.sweep(model.s),
      call: async () => {
        const result = await sweepUntilIdle(real.ctx);
        expect(result.failedItems ?? 0, 'sweep items that failed').toBe(0);
        return result;
      },
    });
  }
  toString = () => {
    const a = this.advance;
    const what =
      a.kind === 'by'
        ? formatMs(a.ms)
        : `${a.kind === 'pastCycleEnd' ? 'past cycle end' : 'past next deadline'} +${formatMs(a.extraMs)}`;
    return `advance(${what}${this.sweep ? ', sweep' : ''})`;
  };
}

/** Moves both clocks; while nothing runs, nothing in the database may change. */
async function advanceClock(model: Model, real: Real, ms: number, label: string): Promise<void> {
  real.clock.advance(ms);
  model.s = { ...structuredClone(model.s), now: model.s.now + ms, events: [] };
  const snapshot = await readSnapshot(real.database.db, real.organizationId, real.clock.now().getTime());
  expectNoProblems(diff(model.s, snapshot, real.ids), `${label}: nothing may change while nothing runs`);
}

function formatMs(ms: number): string {
  if (ms === 0) return '0';
  if (ms % DAY_MS === 0) return `${ms / DAY_MS}d`;
  if (ms % HOUR_MS === 0) return `${ms / HOUR_MS}h`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

// --- arbitraries --------------------------------------------------------------------------------

type CaptureSpec = { kind: 'full' } | { kind: 'percent'; percent: number } | { kind: 'over' } | { kind: 'zero' };

function captureAmountFor(spec: CaptureSpec, amount: number): number | null {
  switch (spec.kind) {
    case 'full':
      return null;
    case 'percent':
      return Math.max(1, Math.floor((amount * spec.percent) / 100));
    case 'over':
      return amount + 1;
    case 'zero':
      return 0;
  }
}

// Costs from 1 to about 100 credits, so a free plan's 100 covers a few and refuses some.
const generationArb: fc.Arbitrary<M.Generation> = fc.oneof(
  fc.integer({ min: 1, max: 100 }).map((count) => ({ modelId: 'text-draft', count })),
  fc.integer({ min: 1, max: 40 }).map((count) => ({ modelId: 'text-standard', count })),
  fc.integer({ min: 1, max: 20 }).map((count) => ({ modelId: 'text-premium', count })),
  fc.integer({ min: 1, max: 5 }).map((count) => ({ modelId: 'image-draft', resolution: 'SD_480P' as const, count })),
  fc
    .integer({ min: 1, max: 8 })
    .map((count) => ({ modelId: 'image-standard', resolution: 'FHD_1080P' as const, count })),
  fc.integer({ min: 1, max: 2 }).map((count) => ({ modelId: 'image-premium', resolution: 'UHD_4K' as const, count })),
  fc
    .record({ durationSeconds: fc.integer({ min: 1, max: 10 }), count: fc.integer({ min: 1, max: 3 }) })
    .map((g) => ({ modelId: 'video-draft', resolution: 'SD_480P' as const, ...g })),
  fc
    .record({ durationSeconds: fc.integer({ min: 1, max: 8 }), count: fc.integer({ min: 1, max: 2 }) })
    .map((g) => ({ modelId: 'video-standard', resolution: 'HD_720P' as const, ...g })),
  fc
    .integer({ min: 1, max: 4 })
    .map((durationSeconds) => ({ modelId: 'video-premium', resolution: 'UHD_4K' as const, durationSeconds, count: 1 })),
);

// Short ones run out between steps; long ones are still held when a cycle ends or a lot expires.
const ttlArb = fc.oneof(
  { weight: 1, arbitrary: fc.constant(null) },
  { weight: 3, arbitrary: fc.constantFrom(1, 30, 900, 3600) },
  { weight: 6, arbitrary: fc.constantFrom(6 * 3600, 86_400) },
);
// Mostly the longest, so an extension after any clock move reaches the 24 h lifetime.
const extendTtlArb = fc.oneof(
  { weight: 1, arbitrary: fc.constantFrom(1, 60, 3600) },
  { weight: 3, arbitrary: fc.constantFrom(12 * 3600, 86_400, 86_400) },
);
// Taken modulo the number of reservations (or grants, purchases) so far.
const pickArb = fc.nat({ max: 50 });
const reservationPickArb: fc.Arbitrary<Pick> = fc
  .record({ n: fc.nat({ max: 50 }), pending: fc.boolean() })
  .map((p) => ({ ...p, pending: p.pending || p.n % 3 !== 0 }));
// Expiries from seconds to beyond a billing cycle (PROMOTIONAL and REFERRAL only).
const expiryArb = fc.option(fc.constantFrom(1_000, 30_000, HOUR_MS, 6 * HOUR_MS, DAY_MS, 20 * DAY_MS, 45 * DAY_MS), {
  freq: 3,
});
const grantArb: fc.Arbitrary<Cmd> = fc.oneof(
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom<M.AccountType>('SUBSCRIPTION', 'PURCHASED'), fc.integer({ min: 1, max: 120 }))
      .map(([t, a]): Cmd => new GrantCommand(t, a, null)),
  },
  {
    weight: 5,
    arbitrary: fc
      .tuple(fc.constantFrom<M.AccountType>('PROMOTIONAL', 'REFERRAL'), fc.integer({ min: 1, max: 120 }), expiryArb)
      .map(([t, a, e]): Cmd => new GrantCommand(t, a, e)),
  },
  // Rarely, a grant of the per-grant maximum.
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.constantFrom<M.AccountType>('PROMOTIONAL', 'REFERRAL'), fc.option(fc.constant(20 * DAY_MS)))
      .map(([t, e]): Cmd => new GrantCommand(t, M.GRANT_MAX, e)),
  },
);
const advanceArb: fc.Arbitrary<Advance> = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 120 }).map((s) => ({ kind: 'by' as const, ms: s * 1000 })) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 30 }).map((h) => ({ kind: 'by' as const, ms: h * HOUR_MS })) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 35 }).map((d) => ({ kind: 'by' as const, ms: d * DAY_MS })) },
  { weight: 1, arbitrary: fc.integer({ min: 55, max: 100 }).map((d) => ({ kind: 'by' as const, ms: d * DAY_MS })) }, // missed cycles
  {
    weight: 4,
    arbitrary: fc.constantFrom(0, 1, 1000, 60_000).map((extraMs) => ({ kind: 'pastNextDeadline' as const, extraMs })),
  },
  {
    weight: 5,
    arbitrary: fc.constantFrom(0, 1000, HOUR_MS).map((extraMs) => ({ kind: 'pastCycleEnd' as const, extraMs })),
  },
);
const captureSpecArb: fc.Arbitrary<CaptureSpec> = fc.oneof(
  { weight: 4, arbitrary: fc.constant({ kind: 'full' as const }) },
  { weight: 5, arbitrary: fc.integer({ min: 1, max: 99 }).map((percent) => ({ kind: 'percent' as const, percent })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'over' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'zero' as const }) },
);

// One weighted choice per step: reserving and settling are the common case.
const commandArbs: Array<fc.Arbitrary<Cmd>> = [
  fc.oneof(
    // Many small grants of every type and expiry, so reservations span several lots; grants
    // between two clock moves are granted at the same moment, so equal ones tie.
    { weight: 8, arbitrary: grantArb },
    {
      weight: 2,
      arbitrary: fc
        .tuple(
          fc.constantFrom<M.AccountType>('SUBSCRIPTION', 'PURCHASED', 'PROMOTIONAL', 'REFERRAL'),
          fc.tuple(fc.integer({ min: 1, max: 60 }), fc.integer({ min: 1, max: 60 })),
          expiryArb,
        )
        .map(([t, a, e]): Cmd => new TiedGrantsCommand(t, a, t === 'SUBSCRIPTION' || t === 'PURCHASED' ? null : e)),
    },
    { weight: 2, arbitrary: fc.tuple(pickArb, fc.boolean()).map(([p, c]): Cmd => new ReplayGrantCommand(p, c)) },
    { weight: 1, arbitrary: fc.constantFrom(0, 50, 500, 3000).map((room): Cmd => new FillToCapCommand(room)) },
    // Packs are large next to everything else; rarer, or they would cover every reservation.
    { weight: 1, arbitrary: fc.constantFrom('pack-500', 'pack-2000').map((p): Cmd => new PurchaseCommand(p)) },
    { weight: 1, arbitrary: fc.tuple(pickArb, fc.boolean()).map(([p, c]): Cmd => new ReplayPurchaseCommand(p, c)) },
    { weight: 10, arbitrary: fc.tuple(generationArb, ttlArb).map(([g, t]): Cmd => new ReserveCommand(g, t)) },
    {
      weight: 6,
      arbitrary: fc
        .tuple(fc.integer({ min: 1, max: 30 }), ttlArb)
        .map(([e, t]): Cmd => new SpanningReserveCommand(e, t)),
    },
    {
      weight: 2,
      arbitrary: fc
        .tuple(pickArb, fc.option(generationArb, { freq: 2 }), ttlArb)
        .map(([p, g, t]): Cmd => new ReplayReserveCommand(p, g, t)),
    },
    {
      weight: 8,
      arbitrary: fc.tuple(reservationPickArb, captureSpecArb).map(([p, s]): Cmd => new CaptureCommand(p, s)),
    },
    { weight: 3, arbitrary: reservationPickArb.map((p): Cmd => new RefundCommand(p)) },
    {
      weight: 3,
      arbitrary: fc
        .tuple(reservationPickArb, fc.oneof(fc.integer({ min: 1, max: 40 }), fc.constantFrom(0, 400, 5000)))
        .map(([p, a]): Cmd => new IncreaseCommand(p, a)),
    },
    { weight: 2, arbitrary: fc.nat().map((n): Cmd => new RetrySettlementCommand(n)) },
    {
      weight: 4,
      arbitrary: fc
        .tuple(reservationPickArb, extendTtlArb, fc.constantFrom(0, 1000, 60_000, HOUR_MS, HOUR_MS))
        .map(([p, t, a]): Cmd => new ExtendCommand(p, t, a)),
    },
    { weight: 8, arbitrary: fc.tuple(advanceArb, fc.boolean()).map(([a, sweep]): Cmd => new AdvanceCommand(a, sweep)) },
    // Mostly immediate: an upgrade then applies now, a downgrade is scheduled all the same.
    {
      weight: 5,
      arbitrary: fc
        .tuple(fc.constantFrom(...M.PLAN_IDS), fc.integer({ min: 0, max: 3 }))
        .map(([p, i]): Cmd => new ChangePlanCommand(p, i > 0)),
    },
  ),
];

const START_MIN = Date.UTC(2026, 0, 1);
const START_DAYS = 5 * 366;
type AnchorSpec =
  | { kind: 'offset'; hours: number }
  | { kind: 'monthEnd'; day: number }
  | { kind: 'endsSoon'; hours: number };
const setupArb = fc.record({
  startMinute: fc.integer({ min: 0, max: START_DAYS * 1440 }),
  planId: fc.constantFrom('free', 'free', 'free', 'starter', 'pro'),
  anchor: fc.oneof(
    // Some hours either side of the start.
    {
      weight: 2,
      arbitrary: fc.integer({ min: -1000, max: 1000 }).map((hours) => ({ kind: 'offset' as const, hours })),
    },
    // A month's end (31 Jan -> 28 Feb -> 31 Mar).
    { weight: 1, arbitrary: fc.constantFrom(28, 29, 30, 31).map((day) => ({ kind: 'monthEnd' as const, day })) },
    // A cycle ending within hours of the start, while the first reservations are still held.
    { weight: 3, arbitrary: fc.integer({ min: 1, max: 36 }).map((hours) => ({ kind: 'endsSoon' as const, hours })) },
  ) as fc.Arbitrary<AnchorSpec>,
});

function anchorFor(start: number, anchor: AnchorSpec): number {
  if (anchor.kind === 'offset') return start + anchor.hours * HOUR_MS;
  if (anchor.kind === 'endsSoon') return start + anchor.hours * HOUR_MS; // the current cycle ends at the anchor
  const s = new Date(start);
  // The given day of the month before the start's month, at 23:30 (a day that month lacks rolls
  // into the next, which is fine: any anchor is valid).
  return Date.UTC(s.getUTCFullYear(), s.getUTCMonth() - 1, anchor.day, 23, 30);
}

// --- the property -------------------------------------------------------------------------------

let database: Database;

/**
 * Runs stay out of each other's way in the one shared database. At the end of a run the sweeper
 * does what is due, every reservation still pending is refunded through the ledger, and the
 * organization's remaining future deadlines (lot expiries, cycle end) are moved to the far future
 * so that later runs' sweeps (which cover the whole database, as in production) find nothing of
 * it to do. Deadlines already passed stay as they are.
 */
async function retire(real: Real): Promise<void> {
  await sweepUntilIdle(real.ctx);
  const { db } = real.database;
  const pending = rowsOf<{ id: string }>(
    await db.execute(
      sql`select id from reservations where organization_id = ${real.organizationId} and status = 'PENDING'`,
    ),
  );
  for (const { id } of pending)
    await attempt(() => refundReservation(real.ctx, { reservationId: id, reason: 'end of run' }, null));
  const now = real.clock.now();
  await db.execute(
    sql`update credit_lots set expires_at = '9999-01-01T00:00:00Z'
      where organization_id = ${real.organizationId} and expires_at > ${now.toISOString()}::timestamptz`,
  );
  await db.execute(
    sql`update organizations set cycle_ends_at = '9999-01-01T00:00:00Z' where id = ${real.organizationId}`,
  );
}

describe.each(drivers)('ledger against its model (%s)', (driver) => {
  beforeAll(async () => {
    database = await createTestDatabase(driver);
  });
  afterAll(async () => {
    await database?.close();
  });

  it(`keeps every lot, reservation and cycle equal to the model's over ${NUM_RUNS} random sequences`, async () => {
    let runs = 0;
    let commandsRun = 0;
    let reservationsMade = 0;
    const started = Date.now();
    const property = fc.asyncProperty(
      setupArb,
      fc.commands(commandArbs, { maxCommands: MAX_COMMANDS, size: 'max', replayPath: process.env.FC_REPLAY_PATH }),
      async (setup, commands) => {
        const start = START_MIN + setup.startMinute * 60_000;
        const anchor = anchorFor(start, setup.anchor);
        const clock = new ManualClock(new Date(start));
        const ctx: LedgerContext = { db: database.db, clock };
        const org = await createOrganization(ctx, {
          name: 'Property test',
          planId: setup.planId,
          billingCycleAnchor: new Date(anchor),
        });
        const model: Model = { s: M.initialState(start, setup.planId, anchor) };
        const real: Real = {
          ctx,
          clock,
          database,
          organizationId: org.id,
          ids: { lots: new Map(), reservations: [] },
          lastLots: new Map(),
          serial: 0,
          keyed: [],
        };
        runs += 1;
        try {
          const snapshot = await readSnapshot(database.db, org.id, start);
          expectNoProblems(diff(model.s, snapshot, real.ids), 'a new organization');
          await fc.asyncModelRun(() => ({ model, real }), commands);
          commandsRun += [...commands].length;
          reservationsMade += model.s.reservations.length;
          // The product's own audit, as a check of the product (the comparison above does not use it).
          expect(
            await auditLedger(database.db, {
              organizationId: org.id,
              sweptAt: model.s.sweptAt === null ? undefined : new Date(model.s.sweptAt),
            }),
          ).toEqual([]);
        } finally {
          await retire(real);
        }
      },
    );
    await fc.assert(property, {
      numRuns: NUM_RUNS,
      seed: process.env.FC_SEED === undefined ? undefined : Number(process.env.FC_SEED),
      path: process.env.FC_PATH,
      verbose: 1,
    });
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    console.log(['coverage:', ...[...tally].sort().map(([k, v]) => `${String(v).padStart(6)}  ${k}`)].join('\n'));
    console.log(
      `property test: ${runs} runs, ${commandsRun} commands, ${reservationsMade} reservations in ${seconds} s`,
    );
    if (!REPLAYING && NUM_RUNS >= 200) {
      const short = Object.entries(MINIMUM_PER_100_RUNS)
        .map(([name, per100]) => ({
          name,
          minimum: Math.ceil((per100 * NUM_RUNS) / 100),
          actual: tally.get(name) ?? 0,
        }))
        .filter((x) => x.actual < x.minimum);
      expect(short, 'coverage below the minimum (tally entry, minimum, actual)').toEqual([]);
    }
  }, 900_000);
});
