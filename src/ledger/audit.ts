import { sql, type SQL } from 'drizzle-orm';
import type { Queryable } from '../db/client.ts';
import { rowsOf } from '../db/client.ts';

export interface Violation {
  organizationId: string;
  lotId?: string;
  reservationId?: string;
  message: string;
}

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
 * and the lifecycle rules (`auditLifecycle`): an expired lot never holds spendable credits
 * again, no lot expires before its expiry, no reservation may live past 24 hours, each billing
 * cycle's allowance stays within the largest plan in force, and every reservation took its
 * credits in consumption order (replayed from the journal).
 * Each check is one statement; callers wanting one snapshot across them run this in a
 * repeatable-read transaction (the `npm run audit` command does).
 */
export async function auditLedger(db: Queryable, options: AuditOptions = {}): Promise<Violation[]> {
  const orgId = options.organizationId ?? null;
  // `only(column)` narrows a query to the audited organization; without one it keeps every row.
  const only = (column: SQL) => (orgId === null ? sql`true` : sql`${column} = ${orgId}::uuid`);
  const violations: Violation[] = [];

  const lots = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      select l.id, l.organization_id, l.granted, l.available, l.reserved,
        coalesce(sum(e.available_change), 0)::bigint as journal_available,
        coalesce(sum(e.reserved_change), 0)::bigint as journal_reserved,
        coalesce(sum(e.available_change) filter (where e.kind = 'GRANT'), 0)::bigint as journal_granted,
        count(e.id) filter (where e.kind = 'GRANT')::int as grant_entries
      from credit_lots l left join ledger_entries e on e.organization_id = l.organization_id and e.lot_id = l.id
      where ${only(sql`l.organization_id`)}
      group by l.organization_id, l.id`),
  );
  for (const lot of lots) {
    const at = { organizationId: String(lot.organization_id), lotId: String(lot.id) };
    const [available, reserved, granted] = [lot.available, lot.reserved, lot.granted].map(Number) as [
      number,
      number,
      number,
    ];
    if (available !== Number(lot.journal_available)) {
      violations.push({ ...at, message: `available ${available} but the journal says ${lot.journal_available}` });
    }
    if (reserved !== Number(lot.journal_reserved)) {
      violations.push({ ...at, message: `reserved ${reserved} but the journal says ${lot.journal_reserved}` });
    }
    if (granted !== Number(lot.journal_granted)) {
      violations.push({ ...at, message: `granted ${granted} but the journal granted ${lot.journal_granted}` });
    }
    if (Number(lot.grant_entries) !== 1) {
      violations.push({ ...at, message: `${lot.grant_entries} GRANT entries; a lot is granted exactly once` });
    }
    if (available < 0 || reserved < 0) violations.push({ ...at, message: `negative lot (${available}, ${reserved})` });
    if (available + reserved > granted) {
      violations.push({ ...at, message: `holds ${available} + ${reserved}, more than the ${granted} granted` });
    }
  }

  // Entries that could not have been written by postEntries: wrong shape, wrong organization,
  // or a reservation link where none belongs (or missing where one must be). The composite foreign
  // keys refuse an entry whose lot or reservation is another organization's; this still finds one
  // written past them. Lots and reservations are joined within the entry's organization (a join
  // a sharded database runs shard by shard), so a foreign one shows as missing.
  const badEntries = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
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
      limit 1000`),
  );
  for (const entry of badEntries) {
    violations.push({
      organizationId: String(entry.organization_id),
      lotId: String(entry.lot_id),
      ...(entry.reservation_id ? { reservationId: String(entry.reservation_id) } : {}),
      message:
        `entry ${entry.id} (${entry.kind} ${entry.available_change}, ${entry.reserved_change}) is malformed ` +
        `or crosses organizations (lot of ${entry.lot_organization_id ?? 'another organization'}, ` +
        `reservation of ${entry.reservation_organization_id ?? (entry.reservation_id ? 'another organization' : 'none')})`,
    });
  }

  // Each organization numbers its entries 1, 2, 3, … (the unique index rules out repeats), so a
  // journal of n entries ends at number n; anything else is a gap, a lost entry or a foreign writer.
  const numbering = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      select organization_id, count(*)::bigint as entries, min(entry_number) as first, max(entry_number) as last
      from ledger_entries
      where ${only(sql`organization_id`)}
      group by organization_id
      having min(entry_number) <> 1 or max(entry_number) <> count(*)`),
  );
  for (const journal of numbering) {
    violations.push({
      organizationId: String(journal.organization_id),
      message: `${journal.entries} entries numbered ${journal.first} to ${journal.last}; a journal is numbered 1 to n without gaps`,
    });
  }

  const reservationRows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      select r.id, r.organization_id, r.status, r.amount, r.captured_amount, r.refunded_amount,
        coalesce(sum(e.reserved_change) filter (where e.kind = 'RESERVE'), 0)::bigint as reserved,
        coalesce(sum(e.reserved_change), 0)::bigint as held,
        coalesce(-sum(e.reserved_change) filter (where e.kind = 'CAPTURE'), 0)::bigint as captured,
        coalesce(sum(e.available_change) filter (where e.kind = 'REFUND'), 0)::bigint as refunded
      from reservations r left join ledger_entries e on e.organization_id = r.organization_id and e.reservation_id = r.id
      where ${only(sql`r.organization_id`)}
      group by r.organization_id, r.id`),
  );
  for (const r of reservationRows) {
    const at = { organizationId: String(r.organization_id), reservationId: String(r.id) };
    const pending = r.status === 'PENDING';
    const expected = {
      reserved: Number(r.amount),
      held: pending ? Number(r.amount) : 0,
      captured: Number(r.captured_amount),
      refunded: Number(r.refunded_amount),
    };
    for (const [name, value] of Object.entries(expected)) {
      if (Number(r[name]) !== value) {
        violations.push({
          ...at,
          message: `${r.status} reservation: ${name} ${value} but the journal says ${r[name]}`,
        });
      }
    }
    // settle() marks a reservation CAPTURED exactly when it consumed something.
    const captured = Number(r.captured_amount);
    if ((r.status === 'CAPTURED' && captured === 0) || (r.status === 'REFUNDED' && captured !== 0)) {
      violations.push({ ...at, message: `${r.status} reservation with ${captured} captured` });
    }
  }

  // Lot by lot within a reservation: a lot never gives back more than the reservation took from
  // it, and a settled reservation holds nothing anywhere (totals alone could hide a swap).
  const allocationRows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      select e.reservation_id, e.lot_id, r.organization_id, r.status,
        sum(e.reserved_change)::bigint as held
      from ledger_entries e join reservations r on r.organization_id = e.organization_id and r.id = e.reservation_id
      where ${only(sql`r.organization_id`)}
      group by e.reservation_id, e.lot_id, r.organization_id, r.status
      having sum(e.reserved_change) < 0 or (r.status <> 'PENDING' and sum(e.reserved_change) <> 0)`),
  );
  for (const row of allocationRows) {
    violations.push({
      organizationId: String(row.organization_id),
      reservationId: String(row.reservation_id),
      lotId: String(row.lot_id),
      message: `${row.status} reservation holds ${row.held} in this lot`,
    });
  }

  const orgs = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      select o.id,
        coalesce((select sum(l.granted) from credit_lots l where l.organization_id = o.id), 0)::bigint as granted,
        coalesce((select sum(l.available) from credit_lots l where l.organization_id = o.id), 0)::bigint as available,
        coalesce((select sum(l.reserved) from credit_lots l where l.organization_id = o.id), 0)::bigint as reserved,
        coalesce((select -sum(e.reserved_change) from ledger_entries e where e.organization_id = o.id and e.kind = 'CAPTURE'), 0)::bigint as consumed,
        coalesce((select -sum(e.available_change) from ledger_entries e where e.organization_id = o.id and e.kind = 'EXPIRE'), 0)::bigint as expired
      from organizations o
      where ${only(sql`o.id`)}`),
  );
  for (const org of orgs) {
    const [granted, available, reserved, consumed, expired] = [
      org.granted,
      org.available,
      org.reserved,
      org.consumed,
      org.expired,
    ].map(Number) as [number, number, number, number, number];
    if (granted !== available + reserved + consumed + expired) {
      violations.push({
        organizationId: String(org.id),
        message: `granted ${granted} != available ${available} + reserved ${reserved} + consumed ${consumed} + expired ${expired}`,
      });
    }
  }
  violations.push(...(await auditLifecycle(db, options)));
  return violations;
}

