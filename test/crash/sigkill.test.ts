// Crash safety on PostgreSQL: the real server (`node --import tsx src/main.ts`) is killed with
// SIGKILL in the middle of a load of reserves and captures, five times, and started again each
// time. A transaction either committed whole or not at all, so afterwards: the journal audit
// (`npm run audit`) is clean, no reservation is half-written, everything a client was told
// happened did happen, and every reservation left pending by a crash is refunded by the
// restarted server's sweeper once its time to live passes.
//
// Every answer a client got is checked (`checkOutcomes`): only a connection refused, reset or
// closed after the kill was sent counts as "cut off by the kill"; a 500, a GraphQL error, a body
// that is not JSON, an unexpected result type or a network failure while the server should be up
// is a bad outcome and fails the test. The fault switch (test/crash/fault-500.ts, on when
// CREDITS_TEST_FAULT_500_RATE is set) shows that the check catches a server answering 500s:
//   CREDITS_TEST_FAULT_500_RATE=0.05 DATABASE_URL=… npx vitest run test/crash/sigkill.test.ts
// makes the crash test fail, and the last test here runs the scenario with the switch on and
// expects the checker to report the 500s.
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { secretKey, signToken } from '../../src/auth/tokens.ts';
import { openDatabase, rowsOf, type Database } from '../../src/db/client.ts';
import { EXPIRED_REFUND_REASON } from '../../src/ledger/reservations.ts';
import { runAuditCli } from '../support/audit-cli.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';
import { gqlData, graphqlRequest } from '../support/graphql.ts';
import { CAPTURE, CREATE_ORGANIZATION, GRANT_CREDITS, RESERVE } from '../support/operations.ts';
import { killRunningServers, startServer, type StartedServer } from '../support/server-process.ts';

const faultSwitch = fileURLToPath(new URL('./fault-500.ts', import.meta.url));
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

/**
 * Starts the real server and waits until it listens (its start-up line on stdout). With
 * CREDITS_TEST_FAULT_500_RATE set (in `env` or this process) the test-only fault switch is
 * preloaded; otherwise the command is exactly `npm start`'s.
 */
async function startCrashServer(databaseUrl: string, env: Record<string, string> = {}): Promise<StartedServer> {
  const port = await freePort();
  const childEnv: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: databaseUrl,
    AUTH_SECRET,
    PORT: String(port),
    SWEEP_INTERVAL_MS: '200',
    NODE_ENV: 'test',
    ...env,
  };
  const faulty = Number(childEnv.CREDITS_TEST_FAULT_500_RATE ?? '0') > 0;
  const args = ['--import', 'tsx', ...(faulty ? ['--import', faultSwitch] : []), 'src/main.ts'];
  return startServer({ env: childEnv, args });
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// What the load's clients got back, and the one checker that judges it.

type Operation = 'reserve' | 'capture';

interface Outcome {
  round: number;
  operation: Operation;
  /** The kill had been sent when this answer (or failure) arrived. */
  afterKill: boolean;
  /** When it arrived (ms since the epoch). */
  at: number;
  /** The HTTP answer, when there was one. */
  response?: { status: number; text: string };
  /** What fetch (or reading the body) threw, when there was no whole answer. */
  error?: unknown;
  /** For a capture: when its reservation's time to live ended. */
  expiresAt?: string;
}

type Verdict =
  | { kind: 'success'; result: any }
  /** Refused, reset or closed by the kill: the request's outcome is unknown. */
  | { kind: 'cut-off'; reason: string }
  /** A capture answered after the reservation's time to live ended, refused because it was refunded. */
  | { kind: 'late-capture' }
  | { kind: 'bad'; reason: string };

/** Error codes (on the error or its `cause`) of a connection the server's death refused, reset or closed. */
const CONNECTION_LOST = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

/** The code or name saying the connection was lost, or null for any other failure. */
function connectionLost(error: unknown): string | null {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current && typeof current === 'object'; depth += 1) {
    const { code, name, cause } = current as { code?: unknown; name?: unknown; cause?: unknown };
    if (name === 'AbortError') return 'AbortError';
    if (typeof code === 'string' && CONNECTION_LOST.has(code)) return code;
    current = cause;
  }
  return null;
}

function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause =
    error.cause instanceof Error
      ? ` (cause: ${error.cause.name} ${(error.cause as { code?: string }).code ?? ''} ${error.cause.message})`
      : '';
  return `${error.name}: ${error.message}${cause}`;
}

