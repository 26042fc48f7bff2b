import { and, desc, eq, lt, sql } from 'drizzle-orm';
import type { Queryable, Tx } from '../db/client.ts';
import { rowsOf } from '../db/client.ts';
import { creditLots, ledgerEntries, reservationOperationKeys, reservations } from '../db/schema.ts';
import { alertCtes, firedEventIds, notifyAlertsFromCoordinator, type AvailableChanges } from './alert-evaluation.ts';
import { announcedCte, announcesFromCoordinator, notifyFromCoordinator } from './announcements.ts';
import type { AccountType, EntryKind, ReservationStatus } from './enums.ts';
import { invariant } from './errors.ts';
import { noteAlertsFired, notePosted } from './movements.ts';

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
  /** On a GRANT, and only there: the account type the lot is granted as (the audit holds the lot to it). */
  lotType?: AccountType | null;
}

/** The shape each kind of entry must have: which way it moves available and reserved credits. */
const ENTRY_SHAPE: Record<EntryKind, (available: number, reserved: number) => boolean> = {
  GRANT: (a, r) => a > 0 && r === 0,
  RESERVE: (a, r) => a < 0 && r === -a,
  CAPTURE: (a, r) => a === 0 && r < 0,
  REFUND: (a, r) => a > 0 && r === -a,
  EXPIRE: (a, r) => a < 0 && r === 0,
};

/** A pending reservation that a posting settles, with what it settles to. */
export interface Settlement {
  reservationId: string;
  status: Exclude<ReservationStatus, 'PENDING'>;
  capturedAmount: number;
  refundedAmount: number;
  settledAt: Date;
  refundReason: string | null;
  /** The reservation's expiry as it stands (an extension earlier in the same batch moved it). */
  expiresAt: Date;
  /** The reservation's amount as it stands (an increase earlier in the same batch grew it). */
  amount: number;
}

/** A pending reservation that a posting grows (its new RESERVE entries are among the drafts). */
export interface GrownReservation {
  reservationId: string;
  /** The amount after the increase. */
  amount: number;
}

/** An idempotency key that a posting records with the answer it gave (see `reservationOperationKeys`). */
export interface OperationKeyRecord {
  idempotencyKey: string;
  reservationId: string;
  operation: 'CAPTURE' | 'REFUND' | 'EXTEND' | 'INCREASE';
  request: string;
  answer: unknown;
  createdAt: Date;
}

/** A reservation that a posting creates, pending, before its RESERVE entries refer to it. */
export interface NewReservation {
  id: string;
  idempotencyKey: string;
  modelId: string;
  resolution: string | null;
  durationSeconds: number | null;
  count: number;
  amount: number;
  expiresAt: Date;
  createdAt: Date;
}

export interface PostingOptions {
  /** Reservations to insert in the same statement (their RESERVE entries are among the drafts). */
  newReservations?: NewReservation[];
  /** Pending reservations to settle in the same statement. */
  settlements?: Settlement[];
  /** Pending reservations to grow in the same statement (none of them also settled by it). */
  grownReservations?: GrownReservation[];
  /** Idempotency keys to record in the same statement, with their answers. */
  operationKeys?: OperationKeyRecord[];
  /**
   * Bump the organization's balance version and queue its notification in the same statement
   * (see `bumpBalanceVersion`); the new version is returned.
   */
  announce?: boolean;
  /**
   * Evaluate the organization's balance alerts on the balance this posting leaves (the default).
   * Off only for a step of a change whose caller evaluates its net effect afterwards (see
   * `evaluateBalanceAlerts`).
   */
  evaluateAlerts?: boolean;
}

/**
 * The only way credits move: each draft is checked against its kind, applied to its lot's cached
 * balances with a guarded update, and appended to the journal, all in the caller's transaction.
 * The caller holds the organization's lock, so a guard that fails is a bug, not a race.
 *
 * Everything a movement writes is one statement (data-modifying CTEs): the lots' updates, the
 * entries, and, as the options say, the reservations it creates or settles and the balance
 * version it announces. So a reserve or a settlement costs one round trip while the organization
 * is locked, however many lots it touches. Returns the new balance version when announcing.
 *
 * Entries are numbered per organization, continuing from the organization's last entry (one
 * index probe in the same statement) in the drafts' order. The organization's lock makes the
 * numbers gapless and ordered by commit; the unique index on (organization_id, entry_number)
 * turns a writer without the lock into an error, never into two entries with one number.
 */
