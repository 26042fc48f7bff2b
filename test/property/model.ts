// An in-memory model of the ledger, written from README.md ("Rules the ledger keeps" and
// "Costs") and the seeded catalog (drizzle/0001_catalog_and_journal_guard.sql) alone. It imports
// nothing from src/ and knows nothing of how the ledger is built: no SQL, no ids, no source keys.
//
// Shape of the model
// - Time is plain milliseconds. The model knows one organization.
// - Lots are kept in *tie groups* ("buckets"): the consumption order ranks lots by account type,
//   expiry and grant time, and leaves lots equal on all three in an unspecified order. Lots in one
//   group are interchangeable under every rule (they expire together and rank together), so the
//   model keeps their totals (granted, available, reserved, consumed, expired) and never guesses
//   which of them a reservation drained. The test compares the real lots grouped the same way.
// - Each operation is applied to a copy of the state and answers a list of *alternatives*
//   (outcome plus resulting state). Usually there is exactly one; where the README leaves a
//   choice open (which check wins, in which order the sweeper does two things), every reading
//   is listed and the test accepts whichever the database shows. A failed operation writes
//   nothing, so its alternative carries the state from before it.
// - Every write starts with the catch-up the README describes for "the next write for the
//   organization": start the billing cycle holding now if the current one has ended, and expire
//   every lot whose expiry has passed.

// --- catalog data ---------------------------------------------------------------------------

export type AccountType = 'SUBSCRIPTION' | 'PURCHASED' | 'PROMOTIONAL' | 'REFERRAL';
/** README "Consumption order". */
export const CONSUMPTION_ORDER: readonly AccountType[] = ['SUBSCRIPTION', 'PURCHASED', 'PROMOTIONAL', 'REFERRAL'];
export type Status = 'PENDING' | 'CAPTURED' | 'REFUNDED';
export type Resolution = 'SD_480P' | 'HD_720P' | 'FHD_1080P' | 'UHD_4K';

/** Monthly allowances (plans catalog). */
export const PLAN_ALLOWANCE: Readonly<Record<string, number>> = { free: 100, starter: 1000, pro: 5000, studio: 20000 };
export const PLAN_IDS = Object.keys(PLAN_ALLOWANCE);
/** Credit packs catalog. */
export const PACK_CREDITS: Readonly<Record<string, number>> = {
  'pack-500': 500,
  'pack-2000': 2000,
  'pack-10000': 10000,
};

type OutputType = 'IMAGE' | 'VIDEO' | 'TEXT';
interface CatalogModel {
  output: OutputType;
  unitCredits: number;
  resolutions: readonly Resolution[];
  maxDurationSeconds: number | null;
}
/** Generation models catalog. */
export const MODELS: Readonly<Record<string, CatalogModel>> = {
  'image-draft': {
    output: 'IMAGE',
    unitCredits: 1,
    resolutions: ['SD_480P', 'HD_720P', 'FHD_1080P'],
    maxDurationSeconds: null,
  },
  'image-standard': {
    output: 'IMAGE',
    unitCredits: 4,
    resolutions: ['SD_480P', 'HD_720P', 'FHD_1080P', 'UHD_4K'],
    maxDurationSeconds: null,
  },
  'image-premium': {
    output: 'IMAGE',
    unitCredits: 10,
    resolutions: ['HD_720P', 'FHD_1080P', 'UHD_4K'],
    maxDurationSeconds: null,
  },
  'video-draft': { output: 'VIDEO', unitCredits: 2, resolutions: ['SD_480P', 'HD_720P'], maxDurationSeconds: 10 },
  'video-standard': {
    output: 'VIDEO',
    unitCredits: 5,
    resolutions: ['SD_480P', 'HD_720P', 'FHD_1080P'],
    maxDurationSeconds: 30,
  },
  'video-premium': {
    output: 'VIDEO',
    unitCredits: 12,
    resolutions: ['HD_720P', 'FHD_1080P', 'UHD_4K'],
    maxDurationSeconds: 60,
  },
  'text-draft': { output: 'TEXT', unitCredits: 1, resolutions: [], maxDurationSeconds: null },
  'text-standard': { output: 'TEXT', unitCredits: 2, resolutions: [], maxDurationSeconds: null },
  'text-premium': { output: 'TEXT', unitCredits: 5, resolutions: [], maxDurationSeconds: null },
};

/** README "Costs": resolution factors in percent. */
const RESOLUTION_PERCENT: Readonly<Record<Resolution, number>> = {
  SD_480P: 50,
  HD_720P: 100,
  FHD_1080P: 150,
  UHD_4K: 400,
};

// --- limits the README states ---------------------------------------------------------------