const EXPECTED: Record<Operation, { field: string; typename: string }> = {
  reserve: { field: 'reserveCredits', typename: 'ReserveCreditsSuccess' },
  capture: { field: 'captureReservation', typename: 'CaptureReservationSuccess' },
};

function classify(outcome: Outcome): Verdict {
  const where = `round ${outcome.round} ${outcome.operation}${outcome.afterKill ? ' (after the kill)' : ''}`;
  if (outcome.error !== undefined || !outcome.response) {
    const lost = connectionLost(outcome.error);
    if (lost && outcome.afterKill) return { kind: 'cut-off', reason: lost };
    return {
      kind: 'bad',
      reason: `${where}: ${lost ? `${lost} while the server should be up` : describeError(outcome.error)}`,
    };
  }
  const { status, text } = outcome.response;
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    return {
      kind: 'bad',
      reason: `${where}: HTTP ${status} with a body that is not JSON: ${JSON.stringify(text.slice(0, 200))}`,
    };
  }
  if (status !== 200 || typeof body !== 'object' || body === null || body.errors !== undefined || !body.data) {
    return { kind: 'bad', reason: `${where}: HTTP ${status} ${text.slice(0, 300)}` };
  }
  const { field, typename } = EXPECTED[outcome.operation];
  const result = body.data[field];
  if (result?.__typename === typename) return { kind: 'success', result };
  if (
    outcome.operation === 'capture' &&
    result?.__typename === 'ReservationStateError' &&
    result.status === 'REFUNDED' &&
    outcome.expiresAt !== undefined &&
    outcome.at >= Date.parse(outcome.expiresAt)
  ) {
    return { kind: 'late-capture' };
  }
  return { kind: 'bad', reason: `${where}: ${field} answered ${JSON.stringify(result)}` };
}

interface OutcomeReport {
  successes: number;
  cutOff: number;
  lateCaptures: number;
  /** Every bad outcome, described; a sound server under SIGKILL gives none. */
  problems: string[];
}

function checkOutcomes(outcomes: readonly Outcome[]): OutcomeReport {
  const report: OutcomeReport = { successes: 0, cutOff: 0, lateCaptures: 0, problems: [] };
  for (const outcome of outcomes) {
    const verdict = classify(outcome);
    if (verdict.kind === 'success') report.successes += 1;
    else if (verdict.kind === 'cut-off') report.cutOff += 1;
    else if (verdict.kind === 'late-capture') report.lateCaptures += 1;
    else report.problems.push(verdict.reason);
  }
  return report;
}

/** Fails with the first bad outcomes listed when there is any. */
function expectNoProblems(report: OutcomeReport): void {
  const shown = report.problems.slice(0, 20).join('\n');
  expect(report.problems.length, `${report.problems.length} bad outcomes, the first ones:\n${shown}`).toBe(0);
}

// ---------------------------------------------------------------------------------------------
// The scenario: load, SIGKILL, restart, `kills` times.

interface CrashLoad {
  outcomes: Outcome[];
  /** What clients were told. A request cut off by a kill has an unknown outcome and is not here. */
  acknowledgedReservations: Map<string, number>;
  acknowledgedCaptures: Map<string, number>;
  /** Reservations found pending while the server lay dead: only a sweeper can settle them now. */
  leftByCrashes: Set<string>;
  /** The server started after the last kill, still running. */
  server: StartedServer;
  /** Every server started, in order (the killed ones too). */
  servers: StartedServer[];
}

