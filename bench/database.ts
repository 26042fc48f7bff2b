// The bench's own PostgreSQL databases, created next to the one DATABASE_URL names and dropped
// afterwards, and the checks run on them once the load is over.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import {
  createDatabase as createThrowawayDatabase,
  dropDatabase as dropThrowawayDatabase,
} from '../scripts/citus/databases.ts';
import { root } from './server.ts';

export interface BenchDatabase {
  name: string;
  url: string;
}

export function benchDatabaseNames(): { main: string; growth: string } {
  const id = `${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  return { main: `credits_bench_${id}`, growth: `credits_bench_${id}_growth` };
}

/** Creates the database next to baseUrl's; on a Citus coordinator with the extension and workers. */
export async function createDatabase(baseUrl: string, name: string): Promise<BenchDatabase> {
  return { name, url: await createThrowawayDatabase(baseUrl, name) };
}

/** Drops it again, on every Citus node when baseUrl names a coordinator. */
export async function dropDatabase(baseUrl: string, name: string): Promise<void> {
  await dropThrowawayDatabase(baseUrl, name);
}

export interface AuditResult {
  code: number;
  ms: number;
  firstLine: string;
}

/** `npm run audit` as an operator runs it, against a PostgreSQL database or a PGlite folder. */
export function runAudit(target: { databaseUrl?: string; dataDir?: string }): Promise<AuditResult> {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    DATABASE_URL: target.databaseUrl ?? '',
    DATA_DIR: target.dataDir ?? '',
  };
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(
      'npm',
      ['run', '--silent', 'audit'],
      { cwd: root, env, timeout: 600_000, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        const lines = `${stdout}\n${stderr}`
          .split('\n')
          .map((line) => line.trim())
          .filter((line) => line !== '');
        // On success the summary line; on failure the first violation (exit 1) or the start of the
        // error (exit 2, which may span lines: a failed query and its SQL).
        const firstLine =
          (code === 0 ? lines.at(-1) : code === 1 ? lines[0] : lines.slice(0, 4).join(' ')) ?? '(no output)';
        resolve({ code, ms: Date.now() - started, firstLine: firstLine.replace(/\s+/g, ' ').slice(0, 300) });
      },
    );
  });
}

/** What the clients were told, per database: every acknowledged reservation and capture. */
export interface Acknowledged {
  reservations: number;
  capturedCredits: number;
}

export interface LedgerCheck {
  negativeLots: number;
  /** Organizations whose consumed credits exceed what they were granted. */
  overdrawnOrganizations: number;
  /** The bench's own reservations (keys `bench-…`) and the credits captured from them. */
  reservations: number;
  capturedCredits: number;
  granted: number;
  consumed: number;
}

/** The overdraw checks, straight from the tables. */
export async function checkLedger(url: string): Promise<LedgerCheck> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<Array<Record<string, string>>>`
      with lots as (
        select organization_id, sum(granted)::bigint as granted from credit_lots group by organization_id
      ), consumed as (
        select organization_id, coalesce(-sum(reserved_change), 0)::bigint as consumed
        from ledger_entries where kind = 'CAPTURE' group by organization_id
      )
      select
        (select count(*) from credit_lots where available < 0 or reserved < 0)::int as negative_lots,
        (select count(*) from lots left join consumed using (organization_id) where coalesce(consumed, 0) > granted)::int as overdrawn,
        (select count(*) from reservations where idempotency_key like 'bench-%')::int as reservations,
        (select coalesce(sum(captured_amount), 0) from reservations where idempotency_key like 'bench-%')::bigint as captured,
        (select coalesce(sum(granted), 0) from lots)::bigint as granted,
        (select coalesce(sum(consumed), 0) from consumed)::bigint as consumed`;
    return {
      negativeLots: Number(row!.negative_lots),
      overdrawnOrganizations: Number(row!.overdrawn),
      reservations: Number(row!.reservations),
      capturedCredits: Number(row!.captured),
      granted: Number(row!.granted),
      consumed: Number(row!.consumed),
    };
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export async function countEntries(url: string): Promise<number> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<Array<{ n: string }>>`select count(*)::bigint as n from ledger_entries`;
    return Number(row!.n);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Each organization's current balance version, to know when every subscriber has caught up. */
export async function balanceVersions(url: string, organizationIds: string[]): Promise<Record<string, number>> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql<Array<{ id: string; balance_version: number }>>`
      select id, balance_version from organizations where id = any(${organizationIds}::uuid[])`;
    return Object.fromEntries(rows.map((row) => [row.id, Number(row.balance_version)]));
  } finally {
    await sql.end({ timeout: 5 });
  }
}