/** The rules about time and order that sums alone cannot see (a lot can balance and still mint). */
export async function auditLifecycle(db: Queryable, options: AuditOptions = {}): Promise<Violation[]> {
  const orgId = options.organizationId ?? null;
  const only = (column: SQL) => (orgId === null ? sql`true` : sql`${column} = ${orgId}::uuid`);
  const violations: Violation[] = [];
  const push = (rows: Array<Record<string, unknown>>, message: (row: Record<string, unknown>) => string) => {
    for (const row of rows) {
      violations.push({
        organizationId: String(row.organization_id),
        ...(row.lot_id ? { lotId: String(row.lot_id) } : {}),
        ...(row.reservation_id ? { reservationId: String(row.reservation_id) } : {}),
        message: message(row),
      });
    }
  };

  // Once a lot has expired, a refund into it expires again at once: it never holds spendable
  // credits again. A lot that looks unexpired after an EXPIRE is how credits get minted.
  push(
    rowsOf(
      await db.execute(sql`
        select l.id as lot_id, l.organization_id, l.available from credit_lots l
        where ${only(sql`l.organization_id`)} and l.available > 0
          and exists (
            select 1 from ledger_entries e
            where e.organization_id = l.organization_id and e.lot_id = l.id and e.kind = 'EXPIRE'
          )`),
    ),
    (row) => `holds ${row.available} spendable credits after it expired`,
  );

  // Closing a lot early moves its expiry to the moment it closed, so every EXPIRE is at or after it.
  push(
    rowsOf(
      await db.execute(sql`
        select e.id, e.lot_id, e.organization_id, e.created_at, l.expires_at from ledger_entries e
          join credit_lots l on l.organization_id = e.organization_id and l.id = e.lot_id
        where ${only(sql`e.organization_id`)} and e.kind = 'EXPIRE'
          and (l.expires_at is null or e.created_at < l.expires_at)
        order by e.organization_id, e.entry_number limit 1000`),
    ),
    (row) => `entry ${row.id} expires credits before the lot's expiry (${String(row.expires_at ?? 'never')})`,
  );

  push(
    rowsOf(
      await db.execute(sql`
        select r.id as reservation_id, r.organization_id, r.expires_at from reservations r
        where ${only(sql`r.organization_id`)} and r.expires_at > r.created_at + interval '24 hours'
        limit 1000`),
    ),
    (row) => `may stay pending until ${String(row.expires_at)}, more than 24 hours after it was created`,
  );

  // Allowance lots by billing cycle: never more than the largest plan among them allows.
  push(
    rowsOf(
      await db.execute(sql`
        select l.organization_id, l.cycle_starts_at, sum(l.granted)::bigint as granted,
          max(p.monthly_credits) as largest, count(*) filter (where p.id is null or l.cycle_starts_at is null)::int as unlabelled
        from credit_lots l left join plans p on p.id = l.plan_id
        where ${only(sql`l.organization_id`)} and l.source in ('CYCLE', 'PLAN_CHANGE')
        group by l.organization_id, l.cycle_starts_at
        having sum(l.granted) > coalesce(max(p.monthly_credits), 0)
          or count(*) filter (where p.id is null or l.cycle_starts_at is null) > 0`),
    ),
    (row) =>
      Number(row.unlabelled) > 0
        ? `${row.unlabelled} allowance lot(s) without a plan or billing cycle`
        : `cycle starting ${String(row.cycle_starts_at)} granted ${row.granted} allowance credits, more than the largest plan's ${row.largest}`,
  );

  if (options.sweptAt) {
    push(
      rowsOf(
        await db.execute(sql`
          select l.id as lot_id, l.organization_id, l.available, l.expires_at from credit_lots l
          where ${only(sql`l.organization_id`)} and l.available > 0 and l.expires_at <= ${options.sweptAt}`),
      ),
      (row) => `holds ${row.available} spendable credits though it expired at ${String(row.expires_at)}`,
    );
    push(
      rowsOf(
        await db.execute(sql`
          select r.id as reservation_id, r.organization_id, r.created_at from reservations r
          where ${only(sql`r.organization_id`)} and r.status = 'PENDING'
            and r.created_at + interval '24 hours' <= ${options.sweptAt}`),
      ),
      (row) => `still pending more than 24 hours after it was created (${String(row.created_at)})`,
    );
  }

  violations.push(...(await auditConsumptionOrder(db, orgId)));
  return violations;
}

