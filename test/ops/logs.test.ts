import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { secretKey, signToken } from '../../src/auth/tokens.ts';
import { createLogger } from '../../src/server/logger.ts';
import { TEST_SECRET, createTestApp, listenOverHttp, type TestApp } from '../support/app.ts';
import { graphqlRequest } from '../support/graphql.ts';
import { RESERVE } from '../support/operations.ts';
import { BALANCE_CHANGED, connectWs } from '../support/realtime.ts';
import { newOrganization, textCredits, uniqueKey, type TestOrganization } from '../support/scenario.ts';
import { startServer } from '../support/server-process.ts';

// Logs are JSON lines an operator's tooling parses: one per request with who, what and how it
// ended, and never a token or a secret.

const NAMED_RESERVE = RESERVE.replace('mutation (', 'mutation Reserve(');

function parseLines(text: string): Array<Record<string, any>> {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      try {
        return JSON.parse(line) as Record<string, any>;
      } catch {
        throw new Error(`a log line that is not JSON: ${line}`);
      }
    });
}

describe('request logs (pglite, in process)', () => {
  let t: TestApp;
  let base: string;
  let org: TestOrganization;
  let written = '';

  beforeAll(async () => {
    const logger = createLogger({ level: 'info', destination: { write: (line: string) => void (written += line) } });
    t = await createTestApp('pglite', { app: { logger } });
    const { url, client } = await listenOverHttp(t);
    base = url.replace(/\/graphql$/, '');
    t = { ...t, gql: client.gql };
    org = await newOrganization(t);
  });
  afterAll(() => t?.close());

  const post = (query: string, variables: Record<string, unknown>, headers: Record<string, string>) =>
    fetch(`${base}/graphql`, graphqlRequest(query, variables, { headers }));

  it('writes one JSON line per request with its id, operation, organization, role, duration and outcome, and no token', async () => {
    const reserve = (credits: number) => ({
      input: { organizationId: org.id, idempotencyKey: uniqueKey(), generation: textCredits(credits) },
    });
    await post(NAMED_RESERVE, reserve(10), { authorization: `Bearer ${org.member}`, 'x-request-id': 'log-ok-1' });
    await post(NAMED_RESERVE, reserve(100), { authorization: `Bearer ${org.member}`, 'x-request-id': 'log-short-1' });
    const forged = `${org.member.slice(0, -4)}AAAA`;
    await post(
      'query Plans { plans { id } }',
      {},
      { authorization: `Bearer ${forged}`, 'x-request-id': 'log-forged-1' },
    );
    // A token in the variables and in the graphql-ws connection_init must not leak either.
    await post(
      'query Plans { plans { id } }',
      { token: org.service },
      { authorization: `Bearer ${org.service}`, 'x-request-id': 'log-vars-1' },
    );
    const ws = connectWs(base, org.member);
    const subscription = ws.subscribe(BALANCE_CHANGED, { id: org.id });
    await vi.waitFor(() => expect(subscription.recording.events).not.toHaveLength(0), {
      timeout: 10_000,
      interval: 20,
    });
    subscription.unsubscribe();
    await ws.dispose();

    const lines = parseLines(written);
    const request = (id: string) => lines.find((line) => line.event === 'request' && line.requestId === id);
    expect(request('log-ok-1')).toMatchObject({
      level: 30,
      method: 'POST',
      path: '/graphql',
      status: 200,
      operation: 'Reserve',
      operationType: 'mutation',
      organizationId: org.id,
      role: 'member',
      outcome: 'success',
      durationMs: expect.any(Number),
      time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });
    expect(request('log-short-1')).toMatchObject({
      operation: 'Reserve',
      outcome: 'InsufficientCreditsError',
      role: 'member',
    });
    expect(request('log-forged-1')).toMatchObject({
      operation: 'Plans',
      outcome: 'UNAUTHENTICATED',
      role: null,
      organizationId: null,
    });
    expect(request('log-vars-1')).toMatchObject({ operation: 'Plans', outcome: 'success', role: 'service' });
    expect(lines.find((line) => line.event === 'operation' && line.transport === 'ws')).toMatchObject({
      operationType: 'subscription',
      organizationId: org.id,
      role: 'member',
      outcome: 'success',
    });

    for (const secret of [org.member, org.service, org.admin, forged, TEST_SECRET])
      expect(written).not.toContain(secret);
    expect(written).not.toMatch(/eyJhbGciOi/); // no JWT at all
    expect(written.toLowerCase()).not.toContain('bearer');
  });

  it('redacts tokens, secrets and authorization headers whatever a log call passes', () => {
    let out = '';
    const logger = createLogger({ destination: { write: (line: string) => void (out += line) } });
    logger.info(
      {
        headers: { authorization: 'Bearer header-secret' },
        connectionParams: { authorization: 'Bearer init-secret' },
        ws: {
          connectionParams: { Authorization: 'Bearer init2-secret', headers: { Authorization: 'Bearer init3-secret' } },
        },
        token: 'token-secret',
        config: { authSecret: 'auth-secret-value', databaseUrl: 'postgres://u:pw-secret@db/x', password: 'pw2-secret' },
      },
      'careless call',
    );
    const [line] = parseLines(out);
    expect(line).toMatchObject({
      headers: { authorization: '[redacted]' },
      connectionParams: { authorization: '[redacted]' },
      token: '[redacted]',
    });
    expect(out).not.toMatch(
      /header-secret|init-secret|init2-secret|init3-secret|token-secret|auth-secret-value|pw-secret|pw2-secret/,
    );
  });
});

describe('the server process logs JSON on stdout (pglite)', () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'credits-logs-'));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('start-up, requests, sweeper work and shutdown, at LOG_LEVEL=debug, each line JSON and none with a token', {
    timeout: 180_000,
  }, async () => {
    const secret = 'server-log-test-secret-long-enough-0123456789';
    const server = await startServer({
      env: {
        PATH: process.env.PATH ?? '',
        DATA_DIR: dataDir,
        PORT: '0',
        AUTH_SECRET: secret,
        LOG_LEVEL: 'debug',
        SWEEP_INTERVAL_MS: '100',
      },
      startMs: 120_000,
    });
    const token = await signToken({ subject: 'log-admin', role: 'admin', expiresIn: '5m' }, secretKey(secret));
    const response = await fetch(
      server.url,
      graphqlRequest('query Plans { plans { id } }', undefined, { token, headers: { 'x-request-id': 'spawned-1' } }),
    );
    expect(response.headers.get('x-request-id')).toBe('spawned-1');
    expect((await fetch(`${server.baseUrl}/ready`)).status).toBe(200);
    await vi.waitFor(() => expect(server.stdout()).toContain('"event":"sweeper"'), { timeout: 30_000 });
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    const stdout = server.stdout();
    const stderr = server.stderr();

    const lines = parseLines(stdout);
    const events = new Set(lines.map((line) => line.event));
    for (const event of ['start', 'request', 'sweeper', 'shutdown']) expect(events).toContain(event);
    expect(lines.find((line) => line.requestId === 'spawned-1')).toMatchObject({
      operation: 'Plans',
      role: 'admin',
      outcome: 'success',
      status: 200,
    });
    // Probes are logged at debug level only.
    expect(lines.find((line) => line.path === '/ready')).toMatchObject({ level: 20 });
    expect(stdout + stderr).not.toContain(token);
    expect(stdout + stderr).not.toContain(secret);
    expect(stderr).toBe('');
  });
});
