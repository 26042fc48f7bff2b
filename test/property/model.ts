// A small in-memory model of the ledger's rules, written from the README and the contract rather
// than from src/ledger, for the model-based property test. It knows one organization, keeps
// plain numbers (milliseconds for time), and applies each operation to a copy of its state that
// is kept only when the operation succeeds, because the real ledger rolls a failed transaction
// back (a refused reservation leaves even a due billing-cycle reset undone).

export type AccountType = 'SUBSCRIPTION' | 'PURCHASED' | 'PROMOTIONAL' | 'REFERRAL';
export const ACCOUNT_TYPES: AccountType[] = ['SUBSCRIPTION', 'PURCHASED', 'PROMOTIONAL', 'REFERRAL'];
export type LotSource = 'CYCLE' | 'GRANT' | 'PURCHASE' | 'PLAN_CHANGE';
export type Status = 'PENDING' | 'CAPTURED' | 'REFUNDED';

export const PLAN_CREDITS: Record<string, number> = { free: 100, starter: 1000, pro: 5000, studio: 20000 };
export const PACK_CREDITS: Record<string, number> = { 'pack-500': 500, 'pack-2000': 2000, 'pack-10000': 10000 };

/** Unit prices at HD_720P, as the catalog migration seeds them. */
const MODEL_UNIT: Record<string, { unit: number; kind: 'IMAGE' | 'VIDEO' | 'TEXT' }> = {
  'image-draft': { unit: 1, kind: 'IMAGE' },
  'image-standard': { unit: 4, kind: 'IMAGE' },
  'video-standard': { unit: 5, kind: 'VIDEO' },
  'video-premium': { unit: 12, kind: 'VIDEO' },
  'text-draft': { unit: 1, kind: 'TEXT' },
  'text-premium': { unit: 5, kind: 'TEXT' },
};
const RESOLUTION_PERCENT: Record<Resolution, number> = { SD_480P: 50, HD_720P: 100, FHD_1080P: 150, UHD_4K: 400 };

export type Resolution = 'SD_480P' | 'HD_720P' | 'FHD_1080P' | 'UHD_4K';

export interface Generation {
  modelId: string;
  resolution?: Resolution;
  durationSeconds?: number;
  count: number;
}

/** README: cost = ceil(unit x seconds x resolution%) x count, at least 1 credit per output. */
export function costOf(generation: Generation): number {
  const model = MODEL_UNIT[generation.modelId]!;
  const percent = generation.resolution ? RESOLUTION_PERCENT[generation.resolution]! : 100;
  const seconds = model.kind === 'VIDEO' ? generation.durationSeconds! : 1;
  return Math.max(1, Math.ceil((model.unit * seconds * percent) / 100)) * generation.count;
}

export function sameGeneration(a: Generation, b: Generation): boolean {
  return a.modelId === b.modelId && (a.resolution ?? null) === (b.resolution ?? null) &&
    (a.durationSeconds ?? null) === (b.durationSeconds ?? null) && a.count === b.count;
}

export interface MLot {
  /** The model's own name for the lot. */
  key: string;
  /** The database id, learned after the command that created it (it breaks consumption ties). */
  realId: string | null;
  source: LotSource;
  sourceKey: string;
  type: AccountType;
  granted: number;
  available: number;
  reserved: number;
  expiresAt: number | null;
  createdAt: number;
}

export interface MReservation {
  realId: string | null;
  idempotencyKey: string;
  generation: Generation;
  amount: number;
  allocations: Array<{ lotKey: string; amount: number }>;
  status: Status;
  capturedAmount: number;
  refundedAmount: number;
  expiresAt: number;
}

export interface MGrant {
  key: string;
  type: AccountType;
  amount: number;
  expiresAt: number | null;
  lotKey: string;
}

export interface MPurchase {
  reference: string;
  packId: string;
  lotKey: string;
}

export interface State {
  now: number;
  planId: string;
  nextPlanId: string | null;
  anchor: number;
  cycleStart: number;
  cycleEnd: number;
  lots: MLot[];
  reservations: MReservation[];
  grants: MGrant[];
  purchases: MPurchase[];
  serial: number;
}

/** What an operation answered: a value, or a business error with the fields that matter. */
export type Outcome<T> = { ok: T } | { error: string; required?: number; available?: number; status?: Status };

