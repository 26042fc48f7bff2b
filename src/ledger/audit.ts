import { sql } from 'drizzle-orm';
import type { Queryable } from '../db/client.ts';
import { rowsOf } from '../db/client.ts';

export interface Violation {
  organizationId: string;
  lotId?: string;
  reservationId?: string;
  message: string;
}

/**
 * Recomputes every lot, reservation and organization from the journal and reports each place
 * where the cached numbers or the conservation law disagree with it. An empty list means:
 * each lot's available and reserved credits equal the sums of its entries and are not negative,
 * each reservation's held, captured and refunded credits match its entries, and for each
 * organization granted = available + reserved + consumed + expired.
 */
export async function auditLedger(db: Queryable): Promise<Violation[]> {
  const violations: Violation[] = [];
  const lots = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      select l.id, l.organization_id, l.granted, l.available, l.reserved,
        coalesce(sum(e.available_change), 0)::bigint as journal_available,
        coalesce(sum(e.reserved_change), 0)::bigint as journal_reserved,
        coalesce(sum(e.available_change) filter (where e.kind = 'GRANT'), 0)::bigint as journal_granted
      from credit_lots l left join ledger_entries e on e.lot_id = l.id
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
    if (available < 0 || reserved < 0) violations.push({ ...at, message: `negative lot (${available}, ${reserved})` });
  }

  const reservationRows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      select r.id, r.organization_id, r.status, r.amount, r.captured_amount, r.refunded_amount,
        coalesce(sum(e.reserved_change) filter (where e.kind = 'RESERVE'), 0)::bigint as reserved,
        coalesce(sum(e.reserved_change), 0)::bigint as held,
        coalesce(-sum(e.reserved_change) filter (where e.kind = 'CAPTURE'), 0)::bigint as captured,
        coalesce(sum(e.available_change) filter (where e.kind = 'REFUND'), 0)::bigint as refunded
      from reservations r left join ledger_entries e on e.reservation_id = r.id
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
  }

  const orgs = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      select o.id,
        coalesce((select sum(l.granted) from credit_lots l where l.organization_id = o.id), 0)::bigint as granted,
        coalesce((select sum(l.available) from credit_lots l where l.organization_id = o.id), 0)::bigint as available,
        coalesce((select sum(l.reserved) from credit_lots l where l.organization_id = o.id), 0)::bigint as reserved,
        coalesce((select -sum(e.reserved_change) from ledger_entries e where e.organization_id = o.id and e.kind = 'CAPTURE'), 0)::bigint as consumed,
        coalesce((select -sum(e.available_change) from ledger_entries e where e.organization_id = o.id and e.kind = 'EXPIRE'), 0)::bigint as expired
      from organizations o`),
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
