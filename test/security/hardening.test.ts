// Issue 13, the HTTP, WebSocket and token side: no schema hints in production errors, GraphiQL
// only where configured, compressed large responses, WebSocket frames bounded like HTTP bodies,
// strict tokens, CORS and CSRF, the cost limit with variables, subscription caps and rate-limit
// scope. Each test fails on the code before the issue.
import { gunzipSync } from 'node:zlib';
import { SignJWT, decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { DEFAULT_TOKEN_POLICY, signToken, verifyAuthorization, type TokenPolicy } from '../../src/auth/tokens.ts';
import { loadConfig } from '../../src/config.ts';
import { REQUEST_BODY_BYTES_MAX } from '../../src/server/protection.ts';
import { TEST_SECRET, createTestApp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { BALANCE, LEDGER, QUOTE } from '../support/operations.ts';
import { BALANCE_CHANGED, connectWs, subscribeSse, type WsConnection } from '../support/realtime.ts';
import { newOrganization, reserve, textCredits, type TestOrganization } from '../support/scenario.ts';
import { send } from './http.ts';

const key = new TextEncoder().encode(TEST_SECRET);
const nowSeconds = () => Math.floor(Date.now() / 1000);

/** Production's protection settings (loadConfig with NODE_ENV=production gives these). */
const PRODUCTION_LIKE = { introspection: false, fieldSuggestions: false, graphiql: false, corsOrigins: [] as string[] };

async function listen(t: TestApp): Promise<string> {
  return `http://127.0.0.1:${await t.app.listen(0, '127.0.0.1')}`;
}

/** A raw WebSocket speaking graphql-transport-ws, recording what the server sends and how it closes. */
function rawSocket(baseUrl: string) {
  const socket = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
  const messages: any[] = [];
  socket.on('message', (data) => messages.push(JSON.parse(String(data))));
  socket.on('error', () => {});
  const opened = new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
  return { socket, messages, opened, closed };
}

describe('no "Did you mean" in production, whatever stage produced the error', () => {
  let t: TestApp;
  let org: TestOrganization;
  let baseUrl: string;
  beforeAll(async () => {
    t = await createTestApp('pglite', { app: PRODUCTION_LIKE });
    org = await newOrganization(t);
    baseUrl = await listen(t);
  });
  afterAll(() => t.close());

  // The issue's examples, sent without a token: variable coercion of an input field and of an
  // enum value, then validation of a field, an argument and an enum literal.
  const requests = [
    {
      query: QUOTE,
      variables: { id: '00000000-0000-4000-8000-000000000000', generation: { modelId: 'x', resolutio: 'HD_720P' } },
      hidden: /"resolution"/,
    },
    {
      query: QUOTE,
      variables: { id: '00000000-0000-4000-8000-000000000000', generation: { modelId: 'x', resolution: 'HD_72' } },
      hidden: /HD_720P|UHD_4K/,
    },
    { query: '{ plans { nam } }', variables: {}, hidden: /"name"/ },
    { query: '{ balance(organizationI: "x") { available } }', variables: {}, hidden: /"organizationId"/ },
    {
      query: '{ creditQuote(organizationId: "x", generation: { modelId: "x", resolution: HD_72 }) { cost } }',
      variables: {},
      hidden: /HD_720P|UHD_4K/,
    },
  ];

  it.each(requests)('over HTTP, unauthenticated: $query $variables', async ({ query, variables, hidden }) => {
    const response = await send(t, { json: { query, variables } });
    expect(response.status).toBe(400);
    expect(response.body.errors.length).toBeGreaterThan(0);
    expect(response.text).not.toMatch(/Did you mean/);
    expect(response.text).not.toMatch(hidden);
  });

  it('keeps the rest of the message, which names only what the client sent', async () => {
    const response = await send(t, { json: { query: requests[1]!.query, variables: requests[1]!.variables } });
    expect(response.body.errors[0].message).toMatch(/Value "HD_72" does not exist in "Resolution" enum\.$/);
  });

  it.each(requests)('over WebSocket: $query $variables', async ({ query, variables, hidden }) => {
    const connection = connectWs(baseUrl, org.member);
    try {
      const { recording } = connection.subscribe(query, variables);
      await recording.waitForEnd();
      // graphql-ws sends validation errors as an `error` message and execution errors in `next`.
      const answer = JSON.stringify({ events: recording.events, failure: recording.failure });
      expect(answer).toMatch(/message/);
      expect(answer).not.toMatch(/Did you mean/);
      expect(answer).not.toMatch(hidden);
    } finally {
      await connection.dispose();
    }
  });
});

describe('GraphiQL and compression', () => {
  it('serves no GraphiQL page when turned off, as production does by default', async () => {
    const t = await createTestApp('pglite', { app: PRODUCTION_LIKE });
    try {
      const page = await send(t, { method: 'GET', headers: { accept: 'text/html' } });
      expect(page.status).not.toBe(200);
      expect(page.text).not.toMatch(/GraphiQL/);
      expect(page.text.length).toBeLessThan(1000);
    } finally {
      await t.close();
    }
    expect(loadConfig({ NODE_ENV: 'production', AUTH_SECRET: 'x'.repeat(32) })).toMatchObject({ graphiql: false });
    expect(loadConfig({ NODE_ENV: 'production', AUTH_SECRET: 'x'.repeat(32), GRAPHIQL: '1' })).toMatchObject({
      graphiql: true,
    });
    expect(loadConfig({})).toMatchObject({ graphiql: true });
    expect(() => loadConfig({ GRAPHIQL: 'on' })).toThrow(/GRAPHIQL/);
  });

  it('compresses large responses for clients that accept gzip, and leaves small ones and event streams alone', async () => {
    const t = await createTestApp('pglite');
    try {
      const org = await newOrganization(t);
      const baseUrl = await listen(t);
      // node:http below, not fetch: fetch would decompress and hide the encoding.
      const { request } = await import('node:http');
      const get = (path: string, headers: Record<string, string>, body?: string) =>
        new Promise<{ status: number; headers: Record<string, unknown>; raw: Buffer }>((resolve, reject) => {
          const req = request(`${baseUrl}${path}`, { method: body ? 'POST' : 'GET', headers }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (chunk: Buffer) => {
              chunks.push(chunk);
              // An event stream never ends on its own; its first event is enough.
              if (
                String(res.headers['content-type']).startsWith('text/event-stream') &&
                Buffer.concat(chunks).includes('event: next')
              )
                req.destroy();
            });
            res.on('close', () =>
              resolve({ status: res.statusCode!, headers: res.headers, raw: Buffer.concat(chunks) }),
            );
          });
          req.on('error', (error) => (String(error).includes('socket hang up') ? undefined : reject(error)));
          req.end(body);
        });
      const page = await get('/graphql', { accept: 'text/html', 'accept-encoding': 'gzip, deflate' });
      expect(page.status).toBe(200);
      expect(page.headers['content-encoding']).toBe('gzip');
      const html = gunzipSync(page.raw).toString('utf8');
      expect(html).toContain('GraphiQL');
      expect(page.raw.length).toBeLessThan(html.length / 2);

      const json = {
        'content-type': 'application/json',
        'accept-encoding': 'gzip',
        authorization: `Bearer ${org.member}`,
      };
      const small = await get('/graphql', json, JSON.stringify({ query: '{ __typename }' }));
      expect(small.headers['content-encoding']).toBeUndefined();
      expect(JSON.parse(small.raw.toString('utf8'))).toEqual({ data: { __typename: 'Query' } });

      const large = await get(
        '/graphql',
        json,
        JSON.stringify({ query: '{ __schema { types { name fields { name } } } }' }),
      );
      expect(large.headers['content-encoding']).toBe('gzip');
      const schema = JSON.parse(gunzipSync(large.raw).toString('utf8'));
      expect(schema.data.__schema.types.length).toBeGreaterThan(10);
      expect(large.raw.length).toBeLessThan(JSON.stringify(schema).length);

      const stream = await get(
        '/graphql',
        { ...json, accept: 'text/event-stream' },
        JSON.stringify({ query: BALANCE_CHANGED, variables: { id: org.id } }),
      );
      // yoga marks its event streams `Content-Encoding: none`.
      expect(stream.headers['content-encoding'] ?? 'none').toBe('none');
      expect(stream.raw.toString('utf8')).toMatch(/event: next/);
    } finally {
      await t.close();
    }
  });
});

