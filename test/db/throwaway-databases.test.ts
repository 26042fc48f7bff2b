import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import { citusCluster, databaseUrl, type Node } from '../../scripts/citus/databases.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';

// The throwaway databases every PostgreSQL suite runs in: on plain PostgreSQL one database; on a
// Citus coordinator (npm run test:citus) a database on every node, ready to distribute tables
// over the same workers as the database DATABASE_URL names, and gone from every node afterwards.
const baseUrl = process.env.DATABASE_URL ?? '';
const cluster = hasPostgres ? await citusCluster(baseUrl) : null;

async function query<T extends object>(url: string, statement: string): Promise<T[]> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return [...(await sql.unsafe<T[]>(statement))];
  } finally {
    await sql.end({ timeout: 5 });
  }
}

function databaseName(url: string): string {
  return new URL(url).pathname.slice(1);
}

/** Whether database `name` exists on the server at `node` (the base database's server when omitted). */
async function exists(name: string, node?: Node): Promise<boolean> {
  const baseName = databaseName(baseUrl) || 'postgres';
  const rows = await query<{ found: boolean }>(
    databaseUrl(baseUrl, baseName, node),
    `select exists (select 1 from pg_database where datname = '${name}') as found`,
  );
  return rows[0]!.found;
}

describe.skipIf(!hasPostgres)('throwaway test databases (postgres)', () => {
  it('creates a database of its own and drops it again', async () => {
    const { url, drop } = await createPostgresDatabase();
    const name = databaseName(url);
    expect(name).not.toBe(databaseName(baseUrl));
    expect(await exists(name)).toBe(true);
    const [citus] = await query<{ installed: boolean }>(
      url,
      `select exists (select 1 from pg_extension where extname = 'citus') as installed`,
    );
    // The extension is there exactly when the database DATABASE_URL names is a Citus coordinator.
    expect(citus!.installed).toBe(cluster !== null);
    await drop();
    expect(await exists(name)).toBe(false);
  });
});

describe.skipIf(!cluster)('throwaway test databases (citus)', () => {
  it('registers the same workers, spreads a distributed table over them, and drops it on every node', async () => {
    const workers = cluster!.workers;
    expect(workers.length).toBeGreaterThan(0);
    const { url, drop } = await createPostgresDatabase();
    const name = databaseName(url);
    try {
      const nodes = await query<{ nodename: string; nodeport: number }>(
        url,
        'select nodename, nodeport from pg_dist_node where groupid <> 0 order by nodeid',
      );
      expect(nodes.map((node) => ({ host: node.nodename, port: node.nodeport }))).toEqual(workers);
      await query(url, 'create table tenants (organization_id uuid primary key)');
      await query(url, `select create_distributed_table('tenants', 'organization_id')`);
      const placements = await query<{ nodeport: number }>(
        url,
        'select distinct nodeport from pg_dist_shard_placement order by nodeport',
      );
      expect(placements.map((placement) => placement.nodeport)).toEqual(
        workers.map((worker) => worker.port).sort((a, b) => a - b),
      );
      await query(url, 'insert into tenants select gen_random_uuid() from generate_series(1, 20)');
      expect(await query(url, 'select count(*)::int as n from tenants')).toEqual([{ n: 20 }]);
    } finally {
      await drop();
    }
    for (const node of [cluster!.coordinator, ...workers]) expect(await exists(name, node)).toBe(false);
  });
});
