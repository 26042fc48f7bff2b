// One organization's burst, well inside its rate limit, must not take the pool from another:
// across two real server processes (production settings, its rate limits included) on one
// PostgreSQL database, org A settles 1,000 reservations at once, then changes its plan 1,000
// times at once, split across both processes, while org B reserves once every 50 ms on one of
// them. B's reserve p99 during each burst and alone (the same pattern just before the burst) is
// measured and printed; at most one of A's transactions per
// process may wait on A's lock, every one of A's requests must get its own answer, and the ledger
// must audit clean afterwards.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import postgres from 'postgres';
import { eq, sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { secretKey, signToken } from '../../src/auth/tokens.ts';
import { openDatabase, rowsOf } from '../../src/db/client.ts';
import { organizations } from '../../src/db/schema.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';
import { gql, gqlData } from '../support/graphql.ts';
import { CREATE_ORGANIZATION } from '../support/operations.ts';
import { uniqueKey } from '../support/scenario.ts';
import { SERVER_START_MS, stopServer, type StartedServer, startServerOn } from '../support/server-process.ts';

const SECRET = 'noisy-neighbour-processes-secret-long-enough';
// What a generation backend asks of a settlement or a plan change: the outcome, not the balance.
const SETTLED = 'reservation { id status capturedAmount refundedAmount }';
const CAPTURE = `mutation ($input: CaptureReservationInput!) {
  captureReservation(input: $input) { __typename ... on Error { message } ... on CaptureReservationSuccess { ${SETTLED} } } }`;
const REFUND = `mutation ($input: RefundReservationInput!) {
  refundReservation(input: $input) { __typename ... on Error { message } ... on RefundReservationSuccess { ${SETTLED} } } }`;
const CHANGE_PLAN = `mutation ($input: ChangePlanInput!) {
  changePlan(input: $input) { __typename ... on Error { message }
    ... on ChangePlanSuccess { appliedImmediately organization { plan { id } nextPlan { id } } } } }`;
const RESERVE = `mutation ($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) { __typename ... on Error { message } ... on ReserveCreditsSuccess { reservation { id } } } }`;
const BURST = 1_000;
const TICK_MS = 50;
/** B's window, alone and during a burst: long enough for a p99 worth the name and for the burst. */
const WINDOW_SAMPLES = 80;
// One credit per reservation (a text draft costs 1).
const ONE_CREDIT = { modelId: 'text-draft', count: 1 };

function startProductionServer(databaseUrl: string, dataDir: string): Promise<StartedServer> {
  // Production's defaults, rate limits included: A's burst is far inside 5,000/s per service org.
  return startServerOn({ databaseUrl, dataDir, secret: SECRET, nodeEnv: 'production' });
}

// B's client runs on a thread of its own, as another tenant's backend would on its own machine:
// the event loop that fires and reads A's 1,000 requests must not delay the reading of B's answers.
// It reserves once every tick (open loop: a slow answer does not delay the next request) until it
// has been told to stop and has sent at least `samples`. Plain JavaScript, so that the worker
// needs no TypeScript loader.
const TICKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { url, token, organizationId, samples, tickMs, generation } = workerData;
let stopped = false;
parentPort.on('message', () => { stopped = true; });
async function reserve() {
  const sent = performance.now();
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token },
    body: JSON.stringify({
      query: 'mutation ($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename } }',
      variables: { input: { organizationId, idempotencyKey: crypto.randomUUID(), generation } },
    }),
  });
  const body = await response.json();
  return { ms: performance.now() - sent, typename: body.data ? body.data.reserveCredits.__typename : JSON.stringify(body) };
}
(async () => {
  const started = performance.now();
  const runs = [];
  for (let i = 0; runs.length < samples || !stopped; i++) {
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, started + i * tickMs - performance.now())));
    runs.push(reserve());
  }
  parentPort.postMessage(await Promise.all(runs));
  parentPort.close();
})();
`;

interface Tick {
  ms: number;
  typename: string;
}

interface Ticker {
  /** Lets the ticker end once it has sent its samples; resolves with every latency. */
  stop(): Promise<Tick[]>;
}

/** B reserves once every 50 ms on `server`, at least `WINDOW_SAMPLES` times and until stopped. */
function neighbourTicks(server: StartedServer, token: string, organizationId: string): Ticker {
  const worker = new Worker(TICKER, {
    eval: true,
    workerData: {
      url: server.url,
      token,
      organizationId,
      samples: WINDOW_SAMPLES,
      tickMs: TICK_MS,
      generation: ONE_CREDIT,
    },
  });
  const ticks = new Promise<Tick[]>((resolve, reject) => {
    worker.once('message', (answers: Tick[]) => {
      resolve(answers);
      void worker.terminate();
    });
    worker.once('error', reject);
  });
  ticks.catch(() => {});
  return {
    stop() {
      worker.postMessage('stop');
      return ticks;
    },
  };
}

/** User + system CPU of a process so far, in ms (Linux: USER_HZ is 100). */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** Nearest-rank 99th percentile. */
function p99(ticks: Tick[]): number {
  const sorted = ticks.map((tick) => tick.ms).sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(0.99 * sorted.length) - 1)]!;
}

/**
 * Samples, until stopped, the most sessions of the database waiting on a lock at once: with the
 * organization queue, at most one per process (the one transaction of A's that holds its turn).
 */
function lockWaitersPeak(databaseUrl: string): { stop(): Promise<number> } {
  const client = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  let peak = 0;
  let running = true;
  const sampling = (async () => {
    // On a Citus coordinator the lock waits happen on the workers; citus_lock_waits sees them.
    const [{ citus } = { citus: false }] = await client<Array<{ citus: boolean }>>`
      select exists (select 1 from pg_extension where extname = 'citus') as citus`;
    while (running) {
      const [row] = citus
        ? await client<Array<{ n: number }>>`select count(*)::int as n from citus_lock_waits`
        : await client<Array<{ n: number }>>`
            select count(*)::int as n from pg_stat_activity
            where datname = current_database() and wait_event_type = 'Lock'`;
      peak = Math.max(peak, row!.n);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  return {
    async stop() {
      running = false;
      await sampling;
      await client.end();
      return peak;
    },
  };
}

/**
 * B alone for `WINDOW_SAMPLES` ticks, then B while `burst` runs: its window opens as the burst
 * starts and lasts until the burst is answered (and at least as many ticks as alone).
 */
async function measure<T>(
  label: string,
  databaseUrl: string,
  servers: StartedServer[],
  server: StartedServer,
  token: string,
  organizationId: string,
  burst: () => Promise<T>,
): Promise<{ alone: number; during: number; lockWaiters: number; answers: T }> {
  const alone = await neighbourTicks(server, token, organizationId).stop();
  const waiters = lockWaitersPeak(databaseUrl);
  const window = neighbourTicks(server, token, organizationId);
  const burstStarted = performance.now();
  const cpuBefore = servers.map((one) => cpuMs(one.child.pid!));
  const answers = await burst();
  const burstMs = performance.now() - burstStarted;
  const cpu = servers.map((one, i) => cpuMs(one.child.pid!) - cpuBefore[i]!);
  const during = await window.stop();
  const lockWaiters = await waiters.stop();
  // Every latency of B during the burst, in the order sent, for a look at when B waited.
  if (process.env.NEIGHBOUR_TIMELINE) console.log(label, 'timeline', during.map((t) => Math.round(t.ms)).join(' '));
  for (const tick of [...alone, ...during]) expect(tick.typename).toBe('ReserveCreditsSuccess');
  const result = { alone: p99(alone), during: p99(during), lockWaiters, answers };
  console.log(
    `${label}: B reserve p99 alone ${result.alone.toFixed(0)} ms, during A's burst ${result.during.toFixed(0)} ms ` +
      `(${(result.during / result.alone).toFixed(2)}x; ${during.length} ticks, max ${Math.max(...during.map((t) => t.ms)).toFixed(0)} ms); ` +
      `burst took ${burstMs.toFixed(0)} ms and ${cpu.map((ms) => ms.toFixed(0)).join(' + ')} ms of the servers' CPU; at most ${lockWaiters} sessions waiting on a lock; load average ${os.loadavg()[0]!.toFixed(1)}`,
  );
  return result;
}