export async function postEntries(tx: Tx, drafts: EntryDraft[], options: PostingOptions = {}): Promise<number | null> {
  if (drafts.length === 0 && !options.announce) return null;
  invariant(drafts.length > 0, 'a posting moves credits');
  const organizationId = drafts[0]!.organizationId;
  const changeByLot = new Map<string, { available: number; reserved: number }>();
  for (const draft of drafts) {
    invariant(
      ENTRY_SHAPE[draft.kind](draft.availableChange, draft.reservedChange),
      `malformed ${draft.kind} entry (${draft.availableChange}, ${draft.reservedChange})`,
    );
    invariant(draft.organizationId === organizationId, 'one posting moves credits of one organization');
    invariant(
      (draft.kind === 'GRANT') === (draft.lotType != null),
      'a GRANT entry, and only a GRANT, names its lot type',
    );
    const change = changeByLot.get(draft.lotId) ?? { available: 0, reserved: 0 };
    change.available += draft.availableChange;
    change.reserved += draft.reservedChange;
    changeByLot.set(draft.lotId, change);
  }
  const changes = [...changeByLot].filter(([, change]) => change.available !== 0 || change.reserved !== 0);
  const created = options.newReservations ?? [];
  const settlements = options.settlements ?? [];
  const operationKeys = options.operationKeys ?? [];
  const grown = options.grownReservations ?? [];
  invariant(
    grown.every((g) => !settlements.some((s) => s.reservationId === g.reservationId)),
    'a reservation is grown and settled by one posting: the settlement carries its amount',
  );
  const fromCoordinator = announcesFromCoordinator(tx);
  const lotIds = pgArray(changes.map(([lotId]) => lotId));
  const availableChanges = pgArray(changes.map(([, change]) => change.available));
  const result = await tx.execute(sql`
    with ${createdPart(organizationId, created)}, ${settledPart(organizationId, settlements)},
    ${grownPart(organizationId, grown)}, ${keyedPart(organizationId, operationKeys)}, changed as (
      update ${creditLots} as l
      set available = l.available + c.available, reserved = l.reserved + c.reserved
      from unnest(
        ${lotIds}::uuid[],
        ${availableChanges}::int[],
        ${pgArray(changes.map(([, change]) => change.reserved))}::int[]
      ) as c(id, available, reserved)
      where l.organization_id = ${organizationId} and l.id = c.id
        and l.available + c.available >= 0 and l.reserved + c.reserved >= 0
      returning l.id, l.available, l.expires_at
    ), appended as (
      insert into ${ledgerEntries} (organization_id, entry_number, lot_id, reservation_id, kind, available_change, reserved_change, reason, created_at, lot_type)
      select ${organizationId}, last.entry_number + e.n, e.lot_id, e.reservation_id, e.kind::ledger_entry_kind, e.available_change, e.reserved_change, e.reason, e.created_at, e.lot_type::credit_account_type
      from (
        select coalesce(max(entry_number), 0) as entry_number from ${ledgerEntries} where organization_id = ${organizationId}
      ) as last, unnest(
        ${pgArray(drafts.map((d) => d.lotId))}::uuid[],
        ${pgArray(drafts.map((d) => d.reservationId ?? null))}::uuid[],
        ${pgArray(drafts.map((d) => d.kind))}::text[],
        ${pgArray(drafts.map((d) => d.availableChange))}::int[],
        ${pgArray(drafts.map((d) => d.reservedChange))}::int[],
        ${pgArray(drafts.map((d) => d.reason ?? null))}::text[],
        ${pgArray(drafts.map((d) => d.createdAt.toISOString()))}::timestamptz[],
        ${pgArray(drafts.map((d) => d.lotType ?? null))}::text[]
      ) with ordinality as e(lot_id, reservation_id, kind, available_change, reserved_change, reason, created_at, lot_type, n)
      order by e.n
      returning 1
    ), ${announcedPart(organizationId, options.announce ?? false, !fromCoordinator)},
    ${alertsPart(organizationId, { lotIds }, drafts[0]!.createdAt, options, !fromCoordinator)}
    select (select count(*) from changed)::int as lots, (select count(*) from appended)::int as entries,
      (select count(*) from created)::int as created, (select count(*) from settled)::int as settled,
      (select count(*) from grown)::int as grown, (select count(*) from keyed)::int as keyed,
      (select max(balance_version) from announced) as balance_version,
      (select string_agg(id::text, ',') from alerted) as alert_events`);
  const [row] = rowsOf<{
    lots: number;
    entries: number;
    created: number;
    settled: number;
    grown: number;
    keyed: number;
    balance_version: number | null;
    alert_events: string | null;
  }>(result);
  invariant(Number(row?.lots) === changes.length, `a lot of organization ${organizationId} would go negative`);
  invariant(Number(row?.entries) === drafts.length, 'not every entry was appended');
  invariant(Number(row?.created) === created.length, 'not every reservation was inserted');
  invariant(Number(row?.settled) === settlements.length, 'a reservation of the posting was not pending');
  invariant(Number(row?.grown) === grown.length, 'a reservation the posting grows was not pending');
  invariant(Number(row?.keyed) === operationKeys.length, 'an idempotency key seen free under the lock was taken');
  notePosted(tx, drafts);
  const fired = firedEventIds(row?.alert_events);
  noteAlertsFired(tx, fired.length);
  if (fromCoordinator) await notifyAlertsFromCoordinator(tx, organizationId, fired);
  if (!options.announce) return null;
  invariant(row?.balance_version != null, `organization ${organizationId} vanished while locked`);
  const version = Number(row.balance_version);
  if (fromCoordinator) await notifyFromCoordinator(tx, organizationId, version);
  return version;
}