export class ModelError extends Error {
  constructor(readonly outcome: Exclude<Outcome<never>, { ok: never }>) {
    super(outcome.error);
  }
}

// --- billing cycles -------------------------------------------------------------------------

function addMonthsClamped(anchor: number, months: number): number {
  const a = new Date(anchor);
  const total = a.getUTCFullYear() * 12 + a.getUTCMonth() + months;
  const year = Math.floor(total / 12);
  const month = total - year * 12;
  const lastDay = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
  return Date.UTC(year, month, Math.min(a.getUTCDate(), lastDay), a.getUTCHours(), a.getUTCMinutes(), a.getUTCSeconds(), a.getUTCMilliseconds());
}

/** The cycle [start, end) holding `now`; boundaries are anchor + k months, each from the anchor. */
export function cycleAt(anchor: number, now: number): { start: number; end: number } {
  let k = 0;
  while (addMonthsClamped(anchor, k) > now) k -= 1;
  while (addMonthsClamped(anchor, k + 1) <= now) k += 1;
  return { start: addMonthsClamped(anchor, k), end: addMonthsClamped(anchor, k + 1) };
}

// --- the organization ---------------------------------------------------------------------

export function initialState(now: number, planId: string, anchor: number): State {
  const cycle = cycleAt(anchor, now);
  const state: State = {
    now, planId, nextPlanId: null, anchor, cycleStart: cycle.start, cycleEnd: cycle.end,
    lots: [], reservations: [], grants: [], purchases: [], serial: 0,
  };
  addLot(state, 'CYCLE', new Date(cycle.start).toISOString(), 'SUBSCRIPTION', PLAN_CREDITS[planId]!, cycle.end);
  return state;
}

function addLot(s: State, source: LotSource, sourceKey: string, type: AccountType, amount: number, expiresAt: number | null): MLot {
  s.serial += 1;
  const lot: MLot = {
    key: `lot${s.serial}`, realId: null, source, sourceKey, type, granted: amount, available: amount,
    reserved: 0, expiresAt, createdAt: s.now,
  };
  s.lots.push(lot);
  return lot;
}

export function isExpired(lot: MLot, now: number): boolean {
  return lot.expiresAt !== null && lot.expiresAt <= now;
}

function expireDue(s: State): void {
  for (const lot of s.lots) if (isExpired(lot, s.now)) lot.available = 0;
}

/** A write's first step: a billing cycle that has ended gives way to the one holding now. */
function ensureCycle(s: State): void {
  if (s.cycleEnd > s.now) return;
  expireDue(s); // unused subscription credits do not roll over
  s.planId = s.nextPlanId ?? s.planId;
  s.nextPlanId = null;
  const cycle = cycleAt(s.anchor, s.now);
  s.cycleStart = cycle.start;
  s.cycleEnd = cycle.end;
  const key = new Date(cycle.start).toISOString();
  // Missed cycles are not granted: only the current one, and only once.
  if (!s.lots.some((lot) => lot.source === 'CYCLE' && lot.sourceKey === key)) {
    addLot(s, 'CYCLE', key, 'SUBSCRIPTION', PLAN_CREDITS[s.planId]!, cycle.end);
  }
}

/** Consumption order: account type, then the lot expiring first (never last), then the oldest. */
export function spendable(s: State): MLot[] {
  return s.lots
    .filter((lot) => lot.available > 0 && !isExpired(lot, s.now))
    .sort((a, b) => {
      const byType = ACCOUNT_TYPES.indexOf(a.type) - ACCOUNT_TYPES.indexOf(b.type);
      if (byType !== 0) return byType;
      const ae = a.expiresAt ?? Number.POSITIVE_INFINITY;
      const be = b.expiresAt ?? Number.POSITIVE_INFINITY;
      if (ae !== be) return ae - be;
      if (a.createdAt !== b.createdAt) return a.createdAt - b.createdAt;
      // Lots alike in all of the above are taken in id order; the model learns ids after each step.
      if (a.realId === null || b.realId === null) {
        throw new Error(`model cannot order ${a.key} and ${b.key}: tied and one id is still unknown`);
      }
      return a.realId < b.realId ? -1 : 1;
    });
}

function lotByKey(s: State, key: string): MLot {
  const lot = s.lots.find((l) => l.key === key);
  if (!lot) throw new Error(`model has no lot ${key}`);
  return lot;
}