/** README "Caps". */
export const BALANCE_CAP = 2_000_000_000;
export const GRANT_MAX = 1_000_000_000;
/** README "Time to live" and "Lifetime". */
export const TTL_DEFAULT_SECONDS = 900;
export const TTL_MAX_SECONDS = 86_400;
export const LIFETIME_MS = 24 * 3_600_000;
/** README "Time to live": the reason an automatic refund carries. */
export const EXPIRED_REASON = 'expired: neither captured nor refunded within its time to live';

// --- costs ----------------------------------------------------------------------------------

export interface Generation {
  modelId: string;
  resolution?: Resolution;
  durationSeconds?: number;
  count: number;
}

/**
 * README "Costs": ceil(unitCredits x seconds x resolution%) x count, at least 1 credit per
 * output. An image or a text request counts as one "second"; a text model has no resolution and
 * is priced at 100%. Only valid requests are generated, so an invalid one is a bug in the test.
 */
export function costOf(g: Generation): number {
  const model = MODELS[g.modelId];
  if (!model) throw new Error(`test bug: unknown model ${g.modelId}`);
  if (model.output === 'TEXT' ? g.resolution !== undefined : !model.resolutions.includes(g.resolution!)) {
    throw new Error(`test bug: ${g.modelId} at ${g.resolution}`);
  }
  if (
    model.output === 'VIDEO'
      ? !(g.durationSeconds! >= 1 && g.durationSeconds! <= model.maxDurationSeconds!)
      : g.durationSeconds !== undefined
  ) {
    throw new Error(`test bug: ${g.modelId} for ${g.durationSeconds}s`);
  }
  const seconds = model.output === 'VIDEO' ? g.durationSeconds! : 1;
  const percent = g.resolution === undefined ? 100 : RESOLUTION_PERCENT[g.resolution];
  const hundredths = model.unitCredits * seconds * percent;
  const perOutput = Math.max(1, Math.floor((hundredths + 99) / 100));
  return perOutput * g.count;
}

/** README "Idempotency": a repeated reservation must name the same model, resolution, duration and count. */
export function sameGeneration(a: Generation, b: Generation): boolean {
  return (
    a.modelId === b.modelId &&
    (a.resolution ?? null) === (b.resolution ?? null) &&
    (a.durationSeconds ?? null) === (b.durationSeconds ?? null) &&
    a.count === b.count
  );
}

// --- billing cycles (README "Billing cycles") -----------------------------------------------