// The optional parts of a posting. Each is always present, as an empty CTE when unused, so the
// statement keeps one shape per combination and its prepared form is reused.

function createdPart(organizationId: string, created: NewReservation[]) {
  if (created.length === 0) return sql`created as (select 1 where false)`;
  return sql`created as (
      insert into ${reservations} (id, organization_id, idempotency_key, model_id, resolution, duration_seconds, count, amount, status, expires_at, created_at)
      select r.id, ${organizationId}, r.idempotency_key, r.model_id, r.resolution, r.duration_seconds, r.count, r.amount, 'PENDING', r.expires_at, r.created_at
      from unnest(
        ${pgArray(created.map((r) => r.id))}::uuid[],
        ${pgArray(created.map((r) => r.idempotencyKey))}::text[],
        ${pgArray(created.map((r) => r.modelId))}::text[],
        ${pgArray(created.map((r) => r.resolution))}::text[],
        ${pgArray(created.map((r) => r.durationSeconds))}::int[],
        ${pgArray(created.map((r) => r.count))}::int[],
        ${pgArray(created.map((r) => r.amount))}::int[],
        ${pgArray(created.map((r) => r.expiresAt.toISOString()))}::timestamptz[],
        ${pgArray(created.map((r) => r.createdAt.toISOString()))}::timestamptz[]
      ) as r(id, idempotency_key, model_id, resolution, duration_seconds, count, amount, expires_at, created_at)
      returning 1
    )`;
}

// Every value arrives typed from its array parameter: Citus refuses a cast (a stable function) of a
// column in an UPDATE's SET list.
function settledPart(organizationId: string, settlements: Settlement[]) {
  if (settlements.length === 0) return sql`settled as (select 1 where false)`;
  return sql`settled as (
      update ${reservations} as r
      set status = s.status, captured_amount = s.captured_amount,
        refunded_amount = s.refunded_amount, settled_at = s.settled_at, refund_reason = s.refund_reason,
        expires_at = s.expires_at, amount = s.amount
      from unnest(
        ${pgArray(settlements.map((s) => s.reservationId))}::uuid[],
        ${pgArray(settlements.map((s) => s.status))}::reservation_status[],
        ${pgArray(settlements.map((s) => s.capturedAmount))}::int[],
        ${pgArray(settlements.map((s) => s.refundedAmount))}::int[],
        ${pgArray(settlements.map((s) => s.settledAt.toISOString()))}::timestamptz[],
        ${pgArray(settlements.map((s) => s.refundReason))}::text[],
        ${pgArray(settlements.map((s) => s.expiresAt.toISOString()))}::timestamptz[],
        ${pgArray(settlements.map((s) => s.amount))}::int[]
      ) as s(id, status, captured_amount, refunded_amount, settled_at, refund_reason, expires_at, amount)
      where r.organization_id = ${organizationId} and r.id = s.id and r.status = 'PENDING'
      returning 1
    )`;
}

