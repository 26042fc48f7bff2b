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
}

/**
 * Recomputes every lot, reservation and organization from the journal and reports each place
 * where the cached numbers or the conservation law disagree with it. An empty list means:
 * - each lot's available and reserved credits equal the sums of its entries, are not negative
 *   and together stay within what was granted, and the lot was granted by exactly one entry;
 * - each entry has the shape of its kind, belongs to its lot's organization, and is tied to a
 *   reservation of that organization exactly when its kind moves reserved credits;
 * - each reservation's held, captured and refunded credits match its entries, lot by lot
 *   (nothing is held once it is settled, no lot gives back more than it held), and its status
 *   agrees with what was captured;
 * - for each organization, granted = available + reserved + consumed + expired.
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
      from credit_lots l left join ledger_entries e on e.lot_id = l.id
      where ${only(sql`l.organization_id`)}
      group by l.id`),
  );
  for (const lot of lots) {
    const at = { organizationId: String(lot.organization_id), lotId: String(lot.id) };
    const [available, reserved, granted] = [lot.available, lot.reserved, lot.granted].map(Number) as [number, number, number];
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
  // or a reservation link where none belongs (or missing where one must be).
  const badEntries = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      select e.id, e.organization_id, e.lot_id, e.reservation_id, e.kind, e.available_change, e.reserved_change,
        l.organization_id as lot_organization_id, r.organization_id as reservation_organization_id
      from ledger_entries e
        join credit_lots l on l.id = e.lot_id
        left join reservations r on r.id = e.reservation_id
      where ${only(sql`e.organization_id`)} and not (
        case e.kind
          when 'GRANT' then e.available_change > 0 and e.reserved_change = 0 and e.reservation_id is null
          when 'RESERVE' then e.available_change < 0 and e.reserved_change = -e.available_change and e.reservation_id is not null
          when 'CAPTURE' then e.available_change = 0 and e.reserved_change < 0 and e.reservation_id is not null
          when 'REFUND' then e.available_change > 0 and e.reserved_change = -e.available_change and e.reservation_id is not null
          when 'EXPIRE' then e.available_change < 0 and e.reserved_change = 0
        end
        and l.organization_id = e.organization_id
        and (r.id is null or r.organization_id = e.organization_id)
      )
      order by e.id
      limit 1000`),
  );
  for (const entry of badEntries) {
    violations.push({
      organizationId: String(entry.organization_id),
      lotId: String(entry.lot_id),
      ...(entry.reservation_id ? { reservationId: String(entry.reservation_id) } : {}),
      message:
        `entry ${entry.id} (${entry.kind} ${entry.available_change}, ${entry.reserved_change}) is malformed ` +
        `or crosses organizations (lot of ${entry.lot_organization_id}, reservation of ${entry.reservation_organization_id ?? 'none'})`,
    });
  }

  const reservationRows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      select r.id, r.organization_id, r.status, r.amount, r.captured_amount, r.refunded_amount,
        coalesce(sum(e.reserved_change) filter (where e.kind = 'RESERVE'), 0)::bigint as reserved,
        coalesce(sum(e.reserved_change), 0)::bigint as held,
        coalesce(-sum(e.reserved_change) filter (where e.kind = 'CAPTURE'), 0)::bigint as captured,
        coalesce(sum(e.available_change) filter (where e.kind = 'REFUND'), 0)::bigint as refunded
      from reservations r left join ledger_entries e on e.reservation_id = r.id
      where ${only(sql`r.organization_id`)}
      group by r.id`),
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
        violations.push({ ...at, message: `${r.status} reservation: ${name} ${value} but the journal says ${r[name]}` });
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
      from ledger_entries e join reservations r on r.id = e.reservation_id
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
    const [granted, available, reserved, consumed, expired] = [org.granted, org.available, org.reserved, org.consumed, org.expired].map(Number) as [number, number, number, number, number];
    if (granted !== available + reserved + consumed + expired) {
      violations.push({
        organizationId: String(org.id),
        message: `granted ${granted} != available ${available} + reserved ${reserved} + consumed ${consumed} + expired ${expired}`,
      });
    }
  }
  return violations;
}
