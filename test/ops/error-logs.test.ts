import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { GraphQLError } from 'graphql';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { sanitisedLogger } from '../../src/server/error-log.ts';
import { yogaLogger } from '../../src/server/log-adapters.ts';
import { createLogger, logCallback } from '../../src/server/logger.ts';
import { createTestApp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { RESERVE } from '../support/operations.ts';
import { grant, newOrganization, reserve, textCredits, type TestOrganization } from '../support/scenario.ts';

// The README promises that log lines never carry query text or parameters. drizzle's query
// error has both in its message, and the database's own message can quote a value; here real
// database errors, each carrying a marker value as a query parameter and in the database's
// message, go through every path that logs an error, and no line may carry the marker or SQL.

/** What a log line must never contain: SQL, drizzle's parameter list, or the parameter itself. */
function expectNoQueryText(line: string, marker: string): void {
  expect(line).not.toContain(marker);
  expect(line).not.toMatch(/failed query/i);
  expect(line).not.toMatch(/params:/i);
  expect(line).not.toMatch(/\bselect\b[^\n]*\bfrom\b/i);
  expect(line).not.toMatch(/\binsert into\b/i);
  expect(line).not.toMatch(/\bupdate\b[^\n]*\bset\b/i);
  expect(line).not.toMatch(/\$1\b/);
}

function capture() {
  const lines: string[] = [];
  const logger = createLogger({ level: 'debug', destination: { write: (line: string) => void lines.push(line) } });
  return { logger, lines };
}

describe.each(drivers)('no log line carries a database error’s query, parameters or message (%s)', (driver) => {
  let t: TestApp;
  let org: TestOrganization;
  const { logger, lines } = capture();

  beforeAll(async () => {
    // A sweeper every 20 ms, so its failures are logged as they would be in production.
    t = await createTestApp(driver, { app: { logger, sweepIntervalMs: 20 } });
    org = await newOrganization(t);
    await grant(t, org, 'PURCHASED', 1000);
    // Reservations keyed LEAK-… cannot be written, nor changed once written; the database's
    // message quotes the key unquoted, as a message may quote any value.
    await t.database.db.execute(
      sql.raw(`
        create function refuse_marked_reservation() returns trigger language plpgsql as $$
        begin
          if tg_op = 'INSERT' and new.idempotency_key like 'LEAK-INSERT-%' then
            raise exception 'refused reservation % of %', new.idempotency_key, new.organization_id;
          end if;
          if tg_op = 'UPDATE' and old.idempotency_key like 'LEAK-SWEEP-%' then
            raise exception 'refused change of reservation % (%)', old.idempotency_key, old.id;
          end if;
          return new;
        end $$`),
    );
    await t.database.db.execute(
      sql.raw(`create trigger refuse_marked_reservation before insert or update on reservations
        for each row execute function refuse_marked_reservation()`),
    );
  });
  afterAll(async () => {
    await t.database.db.execute(sql.raw('drop trigger if exists refuse_marked_reservation on reservations'));
    await t.close();
  });

  it('a request whose statement fails: masked for the client, and yoga’s log line names the error classes only', async () => {
    const marker = `LEAK-INSERT-${randomUUID()}`;
    const response = await t.gql(
      RESERVE,
      { input: { organizationId: org.id, idempotencyKey: marker, generation: textCredits(5) } },
      org.service,
    );
    expect(response.errors?.[0]?.extensions?.code).toBe('INTERNAL_SERVER_ERROR');
    const logged = await vi.waitFor(() => {
      const found = lines.filter((line) => JSON.parse(line).event === 'yoga');
      expect(found.length).toBeGreaterThan(0);
      return found;
    });
    // The line says what failed: a query, and the database's SQLSTATE (P0001, raise_exception).
    expect(logged.join('\n')).toContain('DrizzleQueryError');
    expect(logged.join('\n')).toContain('P0001');
    for (const line of lines) expectNoQueryText(line, marker);
  });

  it('the sweeper failing to refund an expired reservation', async () => {
    const marker = `LEAK-SWEEP-${randomUUID()}`;
    const from = lines.length;
    await reserve(t, org, textCredits(5), { idempotencyKey: marker, ttlSeconds: 60 });
    t.clock.advanceSeconds(120);
    const logged = await vi.waitFor(
      () => {
        const found = lines.slice(from).filter((line) => JSON.parse(line).event === 'sweeper' && JSON.parse(line).err);
        expect(found.length).toBeGreaterThan(0);
        return found;
      },
      { timeout: 10_000, interval: 20 },
    );
    expect(logged.join('\n')).toContain('P0001');
    for (const line of lines.slice(from)) expectNoQueryText(line, marker);
  });

  it('every log adapter, given a real query error, a GraphQL error wrapping it, and errors quoting it', async () => {
    const marker = `LEAK-CAST-${randomUUID()}`;
    // A parameter the database refuses, and quotes in its message.
    const queryError = await t.database.db.execute(sql`select ${marker}::uuid as id`).then(
      () => {
        throw new Error('the cast was expected to fail');
      },
      (error: unknown) => error as Error,
    );
    expect(queryError.message).toContain(marker);
    const wrapped = new GraphQLError(queryError.message, { originalError: queryError, path: ['balance'] });
    const quoting = new Error(`loading the balance failed: ${queryError.message}`);
    const causing = new Error('loading the balance failed', { cause: queryError });
    const driverError = queryError.cause as Error;

    const own = capture();
    const fromCallback: string[] = [];
    const yoga = yogaLogger(own.logger);
    const sanitised = sanitisedLogger((message, detail) => fromCallback.push(`${message} ${String(detail)}`));
    const listener = logCallback(own.logger, 'listener');
    for (const error of [queryError, wrapped, quoting, causing, driverError]) {
      yoga.error(error);
      yoga.warn('while serving', { error });
      yoga.debug({ params: { variables: { key: marker.length }, failure: error } });
      sanitised.error(error);
      sanitised.error('failed', { failure: error });
      listener('reading a balance for its subscribers failed', error);
      own.logger.fatal({ event: 'start', err: error }, 'start-up failed');
    }
    expect(own.lines.length).toBe(5 * 5);
    expect(fromCallback.length).toBe(5 * 2);
    for (const line of [...own.lines, ...fromCallback]) expectNoQueryText(line, marker);
    // Still useful: the classes and the SQLSTATE of invalid text representation.
    expect(own.lines.join('\n')).toContain('DrizzleQueryError');
    expect(own.lines.join('\n')).toContain('22P02');
  });
});
