import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import type { Tx } from '../db/client.ts';
import { rowsOf } from '../db/client.ts';
import {
  balanceAlertEvents,
  balanceAlerts,
  creditLots,
  organizationWebhooks,
  webhookDeliveries,
} from '../db/schema.ts';
import { announcesFromCoordinator } from './announcements.ts';
import { noteAlertsFired } from './movements.ts';

/** The channel on which committed alert events are announced as `<organizationId>:<eventId>`. */
export const BALANCE_ALERT_CHANNEL = 'balance_alert';

/** Alerts an organization may watch at once (removed ones do not count). */
export const ALERTS_PER_ORGANIZATION_MAX = 10;

/** The lots one posting changes (its `changed` CTE returns them as they are left). */
export interface AvailableChanges {
  /** A PostgreSQL uuid[] literal of lot ids. */
  lotIds: string;
}

const NO_CHANGES: AvailableChanges = { lotIds: '{}' };

/**
 * The CTEs that evaluate the organization's alerts inside a posting's statement (named
 * `alert_watch`, `measured`, `fired`, `rearmed`, `alerted`, `webhook_queued`). The measure is available credits of
 * every unexpired lot at `now`, as the posting leaves them: the lots the posting changed as its
 * `changed` CTE returns them, plus every other spendable lot. Only the other lots are read from
 * the table, so the sum is the same whether the read sees the table before the update (one
 * snapshot for the whole statement, as PostgreSQL runs it) or after it (Citus may run a
 * data-modifying CTE as a step of its own, before the rest of the statement).
 *
 * An alert's `armed` remembers which side of its threshold the measure stood on when last
 * evaluated, so comparing the new measure with it is comparing before and after: an armed alert
 * below its threshold fires (disarms, one event row), a disarmed one at or above it re-arms. That
 * also covers credits that expired with time alone: the sweeper's posting is the first change to
 * see them gone. Without alerts, `fired` and `rearmed` each probe the alerts' index and find
 * nothing, so `measured` is never computed and the lots are not summed (EXPLAIN ANALYZE on
 * PostgreSQL 15: "never executed").
 *
 * When the organization has a webhook, each event gets its delivery row in the same statement
 * (`webhook_queued`), due at once: an event that committed is never without its delivery, and one
 * that rolled back has none.
 */
export function alertCtes(
  organizationId: string,
  changes: AvailableChanges,
  balanceVersion: ReturnType<typeof sql>,
  now: Date,
  notify: boolean,
) {
  const at = now.toISOString();
  // Ids for the events this posting may write, at most one per watched alert, made here rather
  // than by a volatile SQL function so that the statement runs alike on every node of a cluster.
  const eventIds = `{${Array.from({ length: ALERTS_PER_ORGANIZATION_MAX }, () => randomUUID()).join(',')}}`;
  const notification = notify
    ? sql`, pg_notify(${BALANCE_ALERT_CHANNEL}, organization_id::text || ':' || id::text)`
    : sql``;
  return sql`alert_watch as (
      select 1 from ${balanceAlerts} where organization_id = ${organizationId} and removed_at is null limit 1
    ), measured as (
      select (
        coalesce((
          select sum(l.available) from ${creditLots} as l
          where l.organization_id = ${organizationId} and l.available > 0
            and (l.expires_at is null or l.expires_at > ${at}::timestamptz)
            and not (l.id = any(${changes.lotIds}::uuid[]))
        ), 0)
        + coalesce((
          select sum(c.available) from changed as c
          where c.available > 0 and (c.expires_at is null or c.expires_at > ${at}::timestamptz)
        ), 0)
      )::bigint as available
      where exists (select 1 from alert_watch)
    ), fired as (
      update ${balanceAlerts} as a set armed = false, last_fired_at = ${at}::timestamptz
      from measured as m
      where a.organization_id = ${organizationId} and a.removed_at is null and a.armed and m.available < a.threshold
      returning a.id, a.threshold, m.available
    ), rearmed as (
      update ${balanceAlerts} as a set armed = true
      from measured as m
      where a.organization_id = ${organizationId} and a.removed_at is null and not a.armed and m.available >= a.threshold
      returning 1
    ), alerted as (
      insert into ${balanceAlertEvents} (organization_id, id, alert_id, threshold, available, balance_version, occurred_at)
      select ${organizationId}::uuid, (${eventIds}::uuid[])[f.n], f.id, f.threshold, f.available, (${balanceVersion}), ${at}::timestamptz
      from (select fired.*, row_number() over (order by fired.threshold) as n from fired) as f
      returning id${notification}
    ), webhook_queued as (
      insert into ${webhookDeliveries} (organization_id, event_id, status, attempts, next_attempt_at, created_at)
      select ${organizationId}::uuid, e.id, 'PENDING', 0, ${at}::timestamptz, ${at}::timestamptz
      from alerted as e
      where exists (
        select 1 from ${organizationWebhooks} as w where w.organization_id = ${organizationId} and w.removed_at is null
      )
      returning 1
    )`;
}

/**
 * Queues the notifications of fired events from the coordinator's session (Citus), where the
 * posting's own statement ran on a worker (see `announcesFromCoordinator`).
 */
export async function notifyAlertsFromCoordinator(tx: Tx, organizationId: string, eventIds: string[]): Promise<void> {
  for (const id of eventIds) {
    await tx.execute(sql`select pg_notify(${BALANCE_ALERT_CHANNEL}, ${`${organizationId}:${id}`})`);
  }
}

/** The ids of the events a posting's `alerted` CTE wrote, from the `alert_events` column. */
export function firedEventIds(column: string | null | undefined): string[] {
  return column ? column.split(',') : [];
}

/**
 * Evaluates the organization's alerts on their own, outside a posting: for a change made of
 * several postings (a billing cycle's reset expires, then grants), which is judged on its net
 * effect. The caller holds the organization's lock.
 */
export async function evaluateBalanceAlerts(tx: Tx, organizationId: string, now: Date): Promise<string[]> {
  const fromCoordinator = announcesFromCoordinator(tx);
  const result = await tx.execute(sql`
    with changed as (select null::uuid as id, null::int as available, null::timestamptz as expires_at where false),
    ${alertCtes(organizationId, NO_CHANGES, sql`null::int`, now, !fromCoordinator)}
    select (select string_agg(id::text, ',') from alerted) as alert_events,
      (select count(*) from rearmed)::int as rearmed`);
  const [row] = rowsOf<{ alert_events: string | null }>(result);
  const ids = firedEventIds(row?.alert_events);
  noteAlertsFired(tx, ids.length);
  if (fromCoordinator) await notifyAlertsFromCoordinator(tx, organizationId, ids);
  return ids;
}