interface ReplayLot {
  id: string;
  organizationId: string;
  priority: number;
  expiresAtMs: number;
  createdAtMs: number;
  /** When the lot's first EXPIRE entry was written, if it has one. */
  firstExpiredAtMs: number | null;
  available: number;
}

const TYPE_PRIORITY: Record<string, number> = { SUBSCRIPTION: 1, PURCHASED: 2, PROMOTIONAL: 3, REFERRAL: 4 };

function compareLots(a: ReplayLot, b: ReplayLot): number {
  return a.priority - b.priority || a.expiresAtMs - b.expiresAtMs || a.createdAtMs - b.createdAtMs;
}

/**
 * Replays the journal and checks each reservation against the consumption order at the moment
 * it was made: every spendable lot that comes before the last lot it took from was emptied, and
 * among lots that tie with that last lot at most one was left partly used.
 */
async function auditConsumptionOrder(db: Queryable, orgId: string | null): Promise<Violation[]> {
  const only = (column: SQL) => (orgId === null ? sql`true` : sql`${column} = ${orgId}::uuid`);
  const lots = new Map<string, ReplayLot>();
  for (const row of rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      select id, organization_id, type, expires_at, created_at,
        (select min(e.created_at) from ledger_entries e
          where e.organization_id = l.organization_id and e.lot_id = l.id and e.kind = 'EXPIRE') as first_expired_at
      from credit_lots l where ${only(sql`l.organization_id`)}`),
  )) {
    lots.set(String(row.id), {
      id: String(row.id),
      organizationId: String(row.organization_id),
      priority: TYPE_PRIORITY[String(row.type)] ?? 99,
      expiresAtMs: row.expires_at === null ? Number.POSITIVE_INFINITY : new Date(row.expires_at as string).getTime(),
      createdAtMs: new Date(row.created_at as string).getTime(),
      firstExpiredAtMs: row.first_expired_at === null ? null : new Date(row.first_expired_at as string).getTime(),
      available: 0,
    });
  }
  // Each reservation is checked against its own organization's lots only.
  const lotsByOrganization = new Map<string, ReplayLot[]>();
  for (const lot of lots.values()) {
    const list = lotsByOrganization.get(lot.organizationId) ?? [];
    list.push(lot);
    lotsByOrganization.set(lot.organizationId, list);
  }
  const entries = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      select lot_id, reservation_id, kind, available_change, created_at from ledger_entries e
      where ${only(sql`e.organization_id`)} order by e.organization_id, e.entry_number`),
  );
  const violations: Violation[] = [];
  for (let i = 0; i < entries.length; ) {
    const entry = entries[i]!;
    if (entry.kind !== 'RESERVE') {
      const lot = lots.get(String(entry.lot_id));
      if (lot) lot.available += Number(entry.available_change);
      i += 1;
      continue;
    }
    // One reservation's RESERVE entries are written by one statement, so they are consecutive.
    const taken = new Map<string, number>();
    let j = i;
    while (
      j < entries.length &&
      entries[j]!.kind === 'RESERVE' &&
      entries[j]!.reservation_id === entry.reservation_id
    ) {
      const lotId = String(entries[j]!.lot_id);
      taken.set(lotId, (taken.get(lotId) ?? 0) - Number(entries[j]!.available_change));
      j += 1;
    }
    const problem = checkOrder(lots, lotsByOrganization, taken, new Date(entry.created_at as string).getTime());
    if (problem) {
      const first = lots.get(String(entry.lot_id));
      violations.push({
        organizationId: first?.organizationId ?? '',
        reservationId: String(entry.reservation_id),
        message: problem,
      });
    }
    for (const [lotId, amount] of taken) {
      const lot = lots.get(lotId);
      if (lot) lot.available -= amount;
    }
    i = j;
  }
  return violations;
}

