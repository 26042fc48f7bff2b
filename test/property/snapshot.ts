// What the database holds for one organization, read with plain SQL straight from the tables
// (no ledger function), and how it differs from the model. Nothing here decides a rule: the
// model (./model.ts) says what must be; this file only reads and compares.
import { sql } from 'drizzle-orm';
import { type Database, rowsOf } from '../../src/db/client.ts';
import * as M from './model.ts';

export interface DbLot {
  id: string;
  type: M.AccountType;
  granted: number;
  available: number;
  reserved: number;
  expiresAt: number | null;
  createdAt: number;
  /** From the journal: sums of the lot's entries. */
  journalAvailable: number;
  journalReserved: number;
  journalGranted: number;
  consumed: number;
  expired: number;
  /** Entries whose shape does not match their kind (README "Journal"). */
  malformed: number;
  /** EXPIRE entries written before the lot's expiry (or for a lot that never expires). */
  earlyExpires: number;
}

export interface DbReservation {
  id: string;
  idempotencyKey: string;
  status: M.Status;
  amount: number;
  capturedAmount: number;
  refundedAmount: number;
  expiresAt: number;
  createdAt: number;
  settledAt: number | null;
  refundReason: string | null;
}

/** Per reservation and lot: credits reserved from it, captured from it, refunded to it. */
export interface DbMovement {
  reservationId: string;
  lotId: string;
  reserved: number;
  captured: number;
  refunded: number;
}

