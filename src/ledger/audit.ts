import { sql, type SQL } from 'drizzle-orm';
import type { Queryable } from '../db/client.ts';
import { rowsOf } from '../db/client.ts';
import {
  allocationHoldsWhatItMay,
  cycleAllowanceBounded,
  entryWellFormed,
  expiredLotStaysClosed,
  expiredLotSwept,
  expiryNotBeforeLotExpiry,
  journalNumberedWithoutGaps,
  LOT_CHECKS,
  lotKeepsGrantedType,
  oldReservationSettled,
  organizationConserves,
  organizationPlanMatchesHistory,
  type CycleAllowanceRow,
  type PlanChangeRow,
  plansInForce,
  purchasedLotNeverExpires,
  RESERVATION_CHECKS,
  reservationLifetimeBounded,
  type Timestamp,
  type Violation,
} from './audit-checks.ts';
import { reservationsFollowConsumptionOrder } from './audit-order.ts';
import type { AccountType } from './enums.ts';

export interface AuditOptions {
  /** Audit only this organization (property tests audit one organization after every step). */
  organizationId?: string;
  /**
   * A moment up to which a sweep is known to have run. With it, the audit also reports lots whose
   * expiry passed before it and still hold spendable credits, and reservations created more than
   * 24 hours before it that are still pending. Without it, only rules that hold at every commit
   * are checked.
   */
  sweptAt?: Date;
}

/**
 * Recomputes every lot, reservation and organization from the journal and reports each place
 * where the cached numbers or the conservation law disagree with it. An empty list means:
 * - each lot's available and reserved credits equal the sums of its entries, are not negative
 *   and together stay within what was granted, and the lot was granted by exactly one entry;
 * - each entry has the shape of its kind, belongs to its lot's organization, and is tied to a
 *   reservation of that organization exactly when its kind moves reserved credits;
 * - each organization's entries are numbered 1 to n without gaps;
 * - each reservation's held, captured and refunded credits match its entries, lot by lot
 *   (nothing is held once it is settled, no lot gives back more than it held), and its status
 *   agrees with what was captured;
 * - for each organization, granted = available + reserved + consumed + expired;
 * and the lifecycle rules (`auditLifecycle`). Each rule is a check of its own in
 * src/ledger/audit-checks.ts; this module reads the rows they judge, one statement per kind of
 * row. Callers wanting one snapshot across them run this in a repeatable-read transaction (the
 * `npm run audit` command does).
 */
export async function auditLedger(db: Queryable, options: AuditOptions = {}): Promise<Violation[]> {
  const read = reader(db, options.organizationId);
  return [
    ...(await read.lots()).flatMap((lot) => LOT_CHECKS.flatMap((check) => check(lot))),
    ...(await read.malformedEntries()).flatMap(entryWellFormed),
    ...(await read.journalNumbering()).flatMap(journalNumberedWithoutGaps),
    ...(await read.reservations()).flatMap((r) => RESERVATION_CHECKS.flatMap((check) => check(r))),
    ...(await read.suspectAllocations()).flatMap(allocationHoldsWhatItMay),
    ...(await read.organizationTotals()).flatMap(organizationConserves),
    ...(await read.suspectLotIdentities()).flatMap(lotKeepsGrantedType),
    ...(await read.expiringPurchases()).flatMap(purchasedLotNeverExpires),
    ...(await auditLifecycle(db, options)),
  ];
}

/**
 * The plan rules, judged against the plan history (append-only, written with every plan change)
 * rather than against the rows they check: each organization's plan and scheduled plan are the
 * history's last state and the history itself is whole, and each billing cycle's allowance lots
 * name plans in force during it and grant no more than the largest of them.
 */
async function auditPlans(read: Reader): Promise<Violation[]> {
  const allowances = Object.fromEntries((await read.plans()).map((plan) => [plan.id, plan.monthlyCredits]));
  const histories = new Map<string, PlanChangeRow[]>();
  for (const change of await read.planHistory()) {
    const history = histories.get(change.organizationId) ?? [];
    history.push(change);
    histories.set(change.organizationId, history);
  }
  const organizations = (await read.organizationPlans()).flatMap((org) =>
    organizationPlanMatchesHistory({ ...org, history: histories.get(org.organizationId) ?? [] }, allowances),
  );
  const cycles = (await read.cycleAllowances()).map((cycle): CycleAllowanceRow => {
    const { cycleKey, ...row } = cycle;
    if (cycleKey === null) return { ...row, inForce: {} };
    const inForce = plansInForce(histories.get(cycle.organizationId) ?? [], cycleKey);
    const planIds = inForce.beforeHistory ? [...inForce.planIds, ...cycle.labels] : inForce.planIds;
    return { ...row, inForce: Object.fromEntries(planIds.map((id) => [id, allowances[id] ?? 0])) };
  });
  return [...organizations, ...cycles.flatMap(cycleAllowanceBounded)];
}