function isLeapYear(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function daysInMonth(year: number, month: number): number {
  return month === 1 && isLeapYear(year) ? 29 : DAYS_IN_MONTH[month]!;
}

/**
 * Boundary k = anchor + k months, computed from the anchor itself (never from the previous
 * boundary): same time of day, the anchor's day of the month clamped to the target month's last
 * day. Calendar in UTC. k may be negative (an anchor in the future).
 */
export function cycleBoundary(anchor: number, k: number): number {
  const a = new Date(anchor);
  const year = a.getUTCFullYear();
  const month = a.getUTCMonth();
  const day = a.getUTCDate();
  const timeOfDay = anchor - Date.UTC(year, month, day);
  const monthIndex = year * 12 + month + k;
  const targetYear = Math.floor(monthIndex / 12);
  const targetMonth = monthIndex - targetYear * 12;
  return Date.UTC(targetYear, targetMonth, Math.min(day, daysInMonth(targetYear, targetMonth))) + timeOfDay;
}

/** The cycle [start, end) holding t. */
export function cycleHolding(anchor: number, t: number): { start: number; end: number } {
  const a = new Date(anchor);
  const n = new Date(t);
  let k = (n.getUTCFullYear() - a.getUTCFullYear()) * 12 + (n.getUTCMonth() - a.getUTCMonth());
  while (cycleBoundary(anchor, k) > t) k -= 1;
  while (cycleBoundary(anchor, k + 1) <= t) k += 1;
  return { start: cycleBoundary(anchor, k), end: cycleBoundary(anchor, k + 1) };
}

// --- state ----------------------------------------------------------------------------------

/** Lots equal in type, expiry and grant time: the consumption order cannot tell them apart. */
export interface Bucket {
  key: string;
  type: AccountType;
  expiresAt: number | null;
  createdAt: number;
  lots: number;
  granted: number;
  available: number;
  reserved: number;
  consumed: number;
  expired: number;
}

export type LotOrigin =
  | { kind: 'allowance'; cycleEnd: number }
  | { kind: 'grant'; key: string }
  | { kind: 'purchase'; reference: string };

/** One lot's fixed facts (its moving numbers live in its bucket). */
export interface LotRecord {
  origin: LotOrigin;
  type: AccountType;
  granted: number;
  expiresAt: number | null;
  createdAt: number;
  bucket: string;
}

/** What a reservation holds in one bucket, and how that hold was settled. */
export interface Hold {
  bucket: string;
  amount: number;
  captured: number;
  refunded: number;
}

export interface Reservation {
  idempotencyKey: string;
  generation: Generation;
  amount: number;
  /** In the order the reservation took them (README "Capture or refund"). */
  holds: Hold[];
  status: Status;
  capturedAmount: number;
  refundedAmount: number;
  createdAt: number;
  expiresAt: number;
  settledAt: number | null;
  refundReason: string | null;
}

export interface GrantInput {
  key: string;
  type: AccountType;
  amount: number;
  expiresAt: number | null;
  reason: string;
}

/** A billing cycle the organization has been in, for the allowance bound. */
export interface CycleRecord {
  start: number;
  end: number;
  plansInForce: string[];
  allowanceGranted: number;
}

export interface State {
  now: number;
  anchor: number;
  planId: string;
  nextPlanId: string | null;
  cycleStart: number;
  cycleEnd: number;
  buckets: Bucket[];
  lots: LotRecord[];
  reservations: Reservation[];
  grants: Array<{ input: GrantInput; lot: number }>;
  purchases: Array<{ reference: string; packId: string; lot: number }>;
  cycles: CycleRecord[];
  withheld: number;
  /** When the last committed catch-up ran (every lot past its expiry had expired then). */
  caughtUpAt: number | null;
  /** When the sweeper last ran (no pending reservation past its time to live then). */
  sweptAt: number | null;
  /** What the last operation did that coverage counts (not judged). */
  events: string[];
}

/** What an operation answered: a value, or a business error with the fields that matter. */
export type Outcome<T> =
  | { ok: T }
  | { error: 'InsufficientCreditsError'; required: number; available: number }
  | { error: 'ReservationStateError'; status: Status }
  | { error: 'InvalidInputError' | 'IdempotencyConflictError' | 'NotFoundError' };

export interface Alternative<T> {
  outcome: Outcome<T>;
  state: State;
  /** Which reading of the README this is, when there are several. */
  reading?: string;
}

// --- helpers --------------------------------------------------------------------------------

export function bucketKey(type: AccountType, expiresAt: number | null, createdAt: number): string {
  return `${type}|${expiresAt === null ? 'never' : expiresAt}|${createdAt}`;
}

function bucket(s: State, key: string): Bucket {
  const b = s.buckets.find((x) => x.key === key);
  if (!b) throw new Error(`model bug: no bucket ${key}`);
  return b;
}

/** README "Lots": spendable while its expiry is in the future. */
export function isSpendable(b: { expiresAt: number | null }, now: number): boolean {
  return b.expiresAt === null || b.expiresAt > now;
}

/** README "Caps": available in spendable lots plus reserved. */
export function held(s: State): number {
  let total = 0;
  for (const b of s.buckets) total += (isSpendable(b, s.now) ? b.available : 0) + b.reserved;
  return total;
}

function currentCycle(s: State): CycleRecord {
  const c = s.cycles.find((x) => x.start === s.cycleStart);
  if (!c) throw new Error('model bug: no record of the current cycle');
  return c;
}

function addLot(s: State, origin: LotOrigin, type: AccountType, amount: number, expiresAt: number | null): number {
  const key = bucketKey(type, expiresAt, s.now);
  let b = s.buckets.find((x) => x.key === key);
  if (!b) {
    b = {
      key,
      type,
      expiresAt,
      createdAt: s.now,
      lots: 0,
      granted: 0,
      available: 0,
      reserved: 0,
      consumed: 0,
      expired: 0,
    };
    s.buckets.push(b);
  }
  b.lots += 1;
  b.granted += amount;
  b.available += amount;
  s.lots.push({ origin, type, granted: amount, expiresAt, createdAt: s.now, bucket: key });
  return s.lots.length - 1;
}

/** README "Expiry": available credits of every lot past its expiry expire. */
function expireDue(s: State): void {
  for (const b of s.buckets) {
    if (!isSpendable(b, s.now) && b.available > 0) {
      b.expired += b.available;
      b.available = 0;
      s.events.push('lot expired');
    }
  }
}

/**
 * README "Caps": an allowance (or an upgrade's difference) is granted as far as it fits; the rest
 * is withheld. It expires at the end of the current cycle.
 */
function grantAllowance(s: State, amount: number): void {
  const fits = Math.max(0, BALANCE_CAP - held(s));
  const granted = Math.min(amount, fits);
  if (granted > 0) addLot(s, { kind: 'allowance', cycleEnd: s.cycleEnd }, 'SUBSCRIPTION', granted, s.cycleEnd);
  if (granted < amount) {
    s.withheld += amount - granted;
    s.events.push('allowance withheld');
  }
  currentCycle(s).allowanceGranted += granted;
}

/**
 * README "Billing cycles": at or after a cycle's end, start the cycle holding now: lots past
 * their expiry expire, a scheduled plan change takes effect, the plan's allowance is granted.
 * Missed cycles get nothing.
 */
function startCycleIfDue(s: State): void {
  if (s.now < s.cycleEnd) return;
  const holds = s.buckets.some((b) => b.reserved > 0);
  const skipped = cycleHolding(s.anchor, s.now).start !== s.cycleEnd;
  expireDue(s);
  if (s.nextPlanId !== null) {
    s.events.push('cycle reset with a scheduled plan change');
    s.planId = s.nextPlanId;
    s.nextPlanId = null;
  }
  const cycle = cycleHolding(s.anchor, s.now);
  s.cycleStart = cycle.start;
  s.cycleEnd = cycle.end;
  s.cycles.push({ start: cycle.start, end: cycle.end, plansInForce: [s.planId], allowanceGranted: 0 });
  s.events.push('cycle reset');
  if (holds) s.events.push('cycle reset with holds');
  if (skipped) s.events.push('cycle reset after missed cycles');
  grantAllowance(s, PLAN_ALLOWANCE[s.planId]!);
  s.caughtUpAt = s.now;
}

/**
 * README: "The first write or sweep at or after a cycle's end starts the cycle", and a lot past
 * its expiry expires "at the next write for the organization or sweep". The ledger has been seen
 * to start a due cycle only on grants, reservations and plan changes, and to leave lots past
 * their expiry to the sweeper and the cycle start (see the report). Neither changes what may be
 * spent (a lot past its expiry is never spent from, however its cached numbers lag, and after a
 * sweep nothing is left behind), so each write is modelled under three readings and the test
 * accepts whichever the database shows, counting which one it was:
 * - 'full': the README as written: a due cycle starts and every lot past its expiry expires;
 * - 'cycle only': a due cycle starts (which expires lots past their expiry); nothing else expires;
 * - 'none': this write leaves both to the next write or sweep.
 * The sweeper always does all of it.
 */
export type CatchUpReading = 'full' | 'cycle only' | 'none';
export const CATCH_UP_READINGS: Record<CatchUpReading, string | undefined> = {
  full: undefined,
  'cycle only': 'lots past their expiry left to the sweeper',
  none: 'due cycle and expiries left to the next write or sweep',
};
let catchUpReading: CatchUpReading = 'full';
/** STRICT_CATCH_UP=1 in the environment holds every write to the README as written ('full' only). */
const STRICT_CATCH_UP = typeof process !== 'undefined' && process.env.STRICT_CATCH_UP === '1';

/** What every write (and the sweeper) does first. */
function catchUp(s: State, sweeping = false): void {
  const reading = sweeping ? 'full' : catchUpReading;
  if (reading === 'none') return;
  startCycleIfDue(s);
  if (reading === 'full') {
    expireDue(s);
    s.caughtUpAt = s.now;
  }
}

/** Runs a write under every catch-up reading; drops alternatives that came out the same. */
function allReadings<T>(op: () => Alternative<T>[]): Alternative<T>[] {
  const all: Alternative<T>[] = [];
  try {
    for (const reading of (STRICT_CATCH_UP ? ['full'] : Object.keys(CATCH_UP_READINGS)) as CatchUpReading[]) {
      catchUpReading = reading;
      const label = CATCH_UP_READINGS[reading];
      all.push(
        ...op().map((a) => (label === undefined ? a : { ...a, reading: a.reading ? `${a.reading}; ${label}` : label })),
      );
    }
  } finally {
    catchUpReading = 'full';
  }
  const seen = new Set<string>();
  return all.filter((a) => {
    const fingerprint = JSON.stringify({ outcome: a.outcome, state: { ...a.state, events: [] } });
    if (seen.has(fingerprint)) return false;
    seen.add(fingerprint);
    return true;
  });
}

function draftOf(s: State): State {
  const d = structuredClone(s);
  d.events = [];
  return d;
}

/** A failure found before anything was done: nothing is written. */
function refused<T>(s: State, outcome: Outcome<T>, reading?: string): Alternative<T> {
  const state = draftOf(s);
  state.events = [`refused: ${'error' in outcome ? outcome.error : 'ok'}`];
  return { outcome, state, reading };
}

export const CATCH_UP_KEPT_READING = 'refused, but its catch-up kept';

/**
 * A failure found after the write's catch-up. The operation writes nothing; whether the catch-up
 * it did (a cycle start, expiries) is rolled back with it the README does not say, so both are
 * accepted. Neither changes a balance anyone could spend.
 */
function refusedAfterCatchUp<T>(s0: State, caughtUp: State, outcome: Outcome<T>, reading?: string): Alternative<T>[] {
  const kept = refused(caughtUp, outcome, reading ? `${reading}; ${CATCH_UP_KEPT_READING}` : CATCH_UP_KEPT_READING);
  return [refused(s0, outcome, reading), kept];
}

// --- organization ---------------------------------------------------------------------------

/**
 * A new organization is in the cycle holding its creation time and has that cycle's allowance
 * (README: the allowance of a cycle is granted when it starts; creation starts the first one).
 */
export function initialState(now: number, planId: string, anchor: number): State {
  const cycle = cycleHolding(anchor, now);
  const s: State = {
    now,
    anchor,
    planId,
    nextPlanId: null,
    cycleStart: cycle.start,
    cycleEnd: cycle.end,
    buckets: [],
    lots: [],
    reservations: [],
    grants: [],
    purchases: [],
    cycles: [{ start: cycle.start, end: cycle.end, plansInForce: [planId], allowanceGranted: 0 }],
    withheld: 0,
    caughtUpAt: now,
    sweptAt: null,
    events: [],
  };
  grantAllowance(s, PLAN_ALLOWANCE[planId]!);
  return s;
}

// --- grants and purchases -------------------------------------------------------------------

export type LotAnswer = { lot: number; replay: boolean };

/**
 * grantCredits. Expiry of the new lot: PROMOTIONAL and REFERRAL as given (or never); PURCHASED
 * never; SUBSCRIPTION at the end of the current cycle (a top-up, see the report: the README does
 * not state these last two). The test never asks for an expiry on PURCHASED or SUBSCRIPTION.
 */
export function grant(s0: State, g: GrantInput): Alternative<LotAnswer>[] {
  return allReadings(() => grantUnder(s0, g));
}

function grantUnder(s0: State, g: GrantInput): Alternative<LotAnswer>[] {
  if (!Number.isInteger(g.amount) || g.amount < 1 || g.amount > GRANT_MAX)
    return [refused(s0, { error: 'InvalidInputError' })];
  const s = draftOf(s0);
  catchUp(s);
  const caughtUp = structuredClone(s);
  const existing = s.grants.findIndex((x) => x.input.key === g.key);
  if (existing >= 0) {
    const o = s.grants[existing]!.input;
    const same = o.type === g.type && o.amount === g.amount && o.expiresAt === g.expiresAt && o.reason === g.reason;
    if (!same) return refusedAfterCatchUp(s0, caughtUp, { error: 'IdempotencyConflictError' });
    s.events.push('grant replayed');
    return [{ outcome: { ok: { lot: s.grants[existing]!.lot, replay: true } }, state: s }];
  }
  if (g.expiresAt !== null && g.expiresAt <= s.now)
    return refusedAfterCatchUp(s0, caughtUp, { error: 'InvalidInputError' });
  if (held(s) + g.amount > BALANCE_CAP)
    return refusedAfterCatchUp(s0, caughtUp, { error: 'InvalidInputError' }, 'over the cap');
  const expiresAt = g.type === 'SUBSCRIPTION' ? s.cycleEnd : g.type === 'PURCHASED' ? null : g.expiresAt;
  const lot = addLot(s, { kind: 'grant', key: g.key }, g.type, g.amount, expiresAt);
  s.grants.push({ input: g, lot });
  s.events.push('grant');
  return [{ outcome: { ok: { lot, replay: false } }, state: s }];
}

/** purchaseCreditPack: a PURCHASED lot of the pack's credits that never expires, once per payment reference. */
export function purchase(s0: State, reference: string, packId: string): Alternative<LotAnswer>[] {
  return allReadings(() => purchaseUnder(s0, reference, packId));
}

function purchaseUnder(s0: State, reference: string, packId: string): Alternative<LotAnswer>[] {
  const credits = PACK_CREDITS[packId];
  if (credits === undefined) throw new Error(`test bug: unknown pack ${packId}`);
  const s = draftOf(s0);
  catchUp(s);
  const caughtUp = structuredClone(s);
  const existing = s.purchases.findIndex((x) => x.reference === reference);
  if (existing >= 0) {
    if (s.purchases[existing]!.packId !== packId)
      return refusedAfterCatchUp(s0, caughtUp, { error: 'IdempotencyConflictError' });
    s.events.push('purchase replayed');
    return [{ outcome: { ok: { lot: s.purchases[existing]!.lot, replay: true } }, state: s }];
  }
  if (held(s) + credits > BALANCE_CAP)
    return refusedAfterCatchUp(s0, caughtUp, { error: 'InvalidInputError' }, 'over the cap');
  const lot = addLot(s, { kind: 'purchase', reference }, 'PURCHASED', credits, null);
  s.purchases.push({ reference, packId, lot });
  s.events.push('purchase');
  return [{ outcome: { ok: { lot, replay: false } }, state: s }];
}

// --- reservations ---------------------------------------------------------------------------

/** README "Consumption order": type, then expiring first (never last), then granted first. */
export function consumptionOrder(s: State): Bucket[] {
  return s.buckets
    .filter((b) => b.available > 0 && isSpendable(b, s.now))
    .sort(
      (a, b) =>
        CONSUMPTION_ORDER.indexOf(a.type) - CONSUMPTION_ORDER.indexOf(b.type) ||
        (a.expiresAt ?? Number.POSITIVE_INFINITY) - (b.expiresAt ?? Number.POSITIVE_INFINITY) ||
        a.createdAt - b.createdAt,
    );
}

export type ReservationAnswer = { index: number; replay: boolean };

export function reserve(
  s0: State,
  r: { idempotencyKey: string; generation: Generation; ttlSeconds: number | null },
): Alternative<ReservationAnswer>[] {
  return allReadings(() => reserveUnder(s0, r));
}

function reserveUnder(
  s0: State,
  r: { idempotencyKey: string; generation: Generation; ttlSeconds: number | null },
): Alternative<ReservationAnswer>[] {
  const ttl = r.ttlSeconds ?? TTL_DEFAULT_SECONDS;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > TTL_MAX_SECONDS) return [refused(s0, { error: 'InvalidInputError' })];
  const s = draftOf(s0);
  catchUp(s);
  const caughtUp = structuredClone(s);
  const existing = s.reservations.findIndex((x) => x.idempotencyKey === r.idempotencyKey);
  if (existing >= 0) {
    if (!sameGeneration(s.reservations[existing]!.generation, r.generation))
      return refusedAfterCatchUp(s0, caughtUp, { error: 'IdempotencyConflictError' });
    s.events.push('reservation replayed');
    return [{ outcome: { ok: { index: existing, replay: true } }, state: s }];
  }
  const cost = costOf(r.generation);
  const order = consumptionOrder(s);
  const total = order.reduce((sum, b) => sum + b.available, 0);
  if (total < cost)
    return refusedAfterCatchUp(s0, caughtUp, { error: 'InsufficientCreditsError', required: cost, available: total });
  // Whole cost or nothing; each lot (here: each group of tied lots) gives all it has first.
  const holds: Hold[] = [];
  let remaining = cost;
  for (const b of order) {
    if (remaining === 0) break;
    const take = Math.min(b.available, remaining);
    b.available -= take;
    b.reserved += take;
    holds.push({ bucket: b.key, amount: take, captured: 0, refunded: 0 });
    remaining -= take;
  }
  s.reservations.push({
    idempotencyKey: r.idempotencyKey,
    generation: r.generation,
    amount: cost,
    holds,
    status: 'PENDING',
    capturedAmount: 0,
    refundedAmount: 0,
    createdAt: s.now,
    expiresAt: s.now + ttl * 1000,
    settledAt: null,
    refundReason: null,
  });
  s.events.push('reservation');
  if (holds.length > 1) s.events.push('reservation spans several tie groups');
  if (new Set(holds.map((h) => bucket(s, h.bucket).type)).size > 1)
    s.events.push('reservation spans several account types');
  return [{ outcome: { ok: { index: s.reservations.length - 1, replay: false } }, state: s }];
}