export interface Snapshot {
  now: number;
  org: { planId: string; nextPlanId: string | null; cycleStartsAt: number; cycleEndsAt: number };
  lots: DbLot[];
  reservations: DbReservation[];
  movements: DbMovement[];
  withheld: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/**
 * A timestamp column as milliseconds: PGlite answers raw SQL with a Date, drizzle over postgres.js
 * with PostgreSQL's text form ("2026-01-01 00:00:00.123+00").
 */
function time(value: unknown): number {
  if (value instanceof Date) return value.getTime();
  const iso = String(value)
    .replace(' ', 'T')
    .replace(/([+-]\d\d)$/, '$1:00');
  const parsed = Date.parse(iso);
  if (Number.isNaN(parsed)) throw new Error(`not a timestamp: ${String(value)}`);
  return parsed;
}
const ms = (value: unknown): number | null => (value === null || value === undefined ? null : time(value));

type Row = Record<string, unknown>;

export async function readSnapshot(db: Database['db'], organizationId: string, now: number): Promise<Snapshot> {
  if (!UUID.test(organizationId)) throw new Error(`not a uuid: ${organizationId}`);
  const org = `'${organizationId}'`;
  // Plain SQL, one statement at a time (PGlite, PostgreSQL and a Citus coordinator alike), each
  // filtered by the organization so that a sharded database answers it from one shard.
  const read = async (statement: string) => ({ rows: rowsOf<Row>(await db.execute(sql.raw(statement))) });
  const [orgs, lots, reservations, movements, withheld] = await Promise.all([
    read(`
    select plan_id, next_plan_id, cycle_starts_at, cycle_ends_at from organizations where id = ${org}`),
    read(`
    select l.id, l.type::text as type, l.granted, l.available, l.reserved, l.expires_at, l.created_at,
      coalesce(sum(e.available_change), 0)::float8 as journal_available,
      coalesce(sum(e.reserved_change), 0)::float8 as journal_reserved,
      coalesce(sum(e.available_change) filter (where e.kind = 'GRANT'), 0)::float8 as journal_granted,
      coalesce(-sum(e.reserved_change) filter (where e.kind = 'CAPTURE'), 0)::float8 as consumed,
      coalesce(-sum(e.available_change) filter (where e.kind = 'EXPIRE'), 0)::float8 as expired,
      count(e.id) filter (where not (
        (e.kind = 'GRANT' and e.available_change > 0 and e.reserved_change = 0) or
        (e.kind = 'RESERVE' and e.available_change < 0 and e.reserved_change = -e.available_change) or
        (e.kind = 'CAPTURE' and e.available_change = 0 and e.reserved_change < 0) or
        (e.kind = 'REFUND' and e.available_change > 0 and e.reserved_change = -e.available_change) or
        (e.kind = 'EXPIRE' and e.available_change < 0 and e.reserved_change = 0)))::int as malformed,
      count(e.id) filter (where e.kind = 'EXPIRE' and (l.expires_at is null or e.created_at < l.expires_at))::int as early_expires
    from credit_lots l left join ledger_entries e on e.organization_id = l.organization_id and e.lot_id = l.id
    where l.organization_id = ${org}
    group by l.organization_id, l.id`),
    read(`
    select id, idempotency_key, status::text as status, amount, captured_amount, refunded_amount,
      expires_at, created_at, settled_at, refund_reason
    from reservations where organization_id = ${org}`),
    read(`
    select reservation_id, lot_id,
      coalesce(sum(reserved_change) filter (where kind = 'RESERVE'), 0)::float8 as reserved,
      coalesce(-sum(reserved_change) filter (where kind = 'CAPTURE'), 0)::float8 as captured,
      coalesce(-sum(reserved_change) filter (where kind = 'REFUND'), 0)::float8 as refunded
    from ledger_entries where organization_id = ${org} and reservation_id is not null
    group by reservation_id, lot_id`),
    read(`
    select coalesce(sum(amount), 0)::float8 as withheld from withheld_credits where organization_id = ${org}`),
  ]);
  const o = orgs.rows[0] as Row | undefined;
  if (!o) throw new Error(`organization ${organizationId} not found`);
  return {
    now,
    org: {
      planId: o.plan_id as string,
      nextPlanId: (o.next_plan_id as string | null) ?? null,
      cycleStartsAt: time(o.cycle_starts_at),
      cycleEndsAt: time(o.cycle_ends_at),
    },
    lots: (lots.rows as Row[]).map((r) => ({
      id: r.id as string,
      type: r.type as M.AccountType,
      granted: r.granted as number,
      available: r.available as number,
      reserved: r.reserved as number,
      expiresAt: ms(r.expires_at),
      createdAt: time(r.created_at),
      journalAvailable: r.journal_available as number,
      journalReserved: r.journal_reserved as number,
      journalGranted: r.journal_granted as number,
      consumed: r.consumed as number,
      expired: r.expired as number,
      malformed: r.malformed as number,
      earlyExpires: r.early_expires as number,
    })),
    reservations: (reservations.rows as Row[]).map((r) => ({
      id: r.id as string,
      idempotencyKey: r.idempotency_key as string,
      status: r.status as M.Status,
      amount: r.amount as number,
      capturedAmount: r.captured_amount as number,
      refundedAmount: r.refunded_amount as number,
      expiresAt: time(r.expires_at),
      createdAt: time(r.created_at),
      settledAt: ms(r.settled_at),
      refundReason: (r.refund_reason as string | null) ?? null,
    })),
    movements: (movements.rows as Row[]).map((r) => ({
      reservationId: r.reservation_id as string,
      lotId: r.lot_id as string,
      reserved: r.reserved as number,
      captured: r.captured as number,
      refunded: r.refunded as number,
    })),
    withheld: (withheld.rows[0] as Row).withheld as number,
  };
}

/** Ids the test learned from the ledger's answers: which real lot and reservation is which. */
export interface Identities {
  /** Model lot index -> real lot id, for lots a grant or purchase returned. */
  lots: Map<number, string>;
  /** Model reservation index -> real reservation id. */
  reservations: string[];
}

function lotBucketKey(lot: DbLot): string {
  return M.bucketKey(lot.type, lot.expiresAt, lot.createdAt);
}

function fmt(t: number | null): string {
  return t === null ? 'never' : new Date(t).toISOString();
}

function describeBucketKey(key: string): string {
  const [type, expires, created] = key.split('|');
  return `${type} expiring ${expires === 'never' ? 'never' : fmt(Number(expires))} granted ${fmt(Number(created))}`;
}

/** Every way the database differs from the model state; empty when they agree. */
export function diff(s: M.State, db: Snapshot, ids: Identities): string[] {
  const out: string[] = [];
  const eq = (what: string, real: unknown, model: unknown) => {
    if (JSON.stringify(real) !== JSON.stringify(model))
      out.push(`${what}: database ${JSON.stringify(real)}, model ${JSON.stringify(model)}`);
  };

  // The organization.
  eq('plan', db.org.planId, s.planId);
  eq('scheduled plan', db.org.nextPlanId, s.nextPlanId);
  eq('cycle start', fmt(db.org.cycleStartsAt), fmt(s.cycleStart));
  eq('cycle end', fmt(db.org.cycleEndsAt), fmt(s.cycleEnd));
  eq('withheld allowance credits', db.withheld, s.withheld);

  // Each lot against the journal (README "Journal").
  for (const lot of db.lots) {
    const where = `lot ${lot.id} (${describeBucketKey(lotBucketKey(lot))})`;
    if (lot.available !== lot.journalAvailable || lot.reserved !== lot.journalReserved)
      out.push(
        `${where}: cached ${lot.available}/${lot.reserved}, journal ${lot.journalAvailable}/${lot.journalReserved}`,
      );
    if (lot.granted !== lot.journalGranted)
      out.push(`${where}: granted ${lot.granted}, GRANT entries ${lot.journalGranted}`);
    if (lot.granted !== lot.available + lot.reserved + lot.consumed + lot.expired)
      out.push(
        `${where}: granted ${lot.granted} != available ${lot.available} + reserved ${lot.reserved} + consumed ${lot.consumed} + expired ${lot.expired}`,
      );
    if (lot.malformed > 0) out.push(`${where}: ${lot.malformed} entries of the wrong shape`);
    if (lot.earlyExpires > 0) out.push(`${where}: EXPIRE entry before the lot's expiry`);
    if (lot.available < 0 || lot.reserved < 0) out.push(`${where}: negative`);
  }

  // Lots' fixed facts: those a grant or purchase returned by id, the others (allowances) as a multiset.
  const byId = new Map(db.lots.map((l) => [l.id, l]));
  const named = new Set<string>();
  const allowanceModel: string[] = [];
  s.lots.forEach((lot, index) => {
    const facts = `${lot.type} ${lot.granted} expiring ${fmt(lot.expiresAt)} granted ${fmt(lot.createdAt)}`;
    if (lot.origin.kind === 'allowance') {
      allowanceModel.push(facts);
      return;
    }
    const id = ids.lots.get(index);
    const real = id === undefined ? undefined : byId.get(id);
    if (!real) {
      out.push(`lot ${index} (${lot.origin.kind}) is missing from the database`);
      return;
    }
    named.add(real.id);
    eq(
      `lot ${index} (${lot.origin.kind})`,
      `${real.type} ${real.granted} expiring ${fmt(real.expiresAt)} granted ${fmt(real.createdAt)}`,
      facts,
    );
  });
  const allowanceDb = db.lots
    .filter((l) => !named.has(l.id))
    .map((l) => `${l.type} ${l.granted} expiring ${fmt(l.expiresAt)} granted ${fmt(l.createdAt)}`);
  eq('allowance lots', allowanceDb.sort(), allowanceModel.sort());

  // Tie groups: the totals of lots that rank equally.
  const dbBuckets = new Map<
    string,
    { lots: number; granted: number; available: number; reserved: number; consumed: number; expired: number }
  >();
  for (const lot of db.lots) {
    const key = lotBucketKey(lot);
    const b = dbBuckets.get(key) ?? { lots: 0, granted: 0, available: 0, reserved: 0, consumed: 0, expired: 0 };
    b.lots += 1;
    b.granted += lot.granted;
    b.available += lot.available;
    b.reserved += lot.reserved;
    b.consumed += lot.consumed;
    b.expired += lot.expired;
    dbBuckets.set(key, b);
  }
  const keys = new Set([...dbBuckets.keys(), ...s.buckets.map((b) => b.key)]);
  for (const key of [...keys].sort()) {
    const m = s.buckets.find((b) => b.key === key);
    eq(
      `lots ${describeBucketKey(key)}`,
      dbBuckets.get(key) ?? null,
      m
        ? {
            lots: m.lots,
            granted: m.granted,
            available: m.available,
            reserved: m.reserved,
            consumed: m.consumed,
            expired: m.expired,
          }
        : null,
    );
  }

  // Balance per account, derived from the lots (spendable = expiry in the future).
  const realBalance = M.CONSUMPTION_ORDER.map((type) => {
    const lots = db.lots.filter((l) => l.type === type);
    return {
      type,
      available: lots.filter((l) => M.isSpendable(l, db.now)).reduce((n, l) => n + l.available, 0),
      reserved: lots.reduce((n, l) => n + l.reserved, 0),
    };
  });
  eq('balance per account', realBalance, M.balanceOf(s));

  // Reservations, and what each took from, gave to and consumed in every tie group.
  eq('number of reservations', db.reservations.length, s.reservations.length);
  const lotById = new Map(db.lots.map((l) => [l.id, l]));
  s.reservations.forEach((r, index) => {
    const id = ids.reservations[index];
    const real = db.reservations.find((x) => x.id === id);
    if (!real) {
      out.push(`reservation ${r.idempotencyKey} is missing from the database`);
      return;
    }
    eq(
      `reservation ${r.idempotencyKey}`,
      {
        key: real.idempotencyKey,
        status: real.status,
        amount: real.amount,
        captured: real.capturedAmount,
        refunded: real.refundedAmount,
        created: fmt(real.createdAt),
        expires: fmt(real.expiresAt),
        settled: real.settledAt !== null,
      },
      {
        key: r.idempotencyKey,
        status: r.status,
        amount: r.amount,
        captured: r.capturedAmount,
        refunded: r.refundedAmount,
        created: fmt(r.createdAt),
        expires: fmt(r.expiresAt),
        settled: r.settledAt !== null,
      },
    );
    if (r.status === 'REFUNDED') eq(`reservation ${r.idempotencyKey} refund reason`, real.refundReason, r.refundReason);
    const perBucket = new Map<string, { reserved: number; captured: number; refunded: number }>();
    for (const m of db.movements.filter((x) => x.reservationId === id)) {
      const lot = lotById.get(m.lotId);
      const key = lot ? lotBucketKey(lot) : `another organization's lot ${m.lotId}`;
      const t = perBucket.get(key) ?? { reserved: 0, captured: 0, refunded: 0 };
      t.reserved += m.reserved;
      t.captured += m.captured;
      t.refunded += m.refunded;
      perBucket.set(key, t);
    }
    const realHolds = [...perBucket]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, t]) => ({ lots: describeBucketKey(k), ...t }));
    // A grown reservation may hold one tie group twice (first credits and an increase): per group.
    const modelPerBucket = new Map<string, { reserved: number; captured: number; refunded: number }>();
    for (const h of r.holds) {
      const t = modelPerBucket.get(h.bucket) ?? { reserved: 0, captured: 0, refunded: 0 };
      t.reserved += h.amount;
      t.captured += h.captured;
      t.refunded += h.refunded;
      modelPerBucket.set(h.bucket, t);
    }
    const modelHolds = [...modelPerBucket]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, t]) => ({ lots: describeBucketKey(k), ...t }));
    eq(`reservation ${r.idempotencyKey}: taken from, consumed in and returned to`, realHolds, modelHolds);
  });

  // Invariants the README states, on the database itself.
  const allowanceByCycleEnd = new Map<number, number>();
  for (const lot of db.lots.filter((l) => !named.has(l.id))) {
    allowanceByCycleEnd.set(lot.expiresAt ?? -1, (allowanceByCycleEnd.get(lot.expiresAt ?? -1) ?? 0) + lot.granted);
  }
  for (const [end, granted] of allowanceByCycleEnd) {
    const cycle = s.cycles.find((c) => c.end === end);
    const largest = cycle ? Math.max(...cycle.plansInForce.map((p) => M.PLAN_ALLOWANCE[p]!)) : 0;
    if (granted > largest)
      out.push(
        `allowance for the cycle ending ${fmt(end)}: ${granted} granted, the largest plan in force allows ${largest}`,
      );
  }
  if (s.caughtUpAt === db.now) {
    for (const lot of db.lots) {
      if (lot.available > 0 && !M.isSpendable(lot, db.now))
        out.push(`lot ${lot.id}: ${lot.available} available after its expiry ${fmt(lot.expiresAt)}`);
    }
  }
  for (const r of db.reservations) {
    if (r.expiresAt > r.createdAt + M.LIFETIME_MS)
      out.push(`reservation ${r.idempotencyKey} expires more than 24 h after its creation`);
    if (
      s.sweptAt === db.now &&
      r.status === 'PENDING' &&
      (r.expiresAt <= db.now || r.createdAt + M.LIFETIME_MS <= db.now)
    ) {
      out.push(
        `reservation ${r.idempotencyKey} still pending after a sweep (created ${fmt(r.createdAt)}, expires ${fmt(r.expiresAt)})`,
      );
    }
  }
  return out;
}