async function runCrashLoad(options: {
  databaseUrl: string;
  db: Database['db'];
  kills: number;
  serverEnv?: Record<string, string>;
}): Promise<CrashLoad> {
  const { databaseUrl, db, kills, serverEnv } = options;
  const key = secretKey(AUTH_SECRET);
  const admin = await signToken({ subject: 'crash-admin', role: 'admin', expiresIn: '1h' }, key);
  let server = await startCrashServer(databaseUrl, serverEnv);

  const orgs: Array<{ id: string; service: string }> = [];
  for (let i = 0; i < 2; i += 1) {
    const created = await gqlData(
      server.url,
      CREATE_ORGANIZATION,
      { input: { name: `Crash ${i}`, planId: 'free' } },
      { token: admin, timeoutMs: 10_000 },
    );
    const id = created.createOrganization.organization.id as string;
    const granted = await gqlData(
      server.url,
      GRANT_CREDITS,
      {
        input: {
          organizationId: id,
          type: 'PURCHASED',
          amount: 1_000_000,
          reason: 'crash test',
          idempotencyKey: `crash-${i}`,
        },
      },
      { token: admin, timeoutMs: 10_000 },
    );
    expect(granted.grantCredits.__typename).toBe('GrantCreditsSuccess');
    orgs.push({
      id,
      service: await signToken(
        { subject: `crash-service-${i}`, role: 'service', organizationId: id, expiresIn: '1h' },
        key,
      ),
    });
  }

  const load: CrashLoad = {
    outcomes: [],
    acknowledgedReservations: new Map(),
    acknowledgedCaptures: new Map(),
    leftByCrashes: new Set(),
    server,
    servers: [server],
  };

  for (let round = 1; round <= kills; round += 1) {
    const current = server;
    let running = true;
    let killSent = false;
    let acknowledged = 0;

    const send = async (
      operation: Operation,
      token: string,
      query: string,
      variables: Record<string, unknown>,
      expiresAt?: string,
    ): Promise<Outcome> => {
      let response: Outcome['response'];
      let error: unknown;
      try {
        const answer = await fetch(current.url, graphqlRequest(query, variables, { token, timeoutMs: 10_000 }));
        response = { status: answer.status, text: await answer.text() };
      } catch (caught) {
        error = caught;
      }
      const outcome: Outcome = { round, operation, afterKill: killSent, at: Date.now(), response, error, expiresAt };
      load.outcomes.push(outcome);
      return outcome;
    };

    const client = async (n: number) => {
      let i = 0;
      while (running) {
        const org = orgs[(n + i) % orgs.length]!;
        i += 1;
        const reserved = classify(
          await send('reserve', org.service, RESERVE, {
            input: {
              organizationId: org.id,
              idempotencyKey: `r${round}-c${n}-${i}`,
              generation: { modelId: 'text-draft', count: 1 + (i % 7) },
              ttlSeconds: TTL_SECONDS,
            },
          }),
        );
        if (reserved.kind !== 'success') {
          await pause(20); // the server died under this request, is not back yet, or answered badly
          continue;
        }
        const reservation = reserved.result.reservation;
        load.acknowledgedReservations.set(reservation.id, reservation.amount);
        acknowledged += 1;
        // Two in three generations finish and are captured (some partly); the rest are left
        // running, as a crashed worker would leave them, for the time to live to settle.
        if (i % 3 === 0) continue;
        const amount = i % 2 === 0 ? null : 1;
        const captured = classify(
          await send(
            'capture',
            org.service,
            CAPTURE,
            { input: { reservationId: reservation.id, amount } },
            reservation.expiresAt,
          ),
        );
        if (captured.kind === 'success') {
          load.acknowledgedCaptures.set(reservation.id, captured.result.reservation.capturedAmount);
          acknowledged += 1;
        } else if (captured.kind !== 'late-capture') {
          await pause(20);
        }
      }
    };
    const clients = Array.from({ length: CLIENTS }, (_, n) => client(n));
    // Kill once the load is well under way, at a moment that varies from round to round.
    await vi.waitFor(
      () => expect(acknowledged, 'answers acknowledged as the load builds up').toBeGreaterThanOrEqual(40),
      {
        timeout: 30_000,
        interval: 100,
      },
    );
    await pause(Math.random() * 300);
    killSent = true;
    current.child.kill('SIGKILL');
    expect(await current.exited).toBe('SIGKILL');
    await pause(100); // let clients see the dead server
    running = false;
    await Promise.all(clients);
    const pending = rowsOf<{ id: string }>(await db.execute(sql`select id from reservations where status = 'PENDING'`));
    for (const { id } of pending) load.leftByCrashes.add(id);
    server = await startCrashServer(databaseUrl, serverEnv);
    load.server = server;
    load.servers.push(server);
  }
  return load;
}

afterAll(async () => {
  await killRunningServers();
});

// ---------------------------------------------------------------------------------------------

