import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { openDatabase, type Database } from '../../src/db/client.ts';
import { grantCredits } from '../../src/ledger/grants.ts';
import { createOrganization } from '../../src/ledger/organizations.ts';
import { reserveCredits } from '../../src/ledger/reservations.ts';
import { captureReservation } from '../../src/ledger/settlements.ts';
import { runAuditCli } from '../support/audit-cli.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';

interface Target {
  env: { DATABASE_URL?: string; DATA_DIR?: string };
  open(): Promise<Database>;
  cleanup(): Promise<void>;
}

async function pgliteTarget(): Promise<Target> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'credits-audit-'));
  return {
    env: { DATA_DIR: dataDir },
    open: () => openDatabase({ dataDir: path.join(dataDir, 'pglite') }),
    cleanup: async () => rmSync(dataDir, { recursive: true, force: true }),
  };
}

async function postgresTarget(): Promise<Target> {
  const { url, drop } = await createPostgresDatabase();
  return {
    env: { DATABASE_URL: url },
    open: () => openDatabase({ databaseUrl: url, maxConnections: 2 }),
    cleanup: drop,
  };
}

const targets: Array<[string, () => Promise<Target>]> = [['pglite', pgliteTarget]];
if (hasPostgres) targets.push(['postgres', postgresTarget]);

describe.each(targets)('npm run audit (%s)', (_driver, makeTarget) => {
  const cleanups: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup();
  });

  it('exits 0 on a consistent ledger and 1 naming the organization and lot once a cached balance is corrupted', async () => {
    const target = await makeTarget();
    cleanups.push(target.cleanup);

    // A small but real history: a cycle allowance, a grant, a partial capture.
    let database = await target.open();
    const ctx = { db: database.db, clock: new ManualClock('2026-03-10T09:00:00Z') };
    const org = await createOrganization(ctx, { name: 'Audited', planId: 'free' });
    const lot = await grantCredits(ctx, {
      organizationId: org.id,
      type: 'PURCHASED',
      amount: 40,
      reason: 'audit test',
      idempotencyKey: 'audit-grant',
    });
    const reservation = await reserveCredits(ctx, {
      organizationId: org.id,
      idempotencyKey: 'audit-reserve',
      generation: { modelId: 'text-draft', count: 30 },
    });
    await captureReservation(ctx, { reservationId: reservation.id, amount: 20 }, null);
    await database.close();

    const clean = await runAuditCli(target.env);
    expect(clean.stderr).not.toMatch(/audit failed/);
    expect(clean.code).toBe(0);
    expect(clean.stdout).toMatch(/ledger consistent/);

    // Someone "fixes" a balance by hand: the cache now disagrees with the journal.
    database = await target.open();
    await database.db.execute(sql`update credit_lots set available = available - 7 where id = ${lot.id}`);
    await database.close();

    const corrupt = await runAuditCli(target.env);
    expect(corrupt.code).toBe(1);
    const lines = corrupt.stdout.trim().split('\n');
    expect(lines).toContain(`organization ${org.id} lot ${lot.id}: available 33 but the journal says 40`);
    expect(corrupt.stdout).toMatch(/granted \d+ != available/); // the organization no longer balances either
    expect(lines.at(-1)).toMatch(/^audit: 2 violations/);
  }, 120_000); // four PGlite start-ups (two here, two in the command) are slow on a busy machine
});

describe('npm run audit without a database', () => {
  it('exits 2 rather than creating an empty one', async () => {
    const empty = mkdtempSync(path.join(tmpdir(), 'credits-audit-empty-'));
    try {
      const result = await runAuditCli({ DATA_DIR: empty });
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/No database/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