/**
 * Whether a lot could be spent at `atMs`. A lot closed early has its expiry moved to the moment
 * it closed, which may be the very instant of a reservation made just before the closing.
 */
function spendableAt(lot: ReplayLot, atMs: number): boolean {
  if (lot.available <= 0) return false;
  return lot.expiresAtMs > atMs || (lot.expiresAtMs === atMs && lot.firstExpiredAtMs === atMs);
}

function checkOrder(
  lots: Map<string, ReplayLot>,
  lotsByOrganization: Map<string, ReplayLot[]>,
  taken: Map<string, number>,
  atMs: number,
): string | null {
  const organizationId = lots.get(taken.keys().next().value!)?.organizationId ?? '';
  const spendable = (lotsByOrganization.get(organizationId) ?? []).filter((lot) => spendableAt(lot, atMs));
  const used = [...taken.keys()].map((id) => lots.get(id));
  for (const lot of used) {
    if (!lot || !spendable.includes(lot) || lot.available < taken.get(lot.id)!) {
      return `took credits from a lot that could not give them (${lot?.id ?? 'unknown lot'})`;
    }
  }
  const last = (used as ReplayLot[]).reduce((a, b) => (compareLots(a, b) >= 0 ? a : b));
  let partlyUsedTies = 0;
  for (const lot of spendable) {
    const order = compareLots(lot, last);
    const amount = taken.get(lot.id) ?? 0;
    if (order < 0 && amount < lot.available) {
      return `skipped ${lot.available - amount} credits of lot ${lot.id}, which comes first in consumption order`;
    }
    if (order === 0 && amount > 0 && amount < lot.available) partlyUsedTies += 1;
  }
  return partlyUsedTies > 1 ? `left ${partlyUsedTies} tied lots partly used` : null;
}