/** Grows pending reservations to their new amounts (their RESERVE entries are in the same posting). */
function grownPart(organizationId: string, grown: GrownReservation[]) {
  if (grown.length === 0) return sql`grown as (select 1 where false)`;
  return sql`grown as (
      update ${reservations} as r set amount = g.amount
      from unnest(
        ${pgArray(grown.map((g) => g.reservationId))}::uuid[],
        ${pgArray(grown.map((g) => g.amount))}::int[]
      ) as g(id, amount)
      where r.organization_id = ${organizationId} and r.id = g.id and r.status = 'PENDING' and g.amount > r.amount
      returning 1
    )`;
}

/** Records idempotency keys with their answers; a key already taken inserts nothing (and fails the check). */
export function keyedPart(organizationId: string, keys: OperationKeyRecord[]) {
  if (keys.length === 0) return sql`keyed as (select 1 where false)`;
  return sql`keyed as (
      insert into ${reservationOperationKeys} (organization_id, idempotency_key, reservation_id, operation, request, answer, created_at)
      select ${organizationId}, k.idempotency_key, k.reservation_id, k.operation, k.request, k.answer, k.created_at
      from unnest(
        ${pgArray(keys.map((k) => k.idempotencyKey))}::text[],
        ${pgArray(keys.map((k) => k.reservationId))}::uuid[],
        ${pgArray(keys.map((k) => k.operation))}::text[],
        ${pgArray(keys.map((k) => k.request))}::text[],
        ${pgArray(keys.map((k) => JSON.stringify(k.answer)))}::jsonb[],
        ${pgArray(keys.map((k) => k.createdAt.toISOString()))}::timestamptz[]
      ) as k(idempotency_key, reservation_id, operation, request, answer, created_at)
      on conflict do nothing
      returning 1
    )`;
}

function announcedPart(organizationId: string, announce: boolean, notify: boolean) {
  return announce
    ? announcedCte(organizationId, notify)
    : sql`announced as (select null::bigint as balance_version where false)`;
}

/**
 * The alert evaluation (see `alertCtes`), at the posting's time. Skipped, the same CTEs stay in
 * the statement, empty, so that it keeps one shape.
 */
function alertsPart(
  organizationId: string,
  changes: AvailableChanges,
  now: Date,
  options: PostingOptions,
  notify: boolean,
) {
  if (options.evaluateAlerts === false) {
    return sql`alert_watch as (select 1 where false), measured as (select 1 where false),
    fired as (select 1 where false), rearmed as (select 1 where false),
    alerted as (select null::uuid as id where false)`;
  }
  return alertCtes(organizationId, changes, sql`select max(balance_version) from announced`, now, notify);
}

/**
 * A PostgreSQL array literal, sent as one text parameter and cast in SQL, so that the statement's
 * text is the same whatever the number of elements (and both drivers bind it the same way).
 */
export function pgArray(values: ReadonlyArray<string | number | null>): string {
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

/** Entries of one organization, newest first, strictly older than its entry number `before`. */
export async function listLedgerEntries(
  db: Queryable,
  organizationId: string,
  first: number,
  before: number | null,
): Promise<LedgerPage> {
  const rows = await db
    .select()
    .from(ledgerEntries)
    .where(
      and(
        eq(ledgerEntries.organizationId, organizationId),
        before === null ? undefined : lt(ledgerEntries.entryNumber, before),
      ),
    )
    .orderBy(desc(ledgerEntries.entryNumber))
    .limit(first + 1);
  return { entries: rows.slice(0, first), hasNextPage: rows.length > first };
}
