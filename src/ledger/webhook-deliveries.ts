import { randomUUID } from 'node:crypto';
import { and, desc, eq, isNull, lt, lte, or, sql } from 'drizzle-orm';
import type { Queryable } from '../db/client.ts';
import { rowsOf } from '../db/client.ts';
import { webhookDeliveries } from '../db/schema.ts';
import { NotFoundError } from './errors.ts';
import { pgArray } from './journal.ts';
import { isUuid } from './validation.ts';

export type WebhookDelivery = typeof webhookDeliveries.$inferSelect;
export type WebhookDeliveryStatus = WebhookDelivery['status'];

/** Names one delivery: the event it sends, of its organization. */
export interface DeliveryKey {
  organizationId: string;
  eventId: string;
}

/** A delivery this process holds the lease of, for one attempt. */
export interface ClaimedDelivery extends DeliveryKey {
  leaseToken: string;
  /** This attempt's number, 1 for the first. */
  attempt: number;
}

/** How a finished attempt is recorded. */
export type RecordedAttempt =
  | { kind: 'delivered'; status: number }
  | { kind: 'failed'; status: number | null; error: string; nextAttemptAt: Date | null }
  | { kind: 'cancelled'; error: string };

/**
 * Deliveries due at `now` and not leased, at most one per organization (its earliest) and at most
 * `limit`, earliest first; organizations in `busy` (an attempt of theirs is in flight here) are
 * left out. One per organization is what keeps a receiver that is down, with a backlog of
 * retries, from filling every slot: each organization's next delivery waits only for its own.
 */
export async function findDueDeliveries(
  db: Queryable,
  now: Date,
  busy: readonly string[],
  limit: number,
): Promise<DeliveryKey[]> {
  const at = now.toISOString();
  const rows = rowsOf<{ organization_id: string; event_id: string }>(
    await db.execute(sql`
      select organization_id, event_id from (
        select distinct on (organization_id) organization_id, event_id, next_attempt_at
        from ${webhookDeliveries}
        where status = 'PENDING' and next_attempt_at <= ${at}::timestamptz
          and (lease_until is null or lease_until <= ${at}::timestamptz)
          and not (organization_id = any(${pgArray(busy)}::uuid[]))
        order by organization_id, next_attempt_at, event_id
      ) as due
      order by next_attempt_at, organization_id
      limit ${limit}`),
  );
  return rows.map((row) => ({ organizationId: row.organization_id, eventId: row.event_id }));
}

/**
 * Takes the lease of a due delivery for one attempt, or answers null when another process took it
 * first (or it stopped being due): the guarded update lets exactly one claimant through, since a
 * second one waits on the row and then finds the lease taken. The attempt is counted here, before
 * it is made, so a process that dies mid-attempt has still used it up.
 */
export async function claimDelivery(
  db: Queryable,
  key: DeliveryKey,
  now: Date,
  leaseMs: number,
): Promise<ClaimedDelivery | null> {
  const leaseToken = randomUUID();
  const [claimed] = await db
    .update(webhookDeliveries)
    .set({
      leaseToken,
      leaseUntil: new Date(now.getTime() + leaseMs),
      attempts: sql`${webhookDeliveries.attempts} + 1`,
      lastAttemptAt: now,
    })
    .where(
      and(
        eq(webhookDeliveries.organizationId, key.organizationId),
        eq(webhookDeliveries.eventId, key.eventId),
        eq(webhookDeliveries.status, 'PENDING'),
        lte(webhookDeliveries.nextAttemptAt, now),
        or(isNull(webhookDeliveries.leaseUntil), lte(webhookDeliveries.leaseUntil, now)),
      ),
    )
    .returning({ attempts: webhookDeliveries.attempts });
  return claimed ? { ...key, leaseToken, attempt: claimed.attempts } : null;
}

/**
 * Records how an attempt ended, if this process still holds the lease: a delivery cancelled
 * meanwhile, or leased by another process after this one's lease ran out, is left as it is.
 * Answers whether it was recorded.
 */
