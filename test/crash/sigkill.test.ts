// Crash safety on PostgreSQL: the real server (`node --import tsx src/main.ts`) is killed with
// SIGKILL in the middle of a load of reserves and captures, five times, and started again each
// time. A transaction either committed whole or not at all, so afterwards: the journal audit
// (`npm run audit`) is clean, no reservation is half-written, everything a client was told
// happened did happen, and every reservation left pending by a crash is refunded by the
// restarted server's sweeper once its time to live passes.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secretKey, signToken } from '../../src/auth/tokens.ts';
import { openDatabase, rowsOf, type Database } from '../../src/db/client.ts';
import { EXPIRED_REFUND_REASON } from '../../src/ledger/reservations.ts';
import { runAuditCli } from '../support/audit-cli.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';
import { CAPTURE, CREATE_ORGANIZATION, GRANT_CREDITS, RESERVE } from '../support/operations.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const AUTH_SECRET = 'crash-test-secret-that-is-long-enough-for-hs256';
const KILLS = 5;
const CLIENTS = 12;
const TTL_SECONDS = 2;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

interface Server {
  child: ChildProcess;
  url: string;
  output: () => string;
}

/** Starts the real server and waits until it listens (its start-up line on stdout). */
async function startServer(databaseUrl: string): Promise<Server> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: databaseUrl, AUTH_SECRET, PORT: String(port), SWEEP_INTERVAL_MS: '200', NODE_ENV: 'test' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL'); // never leave a half-started server behind
      reject(new Error(`server did not start within 30 s:\n${output}`));
    }, 30_000);
    const check = () => {
      if (output.includes('Credits API on')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', check);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code ?? signal}) during start-up:\n${output}`));
    });
  });
  return { child, url: `http://127.0.0.1:${port}/graphql`, output: () => output };
}

function exited(child: ChildProcess): Promise<NodeJS.Signals | number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.signalCode ?? child.exitCode);
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
}

