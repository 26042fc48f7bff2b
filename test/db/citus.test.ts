import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { openDatabase, rowsOf, type Database } from '../../src/db/client.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import { BALANCE_CHANNEL } from '../../src/ledger/announcements.ts';
import { grantCredits } from '../../src/ledger/grants.ts';
import { createOrganization } from '../../src/ledger/organizations.ts';
import { reserveCredits } from '../../src/ledger/reservations.ts';
import { createPostgresDatabase } from '../support/database.ts';

// Start-up on a Citus coordinator: the tables are sharded by organization (catalogs copied to
// every node), the journal's guards hold on the shards, a second start changes nothing, and a
// balance change is heard by a listener on the coordinator although the write ran on a worker.
// Runs only when DATABASE_URL names a Citus coordinator.

async function onCitus(): Promise<boolean> {
  if (!process.env.DATABASE_URL) return false;
  const client = postgres(process.env.DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    const [row] = await client`select exists (select 1 from pg_extension where extname = 'citus') as present`;
    return Boolean(row?.present);
  } finally {
    await client.end();
  }
}

describe.skipIf(!(await onCitus()))('start-up on Citus', () => {
  let url: string;
  let drop: () => Promise<void>;
  let database: Database;
  beforeAll(async () => {
    ({ url, drop } = await createPostgresDatabase());
    database = await openDatabase({ databaseUrl: url });
  });
  afterAll(async () => {
    await database?.close();
    await drop?.();
  });

  const distribution = async (db: Database) =>
    rowsOf<{ name: string; method: string; key: string | null; colocated: boolean }>(
      await db.db.execute(sql`
        select p.logicalrelid::text as name, p.partmethod::text as method,
          case when p.partmethod = 'h' then column_to_column_name(p.logicalrelid, p.partkey) end as key,
          p.colocationid = (select colocationid from pg_dist_partition where logicalrelid = 'organizations'::regclass) as colocated
        from pg_dist_partition p order by 1`),
    );

  it('shards tenant tables by organization in one colocation group and copies catalogs to every node', async () => {
    expect(database.citus).toBe(true);
    const tables = await distribution(database);
    const byName = Object.fromEntries(tables.map((table) => [table.name, table]));
    for (const catalog of ['plans', 'credit_packs', 'generation_models']) expect(byName[catalog]?.method).toBe('n');
    expect(byName.organizations).toMatchObject({ method: 'h', key: 'id', colocated: true });
    for (const tenant of ['credit_lots', 'reservations', 'withheld_credits', 'ledger_entries', 'plan_changes'])
      expect(byName[tenant], tenant).toMatchObject({ method: 'h', key: 'organization_id', colocated: true });
    expect(byName.organization_external_ids).toMatchObject({ method: 'h', key: 'external_id' });
  });

  it('keeps the journal append-only on the shards, and a second start changes nothing', async () => {
    const ctx = { db: database.db, clock: new ManualClock('2026-01-15T12:00:00Z') };
    const org = await createOrganization(ctx, { name: 'Sharded', planId: 'free', externalId: 'citus-start' });
    // The refusal comes from the guard on the shard, relayed by the coordinator.
    const refused = { cause: { message: expect.stringMatching(/append-only/) } };
    await expect(database.db.execute(sql`update ledger_entries set reason = 'rewritten'`)).rejects.toMatchObject(
      refused,
    );
    await expect(database.db.execute(sql`delete from ledger_entries`)).rejects.toMatchObject(refused);
    // So are the plan history and the lots' identity.
    await expect(
      database.db.execute(sql`update plan_changes set plan_id = 'studio' where organization_id = ${org.id}`),
    ).rejects.toMatchObject(refused);
    await expect(
      database.db.execute(sql`update credit_lots set type = 'PURCHASED' where organization_id = ${org.id}`),
    ).rejects.toMatchObject({ cause: { message: expect.stringMatching(/never change/) } });
    const before = await distribution(database);
    const again = await openDatabase({ databaseUrl: url });
    try {
      expect(await distribution(again)).toEqual(before);
      expect(await auditLedger(again.db, { organizationId: org.id })).toEqual([]);
    } finally {
      await again.close();
    }
  });

  it('announces a change made on a worker to a listener on the coordinator, once committed', async () => {
    const ctx = { db: database.db, clock: new ManualClock('2026-01-15T12:00:00Z') };
    const org = await createOrganization(ctx, { name: 'Heard', planId: 'free' });
    const heard: string[] = [];
    const listener = database.connectListener!();
    try {
      await listener.listen(BALANCE_CHANNEL, (payload) => heard.push(payload));
      const lot = await grantCredits(ctx, {
        organizationId: org.id,
        type: 'PROMOTIONAL',
        amount: 50,
        reason: 'heard',
        idempotencyKey: 'heard',
      });
      expect(lot.available).toBe(50);
      await reserveCredits(ctx, {
        organizationId: org.id,
        idempotencyKey: 'heard',
        generation: { modelId: 'text-draft', count: 5 },
      });
      await vi.waitUntil(() => heard.filter((payload) => payload.startsWith(`${org.id}:`)).length >= 2, {
        timeout: 10_000,
      });
      const versions = heard.filter((payload) => payload.startsWith(`${org.id}:`)).map((p) => Number(p.split(':')[1]));
      const [row] = rowsOf<{ balance_version: number }>(
        await database.db.execute(sql`select balance_version from organizations where id = ${org.id}`),
      );
      // Creation announced version 1; the grant and the reservation the next two.
      expect(versions).toEqual([2, 3]);
      expect(Number(row?.balance_version)).toBe(3);
    } finally {
      await listener.end();
    }
  });

  it('creates an organization whose external-id claim lives on another node (two-phase commit), and replays it', async () => {
    const ctx = { db: database.db, clock: new ManualClock('2026-01-15T12:00:00Z') };
    const node = async (table: string, value: string) => {
      const [row] = rowsOf<{ node: number }>(
        await database.db.execute(sql`
          select p.groupid as node from pg_dist_placement p
          where p.shardid = get_shard_id_for_distribution_column(${table}::regclass, ${value}::text)`),
      );
      return Number(row?.node);
    };
    // Creations go on until a few have spanned both workers: each does with even odds (the
    // organization's id is random), so 64 attempts fall short only by chance of 1 in 2^60.
    let spanning = 0;
    for (let i = 0; i < 64 && spanning < 3; i += 1) {
      const org = await createOrganization(ctx, { name: `Claim ${i}`, planId: 'free', externalId: `two-node-${i}` });
      if ((await node('organizations', org.id)) !== (await node('organization_external_ids', `two-node-${i}`)))
        spanning += 1;
      const again = await createOrganization(ctx, { name: `Claim ${i}`, planId: 'free', externalId: `two-node-${i}` });
      expect(again.id).toBe(org.id);
    }
    expect(spanning).toBe(3);
  });
});