/**
 * README "Consumption order" within a tie group: each lot gives all it has before the next is
 * touched, so of the lots a new reservation took in one group, at most one kept credits. Returns
 * the problems and the lot the reservation stopped in (known only when it kept credits).
 */
export function checkReserveWithinTies(
  db: Snapshot,
  reservationId: string,
): { problems: string[]; lastLot: string | null } {
  const lotById = new Map(db.lots.map((l) => [l.id, l]));
  const partialByBucket = new Map<string, string[]>();
  for (const m of db.movements.filter((x) => x.reservationId === reservationId && x.reserved > 0)) {
    const lot = lotById.get(m.lotId)!;
    if (lot.available > 0) {
      const key = lotBucketKey(lot);
      partialByBucket.set(key, [...(partialByBucket.get(key) ?? []), lot.id]);
    }
  }
  const problems: string[] = [];
  let lastLot: string | null = null;
  for (const [key, lots] of partialByBucket) {
    if (lots.length > 1)
      problems.push(`reservation ${reservationId} left ${lots.length} lots of ${describeBucketKey(key)} partly taken`);
    lastLot = lots[0]!;
  }
  if (partialByBucket.size > 1)
    problems.push(`reservation ${reservationId} stopped in ${partialByBucket.size} tie groups`);
  return { problems, lastLot };
}