/**
 * README "Capture or refund": consume `toCapture` from the holds in the order they were taken,
 * return the rest to the very lots it came from; credits returned to a lot whose expiry has
 * passed expire at once (README "Expiry").
 */
function settle(s: State, r: Reservation, toCapture: number, refundReason: string | null): void {
  let left = toCapture;
  for (const h of r.holds) {
    const b = bucket(s, h.bucket);
    h.captured = Math.min(h.amount, left);
    h.refunded = h.amount - h.captured;
    left -= h.captured;
    b.reserved -= h.amount;
    b.consumed += h.captured;
    if (h.refunded > 0) {
      if (isSpendable(b, s.now)) {
        b.available += h.refunded;
      } else {
        // Expired at once; and a lot that has expired never holds available credits again, so
        // whatever it still had (when no write expired it yet) expires with them.
        b.expired += h.refunded + b.available;
        b.available = 0;
        s.events.push('refund into an expired lot');
      }
    }
  }
  r.status = toCapture > 0 ? 'CAPTURED' : 'REFUNDED';
  r.capturedAmount = toCapture;
  r.refundedAmount = r.amount - toCapture;
  r.settledAt = s.now;
  r.refundReason = refundReason;
}

/** README "Time to live": the refund of a reservation found past its expiry. */
function refundExpired(s: State, r: Reservation): void {
  settle(s, r, 0, EXPIRED_REASON);
}