describe.skipIf(!hasPostgres)('a noisy neighbour across two server processes (postgres)', () => {
  it(
    'waits on its own lock with one connection per process while it settles 1,000 reservations and changes plan 1,000 times at once, each request answered on its own, and another organization keeps being served',
    async () => {
      const { url, drop } = await createPostgresDatabase();
      const dataDir = mkdtempSync(path.join(tmpdir(), 'credits-noisy-neighbour-'));
      const servers: StartedServer[] = [];
      try {
        servers.push(
          ...(await Promise.all([startProductionServer(url, dataDir), startProductionServer(url, dataDir)])),
        );
        const [first, second] = servers as [StartedServer, StartedServer];
        const key = secretKey(SECRET);
        const admin = await signToken({ subject: 'test-admin', role: 'admin', expiresIn: '1h' }, key);
        const createOrganization = async (name: string) =>
          (await gqlData(first.url, CREATE_ORGANIZATION, { input: { name, planId: 'studio' } }, { token: admin }))
            .createOrganization.organization.id as string;
        const noisyId = await createOrganization('Noisy');
        const quietId = await createOrganization('Quiet');
        const serviceToken = (organizationId: string, subject: string) =>
          signToken(
            { subject, role: 'service', organizationId, scopes: ['generation', 'read', 'billing'], expiresIn: '1h' },
            key,
          );
        const noisy = await serviceToken(noisyId, 'noisy-backend');
        const quiet = await serviceToken(quietId, 'quiet-backend');
        const serverFor = (i: number) => (i % 2 === 0 ? first : second);

        const reserveNoisy = async (i: number) =>
          (
            await gqlData(
              serverFor(i).url,
              RESERVE,
              { input: { organizationId: noisyId, idempotencyKey: uniqueKey(), generation: ONE_CREDIT } },
              { token: noisy },
            )
          ).reserveCredits;
        const reserveMany = async (count: number) => {
          const ids: string[] = [];
          for (let start = 0; start < count; start += 100) {
            const made = await Promise.all(
              Array.from({ length: Math.min(100, count - start) }, (_, i) => reserveNoisy(start + i)),
            );
            for (const result of made) {
              expect(result.__typename).toBe('ReserveCreditsSuccess');
              ids.push(result.reservation.id);
            }
          }
          return ids;
        };

        // Warm both processes up on every path measured (JIT, prepared statements, the pools).
        const warm = await reserveMany(100);
        await Promise.all(
          warm.map((id, i) =>
            gqlData(serverFor(i).url, i % 2 ? REFUND : CAPTURE, { input: { reservationId: id } }, { token: noisy }),
          ),
        );
        await Promise.all(
          Array.from({ length: 100 }, (_, i) =>
            gqlData(
              serverFor(i).url,
              CHANGE_PLAN,
              { input: { organizationId: noisyId, planId: 'studio' } },
              { token: noisy },
            ),
          ),
        );
        await neighbourTicks(first, quiet, quietId).stop();

        const pending = await reserveMany(BURST);

        // Phase 1: 1,000 captures and refunds, half on each process.
        const settle = await measure('settlements', url, servers, first, quiet, quietId, () =>
          Promise.all(
            pending.map((id, i) =>
              gql(serverFor(i).url, i % 2 ? REFUND : CAPTURE, { input: { reservationId: id } }, { token: noisy }),
            ),
          ),
        );
        settle.answers.forEach((answer, i) => {
          const field = i % 2 ? 'refundReservation' : 'captureReservation';
          expect(answer.status).toBe(200);
          expect(answer.errors).toBeUndefined();
          expect(answer.data[field]).toMatchObject({
            __typename: i % 2 ? 'RefundReservationSuccess' : 'CaptureReservationSuccess',
            reservation:
              i % 2
                ? { id: pending[i], status: 'REFUNDED', capturedAmount: 0, refundedAmount: 1 }
                : { id: pending[i], status: 'CAPTURED', capturedAmount: 1, refundedAmount: 0 },
          });
        });

        // Phase 2: 1,000 plan changes, half scheduling `pro` for the next cycle, half keeping `studio`.
        const plans = await measure('plan changes', url, servers, first, quiet, quietId, () =>
          Promise.all(
            Array.from({ length: BURST }, (_, i) =>
              gql(
                serverFor(i).url,
                CHANGE_PLAN,
                { input: { organizationId: noisyId, planId: i % 2 ? 'pro' : 'studio' } },
                { token: noisy },
              ),
            ),
          ),
        );
        plans.answers.forEach((answer, i) => {
          expect(answer.status).toBe(200);
          expect(answer.errors).toBeUndefined();
          expect(answer.data.changePlan).toMatchObject(
            i % 2
              ? {
                  __typename: 'ChangePlanSuccess',
                  appliedImmediately: false,
                  organization: { plan: { id: 'studio' }, nextPlan: { id: 'pro' } },
                }
              : {
                  __typename: 'ChangePlanSuccess',
                  appliedImmediately: true,
                  organization: { plan: { id: 'studio' }, nextPlan: null },
                },
          );
        });

        // Each settlement was written exactly once, and the ledger audits clean.
        const database = await openDatabase({ databaseUrl: url, migrate: false, maxConnections: 1 });
        const onCitus = database.citus;
        try {
          const statuses = rowsOf<{ status: string; n: number; captured: number; refunded: number }>(
            await database.db.execute(sql`
              select status, count(*)::int as n, sum(captured_amount)::int as captured, sum(refunded_amount)::int as refunded
              from reservations where organization_id = ${noisyId} and id in ${pending}
              group by status order by status`),
          );
          expect(statuses).toEqual([
            { status: 'CAPTURED', n: 500, captured: 500, refunded: 0 },
            { status: 'REFUNDED', n: 500, captured: 0, refunded: 500 },
          ]);
          const entries = rowsOf<{ kind: string; n: number }>(
            await database.db.execute(sql`
              select kind::text, count(*)::int as n from ledger_entries
              where organization_id = ${noisyId} and reservation_id in ${pending}
              group by kind order by kind`),
          );
          expect(entries).toEqual([
            { kind: 'CAPTURE', n: 500 },
            { kind: 'REFUND', n: 500 },
            { kind: 'RESERVE', n: 1000 },
          ]);
          const [organization] = await database.db
            .select({ planId: organizations.planId })
            .from(organizations)
            .where(eq(organizations.id, noisyId));
          expect(organization).toEqual({ planId: 'studio' });
          expect(await auditLedger(database.db)).toEqual([]);
        } finally {
          await database.close();
        }

        // At most one of A's transactions per process waited on A's lock; the rest waited in
        // memory, so the pool stayed B's. (Without the queue: 19 to 20 of the 20 connections.)
        expect(settle.lockWaiters).toBeLessThanOrEqual(servers.length);
        expect(plans.lockWaiters).toBeLessThanOrEqual(servers.length);
        // B's p99 during A's burst stays within 3x of B's p99 alone. Two things make it so: the
        // organization queue keeps A from holding the pool while it waits for its own lock, and
        // each process takes in A's requests a few at a time (fair intake, CALLER_CONCURRENCY), so
        // B's request waits behind at most a handful of A's in the event loop, not all 500
        // (without it: 12x to 22x for settlements, measured with CALLER_CONCURRENCY=0).
        // On a Citus cluster under test, a coordinator and two workers share the same two cores
        // with both API processes, and every one of A's writes costs database CPU on two of them:
        // the neighbour then also waits for the database, whatever the API does (measured 2.4x to
        // 3.1x, with 8 or 16 requests of a caller at a time alike). There the bound is 5x.
        const bound = onCitus ? 5 : 3;
        expect(settle.during).toBeLessThanOrEqual(bound * settle.alone);
        expect(plans.during).toBeLessThanOrEqual(bound * plans.alone);
        expect(await Promise.all(servers.map((server) => stopServer(server, 25_000)))).toEqual([0, 0]);
      } finally {
        for (const server of servers) if (server.child.exitCode === null) server.child.kill('SIGKILL');
        await Promise.all(servers.map((server) => server.exited));
        await drop();
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
    SERVER_START_MS + 240_000,
  );
});