/**
 * README "Capture or refund" within a tie group: a capture consumes in the order the lots were
 * taken, so in each group at most one lot is partly consumed, and the lot the reservation stopped
 * in (taken last) is consumed from only once every other lot of its group is consumed in full.
 */
export function checkCaptureWithinTies(db: Snapshot, reservationId: string, lastLot: string | null): string[] {
  const lotById = new Map(db.lots.map((l) => [l.id, l]));
  const moves = db.movements.filter((x) => x.reservationId === reservationId);
  const problems: string[] = [];
  const partial = new Map<string, number>();
  for (const m of moves) {
    if (m.captured > 0 && m.captured < m.reserved) {
      const key = lotBucketKey(lotById.get(m.lotId)!);
      partial.set(key, (partial.get(key) ?? 0) + 1);
    }
  }
  for (const [key, n] of partial)
    if (n > 1) problems.push(`capture of ${reservationId} consumed part of ${n} lots of ${describeBucketKey(key)}`);
  const last = lastLot === null ? undefined : moves.find((m) => m.lotId === lastLot);
  if (last && last.captured > 0) {
    const key = lotBucketKey(lotById.get(last.lotId)!);
    for (const m of moves) {
      if (m.lotId !== last.lotId && lotBucketKey(lotById.get(m.lotId)!) === key && m.captured < m.reserved) {
        problems.push(
          `capture of ${reservationId} consumed from the lot taken last before the others of ${describeBucketKey(key)}`,
        );
      }
    }
  }
  return problems;
}
