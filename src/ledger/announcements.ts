import { sql } from 'drizzle-orm';
import type { Tx } from '../db/client.ts';
import { rowsOf } from '../db/client.ts';
import { organizations } from '../db/schema.ts';
import { invariant } from './errors.ts';

/** The channel on which committed balance changes are announced as `<organizationId>:<version>`. */
export const BALANCE_CHANNEL = 'balance_changed';

/**
 * A CTE named `announced` that records a change of the organization's balance: the version grows
 * by one and a notification carrying only the organization and the new version is queued.
 * PostgreSQL delivers it at commit, so listeners hear of a change if and only if it committed.
 * The notification is sent by the statement the ledger runs, never by a trigger or a database
 * function, so that on a sharded database it is sent where the listeners are.
 */
export function announcedCte(organizationId: string) {
  return sql`announced as (
      update ${organizations} set balance_version = balance_version + 1
      where id = ${organizationId}
      returning balance_version, pg_notify(${BALANCE_CHANNEL}, id::text || ':' || balance_version::text)
    )`;
}

/** Announces a change of the organization's balance on its own (see `announcedCte`); returns the new version. */
export async function bumpBalanceVersion(tx: Tx, organizationId: string): Promise<number> {
  const result = await tx.execute(sql`with ${announcedCte(organizationId)} select balance_version from announced`);
  const [row] = rowsOf<{ balance_version: number }>(result);
  invariant(row, `organization ${organizationId} vanished while locked`);
  return Number(row.balance_version);
}
