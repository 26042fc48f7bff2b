import { and, desc, eq, lt, sql } from 'drizzle-orm';
import type { Queryable, Tx } from '../db/client.ts';
import { rowsOf } from '../db/client.ts';
import { creditLots, ledgerEntries } from '../db/schema.ts';
import { invariant } from './errors.ts';
import { notePosted } from './movements.ts';

export type EntryKind = (typeof ledgerEntries.$inferSelect)['kind'];
export type LedgerEntry = typeof ledgerEntries.$inferSelect;

/** One movement of credits within one lot, before it is written. */
export interface EntryDraft {
  organizationId: string;
  lotId: string;
  reservationId?: string | null;
  kind: EntryKind;
  availableChange: number;
  reservedChange: number;
  reason?: string | null;
  createdAt: Date;
}

/** The shape each kind of entry must have: which way it moves available and reserved credits. */
const ENTRY_SHAPE: Record<EntryKind, (available: number, reserved: number) => boolean> = {
  GRANT: (a, r) => a > 0 && r === 0,
  RESERVE: (a, r) => a < 0 && r === -a,
  CAPTURE: (a, r) => a === 0 && r < 0,
  REFUND: (a, r) => a > 0 && r === -a,
  EXPIRE: (a, r) => a < 0 && r === 0,
};

/**
 * The only way credits move: each draft is checked against its kind, applied to its lot's cached
 * balances with a guarded update, and appended to the journal, all in the caller's transaction.
 * The caller holds the organization's lock, so a guard that fails is a bug, not a race.
 *
 * The lots' updates and the entries' insert are one statement (a data-modifying CTE), so a
 * movement costs one round trip while the organization is locked, however many lots it touches.
 */
export async function postEntries(tx: Tx, drafts: EntryDraft[]): Promise<void> {
  if (drafts.length === 0) return;
  const organizationId = drafts[0]!.organizationId;
  const changeByLot = new Map<string, { available: number; reserved: number }>();
  for (const draft of drafts) {
    invariant(
      ENTRY_SHAPE[draft.kind](draft.availableChange, draft.reservedChange),
      `malformed ${draft.kind} entry (${draft.availableChange}, ${draft.reservedChange})`,
    );
    invariant(draft.organizationId === organizationId, 'one posting moves credits of one organization');
    const change = changeByLot.get(draft.lotId) ?? { available: 0, reserved: 0 };
    change.available += draft.availableChange;
    change.reserved += draft.reservedChange;
    changeByLot.set(draft.lotId, change);
  }
  const changes = [...changeByLot].filter(([, change]) => change.available !== 0 || change.reserved !== 0);
  const result = await tx.execute(sql`
    with changed as (
      update ${creditLots} as l
      set available = l.available + c.available, reserved = l.reserved + c.reserved
      from unnest(
        ${pgArray(changes.map(([lotId]) => lotId))}::uuid[],
        ${pgArray(changes.map(([, change]) => change.available))}::int[],
        ${pgArray(changes.map(([, change]) => change.reserved))}::int[]
      ) as c(id, available, reserved)
      where l.organization_id = ${organizationId} and l.id = c.id
        and l.available + c.available >= 0 and l.reserved + c.reserved >= 0
      returning l.id
    ), appended as (
      insert into ${ledgerEntries} (organization_id, lot_id, reservation_id, kind, available_change, reserved_change, reason, created_at)
      select ${organizationId}, e.lot_id, e.reservation_id, e.kind::ledger_entry_kind, e.available_change, e.reserved_change, e.reason, e.created_at
      from unnest(
        ${pgArray(drafts.map((d) => d.lotId))}::uuid[],
        ${pgArray(drafts.map((d) => d.reservationId ?? null))}::uuid[],
        ${pgArray(drafts.map((d) => d.kind))}::text[],
        ${pgArray(drafts.map((d) => d.availableChange))}::int[],
        ${pgArray(drafts.map((d) => d.reservedChange))}::int[],
        ${pgArray(drafts.map((d) => d.reason ?? null))}::text[],
        ${pgArray(drafts.map((d) => d.createdAt.toISOString()))}::timestamptz[]
      ) with ordinality as e(lot_id, reservation_id, kind, available_change, reserved_change, reason, created_at, n)
      order by e.n
      returning 1
    )
    select (select count(*) from changed)::int as lots, (select count(*) from appended)::int as entries`);
  const [row] = rowsOf<{ lots: number; entries: number }>(result);
  invariant(Number(row?.lots) === changes.length, `a lot of organization ${organizationId} would go negative`);
  invariant(Number(row?.entries) === drafts.length, 'not every entry was appended');
  notePosted(tx, drafts);
}

/**
 * A PostgreSQL array literal, sent as one text parameter and cast in SQL, so that the statement's
 * text is the same whatever the number of elements (and both drivers bind it the same way).
 */
function pgArray(values: ReadonlyArray<string | number | null>): string {
  const items = values.map((value) => {
    if (value === null) return 'NULL';
    if (typeof value === 'number') return String(value);
    return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  });
  return `{${items.join(',')}}`;
}

export interface LedgerPage {
  entries: LedgerEntry[];
  hasNextPage: boolean;
}

/** Entries of one organization, newest first, strictly older than the entry `beforeId`. */
export async function listLedgerEntries(
  db: Queryable,
  organizationId: string,
  first: number,
  beforeId: number | null,
): Promise<LedgerPage> {
  const rows = await db
    .select()
    .from(ledgerEntries)
    .where(
      and(
        eq(ledgerEntries.organizationId, organizationId),
        beforeId === null ? undefined : lt(ledgerEntries.id, beforeId),
      ),
    )
    .orderBy(desc(ledgerEntries.id))
    .limit(first + 1);
  return { entries: rows.slice(0, first), hasNextPage: rows.length > first };
}