/** Applies `op` to a copy of the state, keeping the copy only if `op` succeeds. */
export function transact<T>(state: { s: State }, op: (s: State) => T): Outcome<T> {
  const draft = structuredClone(state.s);
  try {
    const value = op(draft);
    state.s = draft;
    return { ok: value };
  } catch (error) {
    if (error instanceof ModelError) return error.outcome;
    throw error;
  }
}

// --- operations -----------------------------------------------------------------------------

export function grant(s: State, g: { key: string; type: AccountType; amount: number; expiresAt: number | null }): MLot {
  if (g.expiresAt !== null && (g.type === 'PURCHASED' || g.type === 'SUBSCRIPTION')) {
    throw new ModelError({ error: 'InvalidInputError' });
  }
  ensureCycle(s);
  const existing = s.grants.find((x) => x.key === g.key);
  if (existing) {
    const same = existing.type === g.type && existing.amount === g.amount && (g.type === 'SUBSCRIPTION' || existing.expiresAt === g.expiresAt);
    if (!same) throw new ModelError({ error: 'IdempotencyConflictError' });
    return lotByKey(s, existing.lotKey);
  }
  if (g.expiresAt !== null && g.expiresAt <= s.now) throw new ModelError({ error: 'InvalidInputError' });
  // A subscription top-up ends with the current cycle.
  const lot = addLot(s, 'GRANT', g.key, g.type, g.amount, g.type === 'SUBSCRIPTION' ? s.cycleEnd : g.expiresAt);
  s.grants.push({ ...g, lotKey: lot.key });
  return lot;
}

export function purchase(s: State, p: { reference: string; packId: string }): MLot {
  // A purchase does not touch the billing cycle; the next write or sweep does.
  const existing = s.purchases.find((x) => x.reference === p.reference);
  if (existing) {
    if (existing.packId !== p.packId) throw new ModelError({ error: 'IdempotencyConflictError' });
    return lotByKey(s, existing.lotKey);
  }
  const lot = addLot(s, 'PURCHASE', p.reference, 'PURCHASED', PACK_CREDITS[p.packId]!, null);
  s.purchases.push({ ...p, lotKey: lot.key });
  return lot;
}

export function reserve(s: State, r: { idempotencyKey: string; generation: Generation; ttlSeconds: number }): MReservation {
  ensureCycle(s);
  const existing = s.reservations.find((x) => x.idempotencyKey === r.idempotencyKey);
  if (existing) {
    if (!sameGeneration(existing.generation, r.generation)) throw new ModelError({ error: 'IdempotencyConflictError' });
    return existing;
  }
  const cost = costOf(r.generation);
  const lots = spendable(s);
  const total = lots.reduce((sum, lot) => sum + lot.available, 0);
  if (total < cost) throw new ModelError({ error: 'InsufficientCreditsError', required: cost, available: total });
  const allocations: MReservation['allocations'] = [];
  let remaining = cost;
  for (const lot of lots) {
    if (remaining === 0) break;
    const amount = Math.min(lot.available, remaining);
    lot.available -= amount;
    lot.reserved += amount;
    allocations.push({ lotKey: lot.key, amount });
    remaining -= amount;
  }
  const reservation: MReservation = {
    realId: null, idempotencyKey: r.idempotencyKey, generation: r.generation, amount: cost, allocations,
    status: 'PENDING', capturedAmount: 0, refundedAmount: 0, expiresAt: s.now + r.ttlSeconds * 1000,
  };
  s.reservations.push(reservation);
  return reservation;
}

/** Capture `captureAmount` in allocation order; the rest goes back, expiring at once in expired lots. */
function settle(s: State, reservation: MReservation, captureAmount: number): void {
  let toCapture = captureAmount;
  for (const allocation of reservation.allocations) {
    const lot = lotByKey(s, allocation.lotKey);
    const captured = Math.min(allocation.amount, toCapture);
    const refunded = allocation.amount - captured;
    toCapture -= captured;
    lot.reserved -= allocation.amount;
    if (!isExpired(lot, s.now)) lot.available += refunded;
  }
  reservation.status = captureAmount > 0 ? 'CAPTURED' : 'REFUNDED';
  reservation.capturedAmount = captureAmount;
  reservation.refundedAmount = reservation.amount - captureAmount;
}

