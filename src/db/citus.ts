import type postgres from 'postgres';

/**
 * Citus support: a PostgreSQL database with the `citus` extension is sharded by organization.
 * Nothing here runs on plain PostgreSQL or PGlite.
 *
 * Catalogs become reference tables (a copy on every node), organizations are distributed by id,
 * and every tenant table by organization_id in the same colocation group, so one organization's
 * rows, and every statement the ledger runs for it, live on one shard. External-id claims are
 * distributed by the external id, the key they keep unique.
 */

const REFERENCE_TABLES = ['plans', 'credit_packs', 'generation_models'] as const;
const TENANT_TABLES = [
  'credit_lots',
  'reservations',
  'withheld_credits',
  'ledger_entries',
  'reservation_operation_keys',
  'plan_changes',
  'balance_alerts',
  'balance_alert_events',
  'organization_webhooks',
  'webhook_deliveries',
] as const;

/**
 * The guards the audit's facts rest on: the journal's (migrations 0001 and 0002), the plan
 * history's and the lots' (migration 0006). Citus refuses to distribute a table that has
 * triggers, so they are dropped first and created again once the tables are distributed.
 */
const GUARD_TRIGGERS = [
  {
    table: 'ledger_entries',
    name: 'ledger_entries_append_only',
    create: `create trigger ledger_entries_append_only before update or delete on ledger_entries
      for each row execute function ledger_entries_append_only()`,
  },
  {
    table: 'ledger_entries',
    name: 'ledger_entries_no_truncate',
    create: `create trigger ledger_entries_no_truncate before truncate on ledger_entries
      for each statement execute function ledger_entries_append_only()`,
  },
  {
    table: 'plan_changes',
    name: 'plan_changes_append_only',
    create: `create trigger plan_changes_append_only before update or delete on plan_changes
      for each row execute function plan_changes_append_only()`,
  },
  {
    table: 'plan_changes',
    name: 'plan_changes_no_truncate',
    create: `create trigger plan_changes_no_truncate before truncate on plan_changes
      for each statement execute function plan_changes_append_only()`,
  },
  {
    table: 'credit_lots',
    name: 'credit_lots_immutable',
    create: `create trigger credit_lots_immutable
      before update of id, organization_id, type, granted, created_at, source, source_key, pack_id, plan_id, cycle_starts_at, reason
      on credit_lots for each row execute function credit_lots_immutable()`,
  },
] as const;

/** Whether the database the client talks to has the `citus` extension. */
export async function hasCitus(sql: postgres.Sql | postgres.ReservedSql): Promise<boolean> {
  const [row] = await sql<Array<{ present: boolean }>>`
    select exists (select 1 from pg_extension where extname = 'citus') as present`;
  return Boolean(row?.present);
}

/**
 * Distributes the tables once, after the migrations: tables already distributed are left as they
 * are, so every start-up may call this. Runs on the migration's session, which holds the
 * migration lock, so two processes starting together do not distribute at once.
 */
export async function distributeTables(sql: postgres.ReservedSql): Promise<void> {
  const distributed = new Set(
    (await sql<Array<{ name: string }>>`select logicalrelid::regclass::text as name from pg_dist_partition`).map(
      (row) => row.name,
    ),
  );
  const pending = [...REFERENCE_TABLES, 'organizations', ...TENANT_TABLES, 'organization_external_ids'].filter(
    (table) => !distributed.has(table),
  );
  if (pending.length === 0) return createGuardTriggers(sql);
  // All at once or not at all: a start-up that fails half-way leaves the tables as they were.
  await sql`begin`;
  try {
    // Citus refuses a foreign key from a local table to a distributed one, so the keys between
    // tenant tables are dropped while the tables are distributed and added again afterwards.
    const foreignKeys = await sql<Array<{ table: string; name: string; definition: string }>>`
      select conrelid::regclass::text as table, conname as name, pg_get_constraintdef(oid) as definition
      from pg_constraint
      where contype = 'f' and conrelid::regclass::text = any(${[...TENANT_TABLES]})
        and confrelid::regclass::text = any(${['organizations', ...TENANT_TABLES]})`;
    for (const key of foreignKeys) await sql.unsafe(`alter table ${key.table} drop constraint ${key.name}`);
    for (const trigger of GUARD_TRIGGERS)
      await sql.unsafe(`drop trigger if exists ${trigger.name} on ${trigger.table}`);
    for (const table of pending) await distribute(sql, table);
    for (const key of foreignKeys)
      await sql.unsafe(`alter table ${key.table} add constraint ${key.name} ${key.definition}`);
    await createGuardTriggers(sql);
    await sql`commit`;
  } catch (error) {
    await sql`rollback`.catch(() => {});
    throw error;
  }
}

async function distribute(sql: postgres.ReservedSql, table: string): Promise<void> {
  if ((REFERENCE_TABLES as readonly string[]).includes(table)) await sql`select create_reference_table(${table})`;
  else if (table === 'organizations') await sql`select create_distributed_table('organizations', 'id')`;
  else if (table === 'organization_external_ids')
    await sql`select create_distributed_table('organization_external_ids', 'external_id')`;
  else await sql`select create_distributed_table(${table}, 'organization_id', colocate_with => 'organizations')`;
}

/** Creates the guards that are missing (all of them right after distribution). */
async function createGuardTriggers(sql: postgres.ReservedSql): Promise<void> {
  const present = new Set(
    (
      await sql<Array<{ name: string }>>`
        select tgrelid::regclass::text || '.' || tgname as name from pg_trigger
        where tgrelid = any(${[...new Set(GUARD_TRIGGERS.map((trigger) => trigger.table))]}::regclass[]) and not tgisinternal`
    ).map((row) => row.name),
  );
  const missing = GUARD_TRIGGERS.filter((trigger) => !present.has(`${trigger.table}.${trigger.name}`));
  if (missing.length === 0) return;
  // Citus creates triggers on distributed tables only when told it is safe: these run on each
  // shard and touch nothing but the row (or statement) they refuse or let through.
  await sql`set citus.enable_unsafe_triggers = on`;
  try {
    for (const trigger of missing) await sql.unsafe(trigger.create);
  } finally {
    await sql`reset citus.enable_unsafe_triggers`;
  }
}

// Databases that talk to a Citus coordinator, by their drizzle dialect: a drizzle database and
// every transaction opened on it, nested ones and those a caller opened itself included, share
// one dialect object, so a statement asks its own handle and needs no flag passed down.
const citusDialects = new WeakSet<object>();

function dialectOf(handle: object): object | undefined {
  return (handle as { dialect?: object }).dialect;
}

/** Marks a drizzle database, and so every transaction opened on it, as talking to Citus. */
export function markCitus(db: object): void {
  const dialect = dialectOf(db);
  if (dialect) citusDialects.add(dialect);
}

/** Whether a drizzle database or transaction talks to Citus (see `markCitus`). */
export function onCitus(handle: object): boolean {
  const dialect = dialectOf(handle);
  return dialect !== undefined && citusDialects.has(dialect);
}