async function gql(url: string, token: string, query: string, variables: Record<string, unknown>): Promise<any> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = (await response.json()) as { data?: any; errors?: unknown[] };
  if (body.errors) throw new Error(`GraphQL errors: ${JSON.stringify(body.errors)}`);
  return body.data;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe.skipIf(!hasPostgres)('crash safety (postgres, real server process)', () => {
  let databaseUrl: string;
  let drop: () => Promise<void>;
  let database: Database;
  let server: Server | null = null;

  beforeAll(async () => {
    ({ url: databaseUrl, drop } = await createPostgresDatabase());
  });
  afterAll(async () => {
    if (server && server.child.exitCode === null && server.child.signalCode === null) {
      server.child.kill('SIGKILL');
      await exited(server.child);
    }
    await database?.close();
    await drop?.();
  });

  it(`survives ${KILLS} SIGKILLs mid-load with the ledger whole`, async () => {
    const key = secretKey(AUTH_SECRET);
    const admin = await signToken({ subject: 'crash-admin', role: 'admin', expiresIn: '1h' }, key);
    server = await startServer(databaseUrl);

    const orgs: Array<{ id: string; service: string }> = [];
    for (let i = 0; i < 2; i += 1) {
      const created = await gql(server.url, admin, CREATE_ORGANIZATION, { input: { name: `Crash ${i}`, planId: 'free' } });
      const id = created.createOrganization.organization.id as string;
      const granted = await gql(server.url, admin, GRANT_CREDITS, {
        input: { organizationId: id, type: 'PURCHASED', amount: 1_000_000, reason: 'crash test', idempotencyKey: `crash-${i}` },
      });
      expect(granted.grantCredits.__typename).toBe('GrantCreditsSuccess');
      orgs.push({ id, service: await signToken({ subject: `crash-service-${i}`, role: 'service', organizationId: id, expiresIn: '1h' }, key) });
    }

    database = await openDatabase({ databaseUrl, maxConnections: 2 });
    const db = database.db;
    const count = async (query: ReturnType<typeof sql>) => Number(rowsOf<{ n: number }>(await db.execute(query))[0]!.n);
    // Reservations found pending while the server lay dead: only a sweeper can settle them now.
    const leftByCrashes = new Set<string>();

    // What clients were told. A request cut off by the kill has an unknown outcome and is not here.
    const acknowledgedReservations = new Map<string, number>();
    const acknowledgedCaptures = new Map<string, number>();
    let cutOff = 0;

    for (let round = 1; round <= KILLS; round += 1) {
      const current = server!;
      let running = true;
      let acknowledged = 0;
      const client = async (n: number) => {
        let i = 0;
        while (running) {
          const org = orgs[(n + i) % orgs.length]!;
          i += 1;
          try {
            const reserved = await gql(current.url, org.service, RESERVE, {
              input: { organizationId: org.id, idempotencyKey: `r${round}-c${n}-${i}`, generation: { modelId: 'text-draft', count: 1 + (i % 7) }, ttlSeconds: TTL_SECONDS },
            });
            const reservation = reserved.reserveCredits.reservation;
            acknowledgedReservations.set(reservation.id, reservation.amount);
            acknowledged += 1;
            // Two in three generations finish and are captured (some partly); the rest are left
            // running, as a crashed worker would leave them, for the time to live to settle.
            if (i % 3 === 0) continue;
            const amount = i % 2 === 0 ? null : 1;
            const captured = await gql(current.url, org.service, CAPTURE, { input: { reservationId: reservation.id, amount } });
            if (captured.captureReservation.__typename === 'CaptureReservationSuccess') {
              acknowledgedCaptures.set(reservation.id, captured.captureReservation.reservation.capturedAmount);
            }
            acknowledged += 1;
          } catch {
            cutOff += 1; // the server died under this request, or is not back yet
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
        }
      };
      const clients = Array.from({ length: CLIENTS }, (_, n) => client(n));
      // Kill once the load is well under way, at a moment that varies from round to round.
      await until('load to build up', async () => (acknowledged >= 40 ? true : undefined), 30_000);
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 300));
      current.child.kill('SIGKILL');
      expect(await exited(current.child)).toBe('SIGKILL');
      await new Promise((resolve) => setTimeout(resolve, 100)); // let clients see the dead server
      running = false;
      await Promise.all(clients);
      const pending = rowsOf<{ id: string }>(await db.execute(sql`select id from reservations where status = 'PENDING'`));
      for (const { id } of pending) leftByCrashes.add(id);
      server = await startServer(databaseUrl);
    }
    expect(cutOff).toBeGreaterThan(0);
    expect(leftByCrashes.size).toBeGreaterThan(0);

    // No reservation is half-written: each holds journal entries for exactly its amount, and a
    // settled one has given all of it back or consumed it.
    expect(
      await count(sql`
        select count(*)::int as n from (
          select r.id from reservations r left join ledger_entries e on e.reservation_id = r.id
          group by r.id, r.amount, r.status, r.captured_amount, r.refunded_amount
          having coalesce(sum(e.reserved_change) filter (where e.kind = 'RESERVE'), 0) <> r.amount
            or coalesce(sum(e.reserved_change), 0) <> case when r.status = 'PENDING' then r.amount else 0 end
            or r.captured_amount + r.refunded_amount <> case when r.status = 'PENDING' then 0 else r.amount end
        ) broken`),
    ).toBe(0);

    // Everything acknowledged is durable.
    const stored = new Map(
      rowsOf<{ id: string; amount: number; status: string; captured_amount: number }>(
        await db.execute(sql`select id, amount, status, captured_amount from reservations`),
      ).map((r) => [r.id, r]),
    );
    for (const [id, amount] of acknowledgedReservations) expect(stored.get(id)?.amount, `reservation ${id}`).toBe(amount);
    for (const [id, captured] of acknowledgedCaptures) {
      expect({ status: stored.get(id)?.status, captured: stored.get(id)?.captured_amount }, `capture of ${id}`).toEqual({ status: 'CAPTURED', captured });
    }

    // Pending reservations left by the crashes are refunded by a restarted server's sweeper once
    // their time to live passes, with the reason recorded.
    const ids = sql.join([...leftByCrashes].map((id) => sql`${id}::uuid`), sql`, `);
    await until('every reservation left pending by a crash to be refunded', async () => {
      const refunded = await count(sql`
        select count(*)::int as n from reservations
        where id in (${ids}) and status = 'REFUNDED' and refund_reason = ${EXPIRED_REFUND_REASON}`);
      return refunded === leftByCrashes.size ? true : undefined;
    }, (TTL_SECONDS + 15) * 1000);
    await until('nothing to be pending any more', async () => {
      const pending = await count(sql`select count(*)::int as n from reservations where status = 'PENDING'`);
      return pending === 0 ? true : undefined;
    }, (TTL_SECONDS + 15) * 1000);
    const notCapturedByAClient = await count(sql`
      select count(*)::int as n from reservations
      where status = 'REFUNDED' and (refund_reason is distinct from ${EXPIRED_REFUND_REASON})`);
    expect(notCapturedByAClient, 'every refund here came from an expired time to live').toBe(0);

    const audit = await runAuditCli({ DATABASE_URL: databaseUrl });
    expect(audit.stdout + audit.stderr).toMatch(/ledger consistent/);
    expect(audit.code).toBe(0);

    const totals = rowsOf<Record<string, number>>(
      await db.execute(sql`select status, count(*)::int as n from reservations group by status order by status`),
    );
    console.log(`crash test: ${KILLS} kills, ${cutOff} requests cut off, ${acknowledgedReservations.size} reservations and ${acknowledgedCaptures.size} captures acknowledged, ${leftByCrashes.size} left pending by crashes; ${JSON.stringify(totals)}`);

    server!.child.kill('SIGTERM');
    expect(await exited(server!.child)).toBe(0);
  }, 180_000);
});