function isPastTtl(r: Reservation, now: number): boolean {
  return r.expiresAt <= now;
}

export type ReservationOp =
  | { kind: 'capture'; amount: number | null }
  | { kind: 'refund'; reason: string }
  | { kind: 'extend'; ttlSeconds: number }
  | { kind: 'increase'; additionalCredits: number };

/**
 * capture, refund and extend of reservation `index`. Each is a write: the catch-up runs first.
 * A settled reservation answers ReservationStateError with its status (nothing written); a
 * pending one past its time to live is refunded there and then, and that refund stands
 * (ReservationStateError REFUNDED). A capture amount outside 1..amount is InvalidInputError.
 */
export function settleOp(s0: State, index: number, op: ReservationOp): Alternative<ReservationAnswer>[] {
  return allReadings(() => settleOpUnder(s0, index, op));
}

function settleOpUnder(s0: State, index: number, op: ReservationOp): Alternative<ReservationAnswer>[] {
  const ok = { ok: { index, replay: false } };
  if (op.kind === 'capture' && op.amount !== null && op.amount < 1)
    return [refused(s0, { error: 'InvalidInputError' })];
  if (op.kind === 'extend' && (op.ttlSeconds < 1 || op.ttlSeconds > TTL_MAX_SECONDS))
    return [refused(s0, { error: 'InvalidInputError' })];
  if (op.kind === 'increase' && op.additionalCredits < 1) return [refused(s0, { error: 'InvalidInputError' })];
  const s = draftOf(s0);
  catchUp(s);
  const caughtUp = structuredClone(s);
  const r = s.reservations[index]!;
  const overAmount = op.kind === 'capture' && op.amount !== null && op.amount > r.amount;
  // README does not say which check comes first for an over-amount capture of a reservation that
  // is settled or past its time to live: both readings are accepted.
  const invalid = (reading: string) =>
    refusedAfterCatchUp<ReservationAnswer>(s0, caughtUp, { error: 'InvalidInputError' }, reading);
  if (r.status !== 'PENDING') {
    const alternatives = refusedAfterCatchUp<ReservationAnswer>(
      s0,
      caughtUp,
      { error: 'ReservationStateError', status: r.status },
      'state checked first',
    );
    if (overAmount) alternatives.push(...invalid('amount checked first'));
    return alternatives;
  }
  if (isPastTtl(r, s.now)) {
    refundExpired(s, r);
    s.events.push(`${op.kind} found its reservation expired`);
    const alternatives: Alternative<ReservationAnswer>[] = [
      { outcome: { error: 'ReservationStateError', status: 'REFUNDED' }, state: s, reading: 'expiry checked first' },
    ];
    if (overAmount) alternatives.push(...invalid('amount checked first'));
    return alternatives;
  }
  if (overAmount) return invalid('over the reserved amount');
  switch (op.kind) {
    case 'capture': {
      const amount = op.amount ?? r.amount;
      settle(s, r, amount, null);
      s.events.push(amount < r.amount ? 'partial capture' : 'full capture');
      if (amount < r.amount && r.holds.length > 1) s.events.push('partial capture over several tie groups');
      break;
    }
    case 'refund':
      settle(s, r, 0, op.reason);
      s.events.push('refund');
      break;
    case 'extend': {
      // README "Lifetime": now + ttl, capped at creation + 24 h.
      const wanted = s.now + op.ttlSeconds * 1000;
      const cap = r.createdAt + LIFETIME_MS;
      r.expiresAt = Math.min(wanted, cap);
      s.events.push(wanted > cap ? 'extend capped at 24 h' : 'extend');
      break;
    }
    case 'increase': {
      // README "Growing a reservation": the additional credits come from the lots in consumption
      // order as they stand now, all or nothing, and are held after the reservation's first
      // credits; its expiry does not move.
      const order = consumptionOrder(s);
      const total = order.reduce((sum, b) => sum + b.available, 0);
      if (total < op.additionalCredits) {
        return refusedAfterCatchUp(s0, caughtUp, {
          error: 'InsufficientCreditsError',
          required: op.additionalCredits,
          available: total,
        });
      }
      let remaining = op.additionalCredits;
      for (const b of order) {
        if (remaining === 0) break;
        const take = Math.min(b.available, remaining);
        b.available -= take;
        b.reserved += take;
        r.holds.push({ bucket: b.key, amount: take, captured: 0, refunded: 0 });
        remaining -= take;
      }
      r.amount += op.additionalCredits;
      s.events.push('increase');
      if (new Set(r.holds.map((h) => bucket(s, h.bucket).type)).size > 1)
        s.events.push('grown reservation spans several account types');
      break;
    }
  }
  return [{ outcome: ok, state: s }];
}