/**
 * The rules about time and order that sums alone cannot see (a lot can balance and still mint):
 * an expired lot never holds spendable credits again, no lot expires before its expiry, no
 * reservation may live past 24 hours, each billing cycle's allowance stays within the largest
 * plan in force, and every reservation took its credits in consumption order (replayed from the
 * journal). With `sweptAt`, also what a sweep up to then must have done.
 */
export async function auditLifecycle(db: Queryable, options: AuditOptions = {}): Promise<Violation[]> {
  const read = reader(db, options.organizationId);
  const violations = [
    ...(await read.expiredLots()).flatMap(expiredLotStaysClosed),
    ...(await read.earlyExpiries()).flatMap(expiryNotBeforeLotExpiry),
    ...(await read.overlongReservations()).flatMap(reservationLifetimeBounded),
    ...(await auditPlans(read)),
  ];
  if (options.sweptAt) {
    violations.push(...(await read.unsweptLots(options.sweptAt)).flatMap(expiredLotSwept));
    violations.push(...(await read.stalePendingReservations(options.sweptAt)).flatMap(oldReservationSettled));
  }
  violations.push(...reservationsFollowConsumptionOrder(await read.orderLots(), await read.orderEntries()));
  return violations;
}

type Raw = Record<string, unknown>;

const text = (value: unknown) => String(value);
/** A text[] arrives as an array, or (some drivers, for an aggregate) as its literal `{a,b}`. */
const textArray = (value: unknown): string[] => {
  if (Array.isArray(value)) return value.map(String);
  const literal = String(value ?? '{}').replace(/^\{|\}$/g, '');
  return literal === '' ? [] : literal.split(',').map((item) => item.replace(/^"|"$/g, ''));
};
const optionalText = (value: unknown) => (value === null || value === undefined ? null : String(value));
/** Counts and sums arrive as text (bigint) or numbers, depending on the driver. */
const count = (value: unknown) => Number(value);
const timestamp = (value: unknown) => value as Timestamp;
const optionalTimestamp = (value: unknown) => (value === null || value === undefined ? null : timestamp(value));
/** A timestamp as microseconds since the epoch, exact, for comparing cycles (see CycleKey). */
const cycleKeyOf = (column: SQL) => sql`(extract(epoch from ${column}) * 1000000)::bigint::text`;

type Reader = ReturnType<typeof reader>;

/**
 * The audit's queries, each returning typed rows. `only(column)` narrows a query to the audited
 * organization; without one it keeps every row.
 */
