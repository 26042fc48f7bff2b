import { expect, it as baseIt } from 'vitest';
import { createApp, type App, type AppOptions } from '../../src/app.ts';
import { secretKey, signToken, type Role, type Scope } from '../../src/auth/tokens.ts';
import { ManualClock } from '../../src/clock.ts';
import type { Database, Driver } from '../../src/db/client.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import { createTestDatabase } from './database.ts';
import { gql, graphqlRequest, readGraphQLResponse, type GraphQLResponse } from './graphql.ts';

export const TEST_SECRET = 'test-secret-that-is-long-enough-for-hs256';

export interface TestApp {
  app: App;
  database: Database;
  clock: ManualClock;
  authKey: Uint8Array;
  /**
   * A token for `role`, for `organizationId` (members and services), with a `scope` claim listing
   * `scopes`; without them it has none, and so every right of its role (scopes are not required
   * in tests unless `app.tokenPolicy` says so).
   */
  token(role: Role, organizationId?: string, expiresIn?: string, scopes?: readonly Scope[]): Promise<string>;
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
    token: (role, organizationId, expiresIn = '1h', scopes) =>
      signToken({ subject: `test-${role}`, role, organizationId, expiresIn, scopes }, authKey),
    gql: async (query, variables, token) =>
      readGraphQLResponse(
        await app.yoga.fetch('http://localhost/graphql', graphqlRequest(query, variables, { token })),
      ),
    audit: () => auditLedger(database.db),
    async close() {
      await app.stop();
      await database.close();
    },
  };
}

/** What a describe block asks of its test app (see `useTestApp`). */
export interface AppBlock {
  driver: Driver;
  app?: TestAppOptions['app'];
}

/** The test apps of one file: one per describe block, opened before its first test, closed after its last. */
class TestApps {
  private readonly opened = new Map<AppBlock, Promise<TestApp>>();

  open(block: AppBlock): Promise<TestApp> {
    let app = this.opened.get(block);
    if (!app) {
      app = createTestApp(block.driver, { app: block.app });
      this.opened.set(block, app);
    }
    return app;
  }

  async close(block: AppBlock): Promise<void> {
    const app = this.opened.get(block);
    this.opened.delete(block);
    // An app that failed to open has already failed the tests that asked for it.
    await (await app?.catch(() => undefined))?.close();
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.opened.keys()].map((block) => this.close(block)));
  }
}

/**
 * `it` with a fixture `t`: the test app of the describe block the test is in, declared there with
 * `useTestApp`. The tests of one block share it, as they share the organizations they create.
 */
export const it = baseIt
  // biome-ignore lint/correctness/noEmptyPattern: vitest reads a fixture's dependencies from this pattern; it has none.
  .extend('testApps', { scope: 'file' }, async ({}, { onCleanup }) => {
    const apps = new TestApps();
    onCleanup(() => apps.closeAll());
    return apps;
  })
  .extend('appBlock', null as AppBlock | null)
  .extend('t', async ({ testApps, appBlock }) => {
    if (!appBlock)
      throw new Error('the describe block of this test declares no test app: call useTestApp(driver) in it');
    return testApps.open(appBlock);
  });

/**
 * Gives the tests of the current describe block (written with this module's `it`) a test app on
 * `driver`, closed after the block, and (unless told otherwise) audits the ledger after every
 * test, so each test also proves the ledger stayed whole. Returns the block, for its `beforeAll`
 * hooks to open the same app through `testApps`.
 */
export function useTestApp(
  driver: Driver,
  options: { auditAfterEach?: boolean; app?: TestAppOptions['app'] } = {},
): AppBlock {
  const block: AppBlock = { driver, app: options.app };
  it.override('appBlock', block);
  // Opened before the block's first test, so that a slow start (PGlite's initdb takes tens of
  // seconds on a loaded machine) counts against the hook timeout, not that test's.
  it.beforeAll(async ({ testApps }) => {
    await testApps.open(block);
  });
  it.afterAll(({ testApps }) => testApps.close(block));
  if (options.auditAfterEach ?? true) {
    it.afterEach(async ({ t }) => {
      expect(await t.audit()).toEqual([]);
    });
  }
  return block;
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
    gql: (query, variables, token) => gql(url, query, variables, { token }),
  };
  return { url, client };
}