// --- plan changes ---------------------------------------------------------------------------

export interface PlanChangeAnswer {
  /** null where the README does not say (changing to the plan in force). */
  appliedImmediately: boolean | null;
  effectiveAt: number | null;
}

/**
 * README "Plan changes": an immediate change to a larger allowance takes effect now and grants
 * the difference expiring at the cycle's end, expiring nothing; any other change is scheduled for
 * the next cycle; changing to the plan in force cancels a scheduled change.
 */
export function changePlan(s0: State, planId: string, immediately: boolean): Alternative<PlanChangeAnswer>[] {
  return allReadings(() => changePlanUnder(s0, planId, immediately));
}

function changePlanUnder(s0: State, planId: string, immediately: boolean): Alternative<PlanChangeAnswer>[] {
  if (PLAN_ALLOWANCE[planId] === undefined) throw new Error(`test bug: unknown plan ${planId}`);
  const s = draftOf(s0);
  catchUp(s);
  if (planId === s.planId) {
    s.nextPlanId = null;
    s.events.push('plan change to the plan in force');
    return [{ outcome: { ok: { appliedImmediately: null, effectiveAt: null } }, state: s }];
  }
  const from = PLAN_ALLOWANCE[s.planId]!;
  const to = PLAN_ALLOWANCE[planId]!;
  if (immediately && to > from) {
    s.planId = planId;
    const alternatives: Alternative<PlanChangeAnswer>[] = [];
    const hadScheduled = s.nextPlanId !== null;
    // README does not say whether an immediate upgrade drops a change scheduled before it; a
    // later change replacing an earlier one is the reading taken, the other is accepted too.
    const keepScheduled = hadScheduled ? structuredClone(s) : null;
    s.nextPlanId = null;
    currentCycle(s).plansInForce.push(planId);
    s.events.push('immediate upgrade');
    grantAllowance(s, to - from);
    alternatives.push({
      outcome: { ok: { appliedImmediately: true, effectiveAt: s.now } },
      state: s,
      reading: 'drops the scheduled change',
    });
    if (keepScheduled) {
      currentCycle(keepScheduled).plansInForce.push(planId);
      keepScheduled.events.push('immediate upgrade');
      grantAllowance(keepScheduled, to - from);
      alternatives.push({
        outcome: { ok: { appliedImmediately: true, effectiveAt: s.now } },
        state: keepScheduled,
        reading: 'keeps the scheduled change',
      });
    }
    return alternatives;
  }
  s.nextPlanId = planId;
  s.events.push(
    to < from ? 'scheduled downgrade' : to === from ? 'scheduled change, same allowance' : 'scheduled upgrade',
  );
  return [{ outcome: { ok: { appliedImmediately: false, effectiveAt: s.cycleEnd } }, state: s }];
}