describe('WebSocket frames are bounded like HTTP bodies', () => {
  let t: TestApp;
  let org: TestOrganization;
  let baseUrl: string;
  beforeAll(async () => {
    t = await createTestApp('pglite');
    org = await newOrganization(t);
    baseUrl = await listen(t);
  });
  afterAll(() => t.close());

  it('closes with 1009 on an over-long connection_init, before reading the token in it', async () => {
    const { socket, closed, opened } = rawSocket(baseUrl);
    await opened;
    socket.send(
      JSON.stringify({
        type: 'connection_init',
        payload: { authorization: 'Bearer bad', padding: 'x'.repeat(REQUEST_BODY_BYTES_MAX) },
      }),
    );
    // A parsed init with a bad token would close with 4401.
    expect(await closed).toBe(1009);
  });

  it('closes with 1009 on an over-long operation after authentication, which then never runs', async () => {
    const { socket, messages, closed, opened } = rawSocket(baseUrl);
    await opened;
    socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${org.member}` } }));
    await vi.waitFor(() => expect(messages).toContainEqual(expect.objectContaining({ type: 'connection_ack' })), {
      timeout: 5000,
    });
    // Just under the limit: answered as usual (an unknown variable is ignored by graphql-js).
    const fits = 'x'.repeat(REQUEST_BODY_BYTES_MAX - 2000);
    socket.send(
      JSON.stringify({
        id: '1',
        type: 'subscribe',
        payload: { query: BALANCE, variables: { id: org.id, padding: fits } },
      }),
    );
    await vi.waitFor(() => expect(messages).toContainEqual(expect.objectContaining({ id: '1', type: 'complete' })), {
      timeout: 5000,
    });
    expect(
      messages.find((message) => message.id === '1' && message.type === 'next')?.payload.data.balance.organizationId,
    ).toBe(org.id);

    socket.send(
      JSON.stringify({
        id: '2',
        type: 'subscribe',
        payload: { query: BALANCE, variables: { id: org.id, padding: 'x'.repeat(20 * 1024 * 1024) } },
      }),
    );
    expect(await closed).toBe(1009);
    expect(messages.filter((message) => message.id === '2')).toEqual([]);
  });
});

describe('tokens', () => {
  const sign = (claims: Record<string, unknown>, setup: (jwt: SignJWT) => SignJWT) =>
    setup(new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setSubject('s')).sign(key);
  const member = { role: 'member', org: '00000000-0000-4000-8000-000000000001' };
  const admin = { role: 'admin' };
  const verify = (token: string, policy: TokenPolicy = DEFAULT_TOKEN_POLICY) =>
    verifyAuthorization(`Bearer ${token}`, key, policy);

  it('requires exp and iat', async () => {
    await expect(verify(await sign(member, (jwt) => jwt.setIssuedAt()))).rejects.toThrow(/"exp"/);
    await expect(verify(await sign(member, (jwt) => jwt.setExpirationTime('1h')))).rejects.toThrow(/"iat"/);
    await expect(verify(await sign(member, (jwt) => jwt.setIssuedAt().setExpirationTime('1h')))).resolves.toMatchObject(
      { role: 'member' },
    );
  });

  it('refuses lifetimes over 24 hours for members and services and over 1 hour for admins', async () => {
    await expect(
      verify(await sign(member, (jwt) => jwt.setIssuedAt().setExpirationTime('24h'))),
    ).resolves.toMatchObject({ role: 'member' });
    await expect(verify(await sign(member, (jwt) => jwt.setIssuedAt().setExpirationTime('25h')))).rejects.toThrow(
      /lives longer/,
    );
    await expect(
      verify(await sign({ ...member, role: 'service' }, (jwt) => jwt.setIssuedAt().setExpirationTime('30d'))),
    ).rejects.toThrow(/lives longer/);
    await expect(verify(await sign(admin, (jwt) => jwt.setIssuedAt().setExpirationTime('1h')))).resolves.toMatchObject({
      role: 'admin',
    });
    await expect(verify(await sign(admin, (jwt) => jwt.setIssuedAt().setExpirationTime('2h')))).rejects.toThrow(
      /lives longer/,
    );
    // An old iat cannot be used to stretch a token: it is at most the longest lifetime old.
    const now = nowSeconds();
    await expect(
      verify(await sign(member, (jwt) => jwt.setIssuedAt(now - 3 * 24 * 3600).setExpirationTime(now + 3600))),
    ).rejects.toThrow();
    const longer: TokenPolicy = {
      ...DEFAULT_TOKEN_POLICY,
      maxLifetimeSeconds: { member: 48 * 3600, service: 48 * 3600, admin: 7200 },
    };
    await expect(
      verify(await sign(admin, (jwt) => jwt.setIssuedAt().setExpirationTime('2h')), longer),
    ).resolves.toMatchObject({ role: 'admin' });
  });

  it('checks iss and aud when configured', async () => {
    const policy: TokenPolicy = { ...DEFAULT_TOKEN_POLICY, issuer: 'https://auth.example.com', audience: 'credits' };
    const base = (jwt: SignJWT) => jwt.setIssuedAt().setExpirationTime('1h');
    await expect(
      verify(
        await sign(member, (jwt) => base(jwt).setIssuer('https://auth.example.com').setAudience('credits')),
        policy,
      ),
    ).resolves.toMatchObject({
      role: 'member',
    });
    await expect(
      verify(
        await sign(member, (jwt) => base(jwt).setIssuer('https://evil.example.com').setAudience('credits')),
        policy,
      ),
    ).rejects.toThrow(/"iss"/);
    await expect(
      verify(
        await sign(member, (jwt) => base(jwt).setIssuer('https://auth.example.com').setAudience('billing')),
        policy,
      ),
    ).rejects.toThrow(/"aud"/);
    await expect(verify(await sign(member, (jwt) => base(jwt)), policy)).rejects.toThrow(/"iss"/);
    // Not configured: neither is required.
    await expect(verify(await sign(member, (jwt) => base(jwt).setIssuer('anyone')))).resolves.toMatchObject({
      role: 'member',
    });
  });

  it('allows a small clock skew, and no more', async () => {
    const now = nowSeconds();
    await expect(
      verify(await sign(member, (jwt) => jwt.setIssuedAt(now - 3600).setExpirationTime(now - 10))),
    ).resolves.toMatchObject({ role: 'member' });
    await expect(
      verify(await sign(member, (jwt) => jwt.setIssuedAt(now - 3600).setExpirationTime(now - 60))),
    ).rejects.toThrow(/expired/);
    await expect(
      verify(await sign(member, (jwt) => jwt.setIssuedAt(now + 10).setExpirationTime(now + 3600))),
    ).resolves.toMatchObject({ role: 'member' });
    await expect(
      verify(await sign(member, (jwt) => jwt.setIssuedAt(now + 600).setExpirationTime(now + 3600))),
    ).rejects.toThrow(/future/);
  });

  it('reads the token rules from the environment', () => {
    expect(loadConfig({}).tokenPolicy).toEqual(DEFAULT_TOKEN_POLICY);
    expect(
      loadConfig({
        TOKEN_MAX_LIFETIME_SECONDS: '3600',
        ADMIN_TOKEN_MAX_LIFETIME_SECONDS: '600',
        TOKEN_ISSUER: 'i',
        TOKEN_AUDIENCE: 'a',
        TOKEN_CLOCK_SKEW_SECONDS: '5',
        TOKEN_SCOPES_REQUIRED: '1',
      }).tokenPolicy,
    ).toEqual({
      maxLifetimeSeconds: { member: 3600, service: 3600, admin: 600 },
      issuer: 'i',
      audience: 'a',
      clockSkewSeconds: 5,
      scopesRequired: true,
    });
    expect(() => loadConfig({ TOKEN_CLOCK_SKEW_SECONDS: '3600' })).toThrow(/TOKEN_CLOCK_SKEW_SECONDS/);
    // Scoped tokens are required in production unless the operator is still rolling them out.
    const production = { NODE_ENV: 'production', AUTH_SECRET: 'x'.repeat(32) };
    expect(loadConfig(production).tokenPolicy.scopesRequired).toBe(true);
    expect(loadConfig({ ...production, TOKEN_SCOPES_REQUIRED: '0' }).tokenPolicy.scopesRequired).toBe(false);
    expect(loadConfig({}).tokenPolicy.scopesRequired).toBe(false);
    expect(() => loadConfig({ TOKEN_SCOPES_REQUIRED: 'yes' })).toThrow(/TOKEN_SCOPES_REQUIRED/);
  });

  it("reads each caller's intake bound from the environment", () => {
    expect(loadConfig({}).intakeLimits).toEqual({ concurrent: 16, waitingMax: 10_000 });
    expect(loadConfig({ CALLER_CONCURRENCY: '4', CALLER_WAITING_MAX: '50' }).intakeLimits).toEqual({
      concurrent: 4,
      waitingMax: 50,
    });
    expect(loadConfig({ CALLER_CONCURRENCY: '0' }).intakeLimits).toBeNull();
    expect(() => loadConfig({ CALLER_CONCURRENCY: 'many' })).toThrow(/CALLER_CONCURRENCY/);
    expect(() => loadConfig({ CALLER_WAITING_MAX: '-1' })).toThrow(/CALLER_WAITING_MAX/);
  });

  it('refuses a token without exp and a 30-day admin token over HTTP, SSE and WebSockets', async () => {
    const t = await createTestApp('pglite');
    try {
      const org = await newOrganization(t);
      const baseUrl = await listen(t);
      const forever = await sign(member, (jwt) => jwt.setIssuedAt()).then((token) => token);
      const foreverWithOrg = await new SignJWT({ role: 'member', org: org.id })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('s')
        .setIssuedAt()
        .sign(key);
      const monthAdmin = await signToken({ subject: 'old-admin', role: 'admin', expiresIn: '30d' }, key);
      for (const token of [forever, foreverWithOrg, monthAdmin]) {
        const response = await t.gql(BALANCE, { id: org.id }, token);
        expect(response.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
        const connection = connectWs(baseUrl, token);
        const { recording } = connection.subscribe(BALANCE_CHANGED, { id: org.id });
        await recording.waitForEnd();
        expect(connection.closeCode()).toBe(4401);
        const sse = subscribeSse(baseUrl, token, BALANCE_CHANGED, { id: org.id });
        await sse.recording.waitForEnd();
        expect(sse.recording.events[0]?.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
      }
    } finally {
      await t.close();
    }
  });
});

describe('CORS and CSRF', () => {
  const origin = (t: TestApp, value: string, extra: Record<string, string> = {}) =>
    send(t, { json: { query: '{ __typename }' }, headers: { origin: value, ...extra } });

  it('in development allows any real origin without credentials, and never the null origin', async () => {
    const t = await createTestApp('pglite');
    try {
      const evil = await origin(t, 'https://evil.example');
      expect(evil.headers.get('access-control-allow-origin')).toBe('https://evil.example');
      expect(evil.headers.get('access-control-allow-credentials')).toBeNull();
      const opaque = await origin(t, 'null');
      expect(opaque.headers.get('access-control-allow-origin')).toBeNull();
      expect(opaque.headers.get('access-control-allow-credentials')).toBeNull();
    } finally {
      await t.close();
    }
  });

  it('with an allow-list answers only the listed origins, also on preflight', async () => {
    const t = await createTestApp('pglite', { app: { corsOrigins: ['https://app.example.com'] } });
    try {
      const allowed = await origin(t, 'https://app.example.com');
      expect(allowed.headers.get('access-control-allow-origin')).toBe('https://app.example.com');
      expect(allowed.headers.get('access-control-allow-credentials')).toBeNull();
      for (const other of ['https://evil.example', 'null', 'https://app.example.com.evil.example']) {
        const refused = await origin(t, other);
        expect(refused.headers.get('access-control-allow-origin')).toBeNull();
        const preflight = await send(t, {
          method: 'OPTIONS',
          body: undefined,
          headers: {
            origin: other,
            'access-control-request-method': 'POST',
            'access-control-request-headers': 'authorization, content-type',
          },
        });
        expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
      }
      const preflight = await send(t, {
        method: 'OPTIONS',
        body: undefined,
        headers: {
          origin: 'https://app.example.com',
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'authorization',
        },
      });
      expect(preflight.headers.get('access-control-allow-origin')).toBe('https://app.example.com');
      expect(preflight.headers.get('access-control-allow-headers')).toMatch(/authorization/);
    } finally {
      await t.close();
    }
  });

  it('allows no origin by default in production and reads CORS_ORIGINS', () => {
    const secret = { AUTH_SECRET: 'x'.repeat(32) };
    expect(loadConfig({ NODE_ENV: 'production', ...secret }).corsOrigins).toEqual([]);
    expect(loadConfig({}).corsOrigins).toBe('*');
    expect(
      loadConfig({ NODE_ENV: 'production', CORS_ORIGINS: 'https://a.example, http://localhost:3000', ...secret })
        .corsOrigins,
    ).toEqual(['https://a.example', 'http://localhost:3000']);
    for (const bad of ['null', 'https://a.example/path', 'a.example', 'file:///x']) {
      expect(() => loadConfig({ CORS_ORIGINS: bad })).toThrow(/CORS_ORIGINS/);
    }
  });

  it('refuses forms, text bodies and header-less GETs, which a page can send cross-site without a preflight', async () => {
    const t = await createTestApp('pglite');
    try {
      const org = await newOrganization(t);
      // A page posting cross-site cannot add an Authorization header (that needs a preflight),
      // so these carry none; with one they count as preflighted (preflighted-requests.test.ts).
      const form = await send(t, {
        body: `query=${encodeURIComponent(`{ balance(organizationId: "${org.id}") { available } }`)}`,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      expect(form.status).toBe(403);
      expect(form.text).not.toMatch(/available/);
      const text = await send(t, {
        body: JSON.stringify({ query: '{ __typename }' }),
        headers: { 'content-type': 'text/plain' },
      });
      expect(text.status).toBe(403);
      const get = await send(t, {
        method: 'GET',
        body: undefined,
        search: `?query=${encodeURIComponent('{ __typename }')}`,
        headers: { 'content-type': '' },
      });
      expect(get.status).toBe(403);
      // The same GET with the CSRF header, which only a preflighted (allowed) page can add, runs.
      const withHeader = await send(t, {
        method: 'GET',
        body: undefined,
        search: `?query=${encodeURIComponent('{ __typename }')}`,
        headers: { 'content-type': '', 'x-graphql-yoga-csrf': '1' },
      });
      expect(withHeader.body).toEqual({ data: { __typename: 'Query' } });
      // JSON bodies (every client of this API) need nothing more.
      expect((await t.gql(BALANCE, { id: org.id }, org.member)).errors).toBeUndefined();
    } finally {
      await t.close();
    }
  });
});

describe.each(drivers)('limits (%s)', (driver) => {
  it('counts a page size passed as a variable against the cost limit', async () => {
    const t = await createTestApp(driver);
    try {
      const org = await newOrganization(t);
      const fields = Array.from(
        { length: 15 },
        (_, i) =>
          `l${i}: ledger(organizationId: $id, first: $n) { edges { cursor node { id kind amount reason createdAt } } }`,
      ).join(' ');
      const query = `query ($id: ID!, $n: Int) { ${fields} }`;
      const big = await send(t, { json: { query, variables: { id: org.id, n: 100 } }, token: org.member });
      expect(big.status).toBe(400);
      expect(big.body.errors[0]).toMatchObject({
        message: expect.stringMatching(/Cost limit/),
        extensions: { code: 'GRAPHQL_VALIDATION_FAILED' },
      });
      expect(big.body.data).toBeUndefined();
      // The literal form is refused the same way; a small page passes.
      const literal = await send(t, {
        json: { query: query.replaceAll('$n', '100').replace(', $n: Int', ''), variables: { id: org.id } },
        token: org.member,
      });
      expect(literal.status).toBe(400);
      const small = await send(t, { json: { query, variables: { id: org.id, n: 2 } }, token: org.member });
      expect(small.status).toBe(200);
      expect(small.body.errors).toBeUndefined();
      // A declared default counts too.
      const defaulted = await send(t, {
        json: { query: query.replace('$n: Int', '$n: Int = 100'), variables: { id: org.id } },
        token: org.member,
      });
      expect(defaulted.status).toBe(400);
    } finally {
      await t.close();
    }
  });

  it('caps subscriptions per connection and per token, over WebSockets and SSE, and frees the slot when one ends', async () => {
    const t = await createTestApp(driver, { app: { subscriptionLimits: { perConnection: 2, perToken: 3 } } });
    const connections: WsConnection[] = [];
    try {
      const org = await newOrganization(t);
      const baseUrl = await listen(t);
      const first = connectWs(baseUrl, org.member);
      connections.push(first);
      const a = first.subscribe(BALANCE_CHANGED, { id: org.id });
      const b = first.subscribe(BALANCE_CHANGED, { id: org.id });
      await a.recording.waitFor((r) => r.balances.length === 1);
      await b.recording.waitFor((r) => r.balances.length === 1);
      const overConnection = first.subscribe(BALANCE_CHANGED, { id: org.id });
      await overConnection.recording.waitForEnd();
      expect(JSON.stringify(overConnection.recording)).toMatch(/TOO_MANY_SUBSCRIPTIONS/);
      expect(JSON.stringify(overConnection.recording)).toMatch(/This connection already has 2 open subscriptions/);

      const second = connectWs(baseUrl, org.member);
      connections.push(second);
      const c = second.subscribe(BALANCE_CHANGED, { id: org.id });
      await c.recording.waitFor((r) => r.balances.length === 1);
      const overToken = second.subscribe(BALANCE_CHANGED, { id: org.id });
      await overToken.recording.waitForEnd();
      expect(JSON.stringify(overToken.recording)).toMatch(/This token already has 3 open subscriptions/);
      const sse = subscribeSse(baseUrl, org.member, BALANCE_CHANGED, { id: org.id });
      await sse.recording.waitForEnd();
      expect(sse.recording.events[0]?.errors?.[0]?.extensions?.code).toBe('TOO_MANY_SUBSCRIPTIONS');
      // Another caller of the same organization has slots of its own.
      const service = subscribeSse(baseUrl, org.service, BALANCE_CHANGED, { id: org.id });
      await service.recording.waitFor((r) => r.balances.length === 1);
      service.close();

      // Ending one subscription gives its slot back, and it still delivers changes meanwhile.
      a.unsubscribe();
      await vi.waitFor(
        async () => {
          const again = subscribeSse(baseUrl, org.member, BALANCE_CHANGED, { id: org.id });
          await again.recording.waitFor((r) => r.events.length > 0);
          again.close();
          expect(again.recording.balances).toHaveLength(1);
        },
        { timeout: 10_000 },
      );
      await reserve(t, org, textCredits(1));
      await c.recording.waitFor((r) => r.balances.length === 2);
    } finally {
      for (const connection of connections) await connection.dispose();
      await t.close();
    }
  });

  it('limits all members of an organization together, reads included, without touching its services', async () => {
    let nowMs = 0;
    const clock = () => nowMs;
    const t = await createTestApp(driver, {
      app: {
        mutationRateLimit: { perSecond: 1, burst: 3, now: clock },
        organizationRateLimit: { perSecond: 1, burst: 4, now: clock },
        serviceMutationRateLimit: { perSecond: 1, burst: 10, now: clock },
      },
    });
    try {
      const org = await newOrganization(t);
      const other = await newOrganization(t);
      const second = await signToken(
        { subject: 'second-member', role: 'member', organizationId: org.id, expiresIn: '1h' },
        key,
      );
      const read = async (token: string, organization: TestOrganization = org) =>
        (await t.gql(LEDGER, { id: organization.id, first: 5 }, token)).errors?.[0]?.extensions?.code ?? 'ok';
      expect([await read(org.member), await read(org.member), await read(org.member), await read(org.member)]).toEqual([
        'ok',
        'ok',
        'ok',
        'RATE_LIMITED',
      ]);
      // The second member's own bucket is full, but the organization has one left for its members.
      expect([await read(second), await read(second)]).toEqual(['ok', 'RATE_LIMITED']);
      const refused = await send(t, { json: { query: LEDGER, variables: { id: org.id } }, token: second });
      expect(refused.status).toBe(429);
      expect(refused.body.errors[0].message).toMatch(/this organization's members/);
      // The organization's backend and another organization's members are not affected.
      expect(await read(org.service)).toBe('ok');
      expect(await read(other.member, other)).toBe('ok');
      nowMs += 1000;
      expect(await read(second)).toBe('ok');
    } finally {
      await t.close();
    }
  });
});

describe('configuration of the new limits', () => {
  const secret = { AUTH_SECRET: 'x'.repeat(32) };

  it('has the documented defaults', () => {
    expect(loadConfig({ NODE_ENV: 'production', ...secret })).toMatchObject({
      host: '0.0.0.0',
      organizationRateLimit: { perSecond: 200, burst: 1000 },
      serviceMutationRateLimit: { perSecond: 5000, burst: 10_000 },
      subscriptionLimits: { perConnection: 20, perToken: 20 },
    });
    expect(loadConfig({})).toMatchObject({ host: '127.0.0.1', organizationRateLimit: null });
    expect(loadConfig({ HOST: '0.0.0.0' }).host).toBe('0.0.0.0');
    expect(loadConfig({ SUBSCRIPTIONS_PER_CONNECTION: '5', SUBSCRIPTIONS_PER_TOKEN: '7' }).subscriptionLimits).toEqual({
      perConnection: 5,
      perToken: 7,
    });
    expect(() => loadConfig({ SUBSCRIPTIONS_PER_TOKEN: '0' })).toThrow(/SUBSCRIPTIONS_PER_TOKEN/);
    expect(loadConfig({ ORGANIZATION_RATE_LIMIT: '9', ORGANIZATION_RATE_BURST: '11' }).organizationRateLimit).toEqual({
      perSecond: 9,
      burst: 11,
    });
  });

  it('signs development tokens that pass the token rules', async () => {
    const admin = await signToken(
      { subject: 'a', role: 'admin', expiresIn: `${DEFAULT_TOKEN_POLICY.maxLifetimeSeconds.admin}s` },
      key,
    );
    const claims = decodeJwt(admin);
    expect(claims.exp! - claims.iat!).toBe(3600);
    await expect(verifyAuthorization(`Bearer ${admin}`, key)).resolves.toMatchObject({ role: 'admin' });
  });
});