function reader(db: Queryable, organizationId: string | undefined) {
  const only = (column: SQL) => (organizationId === undefined ? sql`true` : sql`${column} = ${organizationId}::uuid`);
  const query = async (statement: SQL) => rowsOf<Raw>(await db.execute(statement));
  return {
    lots: async () =>
      (
        await query(sql`
          select l.id, l.organization_id, l.granted, l.available, l.reserved,
            coalesce(sum(e.available_change), 0)::bigint as journal_available,
            coalesce(sum(e.reserved_change), 0)::bigint as journal_reserved,
            coalesce(sum(e.available_change) filter (where e.kind = 'GRANT'), 0)::bigint as journal_granted,
            count(e.id) filter (where e.kind = 'GRANT')::int as grant_entries
          from credit_lots l left join ledger_entries e on e.organization_id = l.organization_id and e.lot_id = l.id
          where ${only(sql`l.organization_id`)}
          group by l.organization_id, l.id`)
      ).map((row) => ({
        organizationId: text(row.organization_id),
        lotId: text(row.id),
        granted: count(row.granted),
        available: count(row.available),
        reserved: count(row.reserved),
        journalAvailable: count(row.journal_available),
        journalReserved: count(row.journal_reserved),
        journalGranted: count(row.journal_granted),
        grantEntries: count(row.grant_entries),
      })),

    // Entries that could not have been written by postEntries: wrong shape, wrong organization,
    // or a reservation link where none belongs (or missing where one must be). The composite foreign
    // keys refuse an entry whose lot or reservation is another organization's; this still finds one
    // written past them. Lots and reservations are joined within the entry's organization (a join
    // a sharded database runs shard by shard), so a foreign one shows as missing.
    malformedEntries: async () =>
      (
        await query(sql`
          select e.id, e.organization_id, e.lot_id, e.reservation_id, e.kind, e.available_change, e.reserved_change,
            l.organization_id as lot_organization_id, r.organization_id as reservation_organization_id
          from ledger_entries e
            left join credit_lots l on l.organization_id = e.organization_id and l.id = e.lot_id
            left join reservations r on r.organization_id = e.organization_id and r.id = e.reservation_id
          where ${only(sql`e.organization_id`)} and not (
            case e.kind
              when 'GRANT' then e.available_change > 0 and e.reserved_change = 0 and e.reservation_id is null
              when 'RESERVE' then e.available_change < 0 and e.reserved_change = -e.available_change and e.reservation_id is not null
              when 'CAPTURE' then e.available_change = 0 and e.reserved_change < 0 and e.reservation_id is not null
              when 'REFUND' then e.available_change > 0 and e.reserved_change = -e.available_change and e.reservation_id is not null
              when 'EXPIRE' then e.available_change < 0 and e.reserved_change = 0
            end
            and l.id is not null
            and (r.id is not null) = (e.reservation_id is not null)
          )
          order by e.organization_id, e.entry_number
          limit 1000`)
      ).map((row) => ({
        organizationId: text(row.organization_id),
        lotId: text(row.lot_id),
        reservationId: optionalText(row.reservation_id),
        entryId: text(row.id),
        kind: text(row.kind),
        availableChange: count(row.available_change),
        reservedChange: count(row.reserved_change),
        lotOrganizationId: optionalText(row.lot_organization_id),
        reservationOrganizationId: optionalText(row.reservation_organization_id),
      })),

    journalNumbering: async () =>
      (
        await query(sql`
          select organization_id, count(*)::bigint as entries, min(entry_number) as first, max(entry_number) as last
          from ledger_entries
          where ${only(sql`organization_id`)}
          group by organization_id`)
      ).map((row) => ({
        organizationId: text(row.organization_id),
        entries: count(row.entries),
        first: count(row.first),
        last: count(row.last),
      })),

    reservations: async () =>
      (
        await query(sql`
          select r.id, r.organization_id, r.status, r.amount, r.captured_amount, r.refunded_amount,
            coalesce(sum(e.reserved_change) filter (where e.kind = 'RESERVE'), 0)::bigint as reserved,
            coalesce(sum(e.reserved_change), 0)::bigint as held,
            coalesce(-sum(e.reserved_change) filter (where e.kind = 'CAPTURE'), 0)::bigint as captured,
            coalesce(sum(e.available_change) filter (where e.kind = 'REFUND'), 0)::bigint as refunded
          from reservations r left join ledger_entries e on e.organization_id = r.organization_id and e.reservation_id = r.id
          where ${only(sql`r.organization_id`)}
          group by r.organization_id, r.id`)
      ).map((row) => ({
        organizationId: text(row.organization_id),
        reservationId: text(row.id),
        status: text(row.status),
        amount: count(row.amount),
        capturedAmount: count(row.captured_amount),
        refundedAmount: count(row.refunded_amount),
        reserved: count(row.reserved),
        held: count(row.held),
        captured: count(row.captured),
        refunded: count(row.refunded),
      })),

    // Only the (reservation, lot) pairs that break the rule: there is one per allocation ever made.
    suspectAllocations: async () =>
      (
        await query(sql`
          select e.reservation_id, e.lot_id, r.organization_id, r.status,
            sum(e.reserved_change)::bigint as held
          from ledger_entries e join reservations r on r.organization_id = e.organization_id and r.id = e.reservation_id
          where ${only(sql`r.organization_id`)}
          group by e.reservation_id, e.lot_id, r.organization_id, r.status
          having sum(e.reserved_change) < 0 or (r.status <> 'PENDING' and sum(e.reserved_change) <> 0)`)
      ).map((row) => ({
        organizationId: text(row.organization_id),
        reservationId: text(row.reservation_id),
        lotId: text(row.lot_id),
        status: text(row.status),
        held: count(row.held),
      })),

    organizationTotals: async () =>
      (
        await query(sql`
          select o.id,
            coalesce((select sum(l.granted) from credit_lots l where l.organization_id = o.id), 0)::bigint as granted,
            coalesce((select sum(l.available) from credit_lots l where l.organization_id = o.id), 0)::bigint as available,
            coalesce((select sum(l.reserved) from credit_lots l where l.organization_id = o.id), 0)::bigint as reserved,
            coalesce((select -sum(e.reserved_change) from ledger_entries e where e.organization_id = o.id and e.kind = 'CAPTURE'), 0)::bigint as consumed,
            coalesce((select -sum(e.available_change) from ledger_entries e where e.organization_id = o.id and e.kind = 'EXPIRE'), 0)::bigint as expired
          from organizations o
          where ${only(sql`o.id`)}`)
      ).map((row) => ({
        organizationId: text(row.id),
        granted: count(row.granted),
        available: count(row.available),
        reserved: count(row.reserved),
        consumed: count(row.consumed),
        expired: count(row.expired),
      })),

    expiredLots: async () =>
      (
        await query(sql`
          select l.id, l.organization_id, l.available from credit_lots l
          where ${only(sql`l.organization_id`)} and l.available > 0
            and exists (
              select 1 from ledger_entries e
              where e.organization_id = l.organization_id and e.lot_id = l.id and e.kind = 'EXPIRE'
            )`)
      ).map((row) => ({
        organizationId: text(row.organization_id),
        lotId: text(row.id),
        available: count(row.available),
      })),

    earlyExpiries: async () =>
      (
        await query(sql`
          select e.id, e.lot_id, e.organization_id, l.expires_at from ledger_entries e
            join credit_lots l on l.organization_id = e.organization_id and l.id = e.lot_id
          where ${only(sql`e.organization_id`)} and e.kind = 'EXPIRE'
            and (l.expires_at is null or e.created_at < l.expires_at)
          order by e.organization_id, e.entry_number limit 1000`)
      ).map((row) => ({
        organizationId: text(row.organization_id),
        lotId: text(row.lot_id),
        entryId: text(row.id),
        lotExpiresAt: optionalTimestamp(row.expires_at),
      })),

    overlongReservations: async () =>
      (
        await query(sql`
          select r.id, r.organization_id, r.expires_at from reservations r
          where ${only(sql`r.organization_id`)} and r.expires_at > r.created_at + interval '24 hours'
          limit 1000`)
      ).map((row) => ({
        organizationId: text(row.organization_id),
        reservationId: text(row.id),
        expiresAt: timestamp(row.expires_at),
      })),

    // One row per organization and billing cycle: the audit judges every cycle against the history.
    cycleAllowances: async () =>
      (
        await query(sql`
          select l.organization_id, l.cycle_starts_at, ${cycleKeyOf(sql`l.cycle_starts_at`)} as cycle_key,
            sum(l.granted)::bigint as granted,
            coalesce(array_agg(distinct l.plan_id) filter (where l.plan_id is not null), '{}') as labels,
            count(*) filter (where l.plan_id is null or l.cycle_starts_at is null)::int as unlabelled
          from credit_lots l
          where ${only(sql`l.organization_id`)} and l.source in ('CYCLE', 'PLAN_CHANGE')
          group by l.organization_id, l.cycle_starts_at`)
      ).map((row) => ({
        organizationId: text(row.organization_id),
        cycleStartsAt: optionalTimestamp(row.cycle_starts_at),
        cycleKey: optionalText(row.cycle_key),
        granted: count(row.granted),
        labels: textArray(row.labels),
        unlabelled: count(row.unlabelled),
      })),

    planHistory: async () =>
      (
        await query(sql`
          select organization_id, change_number, kind, plan_id, next_plan_id, ${cycleKeyOf(sql`cycle_starts_at`)} as cycle_key
          from plan_changes where ${only(sql`organization_id`)}
          order by organization_id, change_number`)
      ).map(
        (row): PlanChangeRow => ({
          organizationId: text(row.organization_id),
          changeNumber: count(row.change_number),
          kind: text(row.kind),
          planId: text(row.plan_id),
          nextPlanId: optionalText(row.next_plan_id),
          cycleKey: text(row.cycle_key),
        }),
      ),

    organizationPlans: async () =>
      (await query(sql`select id, plan_id, next_plan_id from organizations o where ${only(sql`o.id`)}`)).map((row) => ({
        organizationId: text(row.id),
        planId: text(row.plan_id),
        nextPlanId: optionalText(row.next_plan_id),
      })),

    plans: async () =>
      (await query(sql`select id, monthly_credits from plans`)).map((row) => ({
        id: text(row.id),
        monthlyCredits: count(row.monthly_credits),
      })),

    // Only the lots that break the rule: a type other than their GRANT entry's or their source's.
    suspectLotIdentities: async () =>
      (
        await query(sql`
          select l.id, l.organization_id, l.type, l.source, e.lot_type
          from credit_lots l
            left join ledger_entries e on e.organization_id = l.organization_id and e.lot_id = l.id and e.kind = 'GRANT'
          where ${only(sql`l.organization_id`)} and (
            (e.lot_type is not null and e.lot_type <> l.type)
            or (l.source = 'PURCHASE' and l.type <> 'PURCHASED')
            or (l.source in ('CYCLE', 'PLAN_CHANGE') and l.type <> 'SUBSCRIPTION')
          )
          limit 1000`)
      ).map((row) => ({
        organizationId: text(row.organization_id),
        lotId: text(row.id),
        type: text(row.type),
        source: text(row.source),
        grantedAs: optionalText(row.lot_type),
      })),

    // The CHECK constraint refuses these; the audit looks anyway, in case it was bypassed.
    expiringPurchases: async () =>
      (
        await query(sql`
          select l.id, l.organization_id, l.expires_at from credit_lots l
          where ${only(sql`l.organization_id`)} and l.type = 'PURCHASED' and l.expires_at is not null
          limit 1000`)
      ).map((row) => ({
        organizationId: text(row.organization_id),
        lotId: text(row.id),
        expiresAt: optionalTimestamp(row.expires_at),
      })),

    unsweptLots: async (sweptAt: Date) =>
      (
        await query(sql`
          select l.id, l.organization_id, l.available, l.expires_at from credit_lots l
          where ${only(sql`l.organization_id`)} and l.available > 0 and l.expires_at <= ${sweptAt.toISOString()}::timestamptz`)
      ).map((row) => ({
        organizationId: text(row.organization_id),
        lotId: text(row.id),
        available: count(row.available),
        expiresAt: timestamp(row.expires_at),
      })),

    stalePendingReservations: async (sweptAt: Date) =>
      (
        await query(sql`
          select r.id, r.organization_id, r.created_at from reservations r
          where ${only(sql`r.organization_id`)} and r.status = 'PENDING'
            and r.created_at + interval '24 hours' <= ${sweptAt.toISOString()}::timestamptz`)
      ).map((row) => ({
        organizationId: text(row.organization_id),
        reservationId: text(row.id),
        createdAt: timestamp(row.created_at),
      })),

    orderLots: async () =>
      (
        await query(sql`
          select id, organization_id, type, expires_at, created_at,
            (select min(e.created_at) from ledger_entries e
              where e.organization_id = l.organization_id and e.lot_id = l.id and e.kind = 'EXPIRE') as first_expired_at
          from credit_lots l where ${only(sql`l.organization_id`)}`)
      ).map((row) => ({
        lotId: text(row.id),
        organizationId: text(row.organization_id),
        type: text(row.type) as AccountType,
        expiresAt: optionalTimestamp(row.expires_at),
        createdAt: timestamp(row.created_at),
        firstExpiredAt: optionalTimestamp(row.first_expired_at),
      })),

    orderEntries: async () =>
      (
        await query(sql`
          select lot_id, reservation_id, kind, available_change, created_at from ledger_entries e
          where ${only(sql`e.organization_id`)} order by e.organization_id, e.entry_number`)
      ).map((row) => ({
        lotId: text(row.lot_id),
        reservationId: optionalText(row.reservation_id),
        kind: text(row.kind),
        availableChange: count(row.available_change),
        createdAt: timestamp(row.created_at),
      })),
  };
}