describe("the crash test's outcome checker", () => {
  const base = { round: 1, at: Date.now() };
  const answer = (status: number, body: unknown) => ({
    status,
    text: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const reserveSuccess = {
    data: { reserveCredits: { __typename: 'ReserveCreditsSuccess', reservation: { id: 'r', amount: 3 } } },
  };

  async function realFetchFailure(): Promise<unknown> {
    const port = await freePort(); // nothing listens there any more
    try {
      await fetch(`http://127.0.0.1:${port}/graphql`, { method: 'POST', body: '{}' });
    } catch (error) {
      return error;
    }
    throw new Error('expected the request to a closed port to fail');
  }

  it('counts a refused connection as cut off only once the kill was sent', async () => {
    const refused = await realFetchFailure();
    expect(connectionLost(refused)).toBe('ECONNREFUSED');
    const report = checkOutcomes([
      { ...base, operation: 'reserve', afterKill: true, error: refused },
      { ...base, operation: 'reserve', afterKill: false, error: refused },
    ]);
    expect(report.cutOff).toBe(1);
    expect(report.problems).toEqual([expect.stringMatching(/ECONNREFUSED while the server should be up/)]);
  });

  it('counts a reset or closed socket and an aborted request after the kill as cut off', () => {
    const socketClosed = new TypeError('terminated', {
      cause: Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }),
    });
    const reset = new TypeError('fetch failed', {
      cause: Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }),
    });
    const aborted = new DOMException('This operation was aborted', 'AbortError');
    const report = checkOutcomes(
      [socketClosed, reset, aborted].map((error) => ({
        ...base,
        operation: 'capture' as const,
        afterKill: true,
        error,
      })),
    );
    expect(report).toEqual({ successes: 0, cutOff: 3, lateCaptures: 0, problems: [] });
  });

  it('reports every other outcome: 500s, GraphQL errors, bodies that are not JSON, timeouts, typed failures', () => {
    const timeout = new DOMException('The operation was aborted due to timeout', 'TimeoutError');
    const report = checkOutcomes([
      { ...base, operation: 'reserve', afterKill: false, response: answer(200, reserveSuccess) },
      {
        ...base,
        operation: 'reserve',
        afterKill: false,
        response: answer(500, { errors: [{ message: 'Unexpected error.' }] }),
      },
      {
        ...base,
        operation: 'reserve',
        afterKill: true,
        response: answer(200, { data: null, errors: [{ message: 'Unexpected error.' }] }),
      },
      { ...base, operation: 'reserve', afterKill: false, response: answer(200, '<html>Bad gateway</html>') },
      { ...base, operation: 'reserve', afterKill: false, response: answer(200, 'null') },
      { ...base, operation: 'reserve', afterKill: true, error: timeout },
      {
        ...base,
        operation: 'reserve',
        afterKill: false,
        response: answer(200, { data: { reserveCredits: { __typename: 'InvalidInputError', field: 'generation' } } }),
      },
      {
        ...base,
        operation: 'capture',
        afterKill: false,
        response: answer(200, { data: { captureReservation: { __typename: 'NotFoundError' } } }),
      },
    ]);
    expect(report.successes).toBe(1);
    expect(report.cutOff).toBe(0);
    expect(report.problems).toEqual([
      expect.stringMatching(/HTTP 500/),
      expect.stringMatching(/HTTP 200 .*Unexpected error/),
      expect.stringMatching(/not JSON/),
      expect.stringMatching(/HTTP 200 null/),
      expect.stringMatching(/TimeoutError/),
      expect.stringMatching(/InvalidInputError/),
      expect.stringMatching(/NotFoundError/),
    ]);
  });

  it('accepts a capture refused as REFUNDED only when it was answered after the time to live ended', () => {
    const refused = answer(200, {
      data: { captureReservation: { __typename: 'ReservationStateError', status: 'REFUNDED' } },
    });
    const expiresAt = new Date(base.at).toISOString();
    const report = checkOutcomes([
      { ...base, operation: 'capture', afterKill: false, response: refused, expiresAt },
      { ...base, at: base.at - 1, operation: 'capture', afterKill: false, response: refused, expiresAt },
    ]);
    expect(report.lateCaptures).toBe(1);
    expect(report.problems).toEqual([expect.stringMatching(/ReservationStateError/)]);
  });
});