/**
 * Capture, refund and extend act only on a pending reservation within its time to live. One
 * past it is refunded there and then (and that refund stands), and the caller is told it is
 * refunded.
 */
function withPending(state: { s: State }, index: number, work: (s: State, r: MReservation) => void): Outcome<MReservation> {
  const current = state.s.reservations[index]!;
  if (current.status !== 'PENDING') return { error: 'ReservationStateError', status: current.status };
  if (current.expiresAt <= state.s.now) {
    transact(state, (s) => settle(s, s.reservations[index]!, 0));
    return { error: 'ReservationStateError', status: 'REFUNDED' };
  }
  return transact(state, (s) => {
    const reservation = s.reservations[index]!;
    work(s, reservation);
    return reservation;
  });
}

export type CaptureSpec = { kind: 'full' } | { kind: 'percent'; percent: number } | { kind: 'over' } | { kind: 'zero' };

export function captureAmountFor(spec: CaptureSpec, amount: number): number | null {
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

export function capture(state: { s: State }, index: number, amount: number | null): Outcome<MReservation> {
  if (amount !== null && amount < 1) return { error: 'InvalidInputError' }; // checked before anything else
  return withPending(state, index, (s, reservation) => {
    const toCapture = amount ?? reservation.amount;
    if (toCapture > reservation.amount) throw new ModelError({ error: 'InvalidInputError' });
    settle(s, reservation, toCapture);
  });
}

export function refund(state: { s: State }, index: number): Outcome<MReservation> {
  return withPending(state, index, (s, reservation) => settle(s, reservation, 0));
}

export function extend(state: { s: State }, index: number, ttlSeconds: number): Outcome<MReservation> {
  return withPending(state, index, (s, reservation) => {
    reservation.expiresAt = s.now + ttlSeconds * 1000;
  });
}

export function changePlan(s: State, planId: string, immediately: boolean): void {
  ensureCycle(s);
  if (!immediately) {
    s.nextPlanId = planId === s.planId ? null : planId;
    return;
  }
  if (planId === s.planId) {
    s.nextPlanId = null;
    return;
  }
  // What is left of this cycle's plan allowance goes; top-up grants stay.
  for (const lot of s.lots) {
    if ((lot.source === 'CYCLE' || lot.source === 'PLAN_CHANGE') && !isExpired(lot, s.now)) lot.available = 0;
  }
  s.planId = planId;
  s.nextPlanId = null;
  addLot(s, 'PLAN_CHANGE', `plan-change-${s.serial}`, 'SUBSCRIPTION', PLAN_CREDITS[planId]!, s.cycleEnd);
}

export interface SweepCounts {
  refundedReservations: number;
  resetOrganizations: number;
  expiredLotOrganizations: number;
}

/** The sweeper: refunds reservations past their time, starts a due cycle, expires due lots. */
export function sweep(s: State): SweepCounts {
  let refundedReservations = 0;
  for (const reservation of s.reservations) {
    if (reservation.status === 'PENDING' && reservation.expiresAt <= s.now) {
      settle(s, reservation, 0);
      refundedReservations += 1;
    }
  }
  const due = s.cycleEnd <= s.now;
  ensureCycle(s);
  const lotsDue = s.lots.some((lot) => lot.available > 0 && isExpired(lot, s.now));
  expireDue(s);
  return { refundedReservations, resetOrganizations: due ? 1 : 0, expiredLotOrganizations: lotsDue ? 1 : 0 };
}

export interface ModelBalance {
  available: number;
  reserved: number;
  accounts: Array<{ type: AccountType; available: number; reserved: number }>;
}

/** Available counts only unexpired lots; reserved counts every held credit, expired lot or not. */
export function balance(s: State): ModelBalance {
  const accounts = ACCOUNT_TYPES.map((type) => {
    const lots = s.lots.filter((lot) => lot.type === type);
    return {
      type,
      available: lots.filter((lot) => !isExpired(lot, s.now)).reduce((sum, lot) => sum + lot.available, 0),
      reserved: lots.reduce((sum, lot) => sum + lot.reserved, 0),
    };
  });
  return {
    available: accounts.reduce((sum, a) => sum + a.available, 0),
    reserved: accounts.reduce((sum, a) => sum + a.reserved, 0),
    accounts,
  };
}
