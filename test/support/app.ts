import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { createApp, type App, type AppOptions } from '../../src/app.ts';
import { secretKey, signToken, type Role } from '../../src/auth/tokens.ts';
import { ManualClock } from '../../src/clock.ts';
import type { Database, Driver } from '../../src/db/client.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import { createTestDatabase } from './database.ts';

export const TEST_SECRET = 'test-secret-that-is-long-enough-for-hs256';

export interface GraphQLResponse<T = any> {
  status: number;
  data: T;
  errors?: Array<{ message: string; extensions?: Record<string, any>; path?: Array<string | number> }>;
}

export interface TestApp {
  app: App;
  database: Database;
  clock: ManualClock;
  authKey: Uint8Array;
  /** A token for `role`, scoped to `organizationId` for members and services. */
  token(role: Role, organizationId?: string, expiresIn?: string): Promise<string>;
  /** Sends one GraphQL operation through the whole HTTP pipeline (in process). */
  gql<T = any>(query: string, variables?: Record<string, unknown>, token?: string | null): Promise<GraphQLResponse<T>>;
  /** Every invariant violation in the whole database (should always be empty). */
  audit(): ReturnType<typeof auditLedger>;
  close(): Promise<void>;
}

export interface TestAppOptions {
  maxConnections?: number;
  /** createApp options beyond the test defaults (introspection, rate limits, …). */
  app?: Partial<Omit<AppOptions, 'database' | 'clock' | 'authKey'>>;
  /** Changes what the app sees of the database (e.g. routes its listener through a proxy). */
  adaptDatabase?: (database: Database) => Database;
}

export async function createTestApp(driver: Driver, options: TestAppOptions = {}): Promise<TestApp> {
  const database = await createTestDatabase(driver, options.maxConnections);
  const clock = new ManualClock('2026-01-15T12:00:00Z');
  const authKey = secretKey(TEST_SECRET);
  // No background sweeper unless `options.app.sweepIntervalMs` asks for one: tests move the clock
  // and sweep explicitly.
  const app = createApp({
    database: options.adaptDatabase?.(database) ?? database,
    clock,
    authKey,
    sweepIntervalMs: null,
    ...options.app,
  });
  // Building the app starts nothing; tests send requests in process, so they start its listener,
  // movement metrics and (when asked for) sweeper here, as listen() would.
  await app.start();
  return {
    app,
    database,
    clock,
    authKey,
    token: (role, organizationId, expiresIn = '1h') =>
      signToken({ subject: `test-${role}`, role, organizationId, expiresIn }, authKey),
    async gql(query, variables, token) {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (token) headers.authorization = `Bearer ${token}`;
      const response = await app.yoga.fetch('http://localhost/graphql', {
        method: 'POST',
        headers,
        body: JSON.stringify({ query, variables }),
      });
      const body = (await response.json()) as { data: any; errors?: GraphQLResponse['errors'] };
      return { status: response.status, data: body.data, errors: body.errors };
    },
    audit: () => auditLedger(database.db),
    async close() {
      await app.stop();
      await database.close();
    },
  };
}

/**
 * A test app for one describe block: opened before its tests, closed after them, and (unless
 * told otherwise) audited after every test, so each test also proves the ledger stayed whole.
 */
export function useTestApp(
  driver: Driver,
  options: { auditAfterEach?: boolean; app?: TestAppOptions['app'] } = {},
): TestApp {
  const t = {} as TestApp;
  beforeAll(async () => {
    Object.assign(t, await createTestApp(driver, { app: options.app }));
  });
  afterAll(() => t.close());
  if (options.auditAfterEach ?? true) {
    afterEach(async () => {
      expect(await t.audit()).toEqual([]);
    });
  }
  return t;
}

/**
 * Makes the test app listen on a free local port and returns a view of it whose `gql` sends every
 * operation over a real socket to that server (fetch, Node's HTTP parser, the app's own
 * `http.Server`), so scenario helpers given this view exercise the API over real HTTP. The server
 * stops with the app's `close()`.
 */
export async function listenOverHttp(t: TestApp): Promise<{ url: string; client: TestApp }> {
  const port = await t.app.listen(0, '127.0.0.1');
  const url = `http://127.0.0.1:${port}/graphql`;
  const client: TestApp = {
    ...t,
    async gql(query, variables, token) {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (token) headers.authorization = `Bearer ${token}`;
      const response = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
      const text = await response.text();
      let body: { data: any; errors?: GraphQLResponse['errors'] };
      try {
        body = JSON.parse(text);
      } catch {
        throw new Error(`HTTP ${response.status} with a body that is not JSON: ${text.slice(0, 300)}`);
      }
      return { status: response.status, data: body.data, errors: body.errors };
    },
  };
  return { url, client };
}