describe.skipIf(!hasPostgres)('crash safety (postgres, real server process)', () => {
  let databaseUrl: string;
  let drop: () => Promise<void>;
  let database: Database;

  beforeAll(async () => {
    ({ url: databaseUrl, drop } = await createPostgresDatabase());
    database = await openDatabase({ databaseUrl, maxConnections: 2 });
  });
  afterAll(async () => {
    await killRunningServers();
    await database?.close();
    await drop?.();
  });

  it(`survives ${KILLS} SIGKILLs mid-load with the ledger whole`, async () => {
    const db = database.db;
    const count = async (query: ReturnType<typeof sql>) => Number(rowsOf<{ n: number }>(await db.execute(query))[0]!.n);
    const { outcomes, acknowledgedReservations, acknowledgedCaptures, leftByCrashes, server } = await runCrashLoad({
      databaseUrl,
      db,
      kills: KILLS,
    });

    // Every answer was a success, or a connection the kill cut off; nothing else.
    const report = checkOutcomes(outcomes);
    expectNoProblems(report);
    expect(report.cutOff).toBeGreaterThan(0);
    expect(leftByCrashes.size).toBeGreaterThan(0);

    // No reservation is half-written: each holds journal entries for exactly its amount, and a
    // settled one has given all of it back or consumed it.
    expect(
      await count(sql`
        select count(*)::int as n from (
          select r.id from reservations r
            left join ledger_entries e on e.organization_id = r.organization_id and e.reservation_id = r.id
          group by r.organization_id, r.id, r.amount, r.status, r.captured_amount, r.refunded_amount
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
    for (const [id, amount] of acknowledgedReservations)
      expect(stored.get(id)?.amount, `reservation ${id}`).toBe(amount);
    for (const [id, captured] of acknowledgedCaptures) {
      expect({ status: stored.get(id)?.status, captured: stored.get(id)?.captured_amount }, `capture of ${id}`).toEqual(
        { status: 'CAPTURED', captured },
      );
    }

    // Pending reservations left by the crashes are refunded by a restarted server's sweeper once
    // their time to live passes, with the reason recorded.
    const ids = sql.join(
      [...leftByCrashes].map((id) => sql`${id}::uuid`),
      sql`, `,
    );
    await vi.waitFor(
      async () => {
        const refunded = await count(sql`
        select count(*)::int as n from reservations
        where id in (${ids}) and status = 'REFUNDED' and refund_reason = ${EXPIRED_REFUND_REASON}`);
        expect(refunded, 'reservations left pending by a crash and refunded').toBe(leftByCrashes.size);
      },
      { timeout: (TTL_SECONDS + 15) * 1000, interval: 100 },
    );
    await vi.waitFor(
      async () => {
        const pending = await count(sql`select count(*)::int as n from reservations where status = 'PENDING'`);
        expect(pending, 'reservations still pending').toBe(0);
      },
      { timeout: (TTL_SECONDS + 15) * 1000, interval: 100 },
    );
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
    console.log(
      `crash test: ${KILLS} kills, ${outcomes.length} answers checked (${report.successes} successes, ${report.cutOff} cut off by a kill, ` +
        `${report.lateCaptures} captures after the time to live), ${acknowledgedReservations.size} reservations and ` +
        `${acknowledgedCaptures.size} captures acknowledged, ${leftByCrashes.size} left pending by crashes; ${JSON.stringify(totals)}`,
    );

    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
  }, 180_000);
});

describe.skipIf(!hasPostgres)('crash test against a server answering 500s (postgres, fault switch on)', () => {
  let databaseUrl: string;
  let drop: () => Promise<void>;
  let database: Database;

  beforeAll(async () => {
    ({ url: databaseUrl, drop } = await createPostgresDatabase());
    database = await openDatabase({ databaseUrl, maxConnections: 2 });
  });
  afterAll(async () => {
    await killRunningServers();
    await database?.close();
    await drop?.();
  });

  it("has its checker report every 500 while still telling the kill's cut-offs apart", async () => {
    const { outcomes, server, servers } = await runCrashLoad({
      databaseUrl,
      db: database.db,
      kills: 1,
      serverEnv: { CREDITS_TEST_FAULT_500_RATE: '0.1' },
    });
    expect(server.output()).toMatch(/TEST FAULT SWITCH ON/);
    const answered500 = servers.reduce(
      (sum, started) => sum + (started.output().match(/TEST FAULT: answered 500/g) ?? []).length,
      0,
    );
    expect(answered500).toBeGreaterThan(0);
    const report = checkOutcomes(outcomes);
    // Every 500 is reported, except that a kill may cut off (at most one per client) an answer
    // already sent but not yet read; and nothing else is reported.
    expect(report.problems.length).toBeLessThanOrEqual(answered500);
    expect(report.problems.length).toBeGreaterThanOrEqual(Math.max(1, answered500 - CLIENTS));
    for (const problem of report.problems) expect(problem).toMatch(/HTTP 500 .*INTERNAL_SERVER_ERROR/);
    expect(report.cutOff).toBeGreaterThan(0);
    expect(report.successes).toBeGreaterThan(0);
    expect(() => expectNoProblems(report)).toThrow(/bad outcomes/);
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
  }, 120_000);
});