export async function recordAttempt(
  db: Queryable,
  claim: ClaimedDelivery,
  attempt: RecordedAttempt,
  now: Date,
): Promise<boolean> {
  const outcome =
    attempt.kind === 'delivered'
      ? {
          status: 'DELIVERED' as const,
          nextAttemptAt: null,
          deliveredAt: now,
          lastHttpStatus: attempt.status,
          lastError: null,
        }
      : attempt.kind === 'cancelled'
        ? { status: 'CANCELLED' as const, nextAttemptAt: null, lastError: attempt.error }
        : {
            status: attempt.nextAttemptAt === null ? ('FAILED' as const) : ('PENDING' as const),
            nextAttemptAt: attempt.nextAttemptAt,
            lastHttpStatus: attempt.status,
            lastError: attempt.error.slice(0, 500),
          };
  const recorded = await db
    .update(webhookDeliveries)
    .set({ ...outcome, leaseToken: null, leaseUntil: null })
    .where(
      and(
        eq(webhookDeliveries.organizationId, claim.organizationId),
        eq(webhookDeliveries.eventId, claim.eventId),
        eq(webhookDeliveries.leaseToken, claim.leaseToken),
        eq(webhookDeliveries.status, 'PENDING'),
      ),
    )
    .returning({ eventId: webhookDeliveries.eventId });
  return recorded.length > 0;
}

export interface DeliveryPage {
  deliveries: WebhookDelivery[];
  hasNextPage: boolean;
}

/** Where a page of deliveries continues: after this delivery, newest first. */
export interface DeliveryPosition {
  createdAt: Date;
  eventId: string;
}

/** The organization's deliveries, newest first, `first` at a time. */
export async function listWebhookDeliveries(
  db: Queryable,
  organizationId: string,
  first: number,
  after: DeliveryPosition | null,
): Promise<DeliveryPage> {
  const rows = await db
    .select()
    .from(webhookDeliveries)
    .where(
      and(
        eq(webhookDeliveries.organizationId, organizationId),
        after === null
          ? undefined
          : or(
              lt(webhookDeliveries.createdAt, after.createdAt),
              and(eq(webhookDeliveries.createdAt, after.createdAt), lt(webhookDeliveries.eventId, after.eventId)),
            ),
      ),
    )
    .orderBy(desc(webhookDeliveries.createdAt), desc(webhookDeliveries.eventId))
    .limit(first + 1);
  return { deliveries: rows.slice(0, first), hasNextPage: rows.length > first };
}

export async function findWebhookDelivery(db: Queryable, key: DeliveryKey): Promise<WebhookDelivery | undefined> {
  if (!isUuid(key.organizationId) || !isUuid(key.eventId)) return undefined;
  const [delivery] = await db
    .select()
    .from(webhookDeliveries)
    .where(
      and(
        eq(webhookDeliveries.organizationId, key.organizationId.toLowerCase()),
        eq(webhookDeliveries.eventId, key.eventId.toLowerCase()),
      ),
    );
  return delivery;
}

/**
 * Makes a delivery due now with a fresh series of attempts, whatever became of it (failed,
 * cancelled, or delivered and wanted again: receivers deduplicate by the event id). A pending one
 * is only brought forward; its lease, if an attempt is in flight, is respected.
 */
export async function retryWebhookDelivery(db: Queryable, key: DeliveryKey, now: Date): Promise<WebhookDelivery> {
  const found = await findWebhookDelivery(db, key);
  if (!found) throw new NotFoundError('No such webhook delivery.');
  const where = and(
    eq(webhookDeliveries.organizationId, found.organizationId),
    eq(webhookDeliveries.eventId, found.eventId),
  );
  const [retried] =
    found.status === 'PENDING'
      ? await db.update(webhookDeliveries).set({ nextAttemptAt: now }).where(where).returning()
      : await db
          .update(webhookDeliveries)
          .set({ status: 'PENDING', attempts: 0, nextAttemptAt: now, deliveredAt: null })
          .where(where)
          .returning();
  if (!retried) throw new NotFoundError('No such webhook delivery.');
  return retried;
}