// --- the sweeper ----------------------------------------------------------------------------

/**
 * README: the sweeper refunds reservations past their time to live, starts a due cycle and
 * expires lots past their expiry. The README does not order the refunds and the cycle start;
 * the order only matters near the balance cap (what an allowance finds room for), so both are
 * accepted. Each refund is a write, so a refund first still sees the cycle started first.
 */
export function sweep(s0: State): Alternative<null>[] {
  const refundsFirst = draftOf(s0);
  const cycleFirst = draftOf(s0);
  const refundAll = (s: State) => {
    for (const r of s.reservations) {
      if (r.status === 'PENDING' && isPastTtl(r, s.now)) {
        refundExpired(s, r);
        s.events.push('sweeper refunded an expired reservation');
      }
    }
  };
  refundAll(refundsFirst);
  catchUp(refundsFirst, true);
  catchUp(cycleFirst, true);
  refundAll(cycleFirst);
  for (const s of [refundsFirst, cycleFirst]) {
    s.sweptAt = s.now;
    s.events.push('sweep');
  }
  return [
    { outcome: { ok: null }, state: refundsFirst, reading: 'refunds first' },
    { outcome: { ok: null }, state: cycleFirst, reading: 'cycle first' },
  ];
}

// --- what the model expects the organization to show ------------------------------------------

