import { sql } from 'drizzle-orm';
import { onCitus } from '../db/citus.ts';
import type { Tx } from '../db/client.ts';
import { rowsOf } from '../db/client.ts';
import { organizations } from '../db/schema.ts';
import { invariant } from './errors.ts';

/** The channel on which committed balance changes are announced as `<organizationId>:<version>`. */
export const BALANCE_CHANNEL = 'balance_changed';

/**
 * A CTE named `announced` that records a change of the organization's balance: the version grows
 * by one and, with `notify`, a notification carrying only the organization and the new version is
 * queued. PostgreSQL delivers it at commit, so listeners hear of a change if and only if it
 * committed. The notification is sent by the statement the ledger runs, never by a trigger or a
 * database function. On Citus that statement runs on a worker, whose notifications never reach
 * the coordinator's listeners: there the caller leaves `notify` off and calls
 * `notifyFromCoordinator` after the statement (see `announcesFromCoordinator`).
 */
export function announcedCte(organizationId: string, notify = true) {
  const notification = notify ? sql`, pg_notify(${BALANCE_CHANNEL}, id::text || ':' || balance_version::text)` : sql``;
  return sql`announced as (
      update ${organizations} set balance_version = balance_version + 1
      where id = ${organizationId}
      returning balance_version${notification}
    )`;
}

/**
 * Whether this transaction's notifications must come from the coordinator's own session (Citus).
 * On plain PostgreSQL and PGlite the posting statement queues them itself, costing no round trip.
 */
export function announcesFromCoordinator(tx: Tx): boolean {
  return onCitus(tx);
}

/**
 * Queues the balance notification from the coordinator's session (Citus). A statement that reads
 * no distributed table runs on the coordinator itself, and its notification is delivered when the
 * coordinator commits, which is after the worker's one-phase commit succeeded: never before the
 * change is durable, and never for a change that rolled back.
 */
export async function notifyFromCoordinator(tx: Tx, organizationId: string, version: number): Promise<void> {
  await tx.execute(sql`select pg_notify(${BALANCE_CHANNEL}, ${`${organizationId}:${version}`})`);
}

/** Announces a change of the organization's balance on its own (see `announcedCte`); returns the new version. */
export async function bumpBalanceVersion(tx: Tx, organizationId: string): Promise<number> {
  const fromCoordinator = announcesFromCoordinator(tx);
  const result = await tx.execute(
    sql`with ${announcedCte(organizationId, !fromCoordinator)} select balance_version from announced`,
  );
  const [row] = rowsOf<{ balance_version: number }>(result);
  invariant(row, `organization ${organizationId} vanished while locked`);
  const version = Number(row.balance_version);
  if (fromCoordinator) await notifyFromCoordinator(tx, organizationId, version);
  return version;
}