export interface AccountBalance {
  type: AccountType;
  available: number;
  reserved: number;
}

/** Spendable credits (lots whose expiry is in the future) and held credits per account type. */
export function balanceOf(s: State): AccountBalance[] {
  return CONSUMPTION_ORDER.map((type) => {
    const bs = s.buckets.filter((b) => b.type === type);
    return {
      type,
      available: bs.filter((b) => isSpendable(b, s.now)).reduce((n, b) => n + b.available, 0),
      reserved: bs.reduce((n, b) => n + b.reserved, 0),
    };
  });
}

/**
 * The model's own invariants, checked after every step: what the README promises must hold in
 * the model before the model is worth comparing against.
 */
export function selfCheck(s: State): string[] {
  const problems: string[] = [];
  for (const b of s.buckets) {
    if (b.available < 0 || b.reserved < 0) problems.push(`bucket ${b.key} negative`);
    if (b.granted !== b.available + b.reserved + b.consumed + b.expired)
      problems.push(`bucket ${b.key} does not add up`);
    if (s.caughtUpAt === s.now && !isSpendable(b, s.now) && b.available > 0)
      problems.push(`bucket ${b.key} holds available credits after its expiry`);
  }
  for (const c of s.cycles) {
    const largest = Math.max(...c.plansInForce.map((p) => PLAN_ALLOWANCE[p]!));
    if (c.allowanceGranted > largest)
      problems.push(`cycle ${new Date(c.start).toISOString()} granted ${c.allowanceGranted} > ${largest}`);
  }
  for (const r of s.reservations) {
    if (r.expiresAt > r.createdAt + LIFETIME_MS) problems.push(`reservation ${r.idempotencyKey} outlives 24 h`);
    if (s.sweptAt === s.now && r.status === 'PENDING' && r.createdAt + LIFETIME_MS <= s.now)
      problems.push(`reservation ${r.idempotencyKey} pending after 24 h`);
  }
  if (held(s) > BALANCE_CAP) problems.push('over the cap');
  return problems;
}
